"""AvgPool2D: the mean over (ph, pw) windows of an NHWC image, per channel.

Shapes: x [batch, H, W, C] -> [batch, H', W', C], sizes as MaxPool2D ('valid':
floor((H - ph) / sh) + 1, 'same': ceil(H / sh)). With 'same' the padded positions are
left out of the mean (TensorFlow's and Keras's convention). No variables. Keras 3
defaults: pool_size 2, strides = pool_size, 'valid'. Computed with `tf.nn.avg_pool2d`.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore.layer import Layer
from tfcore.max_pool2d import IntOr2, pool_args


class AvgPool2D(Layer):
    """2-D average pooling (Keras 3 `AveragePooling2D`, channels_last).

    Args:
      pool_size: int or (ph, pw), default 2.
      strides: int or (sh, sw); None (default) means pool_size.
      padding: 'valid' (default) or 'same'.
      name: module name.
    """

    def __init__(self, pool_size: IntOr2 = 2, strides: Optional[IntOr2] = None,
                 padding: str = "valid", name: Optional[str] = None):
        super().__init__(name=name)
        self.pool_size, self.strides, self.padding = pool_args(
            "AvgPool2D", pool_size, strides, padding)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, C] -> [batch, H', W', C]."""
        if x.shape.rank != 4:
            raise ValueError(f"AvgPool2D '{self.name}' expects a 4-D NHWC input, "
                             f"got shape {x.shape}")
        return tf.nn.avg_pool2d(x, ksize=self.pool_size, strides=self.strides,
                                padding=self.padding.upper())
