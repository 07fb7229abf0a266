"""RMSprop (optionally centered, with momentum), exactly Keras 3's `keras.optimizers.RMSprop`.

Slots per variable: `velocity`; `momentum` when `momentum > 0`; `average_gradient`
when `centered`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfcore import checks
from tfcore.optimizers.optimizer import Number, Optimizer


def rmsprop_update(var: tf.Tensor, grad: tf.Tensor, velocity: tf.Tensor, lr: Number,
                   rho: float, epsilon: float, momentum: float = 0.0,
                   momentum_slot: Optional[tf.Tensor] = None,
                   average_grad: Optional[tf.Tensor] = None,
                   epsilon_outside_sqrt: bool = False
                   ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor],
                              Optional[tf.Tensor]]:
    """One RMSprop step in Keras 3's form (epsilon inside the square root).

        v'   = rho * v + (1 - rho) * g^2
        a'   = rho * a + (1 - rho) * g            (centered only)
        den  = v' - a'^2 + eps  (centered)   or   v' + eps
        inc  = lr * g / sqrt(den)
        inc  = lr * g / (sqrt(den - eps) + eps)    (epsilon_outside_sqrt: Keras 2's
                                                    legacy RMSprop without momentum)
        mom' = momentum * mom + inc;  var' = var - mom'   (when momentum_slot given)
        var' = var - inc                                   (otherwise)

    Args:
      var, grad, velocity: the variable, its dense gradient, the mean-square slot.
      lr, rho, epsilon, momentum: hyperparameters.
      momentum_slot: the momentum slot, or None (no momentum).
      average_grad: the mean-gradient slot, or None (not centered).
      epsilon_outside_sqrt: add epsilon to sqrt(den) instead of den (default False).

    Returns:
      `(new_var, new_velocity, new_momentum_slot, new_average_grad)`, the last two
      None when not given.
    """
    lr = tf.cast(lr, var.dtype)
    v_new = rho * velocity + (1 - rho) * tf.math.square(grad)
    a_new = None
    mean_square = v_new
    if average_grad is not None:
        a_new = rho * average_grad + (1 - rho) * grad
        mean_square = v_new - tf.math.square(a_new)
    if epsilon_outside_sqrt:
        increment = (lr * grad) / (tf.math.sqrt(mean_square) + epsilon)
    else:
        increment = (lr * grad) / tf.math.sqrt(mean_square + epsilon)
    if momentum_slot is not None:
        mom_new = momentum * momentum_slot + increment
        return var - mom_new, v_new, mom_new, a_new
    return var - increment, v_new, None, a_new


class RMSprop(Optimizer):
    """RMSprop; see `rmsprop_update`.

    Args:
      learning_rate: float >= 0, default 0.001.
      rho: decay of the mean square, in [0, 1), default 0.9.
      momentum: float in [0, 1], default 0.0 (no momentum slot).
      epsilon: float >= 0, default 1e-7.
      centered: subtract the squared mean gradient (Graves 2013), default False.
      epsilon_outside_sqrt: step by lr g / (sqrt(v) + eps), as Keras 2's legacy
        `tf_keras.optimizers.legacy.RMSprop` does without momentum (with momentum it
        uses TensorFlow's fused kernel, eps inside the root, the default here);
        default False (Keras 3's lr g / sqrt(v + eps)). tfcore's own argument.
      clipnorm, global_clipnorm, name: see `Optimizer`.
    """

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-7, centered: bool = False,
                 clipnorm: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, epsilon_outside_sqrt: bool = False):
        # No fused kernel: TF's ResourceApplyRMSProp needs a momentum slot that Keras
        # creates only with momentum > 0.
        super().__init__(learning_rate, clipnorm=clipnorm,
                         global_clipnorm=global_clipnorm, name=name or "rmsprop",
                         fused=False)
        self.rho = checks.check_real(rho, "rho", low=0, high=1, high_open=True)
        self.momentum = checks.check_real(momentum, "momentum", low=0, high=1)
        self.epsilon = checks.check_real(epsilon, "epsilon", low=0)
        self.centered = checks.check_bool(centered, "centered")
        self.epsilon_outside_sqrt = checks.check_bool(epsilon_outside_sqrt,
                                                      "epsilon_outside_sqrt")
        self._velocities, self._momentums, self._average_gradients = [], [], []

    def build_slots(self, variables):
        # Keras 3 creates all velocities, then momentums, then average gradients.
        (self._velocities,) = self.add_slots(variables, ["velocity"])
        if self.momentum > 0:
            (self._momentums,) = self.add_slots(variables, ["momentum"])
        if self.centered:
            (self._average_gradients,) = self.add_slots(variables, ["average_gradient"])

    def update_step(self, gradient, variable, learning_rate):
        i = self._index(variable)
        vel = self._velocities[i]
        mom = self._momentums[i] if self.momentum > 0 else None
        avg = self._average_gradients[i] if self.centered else None
        new_var, new_vel, new_mom, new_avg = rmsprop_update(
            variable, gradient, vel, learning_rate, self.rho, self.epsilon,
            self.momentum, mom, avg, self.epsilon_outside_sqrt)
        vel.assign(new_vel)
        if avg is not None:
            avg.assign(new_avg)
        if mom is not None:
            mom.assign(new_mom)
        variable.assign(new_var)

    def get_config(self):
        config = {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                  "epsilon": self.epsilon, "centered": self.centered,
                  "epsilon_outside_sqrt": self.epsilon_outside_sqrt}
        del config["fused"]  # not an argument here: no fused kernel
        return config
