"""MaxPool2D: the maximum over (ph, pw) windows of an NHWC image, per channel.

Shapes: x [batch, H, W, C] -> [batch, H', W', C] with, per spatial axis,
'valid': H' = floor((H - ph) / sh) + 1; 'same': H' = ceil(H / sh) (padding never wins
the max). No variables. Keras 3 defaults: pool_size 2, strides = pool_size, 'valid'.
Computed with `tf.nn.max_pool2d`.

Its gradient, dx = dy at each window's maximum, comes in two forms (`gradient`):
* 'kernel' (default): TensorFlow's registered MaxPoolGrad.
* 'one_hot' (non-overlapping windows, strides == pool_size): dx built from strided
  slices, comparisons and selects, the dy of a window at its first maximum in row-major
  order (where TensorFlow's kernels put it too). The values are the kernel's, bit for
  bit; what differs is the gradient's own derivative. VAT's exact Hessian-vector
  product (`tfcore.vat`, hvp='exact') differentiates the backward pass, and under XLA
  the kernel's (MaxPoolGradGrad) compares bf16-rounded values, so near-ties in a window
  take the wrong input; the one-hot form's derivative is exact in every compile mode.
  Cost: docs/vat_direction.md (slower than the kernel in graph mode, faster under XLA).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf

from tfcore.checks import check_choice
from tfcore.layer import Layer, normalize_padding, normalize_tuple

IntOr2 = Union[int, Sequence[int]]

GRADIENTS = ("kernel", "one_hot")


def pool_args(cls_name: str, pool_size, strides, padding):
    """Validated (pool_size, strides, padding) with Keras's strides=None -> pool_size."""
    pool_size = normalize_tuple(pool_size, 2, f"{cls_name} pool_size")
    strides = pool_size if strides is None else normalize_tuple(strides, 2,
                                                                f"{cls_name} strides")
    return pool_size, strides, normalize_padding(padding)


class Pool2D(Layer):
    """Shared machinery of the 2-D pooling layers: argument validation and the
    NHWC rank check; subclasses name the `tf.nn` op in `_pool`."""

    _pool = None  # tf.nn.max_pool2d / tf.nn.avg_pool2d

    def __init__(self, pool_size: IntOr2 = 2, strides: Optional[IntOr2] = None,
                 padding: str = "valid", name: Optional[str] = None):
        super().__init__(name=name)
        self.pool_size, self.strides, self.padding = pool_args(
            type(self).__name__, pool_size, strides, padding)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, C] -> [batch, H', W', C]."""
        if x.shape.rank != 4:
            raise ValueError(f"{type(self).__name__} '{self.name}' expects a 4-D NHWC "
                             f"input, got shape {x.shape}")
        return type(self)._pool(x, ksize=self.pool_size, strides=self.strides,
                                padding=self.padding.upper())


def _tile_max_pool(x: tf.Tensor, pool_size) -> tf.Tensor:
    """Max over the (ph, pw) tiles of x [b, ph * H', pw * W', C] -> [b, H', W', C], with
    the one-hot gradient (see the module docstring)."""
    ph, pw = pool_size

    @tf.custom_gradient
    def pool(x):
        y = tf.nn.max_pool2d(x, ksize=pool_size, strides=pool_size, padding="VALID")

        def grad(dy):
            # The ph * pw strided sub-images x[:, i::ph, j::pw] are the windows' entries
            # at offset (i, j); each window's first maximum takes dy, the rest 0.
            zeros, taken, rows = tf.zeros_like(dy), None, []
            for i in range(ph):
                cols = []
                for j in range(pw):
                    hit = tf.equal(x[:, i::ph, j::pw, :], y)
                    first = hit if taken is None else tf.logical_and(
                        hit, tf.logical_not(taken))
                    taken = hit if taken is None else tf.logical_or(taken, hit)
                    cols.append(tf.where(first, dy, zeros))
                rows.append(tf.stack(cols, axis=3))           # [b, H', W', pw, C]
            return tf.reshape(tf.stack(rows, axis=2), tf.shape(x))  # [b, H', ph, W', pw, C]
        return y, grad
    return pool(x)


def one_hot_max_pool2d(x: tf.Tensor, pool_size, padding: str = "valid") -> tf.Tensor:
    """`tf.nn.max_pool2d(x, pool_size, strides=pool_size, padding)` with the one-hot
    gradient: x [b, H, W, C] with static H, W -> [b, H', W', C].

    'valid' drops the last H mod ph rows (W mod pw columns); 'same' pads like TensorFlow
    (the smaller half before) with -inf, which never wins a window.
    """
    (ph, pw), (h, w) = pool_size, x.shape[1:3]
    if h is None or w is None:
        raise ValueError(f"one_hot max pooling needs a static height and width, got "
                         f"shape {x.shape}")
    if padding == "valid":
        return _tile_max_pool(x[:, :h - h % ph, :w - w % pw, :], pool_size)
    pad_h, pad_w = -h % ph, -w % pw
    if pad_h or pad_w:
        x = tf.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                       [pad_w // 2, pad_w - pad_w // 2], [0, 0]],
                   constant_values=x.dtype.min if x.dtype.is_integer else float("-inf"))
    return _tile_max_pool(x, pool_size)


class MaxPool2D(Pool2D):
    """2-D max pooling (Keras 3 `MaxPooling2D`, channels_last).

    Args:
      pool_size: int or (ph, pw), default 2.
      strides: int or (sh, sw); None (default) means pool_size.
      padding: 'valid' (default) or 'same'.
      gradient: 'kernel' (default) or 'one_hot' (strides == pool_size only; its
        derivative is exact under XLA, see the module docstring).
      name: module name.
    """

    _pool = staticmethod(tf.nn.max_pool2d)

    def __init__(self, pool_size: IntOr2 = 2, strides: Optional[IntOr2] = None,
                 padding: str = "valid", gradient: str = "kernel",
                 name: Optional[str] = None):
        super().__init__(pool_size, strides, padding, name=name)
        self.gradient = check_choice(gradient, "MaxPool2D gradient", GRADIENTS)
        if gradient == "one_hot" and self.strides != self.pool_size:
            raise ValueError(f"MaxPool2D gradient='one_hot' needs non-overlapping "
                             f"windows (strides == pool_size), got pool_size "
                             f"{self.pool_size} and strides {self.strides}")

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, C] -> [batch, H', W', C]."""
        if self.gradient == "kernel" or x.shape.rank != 4:
            return super().call(x)
        return one_hot_max_pool2d(x, self.pool_size, self.padding)

    def secant(self, x: tf.Tensor, dx: tf.Tensor, training: bool = False, seed=None):
        """(y, dy): dy = max((x - M) + dx) per window of maximum M (`tfcore.secant`);
        for non-overlapping windows that need no padding (else by subtraction)."""
        (ph, pw), (h, w) = self.pool_size, x.shape[1:3] if x.shape.rank == 4 else (None,) * 2
        if (self.strides != self.pool_size or h is None or w is None
                or (self.padding == "same" and (h % ph or w % pw))):
            return super().secant(x, dx, training=training, seed=seed)
        y = self(x)
        x, dx = x[:, :h - h % ph, :w - w % pw, :], dx[:, :h - h % ph, :w - w % pw, :]
        window_max = tf.repeat(tf.repeat(y, ph, axis=1), pw, axis=2)
        return y, self((x - window_max) + dx)
