"""The base class of every tfcore building block.

A `Layer` is a `tf.Module` that owns `tf.Variable`s and calls `tf.nn` / `tf.math`
ops. Its contract, which every block follows:

* `__init__` stores and validates hyperparameters (bad values raise `ValueError`
  quoting the value); it creates no variables.
* Variables are created once, on the first call, by `build(input_shape)` from the
  input's *static* shape. Build a model by calling it on an example (eager) before
  compiling steps, creating optimizers or checkpoints.
* Variables are named like Keras's (`kernel`, `bias`, `gamma`, ...) and stored as
  attributes of the same name, so a Keras layer's weights copy 1:1 by name:
  `layer.kernel.assign(keras_layer.kernel)`.
* `__call__(x, training=False, seed=None)`: `training` selects train/inference
  behaviour (dropout, BatchNorm); `seed` is an optional stateless RNG seed (int32
  or int64 tensor of shape [2]) that stochastic layers use so a step can replay the
  same randomness (e.g. the same dropout mask in VAT's clean and perturbed passes).
  Deterministic layers ignore it.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import tensorflow as tf

from tfcore import initializers


class Layer(tf.Module):
    """Base class: once-guarded build from the first input's static shape."""

    def __init__(self, name: Optional[str] = None):
        super().__init__(name=name)
        self.built = False

    # -- to override -------------------------------------------------------------
    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the variables from the input's static shape (default: none)."""

    def call(self, x, training: bool = False, seed=None):
        raise NotImplementedError

    # -- shared machinery -------------------------------------------------------
    def __call__(self, x, training: bool = False, seed=None):
        if not self.built:
            shape = x.shape if not isinstance(x, (list, tuple)) else [t.shape for t in x]
            with self.name_scope:
                self.build(shape)
            self.built = True
        return self.call(x, training=training, seed=seed)

    def add_weight(self, name: str, shape: Sequence[int], initializer="zeros",
                   trainable: bool = True, dtype=tf.float32) -> tf.Variable:
        """Creates a variable named like Keras's (`name` is e.g. 'kernel')."""
        init = initializers.get(initializer)
        return tf.Variable(init(list(shape), dtype), name=name, trainable=trainable)

    def _require_dims(self, input_shape, axes: Sequence[int], what: str) -> None:
        """Raises a clear error when a dimension needed to build is unknown."""
        shape = tf.TensorShape(input_shape)
        if shape.rank is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': input rank must be "
                             f"known to build, got shape {shape}")
        for a in axes:
            if shape[a] is None:
                raise ValueError(f"{type(self).__name__} '{self.name}': the {what} "
                                 f"(axis {a}) must be known to build, got shape {shape}")

    def count_params(self) -> int:
        """Number of scalars in the trainable and non-trainable variables."""
        return int(sum(v.shape.num_elements() for v in _unique(self.variables)))


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def normalize_tuple(value, n: int, what: str) -> tuple:
    """An int or a length-n sequence of positive ints -> a tuple of n ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"{what} must be a positive int or {n} positive ints, got {value!r}")
    return value


def normalize_padding(padding: str) -> str:
    p = str(padding).lower()
    if p not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return p


def fold_seed(seed, index: int):
    """A new stateless seed derived from `seed` (shape [2]) and a layer index."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), index,
                                                    alg="philox")


