"""Conv2D: y = activation(conv2d(x, kernel) + bias), NHWC.

Shapes: x [batch, H, W, in] -> y [batch, H', W', filters], with per spatial axis
(k_eff = (k - 1) * dilation + 1, Keras/TensorFlow conventions):
  'valid': H' = ceil((H - k_eff + 1) / stride);  'same': H' = ceil(H / stride).
Variables (Keras 3 layout): `kernel` [kh, kw, in, filters] (glorot_uniform) and
`bias` [filters] (zeros) when `use_bias`. Computed with `tf.nn.convolution` (as Keras
3's TensorFlow backend): it is `tf.nn.conv2d` when dilation_rate is 1, and for
dilation_rate > 1 it goes through space_to_batch, whose input gradient also works on
CPU (TensorFlow's CPU Conv2DBackpropInput kernel rejects dilations > 1).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from tfcore import activations, initializers
from tfcore.layer import Layer, check_positive_int, normalize_padding, normalize_tuple

IntOr2 = Union[int, Sequence[int]]


class Conv2D(Layer):
    """2-D convolution over NHWC images (Keras 3 `Conv2D`, channels_last).

    Args:
      filters: number of output channels (positive int).
      kernel_size: int or (kh, kw).
      strides: int or (sh, sw), default 1.
      padding: 'valid' (default) or 'same' (case-insensitive).
      dilation_rate: int or (dh, dw), default 1; strides > 1 together with
        dilation_rate > 1 is rejected, as in Keras.
      activation: None (linear), a name from `tfcore.activations` or a callable.
      use_bias: add `bias` (default True).
      kernel_initializer: default 'glorot_uniform'.
      bias_initializer: default 'zeros'.
      name: module name.
    """

    def __init__(self, filters: int, kernel_size: IntOr2, strides: IntOr2 = 1,
                 padding: str = "valid", dilation_rate: IntOr2 = 1,
                 activation: Union[None, str, Callable] = None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.filters = check_positive_int(filters, "Conv2D filters")
        self.kernel_size = normalize_tuple(kernel_size, 2, "Conv2D kernel_size")
        self.strides = normalize_tuple(strides, 2, "Conv2D strides")
        self.padding = normalize_padding(padding)
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "Conv2D dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"Conv2D strides > 1 is not supported with dilation_rate > 1, "
                             f"got strides={strides!r} and dilation_rate={dilation_rate!r}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates `kernel` [kh, kw, in, filters] and `bias` [filters]."""
        self._require_dims(input_shape, [-1], "input channel dimension")
        if tf.TensorShape(input_shape).rank != 4:
            raise ValueError(f"Conv2D '{self.name}' expects a 4-D NHWC input, "
                             f"got shape {tf.TensorShape(input_shape)}")
        in_ch = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", [*self.kernel_size, in_ch, self.filters],
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], self.bias_initializer)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, in] -> [batch, H', W', filters]."""
        y = tf.nn.convolution(x, self.kernel, strides=self.strides,
                              padding=self.padding.upper(), dilations=self.dilation_rate)
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)
