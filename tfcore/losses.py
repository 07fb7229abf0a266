"""Losses and accuracy metrics as pure functions, matching Keras 3's numbers.

Every function takes `reduction`:

* `'mean'` (default): the mean over the batch of the per-example values, a scalar.
  For every loss here this equals Keras 3's default reduction
  (`'sum_over_batch_size'`: the mean over all the values the Keras function returns).
* `'sum'`: the sum over the batch of the per-example values, a scalar.
* `'none'`: the per-example values, shape `[batch]`.

Per-example values, for inputs of shape `[batch, d1, ..., dk]`:

* element-wise losses (binary cross-entropy, mean squared error, binary accuracy):
  the mean over *all* non-batch axes. Keras averages over the last axis only and
  returns `[batch, d1, ..., d(k-1)]`; averaging those over the remaining axes
  gives ours (e.g. images `[b, h, w, c]` -> the per-example mean over all
  `h * w * c` values). Rank-1 inputs `[batch]` are one value per example (there,
  Keras's function averages the whole batch into one scalar; the `'mean'` is the
  same).
* class-axis losses (cross-entropies, KL, entropy, categorical accuracy): the class
  axis is the last one and is summed over (or arg-maxed); any axes between the
  batch and the class axis (e.g. pixels of a segmentation map) are then averaged.

When `y_true` and `y_pred` differ in rank by one and the larger has a last axis of
size 1 (e.g. labels `[b]` against predictions `[b, 1]`), that axis is squeezed
first, as Keras's loss classes do, instead of broadcasting to `[b, b]`.

Numerical notes: the `*_from_logits` functions use `log_softmax` /
`sigmoid_cross_entropy_with_logits` and stay finite for any finite logits; the
from-probability functions clip probabilities to `[1e-7, 1 - 1e-7]` like Keras 3
(`keras.backend.epsilon()`), so they are finite for probabilities of exactly 0 or 1.

Keras 2 (tf-keras) gives the same numbers, except its binary cross-entropy on
probabilities, which also adds 1e-7 inside the logs: `binary_crossentropy(...,
epsilon_in_log=True)` reproduces it.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import tensorflow as tf

from tfcore.checks import check_bool

TensorLike = Union[tf.Tensor, np.ndarray, float, list]

EPSILON = 1e-7  # keras.backend.epsilon()
_REDUCTIONS = ("mean", "sum", "none")


# --- helpers --------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, "
                         f"got {reduction!r}")


def _float_tensor(x, dtype=None) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if dtype is not None:
        return tf.cast(x, dtype)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def _known_rank(x: tf.Tensor, what: str) -> int:
    rank = x.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"{what} must have a known rank >= 1 (a batch axis), "
                         f"got shape {x.shape}")
    return rank


def _match_rank(y_true: tf.Tensor, y_pred: tf.Tensor):
    """Squeezes a trailing size-1 axis so both ranks agree (Keras's rule)."""
    rt, rp = _known_rank(y_true, "y_true"), _known_rank(y_pred, "y_pred")
    if rt == rp + 1 and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, -1)
    elif rp == rt + 1 and y_pred.shape[-1] == 1:
        y_pred = tf.squeeze(y_pred, -1)
    if not y_true.shape.is_compatible_with(y_pred.shape):
        raise ValueError(f"y_true and y_pred must have the same shape, got "
                         f"y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}")
    return y_true, y_pred


def _per_example(values: tf.Tensor) -> tf.Tensor:
    """[batch, ...] -> [batch]: the mean over all non-batch axes."""
    rank = _known_rank(values, "the loss values")
    if rank == 1:
        return values
    return tf.reduce_mean(values, axis=list(range(1, rank)))


def _reduce(values: tf.Tensor, reduction: str) -> tf.Tensor:
    per_example = _per_example(values)
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return tf.reduce_sum(per_example)
    return tf.reduce_mean(per_example)


# --- cross-entropies ------------------------------------------------------------
def sparse_softmax_cross_entropy(labels: TensorLike, logits: TensorLike,
                                 reduction: str = "mean") -> tf.Tensor:
    """Cross-entropy of integer labels against logits.

    `loss_i = -log softmax(logits_i)[labels_i] = logsumexp(logits_i) - logits_i[labels_i]`,
    computed by `tf.nn.sparse_softmax_cross_entropy_with_logits` (stable for any
    finite logits). Same as `keras.losses.sparse_categorical_crossentropy(labels,
    logits, from_logits=True)`.

    Args:
      labels: integer class ids, shape `[batch]` (or `[batch, 1]`, squeezed), in
        `[0, num_classes)`. Out-of-range ids raise on CPU and give NaN on GPU.
      logits: unnormalised log-probabilities, shape `[batch, num_classes]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).

    Returns:
      The reduced loss (float, dtype of `logits`).
    """
    _check_reduction(reduction)
    logits = _float_tensor(logits)
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        labels = tf.cast(labels, tf.int64)
    rank = _known_rank(logits, "logits")
    if labels.shape.rank == rank and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if labels.shape.rank != rank - 1 or not labels.shape.is_compatible_with(
            logits.shape[:-1]):
        raise ValueError(f"labels must have the shape of logits without its class "
                         f"axis, got labels.shape={labels.shape}, "
                         f"logits.shape={logits.shape}")
    values = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _reduce(values, reduction)


def softmax_cross_entropy(labels: TensorLike, logits: TensorLike,
                          reduction: str = "mean") -> tf.Tensor:
    """Cross-entropy of a target distribution (one-hot or soft) against logits.

    `loss_i = -sum_c labels_ic * log_softmax(logits_i)_c`, computed by
    `tf.nn.softmax_cross_entropy_with_logits` (stable for any finite logits). Same as
    `keras.losses.categorical_crossentropy(labels, logits, from_logits=True)`.

    Args:
      labels: one-hot or probability vectors, shape `[batch, num_classes]`.
      logits: shape `[batch, num_classes]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).
    """
    _check_reduction(reduction)
    logits = _float_tensor(logits)
    labels = _float_tensor(labels, logits.dtype)
    labels, logits = _match_rank(labels, logits)
    values = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _reduce(values, reduction)


def categorical_crossentropy(y_true: TensorLike, y_pred: TensorLike,
                             from_logits: bool = False,
                             reduction: str = "mean") -> tf.Tensor:
    """Cross-entropy of a target distribution against predicted probabilities.

    As Keras 3 (`keras.losses.categorical_crossentropy`, `from_logits=False`): the
    predictions are first renormalised to sum to one, then clipped,
    `q = clip(y_pred / sum_c y_pred, 1e-7, 1 - 1e-7)`, and
    `loss_i = -sum_c y_true_ic * log(q_ic)`.
    With `from_logits=True` this is `softmax_cross_entropy`.

    Args:
      y_true: one-hot or probability vectors, shape `[batch, num_classes]`.
      y_pred: probabilities (e.g. a softmax output), same shape.
      from_logits: treat `y_pred` as logits.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).
    """
    if from_logits:
        return softmax_cross_entropy(y_true, y_pred, reduction)
    _check_reduction(reduction)
    y_pred = _float_tensor(y_pred)
    y_true = _float_tensor(y_true, y_pred.dtype)
    y_true, y_pred = _match_rank(y_true, y_pred)
    q = y_pred / tf.reduce_sum(y_pred, axis=-1, keepdims=True)
    q = tf.clip_by_value(q, EPSILON, 1.0 - EPSILON)
    values = -tf.reduce_sum(y_true * tf.math.log(q), axis=-1)
    return _reduce(values, reduction)


def binary_crossentropy(y_true: TensorLike, y_pred: TensorLike,
                        from_logits: bool = False, reduction: str = "mean",
                        epsilon_in_log: bool = False) -> tf.Tensor:
    """Element-wise binary cross-entropy, averaged per example.

    From probabilities (Keras 3): `p = clip(y_pred, 1e-7, 1 - 1e-7)`,
    `bce = -(y_true * log(p) + (1 - y_true) * log(1 - p))`.
    With `epsilon_in_log=True` (Keras 2, tf-keras's `binary_crossentropy` on eager
    tensors and on probabilities not computed by a sigmoid op):
    `bce = -(y_true * log(p + 1e-7) + (1 - y_true) * log(1 - p + 1e-7))`, so a
    saturated wrong prediction costs -log(2e-7) = 15.42 instead of -log(1e-7) = 16.12.
    From logits: `bce = max(x, 0) - x * y_true + log(1 + exp(-|x|))`
    (`tf.nn.sigmoid_cross_entropy_with_logits`, finite for any finite logits, no
    clipping; the same in Keras 2 and 3, `epsilon_in_log` is ignored).

    Args:
      y_true: targets in [0, 1], shape `[batch, ...]`.
      y_pred: probabilities, or logits when `from_logits`, same shape (a trailing
        size-1 axis on either side is squeezed to match).
      from_logits: whether `y_pred` holds logits.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`: the mean over
        all non-batch axes; `[b, h, w, c]` images -> the per-image pixel mean).
      epsilon_in_log: Keras 2's formula for probabilities (default False: Keras 3's).
    """
    _check_reduction(reduction)
    epsilon_in_log = check_bool(epsilon_in_log, "epsilon_in_log")
    y_pred = _float_tensor(y_pred)
    y_true = _float_tensor(y_true, y_pred.dtype)
    y_true, y_pred = _match_rank(y_true, y_pred)
    if from_logits:
        values = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred)
    else:
        p = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
        if epsilon_in_log:
            values = -(y_true * tf.math.log(p + EPSILON)
                       + (1.0 - y_true) * tf.math.log(1.0 - p + EPSILON))
        else:
            values = -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))
    return _reduce(values, reduction)


# --- divergences ----------------------------------------------------------------
def kl_divergence_from_logits(p_logits: TensorLike, q_logits: TensorLike,
                              reduction: str = "mean") -> tf.Tensor:
    """KL(p || q) between categorical distributions given by logits.

    `KL_i = sum_c p_ic * (log p_ic - log q_ic)` with `p = softmax(p_logits)`,
    `log p = log_softmax(p_logits)`, `log q = log_softmax(q_logits)`: exact, no
    clipping, finite for any finite logits. (Keras's `kl_divergence` takes
    probabilities and clips them to `[1e-7, 1]`, so it differs where a probability is
    below 1e-7.) Gradients flow into both arguments; wrap `p_logits` in
    `tf.stop_gradient` for VAT's fixed target distribution.

    Args:
      p_logits, q_logits: shape `[batch, num_classes]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).
    """
    _check_reduction(reduction)
    p_logits = _float_tensor(p_logits)
    q_logits = _float_tensor(q_logits, p_logits.dtype)
    if not p_logits.shape.is_compatible_with(q_logits.shape):
        raise ValueError(f"p_logits and q_logits must have the same shape, got "
                         f"{p_logits.shape} and {q_logits.shape}")
    log_p = tf.nn.log_softmax(p_logits, axis=-1)
    log_q = tf.nn.log_softmax(q_logits, axis=-1)
    values = tf.reduce_sum(tf.math.exp(log_p) * (log_p - log_q), axis=-1)
    return _reduce(values, reduction)


def entropy_from_logits(logits: TensorLike, reduction: str = "mean") -> tf.Tensor:
    """Entropy of the categorical distribution softmax(logits) (EntMin's term).

    `H_i = -sum_c p_ic * log p_ic` with `log p = log_softmax(logits)`; finite for any
    finite logits (a one-hot limit gives 0).

    Args:
      logits: shape `[batch, num_classes]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).
    """
    _check_reduction(reduction)
    logits = _float_tensor(logits)
    _known_rank(logits, "logits")
    log_p = tf.nn.log_softmax(logits, axis=-1)
    values = -tf.reduce_sum(tf.math.exp(log_p) * log_p, axis=-1)
    return _reduce(values, reduction)


# --- regression -------------------------------------------------------------------
def mean_squared_error(y_true: TensorLike, y_pred: TensorLike,
                       reduction: str = "mean") -> tf.Tensor:
    """`(y_true - y_pred)^2`, averaged over the non-batch axes per example.

    Same value as `keras.losses.MeanSquaredError()` for `'mean'`.

    Args:
      y_true, y_pred: shape `[batch, ...]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).
    """
    _check_reduction(reduction)
    y_pred = _float_tensor(y_pred)
    y_true = _float_tensor(y_true, y_pred.dtype)
    y_true, y_pred = _match_rank(y_true, y_pred)
    return _reduce(tf.math.square(y_true - y_pred), reduction)


# --- accuracy -----------------------------------------------------------------------
def sparse_categorical_accuracy(labels: TensorLike, logits_or_probs: TensorLike,
                                reduction: str = "mean") -> tf.Tensor:
    """Fraction of examples whose arg-max class equals the integer label.

    `acc_i = float(argmax_c y_pred_ic == labels_i)`; the arg-max is the same for
    logits and probabilities (ties go to the first class, as Keras).

    Args:
      labels: integer class ids, shape `[batch]` (or `[batch, 1]`).
      logits_or_probs: shape `[batch, num_classes]`.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`, 0. or 1.).

    Returns:
      float32.
    """
    _check_reduction(reduction)
    y_pred = tf.convert_to_tensor(logits_or_probs)
    labels = tf.convert_to_tensor(labels)
    rank = _known_rank(y_pred, "logits_or_probs")
    if labels.shape.rank == rank and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if labels.shape.rank != rank - 1 or not labels.shape.is_compatible_with(
            y_pred.shape[:-1]):
        raise ValueError(f"labels must have the shape of logits_or_probs without its "
                         f"class axis, got labels.shape={labels.shape}, "
                         f"logits_or_probs.shape={y_pred.shape}")
    pred = tf.math.argmax(y_pred, axis=-1, output_type=tf.int64)
    hits = tf.cast(tf.math.equal(pred, tf.cast(labels, tf.int64)), tf.float32)
    return _reduce(hits, reduction)


def binary_accuracy(y_true: TensorLike, y_pred: TensorLike, threshold: float = 0.5,
                    from_logits: bool = False, reduction: str = "mean") -> tf.Tensor:
    """Fraction of element-wise predictions `y_pred > threshold` equal to `y_true`.

    As Keras: `acc = float(y_true == float(y_pred > threshold))` per element (so
    `y_true` must hold exact 0/1 values), averaged per example over the non-batch
    axes. With `from_logits`, `sigmoid(x) > threshold` is evaluated in logit space as
    `x > log(threshold / (1 - threshold))` (exact, no sigmoid saturation).

    Args:
      y_true: 0/1 targets, shape `[batch, ...]`.
      y_pred: probabilities, or logits when `from_logits`.
      threshold: in (0, 1); default 0.5.
      from_logits: whether `y_pred` holds logits.
      reduction: 'mean' (default), 'sum' or 'none' (shape `[batch]`).

    Returns:
      float32.
    """
    _check_reduction(reduction)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
            not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a float in (0, 1), got {threshold!r}")
    y_pred = _float_tensor(y_pred)
    y_true = _float_tensor(y_true, y_pred.dtype)
    y_true, y_pred = _match_rank(y_true, y_pred)
    cut = math.log(threshold) - math.log1p(-threshold) if from_logits else threshold
    pred = tf.cast(y_pred > cut, y_pred.dtype)
    hits = tf.cast(tf.math.equal(y_true, pred), tf.float32)
    return _reduce(hits, reduction)


__all__ = [
    "sparse_softmax_cross_entropy", "softmax_cross_entropy", "categorical_crossentropy",
    "binary_crossentropy", "kl_divergence_from_logits", "entropy_from_logits",
    "mean_squared_error", "sparse_categorical_accuracy", "binary_accuracy",
]
