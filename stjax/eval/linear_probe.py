"""The linear protocol, fast path: frozen features once, then a linear classifier.

1. `extract_features` runs a (jitted) embedding function over an iterable of batches and
   gathers the features of the real (mask == True) examples to host memory.
2. `train_linear_probe` trains a linear layer (weights + bias) on those features, softmax
   regression for int labels, one logistic regression per class for multi-hot labels, with
   optax SGD + momentum and a warm-up + cosine learning-rate schedule. The whole training
   run (all epochs, each a `lax.scan` over its mini-batches, reshuffled every epoch with a
   JAX PRNG key) is a single jitted computation, so a probe on a few thousand features
   takes well under a few seconds on CPU.

The probe only ever sees the train set: the standardisation statistics and all gradient
steps use train features only; the test set is touched once, for the final metrics.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stjax.eval import metrics

_STD_EPS = 1e-6


# --------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------

def _to_host(x: Any) -> np.ndarray:
    """The whole array as NumPy on this host; a global array of several processes is gathered from all of
    them (a collective: every process makes the same calls, as in `extract_features`)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def extract_features(embed_fn: Callable[[Mapping[str, Any]], Any],
                     batches: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs `embed_fn` over `batches`; returns (features [N, D] float32, labels int32 [N] or multi-hot [N, C]).

    embed_fn: a (jitted) function mapping a batch dict
        {'clips': uint8 [B, V, T, H, W, 3] (a jax.Array, possibly sharded),
         'label': int32 [B] (or multi-hot [B, C]), 'mask': bool [B]}
      to features float32 [B, D] (any averaging over the V views happens inside embed_fn).
    batches: an iterable of such dicts. A batch without 'mask' counts as all real.

    Only rows with mask == True are kept (padding examples of the last batch are dropped).
    Arrays come to the host whole: with several processes every one gathers every batch's
    rows, so all get the same (features, labels). The next batch is dispatched before the previous one is copied to host, so
    device compute and the host transfer overlap.
    """
    feats_out: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    dim: int | None = None

    def collect(index, feats, batch):
        nonlocal dim
        f = _to_host(feats)
        if f.ndim != 2:
            raise ValueError(f"embed_fn must return features of shape [B, D]; batch {index} gave {f.shape}")
        if dim is None:
            dim = f.shape[1]
        elif f.shape[1] != dim:
            raise ValueError(f"embed_fn returned feature dim {f.shape[1]} for batch {index}, "
                             f"but {dim} for earlier batches")
        if "label" not in batch:
            raise ValueError(f"batches: batch {index} has no 'label' entry")
        labels = _to_host(batch["label"])
        if labels.ndim != 2:  # multi-hot [B, C] stays as it is
            labels = labels.reshape(-1)
        if labels.shape[0] != f.shape[0]:
            raise ValueError(f"batches: batch {index} has {labels.shape[0]} labels but embed_fn "
                             f"returned {f.shape[0]} feature rows")
        if batch.get("mask") is None:
            mask = np.ones(labels.shape[0], bool)
        else:
            mask = _to_host(batch["mask"]).reshape(-1).astype(bool)
            if mask.shape[0] != f.shape[0]:
                raise ValueError(f"batches: batch {index} has a mask of length {mask.shape[0]} "
                                 f"but {f.shape[0]} feature rows")
        feats_out.append(f[mask].astype(np.float32, copy=False))
        labels_out.append(labels[mask].astype(np.int32, copy=False))

    pending = None
    num_batches = 0
    for index, batch in enumerate(batches):
        if not isinstance(batch, Mapping):
            raise ValueError(f"batches: item {index} is a {type(batch).__name__}, expected a dict")
        feats = embed_fn(batch)  # dispatched asynchronously
        if pending is not None:
            collect(*pending)
        pending = (index, feats, batch)
        num_batches += 1
    if pending is not None:
        collect(*pending)
    if num_batches == 0:
        raise ValueError("batches is empty: no features to extract")
    return np.concatenate(feats_out, axis=0), np.concatenate(labels_out, axis=0)


# --------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of the linear probe.

    standardize: z-score every feature dimension with the *train-set* mean and std before
      the linear layer. This is equivalent to a BatchNorm without affine parameters (with
      frozen, full-train-set statistics) in front of the linear layer, as is common for
      linear probes (e.g. MAE); it makes one learning rate work across feature scales.
      It does not change which classifiers are representable, only the optimisation.
    learning_rate: the peak; linear warm-up over `warmup_epochs`, then cosine decay to 0.
    weight_decay: decoupled L2 on the weights (not on the bias), added to the gradient
      before momentum (i.e. classic SGD weight decay).
    seed: the PRNG seed of the per-epoch shuffles (the weights start at zero).
    """
    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 0.1
    warmup_epochs: int = 5
    weight_decay: float = 0.0
    momentum: float = 0.9
    standardize: bool = True
    seed: int = 0

    def validate(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"config.epochs must be an int >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"config.batch_size must be an int >= 1, got {self.batch_size!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"config.learning_rate must be > 0, got {self.learning_rate!r}")
        if not (isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0):
            raise ValueError(f"config.warmup_epochs must be an int >= 0, got {self.warmup_epochs!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"config.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"config.momentum must be in [0, 1), got {self.momentum!r}")


def _check_features(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero feature dimensions (shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_labels(y: Any, name: str, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        return _check_multi_hot(y, name, n, num_classes)
    if y.ndim != 1:
        raise ValueError(f"{name} must be int [N] (single-label) or multi-hot {{0, 1}} [N, num_classes], "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but the features have {n} rows")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, num_classes={num_classes}), "
                         f"got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int32, copy=False)


def _check_multi_hot(y: np.ndarray, name: str, n: int, num_classes: int) -> np.ndarray:
    if y.shape != (n, num_classes):
        raise ValueError(f"{name} (multi-hot) must be [N={n}, num_classes={num_classes}], got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise ValueError(f"{name} (multi-hot) must be numeric {{0, 1}}, got dtype {y.dtype}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"{name} (multi-hot) must hold only 0 and 1, got values {np.unique(y)[:8].tolist()}")
    return y.astype(np.float32)


def _make_optimizer(config: ProbeConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=total, end_value=0.0)
    parts = []
    if config.weight_decay > 0:
        parts.append(optax.add_decayed_weights(
            config.weight_decay, mask={"w": True, "b": False}))
    parts.append(optax.sgd(schedule, momentum=config.momentum or None))
    return optax.chain(*parts)


@functools.lru_cache(maxsize=16)
def _train_fn(config: ProbeConfig, n: int, num_classes: int, multi_label: bool = False):
    """The jitted whole-training function for a given (static) problem size and label kind.

    Cached, so probing several feature sets of the same size (e.g. pretrained and random
    init) compiles once. multi_label: sigmoid cross-entropy on multi-hot targets [N, C],
    summed over classes (each class its own logistic regression at the configured rate);
    otherwise softmax cross-entropy on int labels [N].
    """
    bs = min(config.batch_size, n)
    steps = -(-n // bs)  # ceil: the last batch of an epoch is padded and masked
    padded = steps * bs
    tx = _make_optimizer(config, steps)

    def loss_fn(params, x, y, w):
        logits = x @ params["w"] + params["b"]
        if multi_label:
            ce = optax.sigmoid_binary_cross_entropy(logits, y).sum(axis=-1)
        else:
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

    def train(x, y, key):
        d = x.shape[1]
        params = {"w": jnp.zeros((d, num_classes), jnp.float32),
                  "b": jnp.zeros((num_classes,), jnp.float32)}
        opt_state = tx.init(params)

        def step(carry, idx):
            params, opt_state = carry
            valid = idx < n
            safe = jnp.where(valid, idx, 0)
            grads = jax.grad(loss_fn)(params, x[safe], y[safe], valid.astype(jnp.float32))
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        def epoch(carry, epoch_key):
            perm = jax.random.permutation(epoch_key, n)
            order = jnp.concatenate([perm, jnp.full((padded - n,), n, perm.dtype)])
            carry, _ = jax.lax.scan(step, carry, order.reshape(steps, bs))
            return carry, None

        keys = jax.random.split(key, config.epochs)
        (params, _), _ = jax.lax.scan(epoch, (params, opt_state), keys)
        return params

    return jax.jit(train)


@jax.jit
def _logits(params, x):
    return x @ params["w"] + params["b"]


def train_linear_probe(train_features, train_labels, test_features, test_labels,
                       num_classes: int, config: ProbeConfig = ProbeConfig()) -> dict:
    """Trains a linear probe on the train features; evaluates on the test set.

    Features: float [N, D] (host or device arrays). Labels choose the loss: integer [N] in
    [0, num_classes) -> softmax regression; multi-hot {0, 1} [N, num_classes] -> one sigmoid
    (logistic) regression per class (binary cross-entropy summed over classes). Metrics come
    from `stjax.eval.metrics.classification_metrics`.
    Weights and bias start at zero; training is SGD + momentum with a linear warm-up and a
    cosine decay to 0 (per step), mini-batches reshuffled each epoch (the last, partial
    batch of an epoch is padded and masked out of the loss). With `config.standardize`,
    features are z-scored with the train-set mean/std (test uses the same statistics).

    Returns a dict:
      top1, top5: test accuracy in [0, 1]; "top5" is top-k with k = min(5, num_classes)
        (stored under "top5" either way; "top_k" says which k was used).
      train_top1: accuracy on the train set.
      per_class_top1: list of num_classes floats, test top-1 per true class
        (NaN for a class without test examples).
      confusion: num_classes x num_classes list of int lists, rows = true class,
        columns = predicted class.
      mAP, mean_per_class_top1: one-vs-rest mean average precision and the mean of
        per_class_top1 over classes with test examples.
      num_train, num_test: ints.
    Multi-hot labels return instead: mAP, per_class_ap (list, NaN for a class without test
    positives), top1 (precision@1: share of test rows whose top-scored class is positive),
    train_mAP, train_top1, num_train, num_test.
    """
    if not isinstance(config, ProbeConfig):
        raise ValueError(f"config must be a ProbeConfig, got {type(config).__name__}")
    config.validate()
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    num_classes = int(num_classes)
    x_train = _check_features(train_features, "train_features")
    x_test = _check_features(test_features, "test_features")
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"test_features has {x_test.shape[1]} dims but train_features has "
                         f"{x_train.shape[1]}")
    y_train = _check_labels(train_labels, "train_labels", x_train.shape[0], num_classes)
    y_test = _check_labels(test_labels, "test_labels", x_test.shape[0], num_classes)
    multi_label = y_train.ndim == 2
    if y_test.ndim != y_train.ndim:
        raise ValueError(f"train_labels {y_train.shape} and test_labels {y_test.shape} must be the same kind: "
                         "both int [N] or both multi-hot [N, num_classes]")

    if config.standardize:
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
        scale = 1.0 / np.maximum(std, _STD_EPS)
        x_train = ((x_train - mean) * scale).astype(np.float32)
        x_test = ((x_test - mean) * scale).astype(np.float32)

    n = x_train.shape[0]
    # The seed is a traced input and `standardize` happens outside: neither recompiles.
    train = _train_fn(dataclasses.replace(config, seed=0, standardize=False), n, num_classes, multi_label)
    params = train(jnp.asarray(x_train), jnp.asarray(y_train), jax.random.PRNGKey(config.seed))

    train_logits = np.asarray(_logits(params, jnp.asarray(x_train)))
    test_logits = np.asarray(_logits(params, jnp.asarray(x_test)))
    if not (np.all(np.isfinite(train_logits)) and np.all(np.isfinite(test_logits))):
        raise FloatingPointError("the linear probe diverged (non-finite logits); "
                                 "lower config.learning_rate or enable config.standardize")

    if multi_label:
        test_m = metrics.classification_metrics(test_logits, y_test)
        train_m = metrics.classification_metrics(train_logits, y_train)
        return {
            "mAP": test_m["mAP"],
            "per_class_ap": [float(v) for v in test_m["per_class_ap"]],
            "top1": test_m["top1"],
            "train_mAP": train_m["mAP"],
            "train_top1": train_m["top1"],
            "num_train": int(n),
            "num_test": int(x_test.shape[0]),
        }
    k = min(5, num_classes)
    m = metrics.classification_metrics(test_logits, y_test, ks=(1, 5))
    return {
        "top1": m["top1"],
        "top5": m["top5"],
        "top_k": k,
        "train_top1": float(np.mean(train_logits.argmax(axis=1) == y_train)),
        "per_class_top1": [float(v) for v in m["per_class_top1"]],
        "confusion": m["confusion"].tolist(),
        "mAP": m["mAP"],
        "mean_per_class_top1": m["mean_per_class_top1"],
        "num_train": int(n),
        "num_test": int(x_test.shape[0]),
    }
