"""AvgPool2D: the mean over (ph, pw) windows of an NHWC image, per channel.

Shapes: x [batch, H, W, C] -> [batch, H', W', C], sizes as MaxPool2D ('valid':
floor((H - ph) / sh) + 1, 'same': ceil(H / sh)). With 'same' the padded positions are
left out of the mean (TensorFlow's and Keras's convention). No variables. Keras 3
defaults: pool_size 2, strides = pool_size, 'valid'. Computed with `tf.nn.avg_pool2d`.
"""
from __future__ import annotations

import tensorflow as tf

from tfcore.max_pool2d import Pool2D


class AvgPool2D(Pool2D):
    """2-D average pooling (Keras 3 `AveragePooling2D`, channels_last).

    Args:
      pool_size: int or (ph, pw), default 2.
      strides: int or (sh, sw); None (default) means pool_size.
      padding: 'valid' (default) or 'same'.
      name: module name.
    """

    _pool = staticmethod(tf.nn.avg_pool2d)
