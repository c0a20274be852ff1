"""Where a result came from: the code's git commit and the library versions, recorded next to every result.

A 500-step run on one machine repeats exactly, but a change that only reorders float sums moves its
linear top-1 by about ±0.02 (docs/results.md), so a figure is only comparable with another from the same
commit. `describe()` is written into `summary.json` (pretraining), `results.json` (evaluation) and the
header of `bench/train_step.py`. It imports neither TensorFlow nor jax.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

import stjax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "ml-collections", "tensorflow",
            "tensorflow-cpu", "tensorflow-datasets", "av", "torch")


def _git(checkout: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", checkout, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


COMMIT_VARIABLE = "STJAX_COMMIT"  # names the commit of a copy of the code that has no .git (a container, a synced tree)


def code_commit(checkout: str | None = None) -> str | None:
    """Short git commit of `checkout` (default: the checkout stjax is imported from), with "+dirty" when its
    tracked files differ from that commit. When `checkout` is not the top of a git checkout (a copy without
    .git, or an installed copy inside some other repository) or git is missing: $STJAX_COMMIT if set, else None."""
    checkout = os.path.realpath(checkout or os.path.dirname(os.path.dirname(os.path.abspath(stjax.__file__))))
    top = _git(checkout, "rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != checkout:
        return os.environ.get(COMMIT_VARIABLE) or None
    commit = _git(checkout, "rev-parse", "--short=12", "HEAD")
    if commit is None:  # a repository without commits
        return None
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if changed else "")


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """{distribution name: installed version, or None when it is not installed}."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe(packages=PACKAGES) -> dict:
    """{"stjax": version, "commit": code_commit(), "python": version, "packages": {name: version}} (installed
    packages only)."""
    return {"stjax": stjax.__version__, "commit": code_commit(), "python": platform.python_version(),
            "packages": {k: v for k, v in package_versions(packages).items() if v is not None}}


def one_line(described: dict | None = None) -> str:
    """describe() as one line: "stjax 0.1.0 at 1a2b3c4d5e6f; python 3.11.2; jax 0.4.x, ..."."""
    d = described or describe()
    where = f"at {d['commit']}" if d["commit"] else f"(commit unknown: not a git checkout and no ${COMMIT_VARIABLE})"
    return (f"stjax {d['stjax']} {where}; python {d['python']}; "
            + ", ".join(f"{k} {v}" for k, v in d["packages"].items()))
