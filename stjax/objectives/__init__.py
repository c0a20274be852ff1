"""Self-supervised objectives: pure losses on `[B, ρ, D]` embeddings and one module per
framework, registered by name."""
from __future__ import annotations

from stjax.objectives.base import Framework
from stjax.objectives.byol import BYOL

FRAMEWORKS: dict[str, type[Framework]] = {
    BYOL.name: BYOL,
}


def create_framework(config, total_steps: int) -> Framework:
    """The framework named by `config.framework`, built from its config block."""
    if config.framework not in FRAMEWORKS:
        raise ValueError(
            f"framework={config.framework!r} is invalid; valid values: {', '.join(sorted(FRAMEWORKS))}"
        )
    return FRAMEWORKS[config.framework](config, total_steps)
