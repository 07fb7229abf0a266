"""Dense: y = activation(x @ kernel + bias).

Shapes: x [..., in] -> y [..., units]. Variables (Keras layout): `kernel` [in, units]
(glorot_uniform), `bias` [units] (zeros) when `use_bias`.
"""
from __future__ import annotations

import tensorflow as tf

from tfcore import activations, checks, initializers
from tfcore.layer import add_bias, Layer
from tfcore.secant import activation_secant


class Dense(Layer):
    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None):
        super().__init__(name=name)
        self.units = checks.check_int(units, "Dense units", low=1)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        self._require_dims(input_shape, [-1], "input feature dimension")
        in_dim = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", [in_dim, self.units], self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.units], self.bias_initializer)

    def _linear(self, x):
        """x [..., in] @ kernel -> [..., units] (no bias)."""
        if x.shape.rank == 2:
            return tf.linalg.matmul(x, self.kernel)
        return tf.tensordot(x, self.kernel, axes=[[x.shape.rank - 1], [0]])

    def call(self, x, training=False, seed=None):
        y = self._linear(x)
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)

    def secant(self, x, dx, training=False, seed=None):
        """(y, dy) with dy = dx @ kernel through the activation (`tfcore.secant`)."""
        self.ensure_built(x)
        z = self._linear(x)
        if self.use_bias:
            z = add_bias(z, self.bias)
        return activation_secant(self.activation, z, self._linear(dx))
