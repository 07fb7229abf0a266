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

from tfcore import activations, initializers
from tfcore.layer import add_bias, Layer, check_positive_int, normalize_tuple


class Conv1D(Layer):
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
        super().__init__(name=name)
        self.filters = check_positive_int(filters, "Conv1D filters")
        (self.kernel_size,) = normalize_tuple(kernel_size, 1, "Conv1D kernel_size")
        (self.strides,) = normalize_tuple(strides, 1, "Conv1D strides")
        (self.dilation_rate,) = normalize_tuple(dilation_rate, 1, "Conv1D dilation_rate")
        p = str(padding).lower()
        if p not in ("valid", "same", "causal"):
            raise ValueError(f"Conv1D padding must be 'valid', 'same' or 'causal', "
                             f"got {padding!r}")
        self.padding = p
        if self.strides > 1 and self.dilation_rate > 1:
            raise ValueError(f"Conv1D: strides > 1 with dilation_rate > 1 is not supported, "
                             f"got strides={strides!r}, dilation_rate={dilation_rate!r}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

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
