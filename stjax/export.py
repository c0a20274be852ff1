"""A pretrained backbone out to other formats, and back in.

    python -m stjax.export --workdir RUN --format FORMAT --out PATH [--step N]

Formats (FORMATS):
  orbax        a standalone Orbax checkpoint (directory) of the backbone's variables + its description
  npz          NumPy archive, keys like ``params/res2_0/conv_a/kernel`` (stjax names and layouts)
  safetensors  the same tensors as a safetensors file
  pyslowfast   a PyTorch checkpoint ``{"model_state": state_dict}`` with PySlowFast's parameter names
               (``s1.pathway0_stem.conv.weight``, ``s2.pathway0_res0.branch2.a_bn.running_mean``, ...), which
               PySlowFast's Slow R-50 / R-101 load; bottleneck backbones only
  torchvision  a PyTorch state dict for ``torchvision.models.video.r3d_18`` / ``r2plus1d_18``
               (``stem.0.weight``, ``layer1.0.conv1.0.weight``, ...); basic-block backbones only

The PyTorch formats need torch (``pip install -e ".[torch]"``); classifier heads (``head.*``, ``fc.*``) are
not part of a backbone, so load them with ``strict=False``.

`load_backbone(path)` reads any of these back (and PySlowFast's own released checkpoints, including
contrastive ones whose online network sits under ``backbone.``), with ``torch.load(weights_only=True)``:
no pickled code runs. A name or shape mismatch is an error that lists the offending keys. It also takes a
pretraining run's workdir (its latest checkpoint's backbone), so `model.init_from=RUN` works as evaluation's
`init_from=RUN` does.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

import numpy as np

FORMATS = ("orbax", "npz", "safetensors", "pyslowfast", "torchvision")
TORCH_LAYOUTS = ("pyslowfast", "torchvision")
_SPEC_KEY = "__stjax_backbone__"


# ----------------------------------------------------------------------------------------------
# Variables <-> flat dicts.


def flatten_variables(variables: dict) -> dict[str, np.ndarray]:
    """{'params': {...}, 'batch_stats': {...}} -> {'params/res2_0/conv_a/kernel': array, ...}."""
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}" if prefix else key, value)
        else:
            flat[prefix] = np.asarray(node)

    walk("", {k: variables[k] for k in ("params", "batch_stats") if k in variables})
    return flat


def unflatten_variables(flat: dict[str, np.ndarray]) -> dict:
    variables: dict = {}
    for key, value in flat.items():
        node = variables
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(value)
    variables.setdefault("batch_stats", {})
    return variables


# ----------------------------------------------------------------------------------------------
# PyTorch names.

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var"}


def _module_to_torch(path: str, layout: str, two_plus_one_stem: bool) -> str:
    """stjax module path ('res3_1/bn_b', 'stem_conv', ...) -> PyTorch module name in `layout`."""
    if layout == "pyslowfast":
        if path in ("stem_conv", "stem_bn"):
            return "s1.pathway0_stem." + path[len("stem_"):]
        m = re.fullmatch(r"res(\d+)_(\d+)/(conv|bn)_([abc])", path)
        if m:
            stage, block, kind, branch = m.groups()
            return f"s{stage}.pathway0_res{block}.branch2.{branch}" + ("_bn" if kind == "bn" else "")
        m = re.fullmatch(r"res(\d+)_(\d+)/shortcut_(conv|bn)", path)
        if m:
            stage, block, kind = m.groups()
            return f"s{stage}.pathway0_res{block}.branch1" + ("_bn" if kind == "bn" else "")
    else:
        stem = {"stem_conv_spatial": "stem.0", "stem_bn_spatial": "stem.1", "stem_conv_temporal": "stem.3",
                "stem_bn": "stem.4" if two_plus_one_stem else "stem.1", "stem_conv": "stem.0"}
        if path in stem:
            return stem[path]
        m = re.fullmatch(r"res(\d+)_(\d+)/(.+)", path)
        if m:
            stage, block, name = m.groups()
            prefix = f"layer{int(stage) - 1}.{block}"
            inner = {"conv_a": "conv1.0", "bn_a": "conv1.1", "conv_b": "conv2.0", "bn_b": "conv2.1",
                     "conv_a_spatial": "conv1.0.0", "bn_a_mid": "conv1.0.1", "conv_a_temporal": "conv1.0.3",
                     "conv_b_spatial": "conv2.0.0", "bn_b_mid": "conv2.0.1", "conv_b_temporal": "conv2.0.3",
                     "shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}
            if name in inner:
                return f"{prefix}.{inner[name]}"
    raise ValueError(f"no {layout} name for the stjax module {path!r}")


def torch_names(flat_keys, layout: str) -> dict[str, str]:
    """{stjax flat key: PyTorch state-dict key} for the keys of `flatten_variables` in `layout`."""
    if layout not in TORCH_LAYOUTS:
        raise ValueError(f"unknown PyTorch layout {layout!r}; valid choices: {', '.join(TORCH_LAYOUTS)}")
    two_plus_one_stem = any(k.startswith("params/stem_conv_spatial/") for k in flat_keys)
    names = {}
    for key in flat_keys:
        _, *module, leaf = key.split("/")
        names[key] = f"{_module_to_torch('/'.join(module), layout, two_plus_one_stem)}.{_LEAF_TO_TORCH[leaf]}"
    return names


def check_layout(variables: dict, layout: str) -> None:
    """The block type a PyTorch layout can describe: PySlowFast's bottleneck ResNets, torchvision's basic ones."""
    blocks = {k for k in variables["params"] if k.startswith("res")}
    is_bottleneck = all("conv_c" in variables["params"][b] for b in blocks)
    if layout == "pyslowfast" and not is_bottleneck:
        raise ValueError("format pyslowfast holds bottleneck ResNets (slow_r50, slow_r101); this backbone has "
                         "basic blocks: use format torchvision")
    if layout == "torchvision" and is_bottleneck:
        raise ValueError("format torchvision holds basic-block ResNets (r3d_18, r2plus1d_18); this backbone has "
                         "bottleneck blocks: use format pyslowfast")


def to_torch_state_dict(variables: dict, layout: str) -> dict[str, np.ndarray]:
    """PyTorch-named, PyTorch-laid-out arrays: conv kernels (kt, kh, kw, in, out) -> (out, in, kt, kh, kw), and
    a ``num_batches_tracked`` (int64 0) for every BatchNorm."""
    check_layout(variables, layout)
    flat = flatten_variables(variables)
    state = {}
    for key, name in torch_names(flat, layout).items():
        value = flat[key]
        state[name] = np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2) if value.ndim == 5 else value)
        if name.endswith(".running_mean"):
            state[name[:-len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state


# Non-backbone parts of PySlowFast / torchvision checkpoints: reported, not loaded.
_IGNORED = re.compile(r"^(head\.|fc\.|projection\.|predictor\.|backbone_hist\.|queue|ptr$|iter$|swav_)"
                      r"|\.num_batches_tracked$")


def from_torch_state_dict(state: dict[str, Any], template: dict, layout: str) -> tuple[dict, list[str]]:
    """(variables shaped like `template`, ignored keys) from a PyTorch state dict in `layout`.

    Prefixes ``module.`` (DistributedDataParallel) and ``backbone.`` (PySlowFast's ContrastiveModel, whose
    momentum copy ``backbone_hist.`` is ignored) are stripped. Raises ValueError listing the missing,
    unexpected and wrongly-shaped keys.
    """
    arrays = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        key = key[len("backbone."):] if key.startswith("backbone.") else key
        arrays[key] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    flat_template = flatten_variables(template)
    names = torch_names(flat_template, layout)
    wanted = set(names.values())
    ignored = sorted(k for k in arrays if k not in wanted and _IGNORED.search(k))
    unexpected = sorted(k for k in arrays if k not in wanted and k not in ignored)
    missing = sorted(n for n in wanted if n not in arrays)
    flat, wrong_shape = {}, []
    for key, name in names.items():
        if name not in arrays:
            continue
        value = arrays[name]
        if value.ndim == 5:
            value = value.transpose(2, 3, 4, 1, 0)
        if value.shape != flat_template[key].shape:
            wrong_shape.append(f"{name}: file {tuple(arrays[name].shape)}, backbone expects "
                               f"{_torch_shape(flat_template[key])}")
        flat[key] = value.astype(flat_template[key].dtype)
    problems = [(missing, "missing from the file"), (unexpected, "in the file but not in the backbone"),
                (wrong_shape, "with the wrong shape")]
    if any(keys for keys, _ in problems):
        lines = [f"the {layout} checkpoint does not match the backbone:"]
        for keys, what in problems:
            if keys:
                shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
                lines.append(f"  {len(keys)} key(s) {what}: {shown}")
        raise ValueError("\n".join(lines))
    return unflatten_variables(flat), ignored


def _torch_shape(value: np.ndarray) -> tuple:
    return tuple(value.shape[i] for i in (4, 3, 0, 1, 2)) if value.ndim == 5 else tuple(value.shape)


def _import_torch(fmt: str):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"format {fmt} reads and writes PyTorch files and needs torch: "
                          f"pip install -e \".[torch]\"") from e
    return torch


# ----------------------------------------------------------------------------------------------
# Backbone descriptions: what `stjax.models.create_backbone` needs to rebuild the network.


def backbone_spec(name: str, overrides: dict | None = None) -> dict:
    return {"backbone": name, "overrides": dict(overrides or {})}


def create_from_spec(spec: dict):
    from stjax import models

    return models.create_backbone(spec["backbone"], **spec.get("overrides", {}))


def template_variables(spec: dict, num_frames: int = 8, crop_size: int = 32) -> dict:
    """Zeros shaped like the backbone's variables (shapes do not depend on the input size)."""
    import jax
    import jax.numpy as jnp

    module = create_from_spec(spec)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, num_frames, crop_size,
                                                                                crop_size, 3)), train=False))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))


def infer_spec(state: dict[str, Any], layout: str) -> dict:
    """The stjax backbone a PyTorch state dict describes, from its names alone."""
    keys = {k.removeprefix("module.").removeprefix("backbone.") for k in state}
    if layout == "pyslowfast":
        s4_blocks = {m.group(1) for k in keys if (m := re.match(r"s4\.pathway0_res(\d+)\.", k))}
        names = {6: "slow_r50", 23: "slow_r101"}
        if len(s4_blocks) not in names:
            raise ValueError(f"a PySlowFast ResNet with {len(s4_blocks)} blocks in s4 is neither Slow R-50 (6) nor "
                             f"R-101 (23); pass backbone=NAME")
        return backbone_spec(names[len(s4_blocks)])
    return backbone_spec("r2plus1d_18" if "stem.3.weight" in keys else "r3d_18")


# ----------------------------------------------------------------------------------------------
# Reading a run, writing and reading files.


def run_backbone(workdir: str, step: int | None = None) -> tuple[dict, dict, int]:
    """(spec, variables as NumPy, step) of the online backbone in a pretraining run's checkpoint at `step`
    (None: the latest); read by `stjax.train.checkpoint.restore_backbone`."""
    from stjax.train import checkpoint

    spec = _run_spec(workdir)
    variables, step = checkpoint.restore_backbone(workdir, step)
    return spec, variables, step


def is_run(path: str) -> bool:
    """Whether `path` is a pretraining run's workdir (it has config.json and checkpoints/)."""
    return os.path.isdir(os.path.join(path, "checkpoints")) and os.path.isfile(os.path.join(path, "config.json"))


def _load_run_backbone(workdir: str, backbone: str | None) -> tuple[dict, dict]:
    """`load_backbone` of a run's workdir: its latest checkpoint's backbone, said on process 0."""
    import jax

    spec, variables, step = run_backbone(workdir)
    if backbone is not None and spec["backbone"] != backbone:
        raise ValueError(f"{workdir} is a pretraining run whose backbone is {spec['backbone']} (checkpoint step "
                         f"{step}), not {backbone}: configure backbone {spec['backbone']} to start from this run, "
                         f"or start the {backbone} from a run or checkpoint of a {backbone}")
    if jax.process_index() == 0:
        print(f"pretraining run {workdir}: backbone {spec['backbone']}, checkpoint step {step}", flush=True)
    return spec, variables


def _run_spec(workdir: str) -> dict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: it names the run's backbone (runs write it when they start)")
    with open(path) as f:
        model = json.load(f)["model"]
    return backbone_spec(model["backbone"], model.get("overrides"))


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def save_backbone(variables: dict, spec: dict, fmt: str, out: str) -> str:
    """Writes `variables` of the backbone `spec` to `out` in format `fmt`; returns the path written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; choose a new --out (exports never overwrite)")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    spec_json = json.dumps(spec)
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            checkpointer.save(out, ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                                      backbone=ocp.args.JsonSave(spec)))
    elif fmt == "npz":
        with open(out, "xb") as f:
            np.savez(f, **flatten_variables(variables), **{_SPEC_KEY: np.array(spec_json)})
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(flatten_variables(variables), out, metadata={_SPEC_KEY: spec_json})
    else:
        torch = _import_torch(fmt)
        state = {k: torch.from_numpy(v) for k, v in to_torch_state_dict(variables, fmt).items()}
        payload = {"model_state": state, _SPEC_KEY: spec_json} if fmt == "pyslowfast" else state
        with open(out, "xb") as f:
            torch.save(payload, f)
    return out


def load_backbone(path: str, backbone: str | None = None) -> tuple[dict, dict]:
    """(spec, variables) from a file written by `save_backbone`, a PySlowFast / torchvision checkpoint, or a
    pretraining run's workdir (the online backbone of its latest checkpoint, see `run_backbone`).

    `backbone` names the stjax backbone when the file does not say (third-party PyTorch files); by default
    it is inferred from the PyTorch names. When the file or run says, a different `backbone` is an error
    naming both.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if is_run(path):
        return _load_run_backbone(path, backbone)
    if os.path.isdir(path):
        import orbax.checkpoint as ocp

        missing = [item for item in ("variables", "backbone") if not os.path.isdir(os.path.join(path, item))]
        if missing:
            raise ValueError(
                f"{path} is neither a pretraining run's workdir (no checkpoints/) nor an Orbax export of "
                f"`python -m stjax.export --format orbax` (no {' or '.join(f'{m}/' for m in missing)}); valid: "
                "a run's workdir, a file or folder written by `python -m stjax.export`, or a PySlowFast / "
                "torchvision checkpoint")

        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            restored = checkpointer.restore(os.path.abspath(path), ocp.args.Composite(
                variables=ocp.args.StandardRestore(), backbone=ocp.args.JsonRestore()))
        return _spec_or(dict(restored["backbone"]), backbone, path), _to_numpy(dict(restored["variables"]))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            flat = {k: archive[k] for k in archive.files}
        spec = json.loads(str(flat.pop(_SPEC_KEY))) if _SPEC_KEY in flat else None
        return _spec_or(spec, backbone, path), unflatten_variables(flat)
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
        spec = json.loads(metadata[_SPEC_KEY]) if _SPEC_KEY in metadata else None
        return _spec_or(spec, backbone, path), unflatten_variables(load_file(path))
    torch = _import_torch("pyslowfast/torchvision")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a state dict")
    spec = json.loads(payload[_SPEC_KEY]) if _SPEC_KEY in payload else None
    state = payload.get("model_state", payload.get("state_dict", payload))
    layout = "pyslowfast" if any(".pathway0_" in k for k in state) else "torchvision"
    if spec is None and backbone is None:
        spec = infer_spec(state, layout)
    spec = _spec_or(spec, backbone, path)
    variables, _ = from_torch_state_dict(state, template_variables(spec), layout)
    return spec, variables


def _spec_or(spec: dict | None, backbone: str | None, path: str) -> dict:
    if backbone is not None:
        if spec is not None and spec["backbone"] != backbone:
            raise ValueError(f"{path} holds a {spec['backbone']}, not a {backbone}")
        return spec or backbone_spec(backbone)
    if spec is None:
        raise ValueError(f"{path} does not say which backbone it holds; pass backbone=NAME")
    return spec


def check_matches(variables: dict, expected: dict, what: str) -> None:
    """Same tree and shapes, or a ValueError listing the differing keys."""
    got, want = flatten_variables(variables), flatten_variables(expected)
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = sorted(f"{k}: {got[k].shape} vs {want[k].shape}" for k in set(got) & set(want)
                   if got[k].shape != want[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {label}: {', '.join(keys[:12])}" for keys, label in
                 ((missing, "missing"), (unexpected, "unexpected"), (wrong, "with the wrong shape")) if keys]
        raise ValueError(f"{what} does not match the configured backbone; " + "; ".join(parts))


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stjax.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a pretraining run's workdir")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="file (directory for orbax) to write; never overwritten")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)
    spec, variables, step = run_backbone(args.workdir, args.step)
    out = save_backbone(variables, spec, args.format, args.out)
    count = sum(v.size for v in flatten_variables(variables).values())
    print(f"wrote {spec['backbone']} (step {step}, {count:,} values) as {args.format} to {out}")


if __name__ == "__main__":
    main()
