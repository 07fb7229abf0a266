"""Adam (optionally AMSGrad), exactly Keras 3's `keras.optimizers.Adam`.

Slots per variable: `momentum` (m) and `velocity` (v), plus `velocity_hat` with
`amsgrad`; named `"{var}_momentum"`, `"{var}_velocity"`, `"{var}_velocity_hat"`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfcore import checks
from tfcore.optimizers.optimizer import Number, Optimizer


def adam_update(var: tf.Tensor, grad: tf.Tensor, m: tf.Tensor, v: tf.Tensor, lr: Number,
                beta_1: float, beta_2: float, epsilon: float, t: Number,
                v_hat: Optional[tf.Tensor] = None
                ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
    """One Adam step in Keras 3's form (bias correction folded into the step size).

        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m' = m + (g - m) * (1 - beta_1)
        v' = v + (g^2 - v) * (1 - beta_2)
        v_hat' = max(v_hat, v')              (AMSGrad only; then used in place of v')
        var' = var - m' * alpha / (sqrt(v') + epsilon)

    Note the epsilon placement: it is added to `sqrt(v')` *without* bias correction,
    i.e. Kingma & Ba's "epsilon hat" (TF1/Keras), not the paper's Algorithm 1.

    Args:
      var, grad, m, v: the variable, its dense gradient and the two moments.
      lr: learning rate. beta_1, beta_2, epsilon: Adam's constants.
      t: the 1-based step number (`iterations + 1`).
      v_hat: the AMSGrad running max of v, or None for plain Adam.

    Returns:
      `(new_var, new_m, new_v, new_v_hat)`; `new_v_hat` is None without AMSGrad.
    """
    dtype = var.dtype
    lr = tf.cast(lr, dtype)
    t = tf.cast(t, dtype)
    beta_1_power = tf.math.pow(tf.cast(beta_1, dtype), t)
    beta_2_power = tf.math.pow(tf.cast(beta_2, dtype), t)
    alpha = lr * tf.math.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m_new = m + (grad - m) * (1 - beta_1)
    v_new = v + (tf.math.square(grad) - v) * (1 - beta_2)
    v_hat_new = None
    v_used = v_new
    if v_hat is not None:
        v_hat_new = tf.math.maximum(v_hat, v_new)
        v_used = v_hat_new
    var_new = var - (m_new * alpha) / (tf.math.sqrt(v_used) + epsilon)
    return var_new, m_new, v_new, v_hat_new


class Adam(Optimizer):
    """Adam / AMSGrad; see `adam_update`.

    Args:
      learning_rate: float >= 0, default 0.001.
      beta_1: float in [0, 1), default 0.9.
      beta_2: float in [0, 1), default 0.999.
      epsilon: float >= 0, default 1e-7.
      amsgrad: bool, default False.
      clipnorm, global_clipnorm, name, fused: see `Optimizer` (fused:
        `ResourceApplyAdam`, the same formula; AMSGrad always runs unfused, as XLA
        has no kernel for `ResourceApplyAdamWithAmsgrad`).
    """

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 clipnorm: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, fused: bool = True):
        super().__init__(learning_rate, clipnorm=clipnorm,
                         global_clipnorm=global_clipnorm, name=name or "adam",
                         fused=fused)
        self.beta_1 = checks.check_real(beta_1, "beta_1", low=0, high=1, high_open=True)
        self.beta_2 = checks.check_real(beta_2, "beta_2", low=0, high=1, high_open=True)
        self.epsilon = checks.check_real(epsilon, "epsilon", low=0)
        self.amsgrad = checks.check_bool(amsgrad, "amsgrad")
        self._momentums, self._velocities, self._velocity_hats = [], [], []

    def build_slots(self, variables):
        # Keras 3 order: momentum/velocity interleaved, then all the velocity_hats.
        self._momentums, self._velocities = self.add_slots(variables,
                                                           ["momentum", "velocity"])
        if self.amsgrad:
            (self._velocity_hats,) = self.add_slots(variables, ["velocity_hat"])

    def update_step(self, gradient, variable, learning_rate):
        i = self._index(variable)
        m, v = self._momentums[i], self._velocities[i]
        v_hat = self._velocity_hats[i] if self.amsgrad else None
        if v_hat is None and self.use_fused(variable):
            dtype = variable.dtype
            t = self.local_step(dtype)
            b1, b2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle,
                beta1_power=tf.math.pow(b1, t), beta2_power=tf.math.pow(b2, t),
                lr=tf.cast(learning_rate, dtype), beta1=b1, beta2=b2,
                epsilon=tf.constant(self.epsilon, dtype), grad=gradient)
            return
        new_var, new_m, new_v, new_v_hat = adam_update(
            variable, gradient, m, v, learning_rate, self.beta_1, self.beta_2,
            self.epsilon, self.local_step(variable.dtype), v_hat)
        m.assign(new_m)
        v.assign(new_v)
        if v_hat is not None:
            v_hat.assign(new_v_hat)
        variable.assign(new_var)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}
