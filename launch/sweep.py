#!/usr/bin/env python3
"""Expand a grid of config settings into runs of `python -m stjax.main`; run them here or print them.

    python launch/sweep.py --config configs/pretrain.py:demo \
        --grid framework=byol,moco,simclr,swav --grid rho=1,2,4 --workdir runs/study

Every combination of the `--grid` values is one run, in `WORKDIR/KEY=VALUE,KEY=VALUE/`. A key
without a dot is an argument of the config file (`framework`, `rho`, `timespan`, ... of
configs/pretrain.py; they go after the `:`), a dotted key is any field of the config
(`--config.KEY=VALUE`, e.g. `--grid data.max_timespan=0,1,inf`, `--grid config.num_epochs=5,10`).
`--set KEY=VALUE` fixes a setting for every run the same way (the value may hold commas: `--set
byol.projector_hidden=(512,512)`).

Resumable: a run with a `summary.json` is finished and never redone; an unfinished one resumes
from its checkpoints. Every run is checked (config loaded and validated) before the first starts.
Locally the runs go one after another, each process's output in `RUN/log.txt` (and on the
console with `--verbose`), and at the end `python -m stjax.report WORKDIR` writes the results
table. With `--print` nothing runs: the command of every unfinished run is printed, one per
line; with `--prefix` (a launcher, e.g. `--prefix "sbatch launch/slurm.sh"`) the line is the prefix
and then the flags of `stjax.main`, which every script in launch/ takes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def parse_setting(text: str, flag: str) -> tuple[str, list[str]]:
    """'key=v1,v2' → ('key', ['v1', 'v2']); a clear error otherwise."""
    key, sep, values = text.partition("=")
    key = key.strip()
    items = [v.strip() for v in values.split(",")] if sep else []
    if not key or not items or not all(items):
        raise SystemExit(f"{flag} {text!r}: expected KEY=VALUE[,VALUE...], e.g. {flag} rho=1,2,4")
    return key, items


def run_name(params: dict[str, str]) -> str:
    """The run's folder name: 'framework=byol,rho=2'."""
    return ",".join(f"{key}={value}" for key, value in params.items())


def expand(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, the last key varying fastest."""
    keys = [key for key, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in grid))]


def command_for(config: str, params: dict[str, str], fixed: dict[str, str], workdir: str,
                python: str = "python") -> list[str]:
    """The `python -m stjax.main` command of one run."""
    path, _, arg = config.partition(":")
    settings = {**fixed, **params}
    args = [a for a in arg.split(",") if a] + [f"{k}={v}" for k, v in settings.items() if "." not in k]
    overrides = [f"--config.{k.removeprefix('config.')}={v}" for k, v in settings.items() if "." in k]
    config_arg = path + (":" + ",".join(args) if args else "")
    return [python, "-m", "stjax.main", f"--config={config_arg}", *overrides, f"--workdir={workdir}"]


def load_run_config(command: list[str]):
    """The config a run's command gives `stjax.main`: its flags parsed as `python -m stjax.main` parses them."""
    from absl import flags
    from ml_collections import config_flags

    argv = [command[2], *command[3:]]
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
        flags.DEFINE_string("workdir", None, "where the run writes", flag_values=flag_values)
        flag_values(argv)
    except (flags.Error, AttributeError) as e:  # AttributeError: a field the config does not have
        message = str(e).strip().strip("'").replace("\\n", " ").replace("\\'", "'")
        raise ValueError(message.splitlines()[-1] if "Traceback" in message else message) from None
    return flag_values.config


def check_runs(plan: list[tuple[dict, str, list[str]]]) -> None:
    """Loads and validates every run's config; the first bad one stops the sweep before any work."""
    from stjax import main as main_lib

    for params, _, command in plan:
        try:
            config = load_run_config(command)
            if config.get("job", "pretrain") != "eval":
                main_lib.validate(config)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"run {run_name(params) or '(no grid)'}: {e}") from None


def is_finished(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "summary.json"))


def run_locally(command: list[str], run_dir: str, verbose: bool) -> int:
    """Runs `command`, its output appended to RUN/log.txt (and echoed with `verbose`); its exit code."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            log.flush()
            if verbose:
                print("    " + line, end="", flush=True)
        return process.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file and arguments, e.g. configs/pretrain.py:demo")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values to sweep (repeat for more keys; the table's rows are the first key)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting fixed for every run")
    parser.add_argument("--workdir", required=True, help="the study's folder: one sub-folder per run")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the unfinished runs' commands instead of running them")
    parser.add_argument("--prefix", default="", help="with --print: a launcher taking stjax.main's flags, e.g. \"sbatch launch/slurm.sh\"")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of local runs")
    parser.add_argument("--verbose", action="store_true", help="echo each run's output")
    parser.add_argument("--no_check", action="store_true", help="skip loading and validating every config first")
    args = parser.parse_args(argv)

    grid = [parse_setting(g, "--grid") for g in args.grid]
    keys = [key for key, _ in grid]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"--grid: a key given twice in {keys}")
    fixed = {}
    for text in args.set:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {text!r}: expected KEY=VALUE, e.g. --set config.num_epochs=5")
        fixed[key.strip()] = value.strip()
    if set(fixed) & set(keys):
        raise SystemExit(f"--set and --grid both give {sorted(set(fixed) & set(keys))}")
    workdir = os.path.abspath(args.workdir)
    plan = []
    for params in expand(grid):
        run_dir = os.path.join(workdir, run_name(params) or "run")
        python = args.python if not args.print_only else "python"
        plan.append((params, run_dir, command_for(args.config, params, fixed, run_dir, python)))
    if not args.no_check:
        check_runs(plan)
    todo = [item for item in plan if not is_finished(item[1])]

    if args.print_only:
        for _, _, command in todo:
            print(f"{args.prefix} {shlex.join(command[3:])}" if args.prefix else shlex.join(command))
        print(f"# {len(todo)} of {len(plan)} runs to do; `python -m stjax.report {args.workdir}` makes the table",
              file=sys.stderr)
        return 0

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
        json.dump({"config": args.config, "grid": grid, "set": fixed,
                   "runs": [{"name": os.path.basename(d), "params": p, "command": c} for p, d, c in plan]},
                  f, indent=1)
    print(f"{len(plan)} runs in {workdir}: {len(plan) - len(todo)} finished, {len(todo)} to do", flush=True)
    from stjax.train.metrics import format_duration

    failed = []
    started = time.time()
    for i, (params, run_dir, command) in enumerate(todo):
        label = run_name(params) or "run"
        print(f"[{i + 1}/{len(todo)}] {label}: {shlex.join(command)}", flush=True)
        run_started = time.time()
        code = run_locally(command, run_dir, args.verbose)
        elapsed = time.time() - started
        eta = elapsed / (i + 1) * (len(todo) - i - 1)
        if code == 0 and is_finished(run_dir):
            outcome = "done"
        else:
            failed.append(label)
            outcome = (f"stopped before the end (preempted; exit 0; see {run_dir}/log.txt)" if code == 0
                       else f"FAILED (exit {code}; see {run_dir}/log.txt)")
        print(f"[{i + 1}/{len(todo)}] {label}: {outcome} in {format_duration(time.time() - run_started)}; "
              f"sweep {format_duration(elapsed)} so far, ETA {format_duration(eta)}", flush=True)

    from stjax import report

    report.main([workdir])
    if failed:
        print(f"{len(failed)} runs failed or stopped early: {', '.join(failed)}; the same command retries or "
              "continues them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
