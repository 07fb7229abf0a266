"""Dropout (inverted, as Keras 3): y = x * mask / (1 - rate) in training, y = x otherwise.

mask ~ Bernoulli(1 - rate), elementwise (or broadcast along the axes where
`noise_shape` is 1). Shapes: y has the shape of x. No trainable variables.

Randomness (reproducible by construction):
* `layer(x, training=True, seed=s)` with a stateless seed `s` (int32/int64, shape [2])
  draws the mask with `tf.random.stateless_uniform(..., alg='philox')`: the same seed
  and shape give the same mask, in eager mode, in `tf.function` and under XLA (the mask
  is taken from full-range uint32 draws, whose bits agree across those three on CPU;
  the float `stateless_uniform` does not: XLA turns the bits into floats differently,
  e.g. 0.844 eager vs 0.258 under XLA for the same seed).
  VAT relies on this to share one mask between its clean and perturbed passes.
* Without a call seed, a fresh seed is drawn from the layer's own
  `tf.random.Generator` (`alg='philox'`, attribute `generator`), created on the first
  call from the constructor's `seed`. Its state is a `tf.Variable`: it advances on every
  call (also inside `tf.function` / XLA) and is saved and restored by
  `tf.train.Checkpoint`. With `seed=None` the constructor draws the generator's seed
  from Python's `random` (as Keras 3 does), so `random.seed(...)` makes it repeatable.
"""
from __future__ import annotations

import numbers
import random
from typing import Optional, Sequence

import tensorflow as tf

from tfcore.layer import Layer


def dropout(x: tf.Tensor, rate: float, seed, noise_shape=None) -> tf.Tensor:
    """Inverted dropout with a stateless seed: x * keep / (1 - rate), keep = u >= rate.

    Args:
      x: input tensor.
      rate: drop probability, 0 <= rate < 1.
      seed: stateless seed, int32/int64 tensor of shape [2].
      noise_shape: None (the shape of x) or a sequence with one entry per axis of x,
        each an int (usually 1 to share the mask along that axis) or None (x's size).

    Returns:
      A tensor shaped like x. u ~ U[0, 1) on a 2^-24 grid comes from the top 24 bits
      of `tf.random.stateless_uniform(dtype=uint32, alg='philox')`, whose bits are the
      same eager, in tf.function and under XLA (tested on CPU), so the mask is too.
    """
    x = tf.convert_to_tensor(x)
    if rate == 0:
        return x
    dyn = tf.shape(x)
    if noise_shape is None:
        shape = dyn
    else:
        shape = tf.stack([dyn[i] if n is None else tf.constant(n, tf.int32)
                          for i, n in enumerate(noise_shape)])
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg="philox")
    u = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (2.0 ** -24)
    keep = tf.cast(u >= rate, x.dtype)
    return x * tf.cast(1.0 / (1.0 - rate), x.dtype) * keep


def _check_noise_shape(noise_shape):
    if noise_shape is None:
        return None
    ok = isinstance(noise_shape, (list, tuple)) and all(
        n is None or (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0)
        for n in noise_shape)
    if not ok:
        raise ValueError(f"Dropout noise_shape must be a sequence of positive ints or "
                         f"None entries, got {noise_shape!r}")
    return tuple(None if n is None else int(n) for n in noise_shape)


class Dropout(Layer):
    """Keras 3 `Dropout` with explicit, reproducible randomness (see module docstring).

    Args:
      rate: drop probability, a float with 0 <= rate < 1 (rate 0 is the identity).
      seed: None or a non-negative int seeding the layer's own generator, used when
        no stateless `seed` is passed to the call.
      noise_shape: None or one int-or-None per input axis (as Keras), e.g.
        (None, 1, 1, None) for one mask per image and channel.
      name: module name.

    Call: `layer(x, training=False, seed=None)`; identity unless `training` is True.
    """

    def __init__(self, rate: float, seed: Optional[int] = None,
                 noise_shape: Optional[Sequence[Optional[int]]] = None,
                 name: Optional[str] = None):
        super().__init__(name=name)
        if (isinstance(rate, bool) or not isinstance(rate, numbers.Real)
                or not 0 <= rate < 1):
            raise ValueError(f"Dropout rate must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        if seed is not None and (isinstance(seed, bool) or not isinstance(
                seed, numbers.Integral) or seed < 0):
            raise ValueError(f"Dropout seed must be None or a non-negative int, "
                             f"got {seed!r}")
        self.seed = seed
        self._generator_seed = int(seed) if seed is not None else random.randint(1, 10**9)
        self.noise_shape = _check_noise_shape(noise_shape)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates `generator` (a philox `tf.random.Generator`; its state is a Variable)."""
        if self.noise_shape is not None and len(self.noise_shape) != len(input_shape):
            raise ValueError(f"Dropout '{self.name}': noise_shape {self.noise_shape!r} "
                             f"needs one entry per input axis, got input shape "
                             f"{tf.TensorShape(input_shape)}")
        self.generator = tf.random.Generator.from_seed(self._generator_seed,
                                                       alg="philox")

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x -> x (inference) or x * mask / (1 - rate) (training)."""
        if not training or self.rate == 0:
            return x
        if seed is None:
            seed = self.generator.make_seeds(1)[:, 0]
        return dropout(x, self.rate, seed, self.noise_shape)

    def secant(self, x: tf.Tensor, dx: tf.Tensor, training: bool = False, seed=None):
        """(dropout(x), dropout(dx)) with one mask: linear given it (`tfcore.secant`)."""
        self.ensure_built(x)
        if training and self.rate and seed is None:
            seed = self.generator.make_seeds(1)[:, 0]
        return (self(x, training=training, seed=seed),
                self(dx, training=training, seed=seed))
