"""The built-in synthetic video sets (see `stjax.data.make_synthetic`) as TFDS datasets, rendered into their
folder of videos on first use: `synthetic` (one motion class per video), `synthetic_charades` (several
motions one after the other per video, in the Charades v1 layout, built by the `charades` builder's code),
`synthetic_ava` (several objects per video, each with its box and its own actions at 1 Hz keyframes, in the
AVA v2.2 layout, built by the `ava` builder's code) and `synthetic_biased` (the motions set with a
class-typical background in most train videos, independent of the class in test)."""
from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from stjax.data import make_synthetic
from stjax.data.builders.ava import Ava, AvaConfig
from stjax.data.builders.charades import Charades
from stjax.data.builders.video_folder import VideoFolder, VideoFolderConfig

DATA_ROOT = os.environ.get("STJAX_DATA_ROOT", os.path.expanduser("~/stjax_data"))
DEFAULT_VIDEO_DIR = os.path.join(DATA_ROOT, "synthetic_videos")


class Rendered:
    """A builder whose videos `make_synthetic.generate(kind=KIND)` renders into its manual dir (by default
    DEFAULT_VIDEO_DIR) before building, with the generator's arguments `GENERATOR_DEFAULTS` updated by the
    config's `data.synthetic` block (`generator_kwargs`)."""

    KIND = "motions"
    DEFAULT_VIDEO_DIR = DEFAULT_VIDEO_DIR
    GENERATOR_DEFAULTS: dict = {}

    def __init__(self, *, manual_dir: str | None = None, generate_if_missing: bool = False,
                 generator_kwargs: dict | None = None, **kwargs):
        """With `generate_if_missing`, renders the videos into `manual_dir` first (missing ones only), with
        `generator_kwargs` (`make_synthetic.generate`'s arguments), or, without them, with those the folder's
        videos were made with (GENERATOR_DEFAULTS for a new folder)."""
        if generate_if_missing:
            manual_dir = manual_dir or self.DEFAULT_VIDEO_DIR
            make_synthetic.generate(manual_dir, **self.generator_arguments(manual_dir, generator_kwargs))
        super().__init__(manual_dir=manual_dir, **kwargs)

    @classmethod
    def generator_arguments(cls, manual_dir: str, generator_kwargs: dict | None = None) -> dict:
        """The arguments `make_synthetic.generate` renders `manual_dir` with: `generator_kwargs` over
        GENERATOR_DEFAULTS, or without them those its videos were made with (from its meta file)."""
        meta_path = os.path.join(manual_dir, make_synthetic.META_NAME)
        if generator_kwargs is None and os.path.isfile(meta_path):
            with open(meta_path) as f:
                generator_kwargs = json.load(f).get("args")
        args = {**cls.GENERATOR_DEFAULTS, **(generator_kwargs or {})}
        args["kind"] = cls.KIND
        for key in ("segments", "objects"):
            if key in args:
                args[key] = tuple(args[key])
        return args

    @classmethod
    def planned_splits(cls, args: dict) -> dict[str, int]:
        """{split: examples} of the dataset `make_synthetic.generate(**args)` renders and this builder builds:
        here one example per video, `num_train` in train and `num_test` in test; splits without any are left
        out."""
        splits = {"train": int(args["num_train"]), "test": int(args["num_test"])}
        return {split: n for split, n in splits.items() if n > 0}


class Synthetic(Rendered, VideoFolder):
    """Two objects whose motion is the class, with drifting nuisances, stored at their native size.

    The major version follows the generator's (`make_synthetic.VERSION`), so data prepared
    from an older generator is never read by mistake.
    """

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "stjax-synthetic-v1/v2: shape x {bounce, orbit} classes.",
        "3.0.0": "stjax-synthetic-v3: ten motion classes of two objects, 2 s videos.",
    }

    BUILDER_CONFIGS = [
        VideoFolderConfig(name="default", fps=25.0, short_side=None,
                          description="25 fps, stored at the generated size"),
        VideoFolderConfig(name="motion", fps=25.0, short_side=None, motion_vectors=True,
                          description="the default config plus each frame's H.264 motion vectors and key-frame "
                                      "flag (for CMD)"),
    ]


class SyntheticBiased(Rendered, VideoFolder, skip_registration=True):
    """Scene-biased: the motions set (class = how the two objects move, 2 s at 25 fps) where each class has its
    own typical background (hues and texture), which a train video has with probability `bias` (0.8; else
    another class's) and a test video independently of its class (`make_synthetic --kind biased`; each video's
    background class in `backgrounds.json` of the video folder). Stored at the generated size."""

    name = "synthetic_biased"
    KIND = "biased"
    DEFAULT_VIDEO_DIR = os.path.join(DATA_ROOT, "synthetic_biased_videos")
    GENERATOR_DEFAULTS = make_synthetic.BIASED_DEFAULTS
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "stjax-synthetic-biased-v1: the ten motions, class-typical backgrounds in train."}
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", fps=25.0, short_side=None,
                                         description="25 fps, stored at the generated size")]


class SyntheticCharades(Rendered, Charades, skip_registration=True):
    """Charades-like: 2–4 of 9 motion classes per video in consecutive time intervals (multi-label, with
    time-stamped actions), 4 s videos at 24 fps, stored at their native size; read by the `charades` builder's
    code from the Charades v1 layout the generator writes."""

    name = "synthetic_charades"
    KIND = "charades"
    DEFAULT_VIDEO_DIR = os.path.join(DATA_ROOT, "synthetic_charades_videos")
    GENERATOR_DEFAULTS = make_synthetic.CHARADES_DEFAULTS
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "stjax-synthetic-charades-v1: 2–4 motions per 4 s video."}
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", fps=24.0, short_side=None,
                               description="24 fps, stored at the generated size")]


class SyntheticAva(Rendered, Ava, skip_registration=True):
    """AVA-like: 2–3 objects per video, each with its box and its own actions (one movement of stand, orbit,
    shake, bob and, for two in three objects, one change of spin, pulse; AVA action ids 1–6, all evaluated),
    6 s videos at 30 fps with keyframes 902–905, stored at their native size with ±0.6 s around each keyframe
    (enough for 8×2 clips); read by the `ava` builder's code from the AVA v2.2 layout the generator writes.
    Splits `train` and `val` (the generator's `num_test` videos), one example per keyframe."""

    name = "synthetic_ava"
    KIND = "ava"
    DEFAULT_VIDEO_DIR = os.path.join(DATA_ROOT, "synthetic_ava_videos")
    GENERATOR_DEFAULTS = make_synthetic.AVA_DEFAULTS
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "stjax-synthetic-ava-v1: 2–3 objects with their own actions per 6 s video."}
    BUILDER_CONFIGS = [AvaConfig(name="default", fps=30.0, short_side=None, half_window=0.6,
                                 description="30 fps, stored at the generated size, ±0.6 s around each keyframe")]

    @classmethod
    def planned_splits(cls, args: dict) -> dict[str, int]:
        """{split: examples}: one per keyframe (every keyframe has a box), `train` and `val`."""
        keyframes = len(make_synthetic.ava_keyframes(float(args["seconds"])))
        splits = {"train": int(args["num_train"]) * keyframes, "val": int(args["num_test"]) * keyframes}
        return {split: n for split, n in splits.items() if n > 0}


def renders_itself(cls) -> bool:
    """Whether builder class `cls` renders its own videos (then `data.manual_dir` may be left unset)."""
    return isinstance(cls, type) and issubclass(cls, Rendered)
