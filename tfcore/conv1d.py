"""Conv1D: y = activation(conv1d(x, kernel) + bias) over the time axis.

Shapes: x [batch, steps, in] -> y [batch, out_steps, filters], where out_steps =
ceil((steps - (k - 1) * d) / s) for 'valid', ceil(steps / s) for 'same', and
ceil(steps / s) for 'causal' (x left-padded with (k - 1) * d zeros, so y[t]
depends only on x[<= t]; WaveNet, van den Oord et al. 2016).
Variables (Keras layout): `kernel` [k, in, filters] (glorot_uniform), `bias`
[filters] (zeros) when `use_bias`. Channels-last only.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore import checks, initializers
from tfcore.conv_base import ConvBase
from tfcore.layer import add_bias


class Conv1D(ConvBase):
    """1-D convolution (cross-correlation, as tf.nn / Keras).

    Args:
        filters: output channels.
        kernel_size: window length k (int or 1-tuple).
        strides: step s. Default 1.
        padding: 'valid' (default), 'same' or 'causal'.
        dilation_rate: d. Default 1; d > 1 requires strides == 1.
        activation: default None (linear).
        use_bias: default True.
        kernel_initializer: default 'glorot_uniform'.
        bias_initializer: default 'zeros'.
        name: module name.
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid",
                 dilation_rate=1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name: Optional[str] = None):
        super().__init__(1, kernel_size, strides, padding, dilation_rate, activation,
                         use_bias, bias_initializer, paddings=("valid", "same", "causal"),
                         name=name)
        (self.kernel_size,), (self.strides,) = self.kernel_size, self.strides
        (self.dilation_rate,) = self.dilation_rate
        self.filters = checks.check_int(filters, "Conv1D filters", low=1)
        self.kernel_initializer = initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 3:
            raise ValueError(f"Conv1D '{self.name}': input must be [batch, steps, channels], "
                             f"got shape {shape}")
        self._require_dims(shape, [-1], "input channel dimension")
        self.kernel = self.add_weight("kernel", [self.kernel_size, int(shape[-1]), self.filters],
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], self.bias_initializer)

    def call(self, x, training=False, seed=None):
        padding = self.padding.upper()
        if self.padding == "causal":
            left = (self.kernel_size - 1) * self.dilation_rate
            x = tf.pad(x, [[0, 0], [left, 0], [0, 0]])
            padding = "VALID"
        # tf.nn.convolution (not conv1d): its dilated path has a CPU gradient.
        y = tf.nn.convolution(x, self.kernel, strides=self.strides, padding=padding,
                              dilations=self.dilation_rate)
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)
