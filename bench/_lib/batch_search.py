"""The largest per-device batch that trains: `search_largest_batch` (pure: predicts the batch where the
memory runs out from XLA's figures of the tries so far, then confirms it) and `find_max_batch`, the child
that tries batches on the device."""
from __future__ import annotations

import json
from typing import Callable

from . import PARTIAL_TAG
from .measure import _stjax_setup


def search_largest_batch(attempt: Callable[[int], int | None], start: int, bytes_limit: int | None,
                         batch_limit: int, after_each: Callable[[dict], None] | None = None
                         ) -> dict[int, int | None]:
    """The largest batch for which `attempt(batch)` succeeds, and the one above it that fails.

    `attempt(b)` returns the bytes a batch of b used (0 if unknown), or None if it does not fit.
    Returns every try as {batch: bytes or None}; the answer is its largest fitting batch, with
    batch + 1 failing (or equal to `batch_limit`). With the device's `bytes_limit`, the next try is
    the batch where a line through the two largest fitting tries' bytes (through 0 after one try)
    reaches the limit: the bytes grow about linearly with the batch, so from a `start` that fits
    this is usually start, the prediction, one more that fits or fails, and its neighbour. Without
    a limit (or where the prediction is no help) the search doubles until a batch fails, then
    bisects. A `start` that does not fit is halved until one does. `after_each(tried)` sees every
    try as it is recorded.
    """
    tried: dict[int, int | None] = {}

    def bounds() -> tuple[int | None, int | None]:
        fitting = [b for b, used in tried.items() if used is not None]
        failing = [b for b, used in tried.items() if used is None]
        return max(fitting, default=None), min(failing, default=None)

    def predicted() -> int | None:
        points = sorted((b, used) for b, used in tried.items() if used)
        if not bytes_limit or not points:
            return None
        (b1, used1), (b0, used0) = points[-1], (points[-2] if len(points) > 1 else (0, 0))
        if used1 <= used0:
            return None
        return b1 + int((bytes_limit - used1) * (b1 - b0) // (used1 - used0))

    batch = start
    while True:
        tried[batch] = attempt(batch)
        if after_each is not None:
            after_each(tried)
        fits, fails = bounds()
        if fits is None:
            if batch == 1:
                return tried
            batch = max(1, batch // 2)
            continue
        upper = min(fails if fails is not None else batch_limit + 1, batch_limit + 1)
        if upper - fits <= 1:
            return tried
        guess = predicted()
        if guess is not None and fits < guess < upper and guess not in tried:
            batch = guess
        elif guess is not None and guess <= fits and fits + 1 not in tried:
            batch = fits + 1  # the line says this is the largest: the next one should fail
        elif fails is None:
            batch = min(2 * fits, batch_limit)
        else:
            batch = (fits + upper) // 2


def find_max_batch(spec: dict) -> dict:
    """Largest per-device batch that trains for `spec` (see bench/train_step.py's docstring); runs in one process."""
    import jax

    def attempt(batch_per_device: int) -> int | None:
        """Bytes of 2 steps at this batch (XLA's arguments + temporaries), or None if it does not fit."""
        try:
            build, _, batch, sized = _stjax_setup(dict(spec, batch_per_device=batch_per_device))
            factory, step = build(spec["remat"])
            state = factory.create(jax.random.key(0))
            compiled = step.lower(state, batch, jax.random.key(0)).compile()
            for _ in range(2):
                state, metrics = compiled(state, batch, jax.random.key(0))
            jax.block_until_ready(metrics)
            memory = compiled.memory_analysis()
            used = (memory.temp_size_in_bytes + memory.argument_size_in_bytes) if memory else 0
            del state, batch, compiled
        except Exception as error:  # noqa: BLE001 - XlaRuntimeError's class moved between jax versions
            if "RESOURCE_EXHAUSTED" not in str(error) and "out of memory" not in str(error).lower():
                raise
            used = None
        print(f"  ρ={spec['rho']}: {batch_per_device} videos/device {'does not fit' if used is None else 'fits'}"
              + (f" ({used / 2**30:.2f} GiB)" if used else ""), flush=True)
        return used

    def so_far(tried: dict[int, int | None]) -> dict:
        """The search so far: the largest batch that fitted, the smallest that did not, every try."""
        return dict(max_batch_per_device=max((b for b, v in tried.items() if v is not None), default=None),
                    first_failing=min((b for b, v in tried.items() if v is None), default=None),
                    tried={str(k): v for k, v in tried.items()})

    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    tried = search_largest_batch(attempt, spec["batch_per_device"], limit, spec["max_batch_limit"],
                                 after_each=lambda t: print(PARTIAL_TAG + json.dumps(so_far(t)), flush=True))
    return dict(spec, **so_far(tried), memory_limit=limit)
