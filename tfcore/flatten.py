"""Flatten: [batch, d1, ..., dn] -> [batch, d1 * ... * dn] (row-major, as Keras).

The inner dimensions must be static (checked when the layer is built); the batch may
be unknown. A rank-1 input [batch] becomes [batch, 1], as in Keras 3. No variables.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tfcore.layer import Layer


class Flatten(Layer):
    """Keeps the batch axis and flattens the rest (Keras 3 `Flatten`, channels_last).

    Args:
      name: module name.
    """

    def __init__(self, name: Optional[str] = None):
        super().__init__(name=name)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Checks that the rank and the non-batch dimensions are known (no variables)."""
        self._flat_dim(tf.TensorShape(input_shape))

    def _flat_dim(self, shape: tf.TensorShape) -> int:
        if shape.rank is None or shape.rank < 1:
            raise ValueError(f"Flatten '{self.name}': input must have a known rank >= 1, "
                             f"got shape {shape}")
        self._require_dims(shape, range(1, shape.rank), "non-batch dimension")
        return int(np.prod(shape.as_list()[1:], dtype=np.int64))

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, ...] -> [batch, prod(...)]."""
        flat_dim = self._flat_dim(x.shape)
        batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        return tf.reshape(x, [batch, flat_dim])

    def secant(self, x: tf.Tensor, dx: tf.Tensor, training: bool = False, seed=None):
        """(flatten(x), flatten(dx)): a reshape is linear (`tfcore.secant`)."""
        return self(x), self(dx)
