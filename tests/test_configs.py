"""configs/pretrain.py: presets, `key=value` arguments, and early, clear errors."""
import math
import os
import re

import pytest

from stjax import configlib, objectives
from stjax.data import config as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get_config(arg):
    return configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), arg)


def test_presets_and_arguments():
    demo = _get_config("demo")
    assert demo.data.dataset == "synthetic" and demo.rho == 2 and math.isinf(demo.data.max_timespan)
    data_config.validate(demo)
    paper = _get_config("k400_r50")
    assert (paper.data.num_frames, paper.data.stride, paper.data.augmentation.crop_size) == (8, 8, 224)
    assert (paper.data.test_views.temporal, paper.data.test_views.spatial) == (10, 3)
    assert paper.data.augmentation.area_range == (0.2, 0.766)
    config = _get_config("demo,rho=4,timespan=1.5,batch_size=64")
    assert (config.rho, config.data.max_timespan, config.batch_size) == (4, 1.5, 64)
    assert _get_config("rho=3,timespan=inf").data.max_timespan == math.inf
    assert _get_config("demo,timespan=0").data.max_timespan == 0.0
    spec = data_config.clip_spec(config)
    assert (spec.rho, spec.num_frames, spec.stride, spec.max_timespan) == (4, 8, 2, 1.5)
    r50_16x4 = _get_config("k400_r50,sampling=16x4")  # Slow R-50 16×4: same network, other sampling
    assert (r50_16x4.model.backbone, r50_16x4.data.num_frames, r50_16x4.data.stride) == ("slow_r50", 16, 4)
    assert (paper.model.dtype, paper.model.remat, paper.model.init_from) == ("float32", False, "")
    # auxiliary=NAME[+NAME]: those terms at weight 1.0 (ρBYOL + BE + DSM is a config argument, hence a sweep's grid)
    both = _get_config("demo,auxiliary=background_erasing+dsm")
    weights = {name: block.weight for name, block in both.auxiliary.items()}
    assert weights == {"arrow_of_time": 0.0, "background_erasing": 1.0, "dsm": 1.0}
    assert _get_config("demo,auxiliary=none").auxiliary == demo.auxiliary
    moco_be = objectives.create_framework(_get_config("demo,framework=moco,auxiliary=background_erasing"), 10)
    assert set(moco_be.terms) == {"background_erasing"}
    # the paper-scale run is evaluated afterwards (configs/eval.py), the demo probes both backbones itself
    assert (demo.final_probe, paper.final_probe) == ("both", "none")


@pytest.mark.parametrize("arg,message", [
    ("demo,rho=0", "rho=0 is invalid; valid values: integers >= 1"),
    ("demo,timespan=-2", "timespan='-2' must be a number of seconds >= 0 or 'inf'"),
    ("demo,timespan=soon", "timespan='soon' must be a number"),
    ("demo,rhoo=2", "unknown config argument 'rhoo'; valid arguments: auxiliary, backbone, batch_size, dataset, epochs, framework, rho, sampling, seed, timespan"),
    ("demo,auxiliary=be", "auxiliary='be' is invalid; valid values: arrow_of_time, background_erasing, dsm, none"),
    ("demo,auxiliary=dsm+dsm", "auxiliary='dsm+dsm' is invalid; valid values: none, or distinct names joined by"),
    ("demo,sampling=16by4", "sampling must be FRAMESxSTRIDE with positive integers, e.g. 8x8 or 16x4; got '16by4'"),
    ("demo,sampling=0x4", "sampling must be FRAMESxSTRIDE"),
    ("tiny", "unknown preset 'tiny'; valid presets: demo, k400_r50"),
    ("demo,rho=two", "rho='two' must be of type int"),
    ("demo,framework=dino", "framework='dino' is invalid; valid values: byol, moco, simclr, swav, dsm, cmd"),
])
def test_bad_arguments_name_the_field(arg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _get_config(arg)


def test_bad_fields_fail_validation():
    config = _get_config("demo,dataset=kinetics9000")
    with pytest.raises(ValueError, match="data.dataset='kinetics9000' is invalid; valid values: ava, charades, hmdb51, kinetics400, .*, video_folder"):
        data_config.validate(config)
    config = _get_config("demo")
    config.data.num_frames = 0
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        data_config.validate(config)
    config = _get_config("demo")
    config.data.augmentation.flip_prob = 1.5
    with pytest.raises(ValueError, match="flip_prob"):
        data_config.validate(config)
    config = _get_config("demo")
    config.data.test_views.spatial = 2
    with pytest.raises(ValueError, match="spatial views must be 1"):
        data_config.validate(config)



def test_set_fields_sets_existing_fields_by_dotted_name_and_refuses_new_ones():
    config = _get_config("demo")
    configlib.set_fields(config, {"optimizer.name": "sgd", "data.augmentation.crop_size": 48, "rho": 3})
    assert (config.optimizer.name, config.data.augmentation.crop_size, config.rho) == ("sgd", 48, 3)
    with pytest.raises(KeyError, match="optimizer.nme: no field 'nme' under optimizer; valid names: .*momentum, name,"):
        configlib.set_fields(config, {"optimizer.nme": "sgd"})
    with pytest.raises(KeyError, match="no field 'optimiser' under the top level"):
        configlib.set_fields(config, {"optimiser.name": "sgd"})
    with pytest.raises(KeyError, match="no field 'x' under optimizer.name; valid names: none"):
        configlib.set_fields(config, {"optimizer.name.x": 1})
    with pytest.raises(TypeError, match="base_lr"):
        configlib.set_fields(config, {"optimizer.base_lr": "fast"})
    assert "nme" not in config.optimizer and config.optimizer.name == "sgd"

def test_config_flags_with_a_misspelt_field_name_it_and_the_valid_names():
    pretrain = os.path.join(ROOT, "configs", "pretrain.py")
    configlib.check_config_flags([f"--config={pretrain}:demo", "--config.knn.k=5", "--config.rho=4"])
    configlib.check_config_flags(["--config", f"{pretrain}:k400_r50", "--config.data.augmentation.crop_size", "64"])
    with pytest.raises(ValueError, match="^--config.knn.kk: no field 'kk' under knn; valid names: k, pool, temperature$"):
        configlib.check_config_flags([f"--config={pretrain}:demo", "--config.knn.kk=5"])
    with pytest.raises(ValueError, match="--config.init_from: no field 'init_from' under the top level; valid names: "
                                         "auxiliary, batch_size, byol,"):
        configlib.check_config_flags(["--config", pretrain, "--workdir=x", "--config.init_from=runs/a"])
    with pytest.raises(ValueError, match="^--config.auxiliary.nope.weight: no field 'nope' under auxiliary; valid "
                                         "names: arrow_of_time, background_erasing, dsm$"):
        configlib.check_config_flags([f"--config={pretrain}:demo", "--config.auxiliary.nope.weight=1"])
    configlib.check_config_flags([f"--config={pretrain}:demo", "--config.auxiliary.arrow_of_time.weight=0.1"])
    configlib.check_config_flags([f"--config={os.path.join(ROOT, 'configs', 'eval.py')}:knn", "--config.init_from=a"])
    configlib.check_config_flags(["--config=no/such/file.py", "--config.kk=1"])  # left to ml_collections' error


@pytest.mark.parametrize("preset", ["demo", "k400_r50"])
def test_every_framework_has_its_recipe_and_builds(preset):
    names = sorted(set(objectives.FRAMEWORKS) - {"supervised", "detection"})  # the fine-tuning objectives
    assert names == ["byol", "cmd", "dsm", "moco", "simclr", "swav"]  # the config's own list, see the bad-arguments test
    for name in names:
        config = _get_config(f"{preset},framework={name}")
        # PySlowFast's pairing in the recipe: every other clip for BYOL/MoCo, consecutive clips for SimCLR/SwAV
        # (DSM's triplets pair each clip with the next of its video: no pairing field)
        official = "consecutive" if preset == "k400_r50" and name in ("simclr", "swav") else "all"
        assert config.framework == name and config[name].get("pairing", "all") == official
        # PySlowFast's contrastive configs keep ZERO_INIT_FINAL_BN off; the demo keeps it on
        assert config.model.zero_init_residual == (preset == "demo")
        assert objectives.base.backbone_from_config(config).zero_init_residual == (preset == "demo")
        objectives.create_framework(config, total_steps=100, steps_per_epoch=10)  # validates the block
        opt = config.optimizer
        assert opt.base_batch_size == 512 and opt.momentum == 0.9 and opt.nesterov
        if name == "moco" and preset == "k400_r50":
            assert opt.name == "sgd" and opt.weight_decay == 1e-4
            assert config.batch_size % config.moco.bn_groups == 0
        elif name == "cmd" and preset == "k400_r50":  # CMD's own: SGD, 5e-4 × batch, weight decay 1e-3
            assert (opt.name, opt.base_lr, opt.weight_decay) == ("sgd", 0.256, 1e-3)
        else:
            assert (opt.name, opt.base_lr, opt.weight_decay, opt.trust_coefficient) == ("lars", 4.8, 1e-6, 0.001)
    moco, simclr, swav = (_get_config(f"{preset},framework={n}") for n in ("moco", "simclr", "swav"))
    for block in (moco.moco, simclr.simclr, swav.swav):
        assert block.temperature == 0.1
    assert moco.moco.base_momentum == (0.99 if preset == "demo" else 0.994)
    assert (swav.swav.epsilon, swav.swav.sinkhorn_iterations, swav.swav.num_prototypes) == (0.05, 3, 1000)
    if preset == "k400_r50":
        assert (swav.swav.freeze_prototypes_epochs, swav.swav.queue_size) == (1.0, 0)  # the recipe: no queue
        assert moco.optimizer.base_lr == 0.4 and moco.optimizer.warmup_epochs == 35.0
        assert moco.moco.queue_size == 65536 and moco.batch_size // moco.moco.bn_groups == 8
        # PySlowFast's queue fill: no update in the first 65536 // 512 = 128 steps
        assert objectives.create_framework(moco, total_steps=93600, steps_per_epoch=468.0).queue_fill_steps == 128
        for block in (moco.moco, simclr.simclr, swav.swav):
            assert (tuple(block.projector_hidden), block.projector_out) == ((2048, 2048), 128)
    else:
        assert moco.rho == simclr.rho == swav.rho == 2
        assert moco.optimizer.name == "lars" and moco.moco.queue_size == 0  # batch negatives, see the config
        assert (swav.swav.freeze_prototypes_epochs, swav.swav.queue_size) == (math.inf, 1024)
        for block in (moco.moco, simclr.simclr, swav.swav):
            assert (tuple(block.projector_hidden), block.projector_out) == ((512, 512), 128)
