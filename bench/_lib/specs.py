"""What a measured step is: the devices' peak FLOP/s, and the config of the step for a bench spec and
its variants (--variants parsed and checked before anything is measured)."""
from __future__ import annotations

import json
from pathlib import Path

from . import ROOT

# Dense peak FLOP/s per device, by a substring of jax's `device_kind` (first match wins), for bf16
# and float32 computation. NVIDIA: tensor-core rates without sparsity (float32 = TF32). TPUs compute
# float32 matmuls in bf16 passes by default, so both entries are the bf16 peak.
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("H200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("GH200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60.5e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v6 lite", {"bfloat16": 918e12, "float32": 918e12}),
    ("TPU v6e", {"bfloat16": 918e12, "float32": 918e12}),
)


def peak_flops(device_kind: str, dtype: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device of `device_kind` for `dtype`; None when unknown (e.g. CPUs)."""
    if override_tflops:
        return override_tflops * 1e12
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return peaks[dtype]
    return None


def _pretrain_config(spec: dict):
    """configs/pretrain.py:k400_r50 for the framework, with the bench's backbone, shapes and model options."""
    from stjax import configlib

    config = configlib.load_config_file(str(ROOT / "configs" / "pretrain.py"), f"k400_r50,framework={spec['framework']},rho={spec['rho']},"
                               f"backbone={spec['backbone']},batch_size={spec['batch']}")
    config.data.num_frames = spec["frames"]
    config.data.augmentation.crop_size = spec["crop"]
    config.model.dtype = spec["dtype"]
    config.model.remat = spec["remat"]
    config.model.lowering = spec["lowering"]
    config.model.overrides = dict(spec.get("overrides") or {})
    configlib.set_fields(config, spec.get("config") or {})
    return config


VARIANT_KEYS = ("name", "config", "overrides", "xla_flags")


def parse_variants(text: str | None) -> list[dict]:
    """--variants: a JSON list of {"name", "config"?, "overrides"?, "xla_flags"?}, or @FILE holding one.

    Returns the variants with every key filled in; [{"name": "default", ...}] when `text` is empty.
    Raises ValueError naming what is wrong."""
    if not text:
        return [dict(name="default", config={}, overrides={}, xla_flags="")]
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            raise ValueError(f"--variants: cannot read {text[1:]}: {error.strerror}") from None
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--variants is not JSON: {error}") from None
    if not isinstance(variants, list) or not variants:
        raise ValueError("--variants must be a non-empty JSON list of objects")
    parsed = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"]:
            raise ValueError(f"--variants[{i}] must be an object with a non-empty \"name\"")
        unknown = sorted(set(v) - set(VARIANT_KEYS))
        if unknown:
            raise ValueError(f"--variants[{i}] ({v['name']}): unknown key {unknown[0]!r}; valid keys: "
                             + ", ".join(VARIANT_KEYS))
        for key, kind in (("config", dict), ("overrides", dict), ("xla_flags", str)):
            if not isinstance(v.get(key, kind()), kind):
                raise ValueError(f"--variants[{i}] ({v['name']}): {key} must be a JSON "
                                 + ("object" if kind is dict else "string"))
        parsed.append(dict(name=v["name"], config=v.get("config", {}), overrides=v.get("overrides", {}),
                           xla_flags=v.get("xla_flags", "")))
    names = [v["name"] for v in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--variants: the name {repeated[0]!r} is used more than once")
    return parsed


def check_variant_config(base: dict, variant: dict, devices: int) -> None:
    """Builds the variant's config and backbone (nothing is compiled or run), so that a misspelt or
    mistyped config field or backbone field fails before anything is measured; raises ValueError
    naming the variant and what is wrong."""
    from stjax import models

    try:
        config = _pretrain_config(dict(base, batch=base["batch_per_device"] * devices, dtype="float32", remat=False,
                                       config=variant["config"],
                                       overrides={**base["overrides"], **variant["overrides"]}))
        models.create_backbone(config.model.backbone, **models.backbone_options(config.model))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        raise ValueError(f"--variants ({variant['name']}): {message}") from None
