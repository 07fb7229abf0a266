"""MaxPool2D: the maximum over (ph, pw) windows of an NHWC image, per channel.

Shapes: x [batch, H, W, C] -> [batch, H', W', C] with, per spatial axis,
'valid': H' = floor((H - ph) / sh) + 1; 'same': H' = ceil(H / sh) (padding never wins
the max). No variables. Keras 3 defaults: pool_size 2, strides = pool_size, 'valid'.
Computed with `tf.nn.max_pool2d`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf

from tfcore.layer import Layer, normalize_padding, normalize_tuple

IntOr2 = Union[int, Sequence[int]]


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


class MaxPool2D(Pool2D):
    """2-D max pooling (Keras 3 `MaxPooling2D`, channels_last).

    Args:
      pool_size: int or (ph, pw), default 2.
      strides: int or (sh, sw); None (default) means pool_size.
      padding: 'valid' (default) or 'same'.
      name: module name.
    """

    _pool = staticmethod(tf.nn.max_pool2d)
