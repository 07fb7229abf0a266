"""Conv2DTranspose: the transpose (gradient) of a 2-D convolution, NHWC.

y = activation(conv2d_transpose(x, kernel) + bias). Shapes: x [batch, H, W, in] ->
y [batch, H', W', filters], per spatial axis with k_eff = (k - 1) * dilation + 1 and
stride s (Keras 3's TensorFlow-backend output size, `deconv_output_length` below):

  padding   output_padding=None          output_padding=p (0 <= p < s)
  'valid'   (H - 1) * s + max(k_eff, s)  (H - 1) * s + k_eff + p
  'same'    H * s                        (H - 1) * s + k_eff % 2 + p

Variables (Keras 3 layout): `kernel` [kh, kw, filters, in] (glorot_uniform) and
`bias` [filters] (zeros). Computed with `tf.nn.conv2d_transpose` and a static output
shape (a known batch gives a fully static shape, as XLA needs; an unknown batch uses
`tf.shape(x)[0]` while H', W', filters stay static). With dilation_rate > 1 (only
allowed with strides 1, as in Keras) it is computed as the equivalent dilated
`tf.nn.convolution` of the padded input with the spatially flipped kernel, because
TensorFlow's CPU kernel for the transposed convolution (Conv2DBackpropInput) does
not support dilation; that route runs, and differentiates, on CPU, GPU and XLA.

No 'shift_add' algorithm here (unlike `tfcore.conv2d.Conv2D`): TensorFlow's
transposed convolution is not slow with few output channels. Measured on the
project's 2-core CPU (TF 2.21, shared machine; y, dL/dx, dL/dkernel in one
`tf.function`, median ms), against a verified matmul-then-shift-add version (z = x @
kernel per tap on the small grid, the kh*kw shifted copies summed per stride phase,
the s*s phases interleaved by a reshape, then cropped):

| x -> y, kernel                                       | graph: TF / shift-add | XLA: TF / shift-add |
| ---------------------------------------------------- | --------------------- | ------------------- |
| DCGAN G last: [64,16,16,128] -> [64,32,32,1], 5x5 s2 | 11.7 / 21.4           | 10.9 / 11.1         |
| same, 4 filters                                      | 21.3 / 48.2           | 21.1 / 25.3         |
| conv AE: [128,14,14,8] -> [128,28,28,16], 3x3 s2     | 10.5 / 79.5           | 11.1 / 28.0         |
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from tfcore import checks, initializers
from tfcore.conv_base import ConvBase
from tfcore.layer import add_bias, normalize_tuple

IntOr2 = Union[int, Sequence[int]]


def deconv_output_length(input_length, kernel_size: int, padding: str,
                         output_padding: Optional[int] = None, stride: int = 1,
                         dilation: int = 1):
    """Output length of a transposed convolution along one axis (Keras 3, TF backend).

    Args:
      input_length: H (a Python int, a scalar int tensor, or None for unknown).
      kernel_size: k. padding: 'valid' or 'same'. output_padding: None or p.
      stride: s. dilation: d (k_eff = (k - 1) * d + 1).

    Returns:
      'valid': (H - 1) * s + max(k_eff, s) if p is None else (H - 1) * s + k_eff + p;
      'same':  H * s if p is None else (H - 1) * s + k_eff % 2 + p;  None if H is None.
    """
    if input_length is None:
        return None
    k_eff = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        extra = max(k_eff, stride) if output_padding is None else k_eff + output_padding
        return (input_length - 1) * stride + extra
    if output_padding is None:
        return input_length * stride
    return (input_length - 1) * stride + k_eff % 2 + output_padding


class Conv2DTranspose(ConvBase):
    """Transposed 2-D convolution over NHWC images (Keras 3 `Conv2DTranspose`).

    Args:
      filters: number of output channels (positive int).
      kernel_size: int or (kh, kw).
      strides: int or (sh, sw), default 1.
      padding: 'valid' (default) or 'same'.
      output_padding: None (default) or int / (ph, pw) with 0 <= p < stride: extra
        rows/columns at the bottom/right (see the module docstring for sizes).
        With padding 'same', k_eff % 2 + p must be >= 1 (an even kernel needs
        p >= 1), otherwise TensorFlow cannot produce that size; rejected here.
      dilation_rate: int or (dh, dw), default 1 (> 1 only with strides 1).
      activation: None (linear), a name from `tfcore.activations` or a callable.
      use_bias: add `bias` (default True).
      kernel_initializer: default 'glorot_uniform'.
      bias_initializer: default 'zeros'.
      name: module name.
    """

    def __init__(self, filters: int, kernel_size: IntOr2, strides: IntOr2 = 1,
                 padding: str = "valid", output_padding: Optional[IntOr2] = None,
                 dilation_rate: IntOr2 = 1,
                 activation: Union[None, str, Callable] = None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name: Optional[str] = None):
        super().__init__(2, kernel_size, strides, padding, dilation_rate, activation,
                         use_bias, bias_initializer, name=name)
        self.filters = checks.check_int(filters, "Conv2DTranspose filters", low=1)
        if output_padding is None:
            self.output_padding = None
        else:
            self.output_padding = normalize_tuple(output_padding, 2,
                                                  "Conv2DTranspose output_padding",
                                                  allow_zero=True)
            if any(p >= s for p, s in zip(self.output_padding, self.strides)):
                raise ValueError(f"Conv2DTranspose output_padding must be smaller than "
                                 f"strides on each axis, got output_padding="
                                 f"{output_padding!r} and strides={strides!r}")
            if self.padding == "same":
                for k, d, p in zip(self.kernel_size, self.dilation_rate,
                                   self.output_padding):
                    if ((k - 1) * d + 1) % 2 + p == 0:
                        raise ValueError(
                            f"Conv2DTranspose output_padding={output_padding!r} with "
                            f"padding 'same' and an even (dilated) kernel_size="
                            f"{kernel_size!r} gives an output size TensorFlow cannot "
                            f"produce; use output_padding >= 1 or None")
        self.kernel_initializer = initializers.get(kernel_initializer)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates `kernel` [kh, kw, filters, in] and `bias` [filters]."""
        self._require_dims(input_shape, [-1], "input channel dimension")
        if tf.TensorShape(input_shape).rank != 4:
            raise ValueError(f"Conv2DTranspose '{self.name}' expects a 4-D NHWC input, "
                             f"got shape {tf.TensorShape(input_shape)}")
        in_ch = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", [*self.kernel_size, self.filters, in_ch],
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.filters], self.bias_initializer)

    def output_spatial_shape(self, height, width) -> list:
        """[H', W'] for an input of spatial size (H, W) (ints, tensors or None)."""
        op = self.output_padding or (None, None)
        return [deconv_output_length(n, k, self.padding, p, s, d)
                for n, k, p, s, d in zip((height, width), self.kernel_size, op,
                                         self.strides, self.dilation_rate)]

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, in] -> [batch, H', W', filters]."""
        static = x.shape.as_list()
        dynamic = tf.shape(x)
        dims = [static[i] if static[i] is not None else dynamic[i] for i in range(3)]
        out_h, out_w = self.output_spatial_shape(dims[1], dims[2])
        if max(self.dilation_rate) > 1:
            y = self._dilated(x)
        else:
            out_shape = [dims[0], out_h, out_w, self.filters]
            if not all(isinstance(d, int) for d in out_shape):
                out_shape = tf.stack([tf.cast(d, tf.int32) for d in out_shape])
            y = tf.nn.conv2d_transpose(x, self.kernel, out_shape, strides=self.strides,
                                       padding=self.padding.upper())
        y.set_shape([static[0],
                     out_h if isinstance(out_h, int) else None,
                     out_w if isinstance(out_w, int) else None,
                     self.filters])
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)

    def _dilated(self, x):
        """Strides 1, dilation > 1: convolution of the padded x, flipped kernel.

        The transposed convolution of a stride-1 convolution whose input was padded
        by (before, after) is a 'full' convolution with the spatially flipped kernel
        of the input padded by (k_eff - 1 - before, k_eff - 1 - after): 'valid' ->
        (k_eff - 1, k_eff - 1); 'same' (TF puts the smaller half first,
        b = (k_eff - 1) // 2) -> (k_eff - 1 - b, b).
        """
        pads = [[0, 0]]
        for k, d in zip(self.kernel_size, self.dilation_rate):
            k_eff = (k - 1) * d + 1
            if self.padding == "valid":
                pads.append([k_eff - 1, k_eff - 1])
            else:
                before = (k_eff - 1) // 2
                pads.append([k_eff - 1 - before, before])
        pads.append([0, 0])
        kernel = tf.transpose(tf.reverse(self.kernel, axis=[0, 1]), [0, 1, 3, 2])
        return tf.nn.convolution(tf.pad(x, pads), kernel, strides=1, padding="VALID",
                                 dilations=self.dilation_rate)
