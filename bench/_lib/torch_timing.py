"""The PyTorch column: times bench/torch_reference.py's ρBYOL step in a child process that leaves the
accelerator to torch (JAX_PLATFORMS=cpu), eager and torch.compile."""
from __future__ import annotations

import platform
import statistics
import sys
import time

from . import BENCH


def measure_torch(spec: dict) -> dict:
    """Times bench/torch_reference.py's ρBYOL step for `spec`, eager and (if asked) compiled."""
    import torch

    sys.path.insert(0, str(BENCH))
    import torch_reference

    from stjax import models

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.backends.cudnn.benchmark = True
    backbone = models.create_backbone(spec["backbone"])
    shape = (spec["batch_per_device"] * spec["rho"], 3, spec["frames"], spec["crop"], spec["crop"])
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    results = {}
    modes = {"off": [False], "on": [True], "both": [False, True]}[spec["torch_compile"]]
    for compiled in modes:
        name = "compiled" if compiled else "eager"
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step = torch_reference.ByolStep(backbone, spec["rho"], dtype=spec["dtype"], compile=compiled,
                                            device=device)
            started = time.perf_counter()
            for _ in range(max(spec["warmup"], 2)):
                loss = step(clips)
            float(loss.detach())
            warmup_s = time.perf_counter() - started
            times = []
            for _ in range(spec["rounds"]):
                if cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(spec["steps"]):
                    loss = step(clips)
                float(loss.detach())
                times.append((time.perf_counter() - started) / spec["steps"])
            results[name] = dict(step_s=statistics.median(times), step_s_all=times, warmup_s=warmup_s,
                                 loss=float(loss.detach()), parameters=step.backbone_parameters,
                                 peak_bytes=torch.cuda.max_memory_allocated() if cuda else None)
            del step
        except Exception as error:  # noqa: BLE001 - a failed mode (e.g. no compiler for torch.compile) is reported
            results[name] = dict(error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        if cuda:
            torch.cuda.empty_cache()
    timed = {k: v for k, v in results.items() if "step_s" in v}
    best = min(timed, key=lambda k: timed[k]["step_s"]) if timed else None
    return dict(spec, modes=results, best=best, torch=torch.__version__,
                cuda=torch.version.cuda if cuda else None,
                cudnn=torch.backends.cudnn.version() if cuda else None,
                device_name=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu")
