"""The main job: pretrain, then probe the frozen backbone, then summarise.

    python -m stjax.main --config configs/pretrain.py:demo --workdir runs/demo

With an evaluation config (`configs/eval.py:PROTOCOL`) it runs `stjax.eval.evaluate` instead.

Builds the dataset if it is missing (the synthetic set is rendered on first
use), pretrains the configured framework (resuming from WORKDIR/checkpoints if
a previous run stopped), trains a linear probe on frozen features of the
pretrained backbone and, with the same recipe, of the same architecture at
random initialisation (`config.final_probe`: both, pretrained or none), then
prints a summary table and writes WORKDIR/summary.json and WORKDIR/report.png.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from stjax import configlib

# `config.final_probe`: which backbones get the linear probe after pretraining.
FINAL_PROBES = {"both": ("pretrained", "random init"), "pretrained": ("pretrained",), "none": ()}
COMPILATION_CACHE_MAX_BYTES = 8 * 2**30


def use_compilation_cache(environ=os.environ, backend: str | None = None) -> str | None:
    """Keeps XLA's compiled programs on disk, so a resumed, repeated or swept run loads them instead of
    compiling again. Returns the folder, or None when off.

    STJAX_COMPILATION_CACHE=DIR keeps them in DIR, =off turns it off. Unset, it is on for GPUs and TPUs
    (`backend`, default jax.default_backend()), in ~/.cache/stjax/jax_compilation_cache (under
    $XDG_CACHE_HOME if set), and off on CPUs: XLA:CPU's programs are built for the host's instruction
    set, and a home folder shared by hosts of several CPU kinds would fill with programs the others
    reject. JAX_COMPILATION_CACHE_DIR (JAX's own variable) wins over all this. Programs that compiled in
    under a second are not kept (JAX's default), and the folder is kept under 8 GiB by dropping the
    least recently used programs, unless JAX_COMPILATION_CACHE_MAX_SIZE says otherwise. Only process 0
    writes (JAX's rule).
    """
    import jax

    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return jax.config.jax_compilation_cache_dir
    setting = environ.get("STJAX_COMPILATION_CACHE", "")
    if setting.lower() == "off" or (not setting and (backend or jax.default_backend()) == "cpu"):
        return None
    directory = setting or os.path.join(environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                        "stjax", "jax_compilation_cache")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:  # a read-only home, say: compile as usual
        logging.warning("no compilation cache in %s (%s); set STJAX_COMPILATION_CACHE=DIR or =off", directory, error)
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_MAX_BYTES)
    return directory


def validate(config) -> None:
    """All settings checked before any work; errors name the field and the valid values."""
    from stjax import models, objectives
    from stjax.data import config as data_config
    from stjax.train import optimizer

    data_config.validate(config)
    configlib.require_choice("framework", config.framework, sorted(objectives.FRAMEWORKS))
    configlib.require_choice("model.backbone", config.model.backbone, sorted(models.BACKBONES))
    configlib.require_choice("final_probe", config.get("final_probe", "both"), FINAL_PROBES)
    from stjax.data import builders
    from stjax.eval import protocols

    kind = builders.label_type(config.data.dataset)
    if config.get("final_probe", "both") != "none":
        protocols.get("linear").validate(config, kind)  # config.probe, its pool
    if config.get("eval_every", 0) > 0:
        protocols.get("knn").validate(config, kind)  # config.knn, its pool
    configlib.require_choice("model.dtype", config.model.get("dtype", "float32"), list(models.COMPUTE_DTYPES))
    init_from = config.model.get("init_from", "")
    configlib.require(not init_from or os.path.exists(init_from), "model.init_from", init_from,
                      "an existing file or directory written by `python -m stjax.export`, or a PySlowFast / "
                      "torchvision checkpoint (empty: random initialisation)")
    objectives.create_framework(config, total_steps=1, steps_per_epoch=1.0)  # its own block's checks
    configlib.require_choice("optimizer.name", config.optimizer.name, optimizer.OPTIMIZERS)
    configlib.require(config.num_epochs > 0 or config.total_steps > 0, "num_epochs", config.num_epochs,
                      "a number > 0 (or total_steps > 0)")
    for field in ("log_every", "checkpoint_every", "eval_batch_size"):
        configlib.require(config[field] >= 1, field, config[field], "integers >= 1")
    configlib.require(config.keep_checkpoints >= 1, "keep_checkpoints", config.keep_checkpoints,
                      "integers >= 1 (how many of the newest checkpoints are kept; resuming needs one)")


def run(config, workdir: str) -> dict:
    """Pretrain + probe; returns the summary dict (also written to WORKDIR/summary.json).

    The run holds WORKDIR throughout (`stjax.train.workdir.hold`: a second run there stops with
    WorkdirBusyError naming this one); a resumed run's config is checked against WORKDIR/config.json, the
    config that wrote its checkpoints, first (`stjax.train.workdir.check_config`: ConfigMismatchError naming
    the fields that may not change). Raises `stjax.train.loop.Preempted` when a SIGTERM stopped the
    pretraining (after a checkpoint).
    """
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    validate(config)
    mesh = mesh_lib.create_mesh()
    mesh_lib.check_batch_size(config.batch_size, mesh)  # before any work (`setup.build` gives the Run)
    eval_per_process = mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    with workdir_lib.hold(workdir):
        # config.json: what `python -m stjax.export` and later evaluations rebuild the run from
        workdir_lib.check_config(workdir, config, workdir_lib.PRETRAIN_MAY_CHANGE)
        return _pretrain_and_probe(config, workdir, mesh, eval_per_process)


def _pretrain_and_probe(config, workdir: str, mesh, eval_per_process: int) -> dict:
    """`run` once the workdir is held and its config checked."""
    import jax

    from stjax import provenance
    from stjax.data import config as data_config
    from stjax.eval import features as eval_features
    from stjax.eval import protocols, report
    from stjax.train import loop, setup
    from stjax.train import metrics as metrics_lib

    data_config.ensure_built(config)
    assembled = setup.build(config, mesh)
    framework, class_names, clips = assembled.framework, assembled.class_names, assembled.clips
    single = assembled.label_type == "single"  # else multi-hot: top1 is precision@1, with mAP beside it
    per_class, summary_key = ("per_class_top1", "per_class_linear_top1") if single else \
        ("per_class_ap", "per_class_linear_ap")
    total_steps = assembled.total_steps
    if jax.process_index() == 0:
        print(f"{config.framework} on {config.data.dataset}: rho={clips.rho}, {total_steps} steps "
              f"({assembled.steps_per_epoch:.1f}/epoch), batch {config.batch_size} videos on "
              f"{mesh.devices.size} devices", flush=True)
    extractors = {}

    def make_features(pool):  # one extractor (one compiled embedding) per pooling
        if pool not in extractors:
            extractors[pool] = eval_features.make_feature_extractor(framework.backbone, config, mesh,
                                                                    eval_per_process, pool=pool)
        return extractors[pool]

    def knn_monitor(state) -> dict:
        """kNN top-1/top-5 of the backbone (the `knn` protocol). Runs inside the loop's transfer guard: its host
        work (features to NumPy, the eager kNN) is an intended round trip, allowed here and nowhere else."""
        with jax.transfer_guard("allow"):
            variables = framework.backbone_variables(state.params, state.batch_stats)
            metrics, _, _ = protocols.evaluate_features(protocols.get("knn"), make_features, variables, config,
                                                        len(class_names))
        return {"knn_top1": metrics["top1"], "knn_top5": metrics["top5"]}

    result = loop.train(assembled, workdir, evaluate=knn_monitor if config.get("eval_every", 0) > 0 else None)
    if result.preempted:  # the checkpoint is saved; the same command continues (and then probes)
        raise loop.Preempted(f"pretraining stopped at step {result.steps} of {total_steps}")

    # Linear probes on frozen features (the `linear` protocol, `config.probe`): pretrained vs the same
    # architecture at random init.
    probes = {}
    started = time.time()
    for name in FINAL_PROBES[config.get("final_probe", "both")]:
        state = result.state if name == "pretrained" else loop.random_init_state(result, config.seed)
        variables = framework.backbone_variables(state.params, state.batch_stats)
        probes[name], _, _ = protocols.evaluate_features(protocols.get("linear"), make_features, variables, config,
                                                         len(class_names))
    probe_seconds = time.time() - started

    summary = {
        "framework": config.framework,
        "rho": config.rho,
        "max_timespan": None if math.isinf(clips.max_timespan) else clips.max_timespan,
        "backbone": config.model.backbone,
        "dataset": config.data.dataset,
        "steps": result.steps,
        "batch_size": config.batch_size,
        "train_seconds": round(result.train_seconds, 1),
        "probe_seconds": round(probe_seconds, 1),
        "linear_top1": probes.get("pretrained", {}).get("top1"),  # None: not probed (final_probe)
        "random_init_linear_top1": probes.get("random init", {}).get("top1"),
        "chance_top1": 1.0 / len(class_names) if single else None,
        "linear_top5": probes.get("pretrained", {}).get("top5"),
        **({"linear_mAP": probes.get("pretrained", {}).get("mAP"),
            "random_init_linear_mAP": probes.get("random init", {}).get("mAP")} if not single else {}),
        summary_key: {
            name: {c: None if math.isnan(a) else round(float(a), 3)  # None: no test video (positive) of that class
                   for c, a in zip(class_names, probe[per_class])}
            for name, probe in probes.items()
        },
        "final_loss": _last_loss(workdir),
        "num_devices": int(mesh.devices.size),
        "provenance": provenance.describe(),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        history = loop.stack_loss_history(workdir)
        knn_history = [r for r in metrics_lib.read_metrics(workdir) if "knn_top1" in r]
        if knn_history:
            report.write_metrics_vs_step_png(
                os.path.join(workdir, "knn.png"), [r["step"] for r in knn_history],
                {"kNN top-1": [r["knn_top1"] for r in knn_history], "kNN top-5": [r["knn_top5"] for r in knn_history]},
                title=f"weighted kNN (k={config.knn.k}) of the backbone during pretraining")
        report.write_report_png(
            os.path.join(workdir, "report.png"), history,
            dict(probes, chance={"top1": summary["chance_top1"]}) if probes and single else probes,
            title=f"ρ{config.framework.upper()}, ρ={config.rho}, on {config.data.dataset}: "
                  f"{result.steps} steps, {config.model.backbone}",
        )
        rows = [(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in summary.items()
                if not isinstance(v, dict)]
        print(report.format_summary_table(rows))
        if not probes:
            from stjax import report as study_report

            print(f"no linear probe (final_probe=none); evaluate the run with "
                  f"`{study_report.linear_evaluation_command(workdir)}`")
        print(f"wrote {os.path.join(workdir, 'summary.json')} and report.png")
    return summary


def _last_loss(workdir):
    from stjax.train import metrics as metrics_lib

    losses = [r["loss"] for r in metrics_lib.read_metrics(workdir) if "loss" in r]
    return losses[-1] if losses else None


def main(argv):
    """The command: the settings checked (a bad one: `error: ...` on stderr, exit status 1, no traceback), then the
    job. A SIGTERM at any moment of start-up or training ends it cleanly, exit status 0 (`Preempted`): the same
    command continues it."""
    del argv
    from stjax.train import preemption

    preemption.defer_from_start()  # from here on a SIGTERM is a request to stop cleanly, not death by signal (143)
    logging.set_verbosity(logging.WARNING)
    import jax

    from stjax.train import distributed

    def fail(error):
        if not jax.distributed.is_initialized() or jax.process_index() == 0:
            print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)

    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    evaluation = config.get("job", "pretrain") == "eval"  # configs/eval.py
    try:  # every setting, before any work: ValueErrors here are the command line's, named by field
        if distributed.initialize():  # a no-op unless launched as one of several processes (launch/)
            preemption.hand_over_to_jax()
        use_compilation_cache()
        from stjax.eval import evaluate
        from stjax.train import mesh as mesh_lib
        from stjax.train import checkpoint as checkpoint_lib
        from stjax.train import loop as loop_lib
        from stjax.train import workdir as workdir_lib

        if evaluation:
            evaluate.validate(config)
        else:
            validate(config)
            mesh = mesh_lib.create_mesh()
            mesh_lib.check_batch_size(config.batch_size, mesh)
            mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    except ValueError as error:
        fail(error)
    try:
        signal_name = preemption.requested_at_start()
        if signal_name is not None:
            raise loop_lib.Preempted(f"stopped on {signal_name} during start-up, before any work",
                                         checkpoint_saved=False)
        (evaluate.run if evaluation else run)(config, workdir)
    except loop_lib.Preempted as e:  # a clean stop, exit status 0: the scheduler restarts the same command
        if jax.process_index() == 0:
            saved = "checkpoint saved, " if e.checkpoint_saved else ""
            print(f"{e}; {saved}run the same command to continue", flush=True)
    except (workdir_lib.WorkdirBusyError, workdir_lib.ConfigMismatchError) as error:  # before any work, too
        fail(error)
    except (checkpoint_lib.CheckpointSaveError, checkpoint_lib.CorruptCheckpointError,
            checkpoint_lib.IncompatibleCheckpointError) as error:  # their messages say what to do; no traceback
        fail(error)


if __name__ == "__main__":
    from stjax.train import preemption

    preemption.defer_from_start()  # first: a SIGTERM while the flags and the config file load stops cleanly too
    # Defined here, not at import, so that importing this module (tests, other tools) defines no flags.
    config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain.py:demo or configs/eval.py:knn")
    flags.DEFINE_string("workdir", None, "where checkpoints, metrics and reports go")
    flags.mark_flags_as_required(["config", "workdir"])
    try:
        configlib.check_config_flags(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"error: {e}")
    app.run(main)
