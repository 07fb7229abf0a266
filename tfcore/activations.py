"""Activations as plain functions of a tensor, and `get(name_or_fn)`.

relu, sigmoid, tanh, softmax (last axis), elu (alpha=1), leaky_relu (Keras 3's
default negative_slope=0.2; `leaky_relu(x, negative_slope=...)` or the name
'leaky_relu' for the default), linear (identity).
"""
from __future__ import annotations

import functools

import tensorflow as tf


def relu(x):
    return tf.nn.relu(x)


def sigmoid(x):
    return tf.math.sigmoid(x)


def tanh(x):
    return tf.math.tanh(x)


def softmax(x, axis=-1):
    return tf.nn.softmax(x, axis=axis)


def elu(x, alpha=1.0):
    if alpha == 1.0:
        return tf.nn.elu(x)
    return tf.where(x > 0, x, alpha * tf.math.expm1(x))


def leaky_relu(x, negative_slope=0.2):
    return tf.nn.leaky_relu(x, alpha=negative_slope)


def linear(x):
    return x


_BY_NAME = {
    "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax, "elu": elu,
    "leaky_relu": leaky_relu, "linear": linear, None: linear,
}


def get(activation):
    """None / a name from the table above / a callable -> a callable."""
    if callable(activation):
        return activation
    try:
        return _BY_NAME[activation]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{sorted(k for k in _BY_NAME if k)} or a callable") from None


def leaky(negative_slope: float):
    """leaky_relu with a chosen slope, as a one-argument activation."""
    return functools.partial(leaky_relu, negative_slope=negative_slope)
