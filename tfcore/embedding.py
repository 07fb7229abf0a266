"""Embedding: a lookup table, y[..., :] = embeddings[x[...], :].

Shapes: integer tokens x [...] (any rank) -> y [..., output_dim]. Variable (Keras
layout): `embeddings` [input_dim, output_dim], initialised U(-0.05, 0.05) (Keras's
'uniform'). Non-integer inputs are cast to int32, as Keras does. The gradient with
respect to `embeddings` is a `tf.IndexedSlices` (only the looked-up rows).

With `mask_zero=True`, token 0 is padding: `compute_mask(x)` returns `x != 0`
(bool, shape of x), which an `LSTM` takes as `mask=` to skip padded steps. Index 0
then cannot be a real token, so the vocabulary needs `input_dim = size + 1`.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore import checks, initializers
from tfcore.layer import Layer


class Embedding(Layer):
    """Maps integer ids in [0, input_dim) to dense vectors of size output_dim.

    Args:
        input_dim: vocabulary size (largest id + 1).
        output_dim: size of each vector.
        embeddings_initializer: default 'random_uniform' (U(-0.05, 0.05), Keras's).
        mask_zero: whether id 0 is padding (see `compute_mask`). Default False.
        name: module name.
    """

    def __init__(self, input_dim: int, output_dim: int,
                 embeddings_initializer="random_uniform", mask_zero: bool = False,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.input_dim = checks.check_int(input_dim, "Embedding input_dim", low=1)
        self.output_dim = checks.check_int(output_dim, "Embedding output_dim", low=1)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", [self.input_dim, self.output_dim],
                                          self.embeddings_initializer)

    def call(self, x, training=False, seed=None):
        x = tf.convert_to_tensor(x)
        if x.dtype not in (tf.int32, tf.int64):
            x = tf.cast(x, tf.int32)
        return tf.gather(self.embeddings, x)

    def compute_mask(self, x) -> Optional[tf.Tensor]:
        """`x != 0` (bool, same shape as x) when `mask_zero`, else None."""
        if not self.mask_zero:
            return None
        return tf.not_equal(tf.cast(x, tf.int32), 0)
