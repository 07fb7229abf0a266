"""DepthwiseConv2D: each input channel convolved with its own dm filters.

    y[b, i, j, c * dm + m] = activation(sum_{di, dj} x[b, s*i + di, s*j + dj, c]
                                        * kernel[di, dj, c, m] + bias[c * dm + m])

Shapes: x [batch, h, w, in] -> [batch, h', w', in * depth_multiplier], h' as in
Conv2D ('valid': ceil((h - (kh - 1) * d) / s); 'same': ceil(h / s)).
Variables (Keras 3 layout and name): `kernel` [kh, kw, in, depth_multiplier]
(glorot_uniform), `bias` [in * depth_multiplier] (zeros) when `use_bias`.
Channels-last only.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore import checks, initializers
from tfcore.conv_base import ConvBase
from tfcore.layer import add_bias


class DepthwiseConv2D(ConvBase):
    """Depthwise 2-D convolution (MobileNets, Howard et al. 2017).

    Args:
        kernel_size: (kh, kw) or an int.
        strides: (sh, sw) or an int. Default 1.
        padding: 'valid' (default) or 'same'.
        depth_multiplier: filters per input channel. Default 1.
        dilation_rate: default 1; > 1 requires strides == 1.
        activation: default None.
        use_bias: default True.
        depthwise_initializer: default 'glorot_uniform'.
        bias_initializer: default 'zeros'.
        name: module name.
    """

    def __init__(self, kernel_size, strides=1, padding: str = "valid",
                 depth_multiplier: int = 1, dilation_rate=1, activation=None,
                 use_bias: bool = True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", name: Optional[str] = None):
        super().__init__(2, kernel_size, strides, padding, dilation_rate, activation,
                         use_bias, bias_initializer, name=name)
        self.depth_multiplier = checks.check_int(depth_multiplier,
                                                   "DepthwiseConv2D depth_multiplier", low=1)
        self.depthwise_initializer = initializers.get(depthwise_initializer)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4:
            raise ValueError(f"DepthwiseConv2D '{self.name}': input must be [batch, h, w, "
                             f"channels], got shape {shape}")
        self._require_dims(shape, [-1], "input channel dimension")
        cin = int(shape[-1])
        self.kernel = self.add_weight("kernel", [*self.kernel_size, cin, self.depth_multiplier],
                                      self.depthwise_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [cin * self.depth_multiplier],
                                        self.bias_initializer)

    def call(self, x, training=False, seed=None):
        y = tf.nn.depthwise_conv2d(x, self.kernel, strides=[1, *self.strides, 1],
                                   padding=self.padding.upper(),
                                   dilations=self.dilation_rate)
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)
