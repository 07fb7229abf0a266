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
* Extra keyword arguments of `__call__` are forwarded to `call` unchanged. A layer
  opts into one by declaring it in its `call` signature, e.g. BatchNorm's
  `call(x, training=False, seed=None, update_stats=True)` (`update_stats=False`:
  training-mode batch statistics without moving-average updates, as VAT's
  perturbed passes need). Containers (`Sequential`, models) forward such a keyword
  only to children that declare it, tested with `call_accepts(child, name)`; a
  container that declares it itself (Sequential does) thus forwards it recursively.
* `secant(x, dx, training=, seed=, **kwargs)` -> (self(x), self(x + dx) - self(x)):
  by subtraction by default; blocks that can propagate the difference exactly
  (linear maps, relu, max pooling, dropout's mask, Sequential) override it
  (`tfcore.secant`, VAT's hvp='secant').
"""
from __future__ import annotations

import inspect
import numbers
from typing import Optional, Sequence

import tensorflow as tf

from tfcore import checks, initializers


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

    def secant(self, x, dx, training: bool = False, seed=None, **kwargs):
        """(self(x), self(x + dx) - self(x)) (`tfcore.secant`): by subtraction here;
        blocks that can propagate the difference override it. Both calls take the same
        `training`, `seed` and `kwargs` (so the same dropout mask)."""
        y = self(x, training=training, seed=seed, **kwargs)
        return y, self(x + dx, training=training, seed=seed, **kwargs) - y

    # -- shared machinery -------------------------------------------------------
    def __call__(self, x, training: bool = False, seed=None, **kwargs):
        """Builds on the first call, then `call(x, training=, seed=, **kwargs)`.

        `kwargs` (e.g. `update_stats=False`) go to `call` as they are; a layer whose
        `call` does not declare one raises the usual TypeError.
        """
        self.ensure_built(x)
        return self.call(x, training=training, seed=seed, **kwargs)

    def ensure_built(self, x) -> None:
        """Builds from x's static shape (a tensor or a list of them) if not built yet."""
        if not self.built:
            shape = x.shape if not isinstance(x, (list, tuple)) else [t.shape for t in x]
            with self.name_scope:
                self.build(shape)
            self.built = True

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
        return int(sum(v.shape.num_elements() for v in unique_variables(self.variables)))


def add_bias(y: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """y + bias, broadcast over the last axis (channels-last), as Keras 3 adds it.

    Written as a broadcasting add rather than `tf.nn.bias_add`: on CPU, TensorFlow's
    graph optimiser fuses a BiasAdd's gradient into the convolution's filter gradient
    (`_MklNativeConv2DBackpropFilterWithBias`), which is slower than the plain filter
    gradient plus a separate sum (docs/decisions.md, "Bias add as a broadcasting
    add"). The values are the same: both are one float32 add per element.
    """
    return y + bias


def call_accepts(layer, name: str) -> bool:
    """Whether `layer` is a `Layer` whose `call` declares the keyword `name`.

    Containers use it to forward optional keywords such as `update_stats` only to
    the children that take them (see the module docstring).
    """
    if not isinstance(layer, Layer):
        return False
    params = inspect.signature(layer.call).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def unique_variables(variables) -> list:
    """`variables` without repeats (by identity), in first-seen order."""
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_positive_int(value, what: str) -> int:
    """`tfcore.checks.check_int(value, what, low=1)` (kept for the callers that have
    not moved to `tfcore.checks` yet)."""
    return checks.check_int(value, what, low=1)


def normalize_tuple(value, n: int, what: str, allow_zero: bool = False) -> tuple:
    """An int or a length-n sequence of positive (or, with allow_zero, >= 0) ints ->
    a tuple of n ints; anything else raises ValueError naming `what`."""
    original = value
    if _is_int(value):
        value = (value,) * n
    try:
        value = tuple(value)
    except TypeError:
        value = None
    low = 0 if allow_zero else 1
    if (value is None or len(value) != n
            or not all(_is_int(v) and v >= low for v in value)):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{what} must be a {kind} int or {n} {kind} ints, "
                         f"got {original!r}")
    return tuple(int(v) for v in value)


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


