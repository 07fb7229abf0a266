"""Adadelta, exactly Keras 3's `keras.optimizers.Adadelta`.

Slots per variable: `accumulated_grad` and `accumulated_delta_var`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfcore import checks
from tfcore.optimizers.optimizer import Number, Optimizer


def adadelta_update(var: tf.Tensor, grad: tf.Tensor, accumulated_grad: tf.Tensor,
                    accumulated_delta_var: tf.Tensor, lr: Number, rho: float,
                    epsilon: float) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Adadelta step (Zeiler 2012) with Keras's learning-rate factor.

        E[g^2]'  = rho * E[g^2] + (1 - rho) * g^2
        delta    = -sqrt(E[dx^2] + eps) * g / sqrt(E[g^2]' + eps)
        E[dx^2]' = rho * E[dx^2] + (1 - rho) * delta^2
        var'     = var + lr * delta

    (Zeiler's original has no learning rate, i.e. lr = 1.)

    Returns:
      `(new_var, new_accumulated_grad, new_accumulated_delta_var)`.
    """
    lr = tf.cast(lr, var.dtype)

    def rms(x):
        return tf.math.sqrt(x + epsilon)

    acc_grad = rho * accumulated_grad + (1 - rho) * tf.math.square(grad)
    delta = -((rms(accumulated_delta_var) * grad) / rms(acc_grad))
    acc_delta = rho * accumulated_delta_var + (1 - rho) * tf.math.square(delta)
    return var + lr * delta, acc_grad, acc_delta


class Adadelta(Optimizer):
    """Adadelta; see `adadelta_update`.

    Args:
      learning_rate: float >= 0, default 0.001 (Keras's default; use 1.0 for the
        original Adadelta).
      rho: decay rate in [0, 1], default 0.95.
      epsilon: float >= 0, default 1e-7.
      clipnorm, global_clipnorm, name, fused: see `Optimizer` (fused:
        `ResourceApplyAdadelta`, the same formula).
    """

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.95,
                 epsilon: float = 1e-7, clipnorm: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None,
                 fused: bool = True):
        super().__init__(learning_rate, clipnorm=clipnorm,
                         global_clipnorm=global_clipnorm, name=name or "adadelta",
                         fused=fused)
        self.rho = checks.check_real(rho, "rho", low=0, high=1)
        self.epsilon = checks.check_real(epsilon, "epsilon", low=0)
        self._accumulated_grads, self._accumulated_delta_vars = [], []

    def build_slots(self, variables):
        self._accumulated_grads, self._accumulated_delta_vars = self.add_slots(
            variables, ["accumulated_grad", "accumulated_delta_var"])

    def update_step(self, gradient, variable, learning_rate):
        i = self._index(variable)
        acc_g, acc_d = self._accumulated_grads[i], self._accumulated_delta_vars[i]
        if self.use_fused(variable):
            dtype = variable.dtype
            tf.raw_ops.ResourceApplyAdadelta(
                var=variable.handle, accum=acc_g.handle, accum_update=acc_d.handle,
                lr=tf.cast(learning_rate, dtype), rho=tf.constant(self.rho, dtype),
                epsilon=tf.constant(self.epsilon, dtype), grad=gradient)
            return
        new_var, new_acc_g, new_acc_d = adadelta_update(
            variable, gradient, acc_g, acc_d, learning_rate, self.rho, self.epsilon)
        acc_g.assign(new_acc_g)
        acc_d.assign(new_acc_d)
        variable.assign(new_var)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}
