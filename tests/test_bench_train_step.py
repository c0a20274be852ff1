"""bench/train_step.py and its parts in bench/_lib/: its PyTorch reference is the same network and loss, and
the bench runs end to end (without TensorFlow too); bench/step_program.py: the step's FLOPs and reductions on a
CPU."""
import glob
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax import models
from stjax.objectives import losses

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
BENCH = os.path.join(REPOSITORY, "bench")
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from bench._lib import batch_search, children, profile, specs, tables  # noqa: E402


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flax_conv_shapes(params):
    """Conv kernels as PyTorch weight shapes (out, in, kt, kh, kw), sorted."""
    shapes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if leaf.ndim == 5:
            kt, kh, kw, cin, cout = leaf.shape
            shapes.append((cout, cin, kt, kh, kw))
    return sorted(shapes)


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_torch_reference_is_the_same_network(name):
    torch = pytest.importorskip("torch")
    reference = _load("torch_reference")
    backbone = models.create_backbone(name)
    variables = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3)), train=False))
    torch_net = reference.TorchResNet3D(backbone)
    assert reference.count_parameters(torch_net) == sum(x.size for x in jax.tree.leaves(variables["params"]))
    torch_convs = sorted(tuple(m.weight.shape) for m in torch_net.modules() if isinstance(m, torch.nn.Conv3d))
    assert torch_convs == _flax_conv_shapes(variables["params"])
    assert torch_net.features_dim == backbone.features_dim
    if name in ("r3d_micro", "r3d_tiny"):
        out = torch_net(torch.zeros(2, 3, 4, 32, 32))
        assert tuple(out.shape) == (2, backbone.features_dim)


@pytest.mark.parametrize("rho", [1, 2, 4])
def test_torch_byol_loss_matches_stjax(rho):
    torch = pytest.importorskip("torch")
    reference = _load("torch_reference")
    rng = np.random.default_rng(rho)
    p, z = rng.normal(size=(2, 3, rho, 16)).astype(np.float32)
    expected = losses.byol_loss(jnp.asarray(p), jnp.asarray(z), losses.positive_pairs(rho, "all"))
    got = reference.byol_loss(torch.from_numpy(p), torch.from_numpy(z), rho)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)


TORCH_STEP_CHECK = """
import numpy as np, torch
import torch_reference
from stjax import models
torch.manual_seed(0)
step = torch_reference.ByolStep(models.create_backbone("r3d_micro"), rho=2, projector_hidden=(32,), projector_out=16,
                                predictor_hidden=(32,), dtype="float32", device="cpu")
target_before = [p.clone() for p in step.target.parameters()]
online_before = [p.clone() for p in step.online.parameters()]
loss = step(torch.randint(0, 256, (4, 3, 4, 32, 32), dtype=torch.uint8))
assert np.isfinite(float(loss.detach()))
moved = lambda before, module: any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
assert moved(online_before, step.online) and moved(target_before, step.target)
print("ok")
"""


def test_torch_step_trains():
    """One ByolStep moves the online network and the EMA target. In a subprocess: torch.optim imports
    torch._dynamo, which crashes a process that has imported TensorFlow (as the test session has)."""
    pytest.importorskip("torch")
    # stjax from this checkout, as the bench's children import it, whether or not (or wherever) it is installed
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, (REPOSITORY, os.environ.get("PYTHONPATH")))))
    result = subprocess.run([sys.executable, "-c", TORCH_STEP_CHECK], cwd=BENCH, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_peak_flops_table():
    assert specs.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
    assert specs.peak_flops("NVIDIA H100 PCIe", "float32") == 378e12
    assert specs.peak_flops("NVIDIA H200", "float32") == 494.7e12
    assert specs.peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert specs.peak_flops("cpu", "bfloat16") is None
    assert specs.peak_flops("cpu", "bfloat16", override_tflops=2.0) == 2e12


@pytest.mark.slow
def test_bench_runs_on_cpu_and_prints_every_column(tmp_path):
    out = tmp_path / "bench"
    # 2 CPU devices; XLA:CPU at its lowest optimisation level compiles the steps ~2× faster
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2 "
               "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    command = [sys.executable, os.path.join(BENCH, "train_step.py"), "--backbone", "r3d_micro", "--crop", "32",
               "--frames", "4", "--batch_per_device", "1", "--dtypes", "float32", "--remat", "off,on",
               "--steps", "1", "--rounds", "1", "--warmup", "1", "--torch_compile", "off",
               "--torch_dtypes", "float32", "--max_batch", "--max_batch_limit", "3", "--peak_tflops", "1",
               "--out", str(out), "--profile", str(tmp_path / "profile"), "--overrides", '{"batch_norm": "flax"}']
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for column in ("step ms", "clips/s", "TFLOP/s/device", "MFU", "HFU", "peak GiB", "PyTorch clips/s",
                   "stjax / PyTorch", "videos/device"):
        assert column in result.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    plain, remat = report["stjax"]
    assert plain["devices"] == 2 and plain["batch"] == 2 and not plain["remat"] and remat["remat"]
    assert plain["overrides"] == {"batch_norm": "flax"} and 'overrides {"batch_norm": "flax"}' in report["header"][2]
    assert plain["model_flops"] > 0 and np.isfinite(plain["loss"])
    # rematerialisation recomputes forward activations: more hardware FLOPs for the same model FLOPs
    assert remat["model_flops"] == pytest.approx(plain["model_flops"], rel=1e-6)
    assert remat["hardware_flops"] > plain["hardware_flops"]
    assert 0 < plain["mfu"] < 1 and plain["peak"] == 1e12
    if importlib.util.find_spec("torch") is not None:
        assert plain["ratio"] > 0 and report["torch"]["float32"]["best"] == "eager"
        assert report["torch"]["float32"]["modes"]["eager"]["parameters"] == plain["parameters"]
    (largest,) = report["max_batch"]
    assert largest["max_batch_per_device"] == 3 and largest["first_failing"] is None
    assert "| 2 | 3 | 6 | none up to the limit |" in out.with_suffix(".md").read_text()
    # --profile: a trace per setting; a CPU trace has no device kernels to split
    assert all(list((tmp_path / "profile" / name).rglob("*.trace.json.gz"))
               for name in ("float32_remat-off", "float32_remat-on"))
    assert plain["kernel_time"] is None


@pytest.mark.slow
def test_variants_are_measured_side_by_side(tmp_path):
    """--variants: a row per variant; a variant's config reaches the measured step (another backbone: other
    FLOPs and parameters), and a variant that only adds XLA flags reuses the FLOP count."""
    out = tmp_path / "variants"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1 "
               "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    variants = [{"name": "micro"}, {"name": "micro, flag", "xla_flags": "--xla_cpu_enable_fast_math=false"},
                {"name": "tiny", "config": {"model.backbone": "r3d_tiny"}}]
    variants_file = tmp_path / "variants.json"
    variants_file.write_text(json.dumps(variants))
    command = [sys.executable, os.path.join(BENCH, "train_step.py"), "--backbone", "r3d_micro", "--crop", "32",
               "--frames", "4", "--batch_per_device", "1", "--dtypes", "float32", "--remat", "off",
               "--steps", "1", "--rounds", "1", "--warmup", "1", "--torch", "off", "--variants", f"@{variants_file}",
               "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("FLOPs of the float32") == 2
    micro, flagged, tiny = json.loads(out.with_suffix(".json").read_text())["stjax"]
    assert [r["variant"] for r in (micro, flagged, tiny)] == ["micro", "micro, flag", "tiny"]
    assert flagged["xla_flags"] == "--xla_cpu_enable_fast_math=false" and micro["xla_flags"] == ""
    assert flagged["model_flops"] == micro["model_flops"] and flagged["parameters"] == micro["parameters"]
    assert tiny["model_flops"] > 1.2 * micro["model_flops"] and tiny["parameters"] > micro["parameters"]
    assert all(np.isfinite(r["loss"]) for r in (micro, flagged, tiny))
    table = out.with_suffix(".md").read_text()
    assert "| variant | dtype | remat | step ms |" in table and "| tiny | float32 | off |" in table


@pytest.mark.parametrize("text,message", [
    ('{"name": "a"}', "must be a non-empty JSON list"),
    ("[]", "must be a non-empty JSON list"),
    ('[{"name": "a"}, {"name": "a"}]', "the name 'a' is used more than once"),
    ('[{"config": {}}]', r'--variants\[0\] must be an object with a non-empty "name"'),
    ('[{"name": "a", "xla": "x"}]', "unknown key 'xla'; valid keys: name, config, overrides, xla_flags"),
    ('[{"name": "a", "config": ["x"]}]', "config must be a JSON object"),
    ('[{"name": "a", "xla_flags": 1}]', "xla_flags must be a JSON string"),
    ("[{name}]", "--variants is not JSON"),
    ("@/no/such/file.json", "cannot read /no/such/file.json"),
])
def test_bad_variants_name_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        specs.parse_variants(text)


def test_variant_config_fields_are_checked_before_measuring():
    base = dict(backbone="r3d_micro", framework="byol", rho=2, frames=4, crop=32, batch_per_device=1,
                lowering="auto", overrides={})
    default, sgd = specs.parse_variants('[{"name": "lars"}, {"name": "sgd", "config": {"optimizer.name": "sgd"}}]')
    assert default == dict(name="lars", config={}, overrides={}, xla_flags="")
    specs.check_variant_config(base, sgd, devices=2)
    assert specs._pretrain_config(dict(base, batch=2, dtype="float32", remat=False, **sgd)).optimizer.name == "sgd"
    with pytest.raises(ValueError, match=r"--variants \(typo\): optimizer.nme: no field 'nme' under optimizer"):
        specs.check_variant_config(base, dict(sgd, name="typo", config={"optimizer.nme": "sgd"}), devices=2)
    with pytest.raises(ValueError, match=r"--variants \(field\): .*batch_nrom"):
        specs.check_variant_config(base, dict(sgd, name="field", overrides={"batch_nrom": "flax"}), devices=2)
    with pytest.raises(ValueError, match=r"--variants \(lowering\): model.lowering='fast' is not supported"):
        specs.check_variant_config(base, dict(sgd, name="lowering", config={"model.lowering": "fast"}), devices=2)
    assert specs.parse_variants(None) == [dict(name="default", config={}, overrides={}, xla_flags="")]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(BENCH, "variants", "*.json"))))
def test_shipped_variant_sets_are_valid(path):
    base = dict(backbone="slow_r50", framework="byol", rho=2, frames=8, crop=224, batch_per_device=8,
                lowering="auto", overrides={})
    for variant in specs.parse_variants(f"@{path}"):
        specs.check_variant_config(base, variant, devices=1)

def test_a_fresh_process_loads_the_timed_step_from_the_compilation_cache(tmp_path):
    """The memory child (run when the allocator's peak was reached while compiling) gets the step the
    timing child compiled from the cache, so nothing is compiled, or autotuned, there."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
           "JAX_PLATFORMS": "cpu"}
    spec = dict(backbone="r3d_micro", framework="byol", rho=2, frames=4, crop=32, batch_per_device=1,
                lowering="auto", overrides={}, dtype="float32", remat=False, steps=1, rounds=1, warmup=1,
                compilation_cache=str(tmp_path / "cache"))
    timed = children.run_child("stjax", spec, env=env, timeout=600)
    assert "error" not in timed and not timed["step_from_cache"] and any((tmp_path / "cache").iterdir())
    fresh = children.run_child("memory", spec, env=env, timeout=600)
    assert "error" not in fresh and fresh["step_from_cache"]
    assert fresh["peak_bytes"] is None  # a CPU has no allocator statistics: the table shows XLA's estimate


def test_the_peak_column_is_the_steps_own_peak():
    gib = 2**30
    assert tables.step_memory(dict(peak_bytes=6 * gib, peak_bytes_before_steps=2 * gib)) == (6 * gib, "")
    # reached while compiling: the fresh process's peak, if a step reached it there
    compiled_first = dict(peak_bytes=34 * gib, peak_bytes_before_steps=34 * gib)
    fresh = dict(compiled_first, fresh_process_memory=dict(peak_bytes=12 * gib, peak_bytes_before_steps=gib))
    assert tables.step_memory(fresh) == (12 * gib, tables.FRESH_MARK)
    still = dict(compiled_first, fresh_process_memory=dict(peak_bytes=34 * gib, peak_bytes_before_steps=34 * gib))
    assert tables.step_memory(still) == (34 * gib, tables.BEFORE_STEPS_MARK)
    assert tables.step_memory(dict(compiled_first, fresh_process_memory=dict(error="timed out"))) == (
        34 * gib, tables.BEFORE_STEPS_MARK)
    assert tables.step_memory(dict(peak_bytes=None, compiled_bytes=gib)) == (gib, "")

def test_kernel_time_splits_device_time_by_kernel_kind(tmp_path):
    """A jax.profiler trace in miniature: one device stream, one host thread; 2 profiled steps."""
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 3000, "name": "sm90_xmma_fprop_implicit_gemm_bf16",
         "args": {"name": "jit(train_step)/jvp(ResNet3D)/stem_conv/conv_general_dilated"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 3000, "dur": 1000, "name": "gemm_fusion_dot_12"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 4000, "dur": 2000, "name": "nvjet_sm90_tst_128x160"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 6000, "dur": 4000, "name": "input_reduce_fusion_3"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 10000, "dur": 2000, "name": "loop_add_fusion"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 12000, "dur": 2000, "name": "input_reduce_fusion.4"},
        {"ph": "X", "pid": 7, "tid": 2, "ts": 0, "dur": 99000, "name": "PjitFunction(train_step)"},
    ]
    run = tmp_path / "plugins" / "profile" / "2026_01_01"
    run.mkdir(parents=True)
    with gzip.open(run / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    split = profile.kernel_time(str(tmp_path), steps=2)
    top, ops = split.pop("top"), split.pop("ops")
    assert split == dict(busy=7.0, matmul=3.0, other=4.0, launches=3.0)
    # the operations that launched them, from the kernels' `name` argument
    assert ops == [(profile.GRAPHED, 5.5, 2.5), ("jvp(ResNet3D)/stem_conv/conv_general_dilated", 1.5, 0.5)]
    # kinds of kernel, instance numbers dropped, most time first: (name, ms per step, launches per step)
    assert top[0] == ("input_reduce_fusion", 3.0, 1.0) and top[1] == ("sm90_xmma_fprop_implicit_gemm_bf16", 1.5, 0.5)
    assert len(top) == 5 and sum(ms for _, ms, _ in top) == pytest.approx(7.0)
    assert profile.kernel_time(str(tmp_path / "nothing"), steps=2) is None


def test_a_child_cut_short_keeps_its_partial_result():
    """run_child: the last PARTIAL line of a child that runs past its time limit is kept with the error."""
    # the child leaves a helper process behind that holds the output pipe (as torch.compile's workers do)
    child = ("import json, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             "print('PARTIAL ' + json.dumps({'max_batch_per_device': 4}), flush=True); "
             "print('PARTIAL ' + json.dumps({'max_batch_per_device': 6}), flush=True); time.sleep(60)")
    started = time.time()
    result = children.run_child("max_batch", {"rho": 2}, timeout=3, command=[sys.executable, "-c", child])
    assert result == {"rho": 2, "max_batch_per_device": 6, "error": "timed out after 3 s"}
    assert time.time() - started < 30  # the helper was ended with the child
    done = children.run_child("probe", {}, command=[sys.executable, "-c", "print('RESULT {\"ok\": 1}')"])
    assert done == {"ok": 1}
    failed = children.run_child("probe", {"rho": 2},
                                command=[sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    assert failed == {"rho": 2, "error": "exit 3: boom"}


NO_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv[0] = {script!r}; "
                 "runpy.run_path({script!r}, run_name='__main__')")


def test_a_child_runs_without_tensorflow():
    """A GPU machine without TensorFlow runs the bench: bench/train_step.py as a child, with `import tensorflow`
    failing, builds and lowers the step (the FLOP count imports the stjax modules every step child does)."""
    script = os.path.join(BENCH, "train_step.py")
    spec = dict(backbone="r3d_micro", framework="byol", rho=2, frames=4, crop=32, batch_per_device=1,
                lowering="auto", overrides={}, dtype="float32", remat=False)
    command = [sys.executable, "-c", NO_TENSORFLOW.format(script=script), "--child", "flops", "--spec",
               json.dumps(spec)]
    counted = children.run_child("flops", spec, timeout=600, command=command)
    assert "error" not in counted and counted["model_flops"] > 0
    blocked = children.run_child("probe", {}, timeout=60, command=[
        sys.executable, "-c", NO_TENSORFLOW.replace("runpy.run_path", "import tensorflow; runpy.run_path").format(
            script=script), "--child", "probe"])
    assert "import of tensorflow halted" in blocked["error"]  # the block holds


def test_step_program_counts_flops_and_reductions_by_origin():
    """bench/step_program.py on a CPU: the step's FLOPs, and its reductions traced back to the Python that
    made them (the optimiser's gathered norms, BatchNorm statistics in the forward and backward passes)."""
    command = [sys.executable, os.path.join(BENCH, "step_program.py"), "--backbone", "r3d_micro", "--crop", "32",
               "--frames", "4", "--batch_per_device", "1", "--dtype", "float32", "--top", "100"]
    result = subprocess.run(command, env=dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"FLOPs \(XLA's count\): [\d.]+ GFLOP per step", result.stdout)
    rows = re.findall(r"^\| (\d+) \| `([^`]+)` \| (.+) \|$", result.stdout, re.M)
    total = int(re.search(r"reduce instructions: (\d+)", result.stdout).group(1))
    assert sum(int(count) for count, _, _ in rows) == total > 0
    origins = {(origin.split(":")[0], origin.split(" ")[-1], layers) for _, origin, layers in rows}
    assert any(o[0] == "optimizer.py" and "squared_norms" in o[1] for o in origins)
    assert ("norm.py", "_stats", "res#/bn_a") in origins
    assert any(o[0] == "norm.py" and o[2].endswith("(backward)") for o in origins)


def _memory_model(fixed, per_video, fits_up_to):
    """attempt(b) for search_largest_batch: XLA's bytes grow linearly, and the device holds `fits_up_to`."""
    calls = []

    def attempt(batch):
        calls.append(batch)
        return fixed + per_video * batch if batch <= fits_up_to else None
    return attempt, calls


@pytest.mark.parametrize("start,expected_calls", [(8, [8, 97, 104, 105]), (103, [103, 104, 105]),
                                                   (104, [104, 105]), (200, [200, 100, 104, 105])])
def test_largest_batch_is_predicted_then_confirmed_by_its_failing_neighbour(start, expected_calls):
    # H100-like: 0.5 GB of state, 0.72 GB per video, 76 GB the allocator may take: 104 videos fit
    attempt, calls = _memory_model(5e8, 7.2e8, fits_up_to=104)
    tried = batch_search.search_largest_batch(attempt, start, bytes_limit=76e9, batch_limit=512)
    assert calls == expected_calls
    assert max(b for b, used in tried.items() if used is not None) == 104 and tried[105] is None


def test_largest_batch_when_the_prediction_is_wrong_or_missing():
    # the device holds less than XLA's figures say (fragmentation, workspace): the prediction fails, bisection ends it
    attempt, calls = _memory_model(5e8, 7.2e8, fits_up_to=90)
    tried = batch_search.search_largest_batch(attempt, 8, bytes_limit=76e9, batch_limit=512)
    assert calls == [8, 97, 52, 74, 85, 91, 88, 89, 90] and tried[90] and tried[91] is None
    # no memory limit (a CPU): doubling, then bisection
    attempt, calls = _memory_model(0, 1, fits_up_to=37)
    tried = batch_search.search_largest_batch(attempt, 2, bytes_limit=None, batch_limit=512)
    assert calls == [2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37] and tried[38] is None
    # a start that does not fit is halved first; the batch limit caps the search
    attempt, calls = _memory_model(0, 1, fits_up_to=20)
    tried = batch_search.search_largest_batch(attempt, 64, None, 512)
    assert calls == [64, 32, 16, 24, 20, 22, 21] and tried[20] == 20 and tried[21] is None
    attempt, _ = _memory_model(0, 1, fits_up_to=20)
    assert batch_search.search_largest_batch(attempt, 2, None, batch_limit=6) == {2: 2, 4: 4, 6: 6}
    attempt, _ = _memory_model(0, 1, fits_up_to=0)
    assert batch_search.search_largest_batch(attempt, 4, None, 512) == {4: None, 2: None, 1: None}


@pytest.mark.slow
def test_compile_time_bench_prints_each_program_with_its_rounds():
    command = [sys.executable, os.path.join(BENCH, "compile_time.py"), "--rounds", "2", "--framework", "moco",
               "--config", '{"moco.bn_groups": 1}', "--xla_flags=--xla_backend_optimization_level=0"]
    result = subprocess.run(command, env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "moco, r3d_micro, clips (8, 2, 4, 16, 16, 3)" in result.stdout
    assert "XLA_FLAGS='--xla_backend_optimization_level=0'" in result.stdout
    rows = re.findall(r"^\| ([^|]+) \| ([\d.]+) \| ([\d.]+), ([\d.]+) \|$", result.stdout, re.M)
    assert [r[0] for r in rows] == ["init", "train step", "guarded train step (the loop's)"]
    assert all(float(seconds) > 0 for row in rows for seconds in row[1:])
    bad = subprocess.run([sys.executable, os.path.join(BENCH, "compile_time.py"), "--rounds", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--rounds=0: must be at least 1" in bad.stderr
