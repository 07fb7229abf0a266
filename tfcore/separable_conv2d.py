"""SeparableConv2D: a depthwise convolution followed by a 1x1 (pointwise) one.

    d = depthwise_conv2d(x, depthwise_kernel)      # [b, h', w', in * dm]
    y = activation(d @ pointwise_kernel + bias)    # [b, h', w', filters]

(Xception, Chollet 2017.) Shapes: x [batch, h, w, in] -> [batch, h', w', filters],
h' as in Conv2D. Variables (Keras layout): `depthwise_kernel` [kh, kw, in, dm],
`pointwise_kernel` [1, 1, in * dm, filters] (both glorot_uniform), `bias`
[filters] (zeros) when `use_bias`. Parameters: kh*kw*in*dm + in*dm*filters
(+ filters). Channels-last only.

Gradient: on CPU, a layer with a bias and a relu computes its pointwise part with
`tfcore.conv2d_bias_relu` (the same forward ops; the bias gradient as a matmul with
a ones vector instead of autodiff's `Sum` over (batch, h', w')).
`fused_gradient=False` keeps autodiff; `uses_fused_gradient()` says which one a layer
takes (docs/decisions.md, "SeparableConv2D's pointwise part").
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore import activations, checks, initializers
from tfcore.conv2d_bias_relu import (check_fused_gradient, conv2d_bias_relu,
                                     use_fused_gradient)
from tfcore.conv_base import ConvBase
from tfcore.layer import add_bias


class SeparableConv2D(ConvBase):
    """Depthwise-separable 2-D convolution.

    Args:
        filters: output channels.
        kernel_size: (kh, kw) or an int.
        strides: (sh, sw) or an int. Default 1.
        padding: 'valid' (default) or 'same'.
        depth_multiplier: depthwise filters per input channel. Default 1.
        dilation_rate: default 1; > 1 requires strides == 1.
        activation: default None.
        use_bias: default True.
        depthwise_initializer, pointwise_initializer: default 'glorot_uniform'.
        bias_initializer: default 'zeros'.
        fused_gradient: None (default: on CPU, where measured), True or False: compute
            the pointwise convolution, bias and relu with `tfcore.conv2d_bias_relu`'s
            hand-written gradient when the layer has a bias and a relu activation
            (otherwise, or with False, autodiff). Same values to float32 rounding.
        name: module name.
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid",
                 depth_multiplier: int = 1, dilation_rate=1, activation=None,
                 use_bias: bool = True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros",
                 fused_gradient: Optional[bool] = None, name: Optional[str] = None):
        super().__init__(2, kernel_size, strides, padding, dilation_rate, activation,
                         use_bias, bias_initializer, name=name)
        self.filters = checks.check_int(filters, "SeparableConv2D filters", low=1)
        self.depth_multiplier = checks.check_int(depth_multiplier,
                                                   "SeparableConv2D depth_multiplier", low=1)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.fused_gradient = check_fused_gradient(fused_gradient, "SeparableConv2D")

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4:
            raise ValueError(f"SeparableConv2D '{self.name}': input must be [batch, h, w, "
                             f"channels], got shape {shape}")
        self._require_dims(shape, [-1], "input channel dimension")
        cin = int(shape[-1])
        dm = self.depth_multiplier
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel", [*self.kernel_size, cin, dm], self.depthwise_initializer)
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel", [1, 1, cin * dm, self.filters], self.pointwise_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], self.bias_initializer)

    def uses_fused_gradient(self) -> bool:
        """Whether the pointwise part goes through `conv2d_bias_relu` (`fused_gradient`)."""
        eligible = self.use_bias and self.activation is activations.relu
        return use_fused_gradient(self.fused_gradient, eligible)

    def call(self, x, training=False, seed=None):
        if self.uses_fused_gradient():
            # tf.nn.separable_conv2d's two ops, the 1x1 one with the bias and relu.
            d = tf.nn.depthwise_conv2d(x, self.depthwise_kernel, [1, *self.strides, 1],
                                       self.padding.upper(), dilations=self.dilation_rate)
            return conv2d_bias_relu(d, self.pointwise_kernel, self.bias, (1, 1), "VALID")
        y = tf.nn.separable_conv2d(x, self.depthwise_kernel, self.pointwise_kernel,
                                   strides=[1, *self.strides, 1],
                                   padding=self.padding.upper(),
                                   dilations=self.dilation_rate)
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)
