"""UpSampling2D: enlarges an NHWC image by integer factors (sh, sw).

Shapes: x [batch, H, W, C] -> [batch, H * sh, W * sw, C]. No variables.
* 'nearest' (default): every pixel repeated sh x sw times (`tf.repeat` on H then W,
  as Keras 3 does; XLA-friendly).
* 'bilinear': `tf.image.resize(..., 'bilinear', antialias=False)` (half-pixel
  centres), which is what Keras 3's TensorFlow backend computes.
Keras 3 defaults: size 2, 'nearest'.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf

from tfcore.layer import Layer, normalize_tuple

_INTERPOLATIONS = ("nearest", "bilinear")


class UpSampling2D(Layer):
    """Nearest-neighbour or bilinear upsampling (Keras 3 `UpSampling2D`, channels_last).

    Args:
      size: int or (sh, sw) positive upsampling factors, default 2.
      interpolation: 'nearest' (default) or 'bilinear'.
      name: module name.
    """

    def __init__(self, size: Union[int, Sequence[int]] = 2,
                 interpolation: str = "nearest", name: Optional[str] = None):
        super().__init__(name=name)
        self.size = normalize_tuple(size, 2, "UpSampling2D size")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"UpSampling2D interpolation must be one of "
                             f"{_INTERPOLATIONS}, got {interpolation!r}")
        self.interpolation = interpolation

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, C] -> [batch, H * sh, W * sw, C]."""
        if x.shape.rank != 4:
            raise ValueError(f"UpSampling2D '{self.name}' expects a 4-D NHWC input, "
                             f"got shape {x.shape}")
        sh, sw = self.size
        if self.interpolation == "nearest":
            return tf.repeat(tf.repeat(x, sh, axis=1), sw, axis=2)
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            dyn = tf.shape(x)
            h = dyn[1] if h is None else h
            w = dyn[2] if w is None else w
        return tf.image.resize(x, [h * sh, w * sw], method="bilinear", antialias=False)
