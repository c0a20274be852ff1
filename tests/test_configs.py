"""configs/pretrain.py: presets, `key=value` arguments, and early, clear errors."""
import importlib.util
import math
import os

import pytest

from stjax.data import config as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get_config(arg):
    spec = importlib.util.spec_from_file_location("pretrain_config", os.path.join(ROOT, "configs", "pretrain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


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


@pytest.mark.parametrize("arg,message", [
    ("demo,rho=0", "rho=0 is invalid; valid values: integers >= 1"),
    ("demo,timespan=-2", "timespan='-2' must be a number of seconds >= 0 or 'inf'"),
    ("demo,timespan=soon", "timespan='soon' must be a number"),
    ("demo,rhoo=2", "unknown config argument 'rhoo'; valid arguments: backbone, batch_size, dataset, epochs, framework, rho, seed, timespan"),
    ("tiny", "unknown preset 'tiny'; valid presets: demo, k400_r50"),
    ("demo,rho=two", "rho='two' must be of type int"),
])
def test_bad_arguments_name_the_field(arg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _get_config(arg)


def test_bad_fields_fail_validation():
    config = _get_config("demo,dataset=kinetics9000")
    with pytest.raises(ValueError, match="data.dataset='kinetics9000' is invalid; valid values: synthetic, video_folder"):
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
