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

`--eval SPEC` evaluates every finished run with an evaluation config (`configs/eval.py:PROTOCOL[,...]`,
optionally followed by `--config.*` flags in the same quoted string), into `RUN/eval/NAME/` where NAME
is the config argument (`linear,data=k400_r50`), or NAME with `--eval 'NAME=configs/eval.py:...'`; repeat it
for several protocols. `python -m
stjax.report` reads the evaluations' results beside the runs' summaries (`--metric linear_top1` then
is the evaluation's top-1, `finetune_top1`, `knn_top1`, `retrieval_R@1`, ...).

Resumable: a run with a `summary.json` is finished and never redone, nor is an evaluation with a
`results.json`; an unfinished run resumes from its checkpoints. Every run and evaluation is checked
(config loaded and validated) before the first starts.
Locally the runs go one after another, each process's output in `RUN/log.txt` (and on the
console with `--verbose`), and at the end `python -m stjax.report` writes the results tables
(linear_top1, and each evaluation's top-1 or R@1). With `--print` nothing runs: the command of every unfinished run is printed, one per
line; with `--prefix` (a launcher, e.g. `--prefix "sbatch launch/slurm.sh"`) the line is the prefix
and then the flags of `stjax.main`, which every script in launch/ takes. An evaluation is printed once
its run has finished: print again when the runs are done.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import NamedTuple

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


def parse_eval(text: str) -> tuple[str, list[str]]:
    """'configs/eval.py:linear,data=k400_r50 --config.knn.k=5' → ('linear,data=k400_r50', [config, flags...]).

    The name (the evaluation's folder in each run) is the config argument, or the file's name without one;
    a '/' in it (dataset=ucf101/fold1) becomes '-'. 'NAME=configs/eval.py:...' names the folder NAME (two
    evaluations of one protocol that differ only in their --config.* flags, e.g. their splits).
    """
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise SystemExit(f"--eval {text!r}: {e}") from None
    if not tokens or tokens[0].startswith("-") or not all(t.startswith("--config.") for t in tokens[1:]):
        raise SystemExit(f"--eval {text!r}: expected an evaluation config and optionally --config.* flags, e.g. "
                         "--eval configs/eval.py:linear or --eval 'configs/eval.py:knn --config.knn.k=20'")
    named = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", tokens[0])  # NAME=configs/eval.py:...: the folder's name
    if named:
        tokens[0] = named.group(2)
    path, _, arg = tokens[0].partition(":")
    name = named.group(1) if named else (arg or os.path.splitext(os.path.basename(path))[0]).replace("/", "-")
    return name, tokens


def eval_dir(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, "eval", name)


def eval_command_for(tokens: list[str], run_dir: str, name: str, python: str = "python") -> list[str]:
    """The `python -m stjax.main` command evaluating the run in `run_dir` (`parse_eval`'s tokens)."""
    return [python, "-m", "stjax.main", f"--config={tokens[0]}", *tokens[1:], f"--config.init_from={run_dir}",
            f"--workdir={eval_dir(run_dir, name)}"]


def load_run_config(command: list[str]):
    """The config a run's command gives `stjax.main`: its flags parsed as `python -m stjax.main` parses them."""
    from absl import flags
    from ml_collections import config_flags

    from stjax import configlib

    argv = [command[2], *command[3:]]
    configlib.check_config_flags(argv[1:])
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
        flags.DEFINE_string("workdir", None, "where the run writes", flag_values=flag_values)
        flag_values(argv)
    except (flags.Error, AttributeError) as e:
        message = str(e).strip().strip("'").replace("\\n", " ").replace("\\'", "'")
        raise ValueError(message.splitlines()[-1] if "Traceback" in message else message) from None
    return flag_values.config


def check_runs(plan: list[tuple[dict, str, list[str]]], evals: list[tuple[str, list[str]]] = ()) -> None:
    """Loads and validates every run's config, and every evaluation's; the first bad one stops the sweep
    before any work."""
    from stjax import main as main_lib

    for params, _, command in plan:
        try:
            config = load_run_config(command)
            if config.get("job", "pretrain") != "eval":
                main_lib.validate(config)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"run {run_name(params) or '(no grid)'}: {e}") from None
    for name, tokens in evals:
        try:
            if load_run_config(["python", "-m", "stjax.main", f"--config={tokens[0]}"]).get("job") != "eval":
                raise ValueError("not an evaluation config; expected configs/eval.py:PROTOCOL[,...]")
            load_run_config(eval_command_for(tokens, plan[0][1], name))
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--eval {shlex.join(tokens)}: {e}") from None


def is_finished(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "summary.json"))


def is_evaluated(run_dir: str, name: str) -> bool:
    return os.path.exists(os.path.join(eval_dir(run_dir, name), "results.json"))


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


class Job(NamedTuple):
    """A pretraining run (`needs` None) or an evaluation of the run in folder `needs`."""
    label: str
    command: list[str]
    out_dir: str
    needs: str | None


def remaining_seconds(durations: dict[str, list[float]], runs_left: list[bool]) -> float:
    """Seconds the jobs left take (`runs_left`: True for a run, False for an evaluation) at the mean duration of
    the finished ones of their kind (evaluations at the runs' mean until one has finished)."""
    mean = {kind: sum(d) / len(d) for kind, d in durations.items() if d}
    run = mean.get("run", mean.get("eval", 0.0))
    return sum(run if is_run else mean.get("eval", run) for is_run in runs_left)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file and arguments, e.g. configs/pretrain.py:demo")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values to sweep (repeat for more keys; the table's rows are the first key)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting fixed for every run")
    parser.add_argument("--workdir", required=True, help="the study's folder: one sub-folder per run")
    parser.add_argument("--eval", action="append", default=[], metavar="SPEC",
                        help="an evaluation of every finished run, e.g. configs/eval.py:linear,data=k400_r50 "
                             "(repeat for several; --config.* flags may follow inside the quotes)")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the unfinished runs' commands (and finished runs' missing evaluations) instead "
                             "of running them")
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
    evals = [parse_eval(text) for text in args.eval]
    for flag, path in [("--config", args.config.partition(":")[0])] + [("--eval", t[0].partition(":")[0]) for _, t in evals]:
        if not os.path.isfile(path):
            raise SystemExit(f"{flag} {path}: no such file (a relative path starts in this folder, {os.getcwd()})")
    names = [name for name, _ in evals]
    if len(set(names)) != len(names):
        raise SystemExit(f"--eval: two evaluations named alike in {names}; give each its own config argument")
    workdir = os.path.abspath(args.workdir)
    python = args.python if not args.print_only else "python"
    plan = []
    for params in expand(grid):
        run_dir = os.path.join(workdir, run_name(params) or "run")
        plan.append((params, run_dir, command_for(args.config, params, fixed, run_dir, python)))
    if not args.no_check:
        check_runs(plan, evals)
    jobs = []  # each run's evaluations right after it
    for params, run_dir, command in plan:
        label = run_name(params) or "run"
        if not is_finished(run_dir):
            jobs.append(Job(label, command, run_dir, None))
        for name, tokens in evals:
            if not is_evaluated(run_dir, name):
                jobs.append(Job(f"{label} eval {name}", eval_command_for(tokens, run_dir, name, python),
                                eval_dir(run_dir, name), run_dir))
    num_runs = sum(1 for job in jobs if job.needs is None)

    if args.print_only:
        printable = [job for job in jobs if job.needs is None or is_finished(job.needs)]
        for job in printable:
            print(f"{args.prefix} {shlex.join(job.command[3:])}" if args.prefix else shlex.join(job.command))
        waiting = len(jobs) - len(printable)
        print(f"# {num_runs} of {len(plan)} runs to do"
              + (f", {len(jobs) - num_runs} evaluation{'s' * (len(jobs) - num_runs != 1)}" if evals else "")
              + (f" ({waiting} wait for their runs: print again when they have finished)" if waiting else "")
              + f"; `python -m stjax.report {args.workdir}` makes the table", file=sys.stderr)
        return 0

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
        json.dump({"config": args.config, "grid": grid, "set": fixed,
                   "evals": [{"name": name, "spec": shlex.join(tokens)} for name, tokens in evals],
                   "runs": [{"name": os.path.basename(d), "params": p, "command": c} for p, d, c in plan]},
                  f, indent=1)
    print(f"{len(plan)} runs in {workdir}: {len(plan) - num_runs} finished, {num_runs} to do"
          + (f"; {len(jobs) - num_runs} evaluations to do" if evals else ""), flush=True)
    from stjax.train.metrics import format_duration

    failed = []
    started = time.time()
    durations = {"run": [], "eval": []}
    for i, (label, command, out_dir, needs) in enumerate(jobs):
        if needs is not None and not is_finished(needs):
            print(f"[{i + 1}/{len(jobs)}] {label}: skipped, its run did not finish", flush=True)
            failed.append(label)
            continue
        print(f"[{i + 1}/{len(jobs)}] {label}: {shlex.join(command)}", flush=True)
        job_started = time.time()
        code = run_locally(command, out_dir, args.verbose)
        elapsed = time.time() - started
        durations["run" if needs is None else "eval"].append(time.time() - job_started)
        eta = remaining_seconds(durations, [job.needs is None for job in jobs[i + 1:]])
        if code == 0 and os.path.exists(os.path.join(out_dir, "summary.json" if needs is None else "results.json")):
            outcome = "done"
        else:
            failed.append(label)
            outcome = (f"stopped before the end (preempted; exit 0; see {out_dir}/log.txt)" if code == 0
                       else f"FAILED (exit {code}; see {out_dir}/log.txt)")
        print(f"[{i + 1}/{len(jobs)}] {label}: {outcome} in {format_duration(time.time() - job_started)}; "
              f"sweep {format_duration(elapsed)} so far, ETA {format_duration(eta)}", flush=True)

    from stjax import report

    for metric in report.headline_metrics(report.collect(workdir)[1]):
        report.main([workdir, "--metric", metric])
    if failed:
        print(f"{len(failed)} runs or evaluations failed or stopped early: {', '.join(failed)}; the same command "
              "retries or continues them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
