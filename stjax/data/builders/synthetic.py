"""The built-in synthetic video set (see `stjax.data.make_synthetic`) as a TFDS dataset."""
from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from stjax.data.builders.video_folder import VideoFolder, VideoFolderConfig

DEFAULT_VIDEO_DIR = os.path.join(
    os.environ.get("STJAX_DATA_ROOT", os.path.expanduser("~/stjax_data")), "synthetic_videos"
)


class Synthetic(VideoFolder):
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
    ]

    def __init__(self, *, manual_dir: str | None = None, generate_if_missing: bool = False,
                 generator_kwargs: dict | None = None, **kwargs):
        """With `generate_if_missing`, renders the videos into `manual_dir` first (missing ones only), with
        `generator_kwargs` (`make_synthetic.generate`'s arguments), or, without them, with those the folder's
        videos were made with (the generator's defaults for a new folder)."""
        if generate_if_missing:
            from stjax.data import make_synthetic

            manual_dir = manual_dir or DEFAULT_VIDEO_DIR
            meta_path = os.path.join(manual_dir, make_synthetic.META_NAME)
            if generator_kwargs is None and os.path.isfile(meta_path):
                with open(meta_path) as f:
                    generator_kwargs = json.load(f).get("args")
            make_synthetic.generate(manual_dir, **(generator_kwargs or {}))
        super().__init__(manual_dir=manual_dir, **kwargs)
