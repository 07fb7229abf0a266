"""Secants: y = f(x) and dy = f(x + dx) - f(x), computed without subtracting two
forward passes where the block knows how.

A finite difference f(x + dx) - f(x) in float32 carries the rounding of f's values:
for logits of size ~10 an absolute error of ~1e-6, while VAT's step xi = 1e-6 changes
them by about that much. Propagating the difference instead keeps it accurate relative
to its own size:

* a linear map L (a convolution, a matmul, reshapes, a dropout mask): dy = L dx;
* an affine one (plus a bias): y = L x + b, dy = L dx;
* relu: dy = relu(z + dz) - relu(z) = max(dz, -z) where z > 0, max(z + dz, 0) where
  z <= 0 (`relu_secant`): no difference of two large numbers;
* max over a window with maximum M: max(x + dx) - M = max((x - M) + dx), where
  x - M is exact for entries near M (Sterbenz) (`tfcore.MaxPool2D.secant`).

Blocks with a `secant(x, dx, training=, seed=, **kwargs)` method (`tfcore.Layer`'s
default subtracts two calls; Conv2D, Dense, MaxPool2D, Flatten, Dropout and
Sequential propagate) are dispatched to by `secant(f, x, dx)`. The gradient of dy with
respect to dx is f's Jacobian at x + dx, J(x + dx)^T by backpropagation, as a finite
difference's perturbed pass would give: relu's and the window maximum's routes are
taken at x + dx.
"""
from __future__ import annotations

from typing import Callable, Tuple

import tensorflow as tf

from tfcore import activations


def relu_secant(z: tf.Tensor, dz: tf.Tensor) -> tf.Tensor:
    """relu(z + dz) - relu(z), elementwise, accurate relative to its own size."""
    return tf.where(z > 0, tf.maximum(dz, -z), tf.maximum(z + dz, tf.zeros_like(z)))


def _is_relu(fn) -> bool:
    return fn is tf.nn.relu or fn is activations.relu


def activation_secant(activation: Callable, z: tf.Tensor, dz: tf.Tensor):
    """(activation(z), activation(z + dz) - activation(z)): exact forms for relu and
    the identity, a subtraction for the others."""
    if _is_relu(activation):
        return tf.nn.relu(z), relu_secant(z, dz)
    y = activation(z)
    if activation is activations.linear:
        return y, dz
    return y, activation(z + dz) - y


def secant(f: Callable, x: tf.Tensor, dx: tf.Tensor, *, training: bool = False, seed=None,
           **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """(f(x), f(x + dx) - f(x)) for a block, a relu, or any other callable.

    Args:
      f: a block with a `secant` method (called with `training`, `seed`, `kwargs`), or
        a plain callable f(x) (relu exactly, anything else by subtraction).
      x: the point, any shape f takes.
      dx: the difference, x's shape and dtype.
      training, seed, kwargs: as for calling the block (e.g. `update_stats=False`).

    Returns:
      (y, dy), both f's output shape.
    """
    if hasattr(f, "secant"):
        return f.secant(x, dx, training=training, seed=seed, **kwargs)
    if _is_relu(f):
        return activation_secant(f, x, dx)
    y = f(x)
    return y, f(x + dx) - y
