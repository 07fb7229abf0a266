"""SGD with optional (Nesterov) momentum, exactly Keras 3's `keras.optimizers.SGD`.

Slots: `momentum` per variable (`"{var}_momentum"`), only when `momentum != 0`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfcore import checks
from tfcore.optimizers.optimizer import Number, Optimizer


def sgd_update(var: tf.Tensor, grad: tf.Tensor, lr: Number, momentum: Number = 0.0,
               nesterov: bool = False, m: Optional[tf.Tensor] = None
               ) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """One SGD step (Keras 3's sign convention: the momentum holds the velocity).

    Without momentum (`m is None`): `var' = var - lr * g`.
    With momentum `mu` (`m` given):
        `m' = mu * m - lr * g`
        `var' = var + m'`                    (classic)
        `var' = var + mu * m' - lr * g`      (Nesterov)

    Args:
      var: current value of the variable.
      grad: its gradient (dense, same shape).
      lr: learning rate (cast to var's dtype).
      momentum: `mu` in [0, 1].
      nesterov: use Nesterov momentum.
      m: the momentum slot, or None for plain SGD.

    Returns:
      `(new_var, new_m)`; `new_m` is None when `m` is None.
    """
    lr = tf.cast(lr, var.dtype)
    if m is None:
        return var - grad * lr, None
    mu = tf.cast(momentum, var.dtype)
    m_new = m * mu - grad * lr
    if nesterov:
        return var + (m_new * mu - grad * lr), m_new
    return var + m_new, m_new


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum; see `sgd_update`.

    Args:
      learning_rate: float >= 0, default 0.01.
      momentum: float in [0, 1], default 0.0 (plain SGD, no slots).
      nesterov: bool, default False.
      clipnorm, global_clipnorm, name, fused: see `Optimizer` (fused:
        `ResourceApplyGradientDescent` / `ResourceApplyKerasMomentum`, the same
        formulas).
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, clipnorm: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None,
                 fused: bool = True):
        super().__init__(learning_rate, clipnorm=clipnorm,
                         global_clipnorm=global_clipnorm, name=name or "sgd",
                         fused=fused)
        self.momentum = checks.check_real(momentum, "momentum", low=0, high=1)
        self.nesterov = checks.check_bool(nesterov, "nesterov")
        self.momentums = []

    def build_slots(self, variables):
        if self.momentum != 0:
            (self.momentums,) = self.add_slots(variables, ["momentum"])

    def update_step(self, gradient, variable, learning_rate):
        m = self.momentums[self._index(variable)] if self.momentum != 0 else None
        if self.use_fused(variable):
            lr = tf.cast(learning_rate, variable.dtype)
            if m is None:
                tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=lr,
                                                        delta=gradient)
            else:
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=variable.handle, accum=m.handle, lr=lr, grad=gradient,
                    momentum=tf.constant(self.momentum, variable.dtype),
                    use_nesterov=self.nesterov)
            return
        new_var, new_m = sgd_update(variable, gradient, learning_rate, self.momentum,
                                    self.nesterov, m)
        if m is not None:
            m.assign(new_m)
        variable.assign(new_var)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "nesterov": self.nesterov}
