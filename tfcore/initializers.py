"""Keras 3's default initialisers as plain functions `init(shape, dtype) -> Tensor`.

* glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), with Keras's fans:
  for a kernel of shape [..receptive.., in, out], fan_in = prod(receptive) * in and
  fan_out = prod(receptive) * out.
* orthogonal: QR of a normal matrix (Keras's LSTM recurrent_kernel default).
* random_uniform: U(-0.05, 0.05) (Keras's Embedding default).
* zeros / ones.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def compute_fans(shape):
    shape = list(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape, dtype=tf.float32):
    fan_in, fan_out = compute_fans(shape)
    limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit, dtype=dtype)


def he_normal(shape, dtype=tf.float32):
    fan_in, _ = compute_fans(shape)
    std = math.sqrt(2.0 / max(1.0, fan_in))
    return tf.random.truncated_normal(shape, stddev=std / 0.87962566103423978, dtype=dtype)


def random_uniform(shape, dtype=tf.float32, minval=-0.05, maxval=0.05):
    return tf.random.uniform(shape, minval, maxval, dtype=dtype)


def orthogonal(shape, dtype=tf.float32, gain=1.0):
    rows = int(np.prod(shape[:-1]))
    cols = shape[-1]
    a = tf.random.normal((max(rows, cols), min(rows, cols)), dtype=dtype)
    q, r = tf.linalg.qr(a)
    q = q * tf.sign(tf.linalg.diag_part(r))
    if rows < cols:
        q = tf.transpose(q)
    return gain * tf.reshape(q, shape)


def zeros(shape, dtype=tf.float32):
    return tf.zeros(shape, dtype=dtype)


def ones(shape, dtype=tf.float32):
    return tf.ones(shape, dtype=dtype)


_BY_NAME = {
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "random_uniform": random_uniform,
    "orthogonal": orthogonal,
    "zeros": zeros,
    "ones": ones,
}


def get(initializer):
    """A name from the table above, or a callable `(shape, dtype) -> Tensor`."""
    if callable(initializer):
        return initializer
    try:
        return _BY_NAME[initializer]
    except KeyError:
        raise ValueError(f"unknown initializer {initializer!r}; "
                         f"expected one of {sorted(_BY_NAME)} or a callable") from None
