"""BatchNorm (Keras 3 `BatchNormalization`): per-feature normalisation along `axis`.

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta      (`tf.nn.batch_normalization`)

* training=True: mean / var are the batch moments over every axis except `axis`
  (biased variance, `tf.nn.moments`), and, unless `update_stats=False`, the moving
  statistics are updated with assign ops (so also inside `tf.function` / XLA):
      moving_mean     <- moving_mean * momentum + mean * (1 - momentum)
      moving_variance <- moving_variance * momentum + var * (1 - momentum)
  With `unbiased_moving_variance=True`, the moving variance is updated with the
  unbiased batch variance `var * n / (n - 1)` instead (n = the number of values per
  feature in the batch, e.g. batch * h * w; the factor is 1 when n == 1), while the
  output still uses the biased `var`: what Keras 2's (tf-keras) fused
  BatchNormalization does (`tf.compat.v1.nn.fused_batch_norm`), which Keras 2 uses by
  default for 4-D inputs (its `fused=False` and its 2-D / 3-D inputs match the default).
* training=False: mean / var are `moving_mean` / `moving_variance`.
* training=True, update_stats=False: batch moments, no update: the official VAT
  code's `update_batch_stats=False`, for extra forward passes that must not move the
  moving statistics. Containers forward `update_stats` (see `tfcore.layer`).

Keras class: `BatchNormalization` (`tfcore.keras_io` maps the name).

Shapes: y has the shape of x. Variables (Keras 3 names, shape [C], C = x.shape[axis]):
`gamma` (ones, if `scale`), `beta` (zeros, if `center`), `moving_mean` (zeros) and
`moving_variance` (ones), the last two non-trainable.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore.checks import check_bool, check_int, check_real
from tfcore.layer import Layer


class BatchNorm(Layer):
    """Batch normalisation with Keras 3 defaults and variables.

    Args:
      axis: the feature axis (int, default -1: channels_last).
      momentum: moving-average momentum in [0, 1], default 0.99.
      epsilon: added to the variance, > 0, default 1e-3.
      center: learn an offset `beta` (default True).
      scale: learn a scale `gamma` (default True).
      unbiased_moving_variance: update the moving variance with the unbiased batch
        variance, as Keras 2's fused BatchNormalization (default False: Keras 3's
        biased one). Set it on the BatchNorms that see 4-D inputs to reproduce a
        Keras 2 model's training.
      name: module name.

    Call: `layer(x, training=False, seed=None, update_stats=True)`.
    """

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True,
                 unbiased_moving_variance: bool = False, name: Optional[str] = None):
        super().__init__(name=name)
        self.axis = check_int(axis, "BatchNorm axis")
        self.momentum = check_real(momentum, "BatchNorm momentum", low=0.0, high=1.0)
        self.epsilon = check_real(epsilon, "BatchNorm epsilon", low=0.0, low_open=True)
        self.center = check_bool(center, "BatchNorm center")
        self.scale = check_bool(scale, "BatchNorm scale")
        self.unbiased_moving_variance = check_bool(unbiased_moving_variance,
                                                   "BatchNorm unbiased_moving_variance")

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates gamma, beta, moving_mean, moving_variance of shape [C]."""
        shape = tf.TensorShape(input_shape)
        if shape.rank is None:
            raise ValueError(f"BatchNorm '{self.name}': input rank must be known to "
                             f"build, got shape {shape}")
        if not -shape.rank <= self.axis < shape.rank:
            raise ValueError(f"BatchNorm '{self.name}': axis={self.axis} is out of range "
                             f"for input shape {shape}")
        self._axis = self.axis % shape.rank
        self._require_dims(shape, [self._axis], "feature dimension")
        dim = [int(shape[self._axis])]
        if self.scale:
            self.gamma = self.add_weight("gamma", dim, "ones")
        if self.center:
            self.beta = self.add_weight("beta", dim, "zeros")
        self.moving_mean = self.add_weight("moving_mean", dim, "zeros", trainable=False)
        self.moving_variance = self.add_weight("moving_variance", dim, "ones",
                                               trainable=False)

    def _unbiased(self, x: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
        """variance * n / max(n - 1, 1), n = the number of values per feature in x."""
        n = tf.cast(tf.size(x) // tf.shape(x)[self._axis], variance.dtype)
        return variance * (n / tf.maximum(n - 1.0, 1.0))

    def call(self, x: tf.Tensor, training: bool = False, seed=None,
             update_stats: bool = True) -> tf.Tensor:
        """x -> normalised x (batch moments if `training`, else moving ones).

        Args:
          x: input, with x.shape[axis] == C.
          training: Python bool; True uses the batch moments.
          seed: ignored (deterministic layer).
          update_stats: with training=True, whether to update the moving statistics
            (default True); ignored when training=False.
        """
        rank = x.shape.rank
        if training:
            axes = [i for i in range(rank) if i != self._axis]
            mean, variance = tf.nn.moments(x, axes)
            if update_stats:
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                batch_variance = (self._unbiased(x, variance) if
                                  self.unbiased_moving_variance else variance)
                self.moving_variance.assign(self.moving_variance * m
                                            + batch_variance * (1.0 - m))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        gamma = self.gamma if self.scale else None
        beta = self.beta if self.center else None
        if self._axis != rank - 1:
            shape = [1] * rank
            shape[self._axis] = -1
            mean, variance = tf.reshape(mean, shape), tf.reshape(variance, shape)
            gamma = None if gamma is None else tf.reshape(gamma, shape)
            beta = None if beta is None else tf.reshape(beta, shape)
        return tf.nn.batch_normalization(x, mean, variance, offset=beta, scale=gamma,
                                         variance_epsilon=self.epsilon)
