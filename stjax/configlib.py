"""Helpers for `configs/*.py`: parsing `get_config(arg)` strings and validating fields.

`arg` is `PRESET,key=value,...` or `key=value,...`, e.g. `demo,rho=4,timespan=inf`.
Every error names the field and the valid values, and happens before any work.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Iterable


def load_config_file(path: str, arg: str | None = None):
    """`get_config(arg)` of the config file at `path` (e.g. configs/pretrain.py), as `--config path:arg` does."""
    name = "stjax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def parse_arg(arg: str | None, presets: Iterable[str], **types: type) -> dict[str, Any]:
    """Parses `arg` into {'preset': ..., key: value} for the keys given in `arg`.

    `types` maps each valid key to its type (bool accepts true/false/1/0; float
    accepts `inf`). A bare word is the preset (default: the first of `presets`).
    """
    presets = tuple(presets)
    parsed = {"preset": presets[0]}
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            if key not in presets:
                raise ValueError(f"unknown preset {key!r}; valid presets: {', '.join(presets)}")
            parsed["preset"] = key
            continue
        if key not in types:
            raise ValueError(f"unknown config argument {key!r}; valid arguments: {', '.join(sorted(types))}")
        parsed[key] = _convert(key, value, types[key])
    return parsed


def _convert(key: str, value: str, kind: type) -> Any:
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        return kind(value)
    except ValueError:
        raise ValueError(f"config argument {key}={value!r} must be of type {kind.__name__}") from None


def parse_timespan(value: str | float) -> float:
    """'inf' / 'none' / '' → math.inf; otherwise seconds ≥ 0."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "none", "", "unbounded"):
        return math.inf
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"timespan={value!r} must be a number of seconds >= 0 or 'inf'") from None
    if not seconds >= 0:
        raise ValueError(f"timespan={value!r} must be a number of seconds >= 0 or 'inf'")
    return seconds


def parse_sampling(value: str) -> tuple[int, int]:
    """'16x4' -> (16, 4): T frames taken every S frames."""
    parts = str(value).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"sampling must be FRAMESxSTRIDE with positive integers, e.g. 8x8 or 16x4; got {value!r}")
    return int(parts[0]), int(parts[1])


def require(condition: bool, field: str, value: Any, valid: str) -> None:
    """Raises ValueError('field=value is invalid; valid values: ...') unless `condition`."""
    if not condition:
        raise ValueError(f"{field}={value!r} is invalid; valid values: {valid}")


def require_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, field, value, ", ".join(map(str, choices)))


def _parent_of(config, dotted: str):
    """The group holding field `dotted` ("optimizer.name" → config.optimizer); KeyError naming the field and the
    valid names at the level where the name is missing."""
    *parents, leaf = dotted.split(".")
    node = config
    for depth, key in enumerate([*parents, leaf]):
        if not hasattr(node, "keys") or key not in node.keys():
            where = ".".join([*parents, leaf][:depth]) or "the top level"
            valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none (not a group of fields)"
            raise KeyError(f"{dotted}: no field {key!r} under {where}; valid names: {valid}")
        if depth < len(parents):
            node = node[key]
    return node


def set_fields(config, fields: dict[str, Any]) -> None:
    """Sets existing fields of a ConfigDict by dotted name, e.g. {"optimizer.name": "sgd"}, in place.

    Unlike `ConfigDict.update_from_flattened_dict`, a name the config does not have is an error
    (KeyError naming the field and the valid names at that level), not a new field; values keep the
    field's type checks (TypeError)."""
    for dotted, value in fields.items():
        _parent_of(config, dotted)[dotted.split(".")[-1]] = value


def check_config_flags(argv: list[str]) -> None:
    """ValueError naming the first `--config.a.b=VALUE` of `argv` whose field the config of `--config=PATH[:ARG]`
    does not have, and the valid names there.

    For a command line before absl parses it: ml_collections' flags fail on such a name with a bare
    `AttributeError: "'b'"` and a traceback. A config file that does not exist is left to them."""
    spec, names = None, []
    for i, item in enumerate(argv):
        flag, sep, value = item.partition("=")
        if flag == "--config":
            spec = value if sep else (argv[i + 1] if i + 1 < len(argv) else None)
        elif flag.startswith("--config."):
            names.append(flag.removeprefix("--config."))
    if spec is None or not names:
        return
    path, sep, arg = spec.partition(":")
    if not os.path.isfile(path):
        return
    config = load_config_file(path, arg if sep else None)
    for name in names:
        try:
            _parent_of(config, name)
        except KeyError as e:
            raise ValueError(f"--config.{e.args[0]}") from None
