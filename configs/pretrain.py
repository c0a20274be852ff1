"""Pretraining config: `--config configs/pretrain.py:PRESET,key=value,...`.

Presets:
  demo      tiny, CPU-friendly, on the built-in synthetic videos.
  k400_r50  the paper recipe on Kinetics-400 (Slow R-50 8×8, 224² crops).

Arguments: framework=byol|moco|simclr|swav|dsm|cmd, rho=N (clips per video; 1 = two
crops of one clip), timespan=SECONDS|inf (largest gap between clip starts),
backbone=NAME, sampling=TxS (T frames at stride S, e.g. 16x4 for Slow R-50 16×4),
dataset=NAME[/CONFIG], batch_size=N (global), epochs=N, seed=N,
auxiliary=NAME[+NAME...]|none (auxiliary terms added to the framework at weight 1.0, e.g.
auxiliary=background_erasing for ρ+BE; `--config.auxiliary.NAME.weight=W` for another weight).

`model.dtype=bfloat16` computes the backbone in bf16 (parameters stay float32),
`model.remat=True` recomputes each residual block's activations in the backward
pass for less memory: `model.remat_policy=blocks` recomputes whole blocks (~1/4 more
FLOPs), `conv_outputs` keeps the convolutions' outputs and recomputes only
BatchNorm/ReLU (see stjax/models/resnet3d.py), `model.lowering` picks how 3D
convolutions are computed (auto|native|conv2d_sum|conv2d_concat|conv2d_time; see
stjax/models/conv.py), `model.batch_norm` the BatchNorm implementation (fused|flax;
same variables, see stjax/models/norm.py), `model.init_from=PATH` starts the
backbone from an exported or PySlowFast/torchvision checkpoint (see
`python -m stjax.export`).

Each framework has its block (`config.byol`, `config.moco`, `config.simclr`,
`config.swav`; the paper recipe, REFERENCE.md; `config.dsm`; `config.cmd`, CMD's
official defaults, stjax/objectives/cmd.py) and its optimiser: LARS for
BYOL/SimCLR/SwAV, SGD for MoCo and CMD (in k400_r50; the demo uses LARS for all).
framework=cmd also asks the pipeline for its inputs (`data.inputs`: future motion
windows and keyframes, shaped by `data.motion`) and, in the demo, takes the
synthetic set stored with motion vectors (`synthetic/motion`).
Choose the framework with the `framework=` argument, which also selects its
optimiser; `--config.framework=...` alone changes the framework but not the
optimiser.

Learning rates are given at `optimizer.base_batch_size` and scaled linearly to
`batch_size` (see stjax/train/optimizer.py).
Any field can also be overridden with `--config.a.b=value`.
"""
import math

import ml_collections
from ml_collections.config_dict import placeholder  # None, but typed: settable with --config.a.b=...

from stjax import configlib

PRESETS = ("demo", "k400_r50")
FRAMEWORKS = ("byol", "moco", "simclr", "swav", "dsm", "cmd")  # names registered in stjax.objectives.FRAMEWORKS


def get_config(arg=None):
    args = configlib.parse_arg(arg, PRESETS, framework=str, rho=int, timespan=str, backbone=str, sampling=str,
                               dataset=str, batch_size=int, epochs=float, seed=int, auxiliary=str)
    config = ml_collections.ConfigDict()
    config.preset = args["preset"]
    config.seed = args.get("seed", 0)
    config.framework = args.get("framework", "byol")
    configlib.require_choice("framework", config.framework, FRAMEWORKS)
    config.model = ml_collections.ConfigDict(dict(dtype="float32", remat=False, remat_policy="blocks", lowering="auto",
                                                   batch_norm="fused", init_from=""))
    config.model.stem_pad_channels = placeholder(int)  # None: 8 on GPUs, none elsewhere (ResNet3D.stem_pad_channels)
    # The last BN scale of each residual branch starts at 0 (every block the identity at step 0). PySlowFast's
    # contrastive configs keep RESNET.ZERO_INIT_FINAL_BN at its default, False: so does k400_r50.
    config.model.zero_init_residual = True
    config.log_every = 20
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    # LARS, the paper recipe for ρBYOL (REFERENCE.md): 4.8 at 512 videos, scaled linearly.
    config.optimizer = ml_collections.ConfigDict(dict(
        name="lars", base_lr=4.8, base_batch_size=512, warmup_epochs=35.0, weight_decay=1e-6,
        momentum=0.9, nesterov=True, trust_coefficient=0.001,
        # after the warm-up: "cosine" to 0 at the last step, or "steps": ×decay_factor at each of decay_epochs
        schedule="cosine", decay_epochs=(), decay_factor=0.1,
    ))
    # ρBYOL heads and target momentum, the paper recipe.
    config.byol = ml_collections.ConfigDict(dict(
        projector_hidden=(4096,), projector_out=256, predictor_hidden=(4096,),
        base_momentum=0.996, pairing="all",
    ))
    # ρMoCo, the paper recipe: 3-layer MLP without BN, key encoder momentum 0.994 → 1 (cosine), queue of
    # 65536 keys (all ρ keys of a step enqueued); BN statistics in `bn_groups` groups with the key batch
    # shuffled (MoCo's shuffle-BN; must divide batch_size; see stjax/objectives/moco.py).
    config.moco = ml_collections.ConfigDict(dict(
        projector_hidden=(2048, 2048), projector_out=128, temperature=0.1, base_momentum=0.994,
        queue_size=65536, bn_groups=8, pairing="all",
    ))
    # No optimiser update in the first steps while the queue fills with real keys; None: PySlowFast's rule,
    # queue_size // batch_size steps within the first epoch (128 at 65536 keys and 512 videos); 0: none.
    config.moco.queue_fill_steps = placeholder(int)
    # ρSimCLR, the paper recipe: 3-layer MLP with BN, NT-Xent over the global batch. pairing: "all" is the
    # paper's general form, "consecutive" PySlowFast's (one 2B-sample NT-Xent per pair (k, k+1), summed);
    # the same at ρ = 2. Likewise for ρSwAV. ρBYOL and ρMoCo's official form is "all".
    config.simclr = ml_collections.ConfigDict(dict(
        projector_hidden=(2048, 2048), projector_out=128, temperature=0.1, pairing="all",
    ))
    # ρSwAV, the paper recipe: 3-layer MLP with BN, 1000 unit-norm prototypes, Sinkhorn codes
    # (ε = 0.05, 3 iterations) over the global batch, prototypes frozen in the first epoch, no queue
    # (queue_size=0; SwAV's small-batch queue of past projections is an option, see stjax/objectives/swav.py).
    config.swav = ml_collections.ConfigDict(dict(
        projector_hidden=(2048, 2048), projector_out=128, num_prototypes=1000, temperature=0.1,
        epsilon=0.05, sinkhorn_iterations=3, freeze_prototypes_epochs=1.0, pairing="all",
        queue_size=0, queue_start_epochs=15.0,
    ))
    # DSM alone (its official triplet form, stjax/objectives/dsm.py): a 128-d linear projection, margin 0.5,
    # the spatial / temporal local disturbances' defaults (the same block as auxiliary.dsm, less the weight).
    config.dsm = ml_collections.ConfigDict(dict(
        projector_out=128, margin=0.5, num_points=(1, 3), centre=(60 / 224, 140 / 224), shift=(10 / 224, 20 / 224),
        insert_rounds=2, swap_rounds=2,
    ))
    # CMD, Context and Motion Decoupling (stjax/objectives/cmd.py), the official defaults: τ 0.1; a DETR-style
    # motion predictor of hidden size 512, 8 heads, FFN 512, 2 encoder / 4 decoder layers, dropout 0.1; heads
    # 2048→512; the target motion map pooled to 7×7 tokens; motion clamped to ±10 px per frame; both tasks at
    # weight 1; 3D ResNet-10 on the 2-channel motion, 2D ResNet-10 on the keyframe; the predictor reads the
    # last stage plus a skip from the one before (skip=True). Its inputs: data.motion.
    config.cmd = ml_collections.ConfigDict(dict(
        temperature=0.1, hidden_dim=512, heads=8, ffn_dim=512, encoder_layers=2, decoder_layers=4, dropout=0.1,
        head_hidden=2048, head_out=512, motion_grid=(7, 7), mv_clip=10.0, weight_motion=1.0, weight_context=1.0,
        motion_backbone="r3d10_2ch", keyframe_backbone="r2d10", skip=True,
    ))
    config.probe = ml_collections.ConfigDict(dict(
        epochs=100, batch_size=256, learning_rate=0.1, warmup_epochs=5, weight_decay=0.0, standardize=True,
        pool="mean",  # a video's test-view features: averaged ("mean") or their per-feature "max"
    ))
    # Which backbones get that probe when pretraining ends: "both" (the pretrained one and the same
    # architecture at random init), "pretrained", or "none". summary.json's linear_* fields are None
    # for a backbone not probed.
    config.final_probe = "both"
    # Every `eval_every` steps (0: never) a weighted kNN of the backbone's frozen features (test split
    # against train split) is logged as knn_top1 / knn_top5: the learning curve of the representation.
    config.eval_every = 0
    config.knn = ml_collections.ConfigDict(dict(k=200, temperature=0.07, pool="mean"))
    # Auxiliary terms added to the framework's loss, each with its weight (0: off), e.g.
    # `--config.auxiliary.arrow_of_time.weight=0.1`; one block per term of stjax.objectives.auxiliary.AUXILIARY.
    # background_erasing (BE) and dsm (its triplet form) with the official defaults: ρMoCo + BE is
    # `--config.framework=moco --config.auxiliary.background_erasing.weight=1.0`.
    config.auxiliary = ml_collections.ConfigDict(dict(
        arrow_of_time=dict(weight=0.0),
        background_erasing=dict(weight=0.0, max_lambda=0.3, per_clip=False),
        dsm=dict(weight=0.0, margin=0.5, num_points=(1, 3), centre=(60 / 224, 140 / 224), shift=(10 / 224, 20 / 224),
                 insert_rounds=2, swap_rounds=2)))

    data = config.data = ml_collections.ConfigDict()
    data.data_dir = placeholder(str)   # default: $STJAX_DATA_ROOT/tfds (~/stjax_data/tfds)
    data.manual_dir = placeholder(str) # the videos, for building when missing
    data.train_split = "train"
    data.eval_split = "test"
    data.shuffle_buffer = 1024
    data.deterministic = True
    # The training stream is defined over this many slices of the split (0: one per process), each process
    # reading its share: the same batches on any number of processes that divides it (see docs/scale-out.md).
    data.num_shards = 0
    # Where the per-clip flip / colour jitter / grayscale / blur run: "host" (tf.data) or "device" (in the
    # train step, from draws the pipeline sends along; the same clips within one uint8 level, half the host's
    # work per clip). The demo keeps them on the host: on a CPU-only machine the device is the same CPU.
    data.augment_on = "host"
    # A training clip's target: "video" (its video's label) or "window" (for datasets with time-stamped actions,
    # e.g. Charades: the classes whose actions overlap the clip's time window).
    data.clip_labels = "video"
    # More per-clip inputs from a dataset stored with motion vectors (stjax/data/motion_inputs.py): "motion"
    # (the future motion window and its negatives), "keyframe" (an I-frame near the clip); framework=cmd sets
    # both. `data.motion` says how they are drawn: T_m frames starting future_interval frames after the clip,
    # num_negatives other windows of the video, the motion grid's block (pixels), the keyframe window (frames).
    data.inputs = ("motion", "keyframe") if config.framework == "cmd" else ()
    data.motion = ml_collections.ConfigDict(dict(future_frames=8, future_interval=2, num_negatives=3, block=4,
                                                 keyframe_window=5))
    from stjax.data import augment_ops  # the ops' declarations only: neither TensorFlow nor JAX

    aug = data.augmentation = ml_collections.ConfigDict()
    # The random resized crop (always on the host), then the per-clip ops in the order they run: the paper
    # recipe's ("flip", "color_jitter", "grayscale", "blur"); an op left out is off. Each registered op's
    # settings follow with the recipe's values (stjax/data/augment_ops.py: flip_prob, color_jitter_prob,
    # brightness, contrast, saturation, hue, grayscale_prob, blur_prob, blur_sigma_range in pixels at crop
    # resolution), e.g. --config.data.augmentation.ops="('flip','blur')" --config.data.augmentation.blur_prob=1.
    aug.area_range = (0.2, 0.766)
    aug.aspect_range = (3 / 4, 4 / 3)
    aug.ops = augment_ops.DEFAULT_OPS
    for name, value in augment_ops.default_settings().items():
        aug[name] = value
    views = data.test_views = ml_collections.ConfigDict()
    views.short_side = placeholder(int)  # resize before cropping; None = crop_size (crops span the short side)

    if config.preset == "demo":
        data.dataset = "synthetic"
        # Rendered into data.manual_dir (default ~/stjax_data/synthetic_videos) on first use.
        data.synthetic = ml_collections.ConfigDict(
            dict(num_train=1600, num_test=500, size=64, seconds=2.0, fps=25.0, seed=0)
        )
        data.num_frames = 8
        data.stride = 2               # 8 frames over 0.6 s at 25 fps
        aug.crop_size = 56
        aug.blur_sigma_range = (0.1, 0.5)  # the recipe's range scaled to 56-px crops
        config.rho = 2
        config.batch_size = 32
        config.num_epochs = 10.0          # 500 steps of 32 videos
        config.eval_batch_size = 64
        config.model.backbone = "r3d_tiny"
        config.byol.update(projector_hidden=(512,), projector_out=128, predictor_hidden=(512,),
                           base_momentum=0.99)
        # Heads at the scale of BYOL's demo heads.
        # ρSwAV with 32 videos per step: Sinkhorn over the batch alone spreads every code over >= K/32
        # prototypes and the predictions collapse to uniform (loss pinned at ln K, linear probe 0.16, with
        # K = 16, 100 or 1000). The demo keeps the recipe's 1000 prototypes and adds SwAV's small-batch queue
        # (1024 past projections per clip, from the first step) with the prototypes fixed at their random
        # initialisation for the whole run (SwAV's authors' advice: freeze them longer); measured 0.320
        # against 0.224 (frozen, no queue) and 0.214 (queue from epoch 1, frozen 1 epoch; collapsed again
        # by step 300). Issue 4 has the runs.
        # ρMoCo: in 500 steps every queue tried (64 to 4096 keys; key momentum 0 to 0.999; SGD or LARS) let
        # the embeddings collapse (best linear probe 0.198). The demo takes the other videos' keys of the
        # batch as negatives instead (moco.queue_size=0, MoCo v3's form) and the LARS block the other
        # frameworks use (measured 0.290; with the recipe's SGD at 4× its rate, 0.222). 4 BN groups of 8 videos.
        config.moco.update(projector_hidden=(512, 512), projector_out=128, base_momentum=0.99, queue_size=0,
                           bn_groups=4)
        config.simclr.update(projector_hidden=(512, 512), projector_out=128)
        # CMD at CPU scale: a 64-wide predictor (1 encoder / 2 decoder layers), heads 256→128, 4×4 motion tokens,
        # micro encoders, no dropout; on the synthetic set stored with motion vectors.
        config.cmd.update(hidden_dim=64, heads=4, ffn_dim=128, encoder_layers=1, decoder_layers=2, dropout=0.0,
                          head_hidden=256, head_out=128, motion_grid=(4, 4), motion_backbone="r3d_micro_2ch",
                          keyframe_backbone="r2d_micro")
        if config.framework == "cmd":
            data.dataset = "synthetic/motion"
        config.swav.update(projector_hidden=(512, 512), projector_out=128, queue_size=1024, queue_start_epochs=0.0,
                           freeze_prototypes_epochs=math.inf)
        config.optimizer.warmup_epochs = 1.0
        config.log_every = 10
        config.checkpoint_every = 100
        views.temporal, views.spatial = 1, 1
        views.short_side = 64         # centre 56 of 64: area 0.766, the top of the training crop range
    else:  # k400_r50, the paper recipe
        # Kinetics in class-per-folder layout, built with
        # `python -m stjax.data.build --dataset video_folder --config kinetics400 --manual_dir DIR`.
        data.dataset = "video_folder/kinetics400"
        data.num_frames = 8
        data.stride = 8
        aug.crop_size = 224
        config.rho = 2
        config.batch_size = 512
        config.num_epochs = 200.0
        config.eval_batch_size = 64
        config.model.backbone = "slow_r50"
        data.augment_on = "device"
        views.temporal, views.spatial = 10, 3
        # The official run normalised MoCo's BN per GPU: 8 videos on each of 64 GPUs. Keep
        # batch_size / moco.bn_groups = 8 when changing batch_size.
        config.moco.bn_groups = 64
        # No probe at the end: it would extract 30-view features of Kinetics' ~240k train videos twice
        # (pretrained, random init), and it is not the paper's protocol, which is
        # `configs/eval.py:linear,data=k400_r50` on the finished run.
        config.final_probe = "none"
        # PySlowFast's choices: no zero-initialised last BN; SimCLR and SwAV pair consecutive clips.
        config.model.zero_init_residual = False
        config.simclr.pairing = config.swav.pairing = "consecutive"
        if config.framework == "moco":
            # ρMoCo: SGD (Nesterov momentum 0.9), lr 0.4 at 512 videos, weight decay 1e-4 (REFERENCE.md);
            # warm-up 35 epochs as for every framework. BYOL/SimCLR/SwAV keep the LARS block above. The loss
            # is PySlowFast's (summed over the ρ query clips, losses.info_nce_loss), so this rate and decay
            # meet the gradient they were tuned with.
            config.optimizer.update(name="sgd", base_lr=0.4, weight_decay=1e-4)
        if config.framework == "cmd":
            # CMD's official optimisation: SGD (Nesterov momentum 0.9), lr 5e-4 × batch (0.256 at 512 videos),
            # weight decay 1e-3, warm-up 5 epochs then cosine, 120 epochs. Its gradient-norm clip at 15 has no
            # field in stjax/train/optimizer.py: not applied.
            config.optimizer.update(name="sgd", base_lr=0.256, weight_decay=1e-3, warmup_epochs=5.0)
            config.num_epochs = 120.0
    data.max_timespan = math.inf      # seconds; 0 = all clips start together

    config.rho = args.get("rho", config.rho)
    if "timespan" in args:
        data.max_timespan = configlib.parse_timespan(args["timespan"])
    data.dataset = args.get("dataset", data.dataset)
    config.batch_size = args.get("batch_size", config.batch_size)
    config.num_epochs = args.get("epochs", config.num_epochs)
    config.model.backbone = args.get("backbone", config.model.backbone)
    if "sampling" in args:
        data.num_frames, data.stride = configlib.parse_sampling(args["sampling"])
    config.total_steps = 0            # > 0 overrides num_epochs
    for name in auxiliary_names(args.get("auxiliary", "none"), tuple(config.auxiliary.keys())):
        config.auxiliary[name].weight = 1.0
    configlib.require(config.rho >= 1, "rho", config.rho, "integers >= 1")
    configlib.require(config.batch_size >= 1, "batch_size", config.batch_size, "integers >= 1")
    return config


def auxiliary_names(text: str, valid: tuple[str, ...]) -> list[str]:
    """'background_erasing+dsm' → ['background_erasing', 'dsm']; 'none' or '' → []; an unknown name is an error
    naming the argument and the valid names."""
    names = [n.strip() for n in text.split("+") if n.strip()]
    if names == ["none"]:
        return []
    for name in names:
        configlib.require_choice("auxiliary", name, (*valid, "none"))
    configlib.require(len(set(names)) == len(names) and "none" not in names, "auxiliary", text,  # 'dsm+dsm', 'none+dsm'
                      "none, or distinct names joined by '+', e.g. background_erasing+dsm")
    return names
