"""Writes a PNG grid of the ρ clips the model is fed, for a few videos.

    python -m stjax.data.show --config configs/pretrain.py:demo --out clips.png [--num_videos 4]
    python -m stjax.data.show --config configs/eval.py:ava --out keyframes.png   # detection: clips with boxes

One row per clip (ρ rows per video), one column per frame; each row is labelled
with the video's class and the clip's start time in seconds. For a dataset of person boxes (label type
`boxes`) the rows are keyframes' training clips (`stjax.data.keyframes`: scaled, cropped, flipped) with
each valid box drawn on every frame and its actions written on the keyframe's frame.
"""
from __future__ import annotations

import math
import os

from absl import app, flags, logging
from ml_collections import config_flags


def render_clips_png(batch: dict, class_names, path: str, title: str = "") -> None:
    """batch: {'clips': uint8 [N, ρ, T, S, S, 3], 'label': [N] or multi-hot [N, C], 'clip_starts': [N, ρ]}
    → PNG."""
    import matplotlib

    from stjax.data import targets

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    clips = np.asarray(batch["clips"])
    n, rho, t, s = clips.shape[:4]
    fig, axes = plt.subplots(n * rho, 1, figsize=(max(4.0, 0.9 * t), 0.95 * n * rho + 0.6), squeeze=False)
    for v in range(n):
        for r in range(rho):
            ax = axes[v * rho + r, 0]
            ax.imshow(np.concatenate(list(clips[v, r]), axis=1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            name = targets.label_text(batch["label"][v], class_names)
            label = f"{name}\nclip {r}  t={float(batch['clip_starts'][v, r]):.2f}s" if r == 0 else \
                f"clip {r}  t={float(batch['clip_starts'][v, r]):.2f}s"
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_keyframes_png(batch: dict, class_names, path: str, title: str = "") -> None:
    """batch: the keyframe pipeline's {'clips': uint8 [N, 1, T, S, S, 3], 'boxes' [N, M, 4] in [0, 1],
    'box_mask' [N, M], 'label' [N, M, C]} → PNG: one row per keyframe, the boxes drawn on every frame."""
    import matplotlib

    from stjax.data import targets

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt
    import numpy as np

    clips = np.asarray(batch["clips"])[:, 0]
    n, t, h, w = clips.shape[:4]
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(n, t, figsize=(max(4.0, 1.1 * t), 1.2 * n + 0.6), squeeze=False)
    for i in range(n):
        for j in range(t):
            ax = axes[i, j]
            ax.imshow(clips[i, j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for k in np.flatnonzero(batch["box_mask"][i]):
                x1, y1, x2, y2 = np.asarray(batch["boxes"][i][k]) * [w, h, w, h]
                ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.0,
                                               edgecolor=colours(k % 10)))
                if j == t // 2:  # the keyframe
                    ax.text(x1, y1, targets.label_text(batch["label"][i][k], class_names), fontsize=5,
                            color="white", backgroundcolor=colours(k % 10), va="bottom")
        axes[i, 0].set_ylabel(f"keyframe {i}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def show_keyframes(config, out_path: str, num_videos: int = 4, split: str | None = None) -> str:
    """`show_clips` for a dataset of person boxes: `num_videos` keyframes' training clips with their boxes."""
    from stjax.data import builders, inputs, keyframes
    from stjax.data import config as data_config

    needed = [inputs.Needed("split", split or config.data.train_split, "show_clips reads it")]
    data_config.ensure_built(config, splits=needed)
    spec = keyframes.spec_from_config(config)
    ds = keyframes.train_dataset(config.data.dataset, batch_size=num_videos, spec=spec, seed=config.seed,
                                 split=split or config.data.train_split, data_dir=config.data.data_dir,
                                 shuffle_buffer=config.data.shuffle_buffer)
    batch = next(iter(ds.as_numpy_iterator()))
    names = builders.class_names(builders.load_builder(config.data.dataset, config.data.data_dir))
    title = (f"{config.data.dataset}: keyframe clips T={spec.num_frames}, stride={spec.stride}, "
             f"crop={spec.crop_size}, box jitter {spec.box_jitter:g}")
    render_keyframes_png(batch, names, out_path, title)
    return out_path


def show_clips(config, out_path: str, num_videos: int = 4, split: str | None = None) -> str:
    """Builds the data if needed, samples `num_videos` training examples, writes the PNG (for a dataset of
    person boxes, `show_keyframes`)."""
    from stjax.data import builders, inputs, pipeline
    from stjax.data import config as data_config

    if builders.label_type(config.data.dataset) == "boxes":
        return show_keyframes(config, out_path, num_videos, split)
    needed = [inputs.Needed("split", split or config.data.train_split, "show_clips reads it")]
    data_config.validate(config, needed)
    data_config.ensure_built(config, splits=needed)
    clips = data_config.clip_spec(config)
    ds = pipeline.pretrain_dataset(
        config.data.dataset, batch_size=num_videos, clips=clips,
        augmentation=data_config.augment_config(config), seed=config.seed,
        split=split or config.data.train_split, data_dir=config.data.data_dir,
        shuffle_buffer=config.data.shuffle_buffer,
    )
    batch = next(iter(ds.as_numpy_iterator()))
    names = builders.class_names(builders.load_builder(config.data.dataset, config.data.data_dir))
    timespan = "unbounded" if math.isinf(clips.max_timespan) else f"{clips.max_timespan:g} s"
    title = (f"{config.data.dataset}: rho={clips.rho}, T={clips.num_frames}, stride={clips.stride}, "
             f"max timespan={timespan}, crop={config.data.augmentation.crop_size}")
    render_clips_png(batch, names, out_path, title)
    return out_path


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    path = show_clips(f.config, f.out, f.num_videos, f.split)
    print(f"wrote {path}")


if __name__ == "__main__":
    # Defined here, not at import, so that importing this module defines no flags.
    config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain.py:demo")
    flags.DEFINE_string("out", "clips.png", "PNG file to write")
    flags.DEFINE_integer("num_videos", 4, "how many videos to show")
    flags.DEFINE_string("split", None, "split to show (default: config.data.train_split)")
    flags.mark_flags_as_required(["config"])
    app.run(main)
