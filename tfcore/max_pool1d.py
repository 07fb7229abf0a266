"""MaxPool1D: the maximum over windows of the time axis, per channel.

Shapes: x [batch, steps, channels] -> [batch, out_steps, channels], out_steps =
floor((steps - pool_size) / strides) + 1 for 'valid', ceil(steps / strides) for
'same' (padding never wins the max). No variables. Keras default: strides = pool_size.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore.layer import Layer, normalize_padding, normalize_tuple


class MaxPool1D(Layer):
    """1-D max pooling.

    Args:
        pool_size: window length. Default 2.
        strides: step; None (default) means pool_size.
        padding: 'valid' (default) or 'same'.
        name: module name.
    """

    def __init__(self, pool_size=2, strides=None, padding: str = "valid",
                 name: Optional[str] = None):
        super().__init__(name=name)
        (self.pool_size,) = normalize_tuple(pool_size, 1, "MaxPool1D pool_size")
        if strides is None:
            strides = self.pool_size
        (self.strides,) = normalize_tuple(strides, 1, "MaxPool1D strides")
        self.padding = normalize_padding(padding)

    def call(self, x, training=False, seed=None):
        if x.shape.rank != 3:
            raise ValueError(f"MaxPool1D '{self.name}': input must be [batch, steps, "
                             f"channels], got shape {x.shape}")
        return tf.nn.max_pool1d(x, ksize=self.pool_size, strides=self.strides,
                                padding=self.padding.upper())
