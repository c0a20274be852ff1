"""Writes a PNG grid of the ρ clips the model is fed, for a few videos.

    python -m stjax.data.show --config configs/pretrain.py:demo --out clips.png [--num_videos 4]
    python -m stjax.data.show --config configs/eval.py:ava --out keyframes.png   # detection: clips with boxes
    python -m stjax.data.show --config configs/pretrain.py:demo --scene_ops --out scene_ops.png  # BE / DSM
    python -m stjax.data.show --config configs/pretrain.py:demo,framework=cmd --out cmd.png  # + cmd_motion.png

One row per clip (ρ rows per video), one column per frame; each row is labelled
with the video's class and the clip's start time in seconds. For a dataset of person boxes (label type
`boxes`) the rows are keyframes' training clips (`stjax.data.keyframes`: scaled, cropped, flipped) with
each valid box drawn on every frame and its actions written on the keyframe's frame. With `--scene_ops`, a few
training clips each with BE's and DSM's transforms of it (`stjax.data.scene_ops`), one row each. A config whose
`data.inputs` names the compressed-stream inputs (CMD's) also writes `<out>_motion.png`: per video its first clip,
the clip's keyframe and its motion windows (the future one, then the negatives) as colour-coded motion fields
(hue: direction, brightness: speed).
"""
from __future__ import annotations

import math
import os

from absl import app, flags, logging
from ml_collections import config_flags


def _save(fig, path: str, title: str, dpi: int = 110) -> None:
    """Titles, lays out, writes (creating the folder) and closes a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


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
    _save(fig, path, title)


def motion_colours(motion):
    """int8 [..., h, w, 2] motion (quarter pixels per frame) → uint8 [..., h, w, 3]: hue = direction (red:
    rightwards, then counter-clockwise on screen through yellow-green: upwards), brightness = speed (full at
    the largest speed in `motion`), as optical flow is usually drawn."""
    import numpy as np
    from matplotlib.colors import hsv_to_rgb

    v = np.asarray(motion, np.float32) / 4.0
    dx, dy = v[..., 0], v[..., 1]
    speed = np.hypot(dx, dy)
    hue = (np.arctan2(-dy, dx) / (2 * np.pi)) % 1.0  # y grows downwards on screen
    value = speed / max(float(speed.max()), 1e-6)
    return (hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1)) * 255).round().astype(np.uint8)


def render_motion_png(batch: dict, class_names, path: str, title: str = "") -> None:
    """batch: {'clips' uint8 [N, ρ, T, S, S, 3], 'keyframe' uint8 [N, ρ, S, S, 3], 'motion' int8
    [N, ρ, 1+K, T_m, m, m, 2], 'label'} → PNG: per video, clip 0's frames, its keyframe, its future motion
    window and the K negatives (`motion_colours`, each upsampled to S pixels)."""
    import matplotlib

    from stjax.data import targets

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    clips, motion = np.asarray(batch["clips"]), np.asarray(batch["motion"])
    n, s = clips.shape[0], clips.shape[3]
    windows, m = motion.shape[2], motion.shape[4]
    up = max(1, s // m)
    rows = []
    for v in range(n):
        rows.append((targets.label_text(batch["label"][v], class_names) + "\nclip 0, keyframe",
                     np.concatenate([*clips[v, 0], np.full((s, 4, 3), 255, np.uint8), batch["keyframe"][v, 0]],
                                    axis=1)))
        colours = motion_colours(motion[v, 0]).repeat(up, axis=2).repeat(up, axis=3)  # [1+K, T_m, S, S, 3]
        for j in range(windows):
            rows.append(("future motion" if j == 0 else f"negative {j}", np.concatenate(list(colours[j]), axis=1)))
    width = max(r[1].shape[1] for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, width / 60), 0.9 * len(rows) + 0.6), squeeze=False)
    for ax, (label, image) in zip(axes[:, 0], rows):
        ax.imshow(image, interpolation="nearest")
        ax.set_xlim(0, width)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    _save(fig, path, title)


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
    _save(fig, path, title, dpi=130)


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
    stream_inputs = tuple(config.data.get("inputs", ()))
    ds = pipeline.pretrain_dataset(
        config.data.dataset, batch_size=num_videos, clips=clips,
        augmentation=data_config.augment_config(config), seed=config.seed,
        split=split or config.data.train_split, data_dir=config.data.data_dir,
        shuffle_buffer=config.data.shuffle_buffer, inputs=stream_inputs, motion=data_config.motion_spec(config),
    )
    batch = next(iter(ds.as_numpy_iterator()))
    names = builders.class_names(builders.load_builder(config.data.dataset, config.data.data_dir))
    timespan = "unbounded" if math.isinf(clips.max_timespan) else f"{clips.max_timespan:g} s"
    title = (f"{config.data.dataset}: rho={clips.rho}, T={clips.num_frames}, stride={clips.stride}, "
             f"max timespan={timespan}, crop={config.data.augmentation.crop_size}")
    render_clips_png(batch, names, out_path, title)
    if "motion" in batch and "keyframe" in batch:
        spec = data_config.motion_spec(config)
        render_motion_png(batch, names, os.path.splitext(out_path)[0] + "_motion.png",
                          f"{config.data.dataset}: motion {spec.future_interval} frames after the clip, "
                          f"{spec.future_frames} frames, {spec.num_negatives} negatives; keyframe within "
                          f"{spec.keyframe_window} frames")
    return out_path


def scene_op_settings(config) -> dict:
    """The scene transforms' settings: `config.auxiliary.background_erasing` / `.dsm` where the config has
    them, else the defaults of `stjax.data.scene_ops` (the official code's)."""
    from stjax.data import scene_ops

    settings = {"max_lambda": 0.3, "per_clip": False, "num_points": scene_ops.SLD_POINTS,
                "centre": scene_ops.SLD_CENTRE, "shift": scene_ops.SLD_SHIFT, "insert_rounds": 2, "swap_rounds": 2}
    auxiliary = config.get("auxiliary", None) if hasattr(config, "get") else None
    for block in ("background_erasing", "dsm"):
        values = auxiliary.get(block, None) if auxiliary is not None else None
        for name in settings:
            if values is not None and name in values:
                settings[name] = values[name]
    return settings


def apply_scene_ops(clips, seed: int = 0, settings: dict | None = None) -> dict:
    """uint8 clips [N, T, H, W, 3] → {'background_erasing', 'spatial_local_disturbance',
    'temporal_local_disturbance': uint8 [N, T, H, W, 3], 'draws': {op: its draws, NumPy}}: each clip's draws from
    `scene_ops.*_draws` (key `seed`), applied by the JAX ops to the clips as float, rounded back to uint8."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stjax.data import scene_ops

    s = dict(scene_op_settings({}), **(settings or {}))
    clips = np.asarray(clips)
    n, t, h, w = clips.shape[:4]
    be_rng, sld_rng, tld_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    draws = {"background_erasing": scene_ops.background_erasing_draws(be_rng, (n,), t, s["max_lambda"],
                                                                      s["per_clip"]),
             "spatial_local_disturbance": scene_ops.sld_draws(sld_rng, (n,), h, w, s["num_points"], s["centre"],
                                                              s["shift"]),
             "temporal_local_disturbance": scene_ops.tld_draws(tld_rng, (n,), t, s["insert_rounds"],
                                                               s["swap_rounds"])}
    x = jnp.asarray(clips, jnp.float32)
    ops = {"background_erasing": scene_ops.background_erase,
           "spatial_local_disturbance": scene_ops.spatial_local_disturbance,
           "temporal_local_disturbance": scene_ops.temporal_local_disturbance}
    out = {name: np.asarray(jnp.round(jnp.clip(op(x, **draws[name]), 0, 255))).astype(np.uint8)
           for name, op in ops.items()}
    out["draws"] = {name: {k: np.asarray(v) for k, v in d.items()} for name, d in draws.items()}
    return out


def render_scene_ops_png(clips, path: str, title: str = "", seed: int = 0, settings: dict | None = None,
                         labels=None) -> None:
    """uint8 clips [N, T, H, W, 3] → PNG: per clip the rows "original", "background erasing (λ, k)", "spatial
    local disturbance" (+: the warp points c + s) and "temporal local disturbance (the frames shown)", its frames
    across (`apply_scene_ops` with `seed`); `labels` [N] strings name the clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    clips = np.asarray(clips)
    n, t, h, w = clips.shape[:4]
    result = apply_scene_ops(clips, seed, settings)
    draws = result["draws"]
    fig, axes = plt.subplots(4 * n, 1, figsize=(0.9 * t + 2.4, 0.95 * 4 * n + 0.6), squeeze=False)
    for v in range(n):
        be, sld, tld = (draws[k] for k in ("background_erasing", "spatial_local_disturbance",
                                           "temporal_local_disturbance"))
        active = np.flatnonzero(sld["active"][v])
        frames = " ".join(str(int(i)) for i in tld["indices"][v])
        rows = [("original", clips[v]),
                (f"background erasing\n(λ={float(be['lam'][v]):.2f}, k={int(be['frame'][v])})",
                 result["background_erasing"][v]),
                (f"spatial local disturbance\n({len(active)} point{'s' if len(active) != 1 else ''})",
                 result["spatial_local_disturbance"][v]),
                (f"temporal local disturbance\n(frames {frames})", result["temporal_local_disturbance"][v])]
        for r, (caption, row) in enumerate(rows):
            ax = axes[4 * v + r, 0]
            ax.imshow(np.concatenate(list(row), axis=1), interpolation="nearest")
            if r == 2:  # where each active warp pushes the content to, on every frame
                points = sld["centres"][v][active] + sld["shifts"][v][active]
                for j in range(t):
                    ax.plot(points[:, 0] + j * w, points[:, 1], "+", color="yellow", markersize=5, markeredgewidth=0.7)
                ax.set_xlim(-0.5, t * w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and labels is not None:
                caption = f"{labels[v]}\n{caption}"
            ax.set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=7)
    _save(fig, path, title)


def show_scene_ops(config, out_path: str, num_videos: int = 3, split: str | None = None, seed: int = 0) -> str:
    """Builds the data if needed, takes the first training clip of `num_videos` examples (a keyframe's clip for
    a dataset of person boxes) and writes `render_scene_ops_png` of them (draws from `seed`; settings from
    `scene_op_settings(config)`)."""
    from stjax.data import builders, inputs, keyframes, pipeline, targets
    from stjax.data import config as data_config

    split = split or config.data.train_split
    needed = [inputs.Needed("split", split, "show_scene_ops reads it")]
    if builders.label_type(config.data.dataset) == "boxes":
        data_config.ensure_built(config, splits=needed)
        ds = keyframes.train_dataset(config.data.dataset, batch_size=num_videos,
                                     spec=keyframes.spec_from_config(config), seed=config.seed, split=split,
                                     data_dir=config.data.data_dir, shuffle_buffer=config.data.shuffle_buffer)
        batch = next(iter(ds.as_numpy_iterator()))
        labels = [f"keyframe {i}" for i in range(num_videos)]
    else:
        data_config.validate(config, needed)
        data_config.ensure_built(config, splits=needed)
        ds = pipeline.pretrain_dataset(
            config.data.dataset, batch_size=num_videos, clips=data_config.clip_spec(config),
            augmentation=data_config.augment_config(config), seed=config.seed, split=split,
            data_dir=config.data.data_dir, shuffle_buffer=config.data.shuffle_buffer)
        batch = next(iter(ds.as_numpy_iterator()))
        names = builders.class_names(builders.load_builder(config.data.dataset, config.data.data_dir))
        labels = [targets.label_text(label, names) for label in batch["label"]]
    clips = batch["clips"][:, 0]
    settings = scene_op_settings(config)
    title = (f"{config.data.dataset}: BE max λ={settings['max_lambda']:g}; DSM points {tuple(settings['num_points'])}"
             f", {settings['insert_rounds']} insert + {settings['swap_rounds']} swap rounds (seed {seed})")
    render_scene_ops_png(clips, out_path, title, seed, settings, labels)
    return out_path


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    if f.scene_ops:
        path = show_scene_ops(f.config, f.out, f.num_videos, f.split, seed=f.config.seed)
    else:
        path = show_clips(f.config, f.out, f.num_videos, f.split)
    print(f"wrote {path}")


if __name__ == "__main__":
    # Defined here, not at import, so that importing this module defines no flags.
    config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain.py:demo")
    flags.DEFINE_string("out", "clips.png", "PNG file to write")
    flags.DEFINE_integer("num_videos", 4, "how many videos to show")
    flags.DEFINE_string("split", None, "split to show (default: config.data.train_split)")
    flags.DEFINE_bool("scene_ops", False, "show BE's and DSM's clip transforms of a few training clips instead")
    flags.mark_flags_as_required(["config"])
    app.run(main)
