"""Self-supervised objectives: pure losses on `[B, ρ, D]` embeddings and one module per
framework, registered by name (plus `supervised` and `detection`, the fine-tuning objectives of
stjax.eval)."""
from __future__ import annotations

from stjax.objectives import auxiliary
from stjax.objectives.base import Framework
from stjax.objectives.byol import BYOL
from stjax.objectives.cmd import CMD
from stjax.objectives.detection import Detection
from stjax.objectives.dsm import DSM
from stjax.objectives.moco import MoCo
from stjax.objectives.simclr import SimCLR
from stjax.objectives.supervised import Supervised
from stjax.objectives.swav import SwAV

FRAMEWORKS: dict[str, type[Framework]] = {cls.name: cls for cls in (BYOL, MoCo, SimCLR, SwAV, DSM, CMD, Supervised,
                                                          Detection)}


def create_framework(config, total_steps: int, steps_per_epoch: float | None = None) -> Framework:
    """The framework named by `config.framework`, built from its config block.

    `steps_per_epoch` is needed by settings given in epochs (e.g.
    `swav.freeze_prototypes_epochs`); frameworks without such settings ignore it. A non-empty
    `config.auxiliary` wraps it in `auxiliary.WithAuxiliary` (terms validated first).
    """
    if config.framework not in FRAMEWORKS:
        raise ValueError(
            f"framework={config.framework!r} is invalid; valid values: {', '.join(sorted(FRAMEWORKS))}"
        )
    terms = auxiliary.create_terms(config.get("auxiliary") or {})
    framework = FRAMEWORKS[config.framework](config, total_steps, steps_per_epoch=steps_per_epoch)
    return auxiliary.WithAuxiliary(framework, terms) if terms else framework
