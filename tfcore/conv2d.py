"""Conv2D: y = activation(conv2d(x, kernel) + bias), NHWC.

Shapes: x [batch, H, W, in] -> y [batch, H', W', filters], with per spatial axis
(k_eff = (k - 1) * dilation + 1, Keras/TensorFlow conventions):
  'valid': H' = ceil((H - k_eff + 1) / stride);  'same': H' = ceil(H / stride).
Variables (Keras 3 layout): `kernel` [kh, kw, in, filters] (glorot_uniform) and
`bias` [filters] (zeros) when `use_bias`; both algorithms below use them as they are.

Two algorithms compute the same convolution (`algorithm=`):

* 'conv': `tf.nn.convolution` (as Keras 3's TensorFlow backend): `tf.nn.conv2d` when
  dilation_rate is 1; for dilation_rate > 1 it goes through space_to_batch, whose
  input gradient also works on CPU (TensorFlow's CPU Conv2DBackpropInput kernel
  rejects dilations > 1).
* 'shift_add' (strides 1 and dilation_rate 1 only): `shift_add_conv2d`, "matmul then
  shift-add". With K = kernel reshaped to [in, kh*kw*filters], z = x @ K holds, per
  tap (p, q), z_pq [batch, H, W, filters] = x @ kernel[p, q]. Padded like x would
  be ('same': top (kh-1)//2, bottom kh-1-top, left/right alike; 'valid': none),
  y = sum_pq z_pq[:, p:p+H', q:q+W', :]. Autodiff gives its gradients: two matmuls
  and kh*kw pads/slices, no custom gradient. The slices are `tf.slice`s, whose
  gradient is a Pad (a StridedSlice's gradient kernel was much slower). Its matmuls
  do the convolution's multiply-adds (plus the border taps of 'same'), but it moves
  kh*kw*filters floats per pixel through memory, so it pays only when filters is
  small against `in`.

Why: TensorFlow's CPU convolution kernels are slow with few output channels (the
DCGAN generator's last layer, Conv2D(1, 5) over 128 channels, takes as long as with
4 or 8 filters); there shift_add is about twice as fast. The measurements and the
crossovers behind the rule below: docs/decisions.md, "Conv2D as matmul + shift-add".

`algorithm='auto'` (the default) picks 'shift_add' when strides and dilation_rate
are 1, the kernel is larger than 1x1, H and W are static, the output is not empty,
64 * filters <= in (`SHIFT_ADD_MAX_FILTER_RATIO`) and TensorFlow sees no GPU (only
measured on CPU, so a GPU keeps 'conv'); otherwise 'conv'.
`Conv2D.resolved_algorithm(input_shape)` says which one a call takes.

Gradient: on CPU, a 'conv' layer with a bias, dilation_rate 1 and a relu activation
runs through `tfcore.conv2d_bias_relu` (same forward ops, a hand-written gradient
whose bias gradient is a matmul instead of a `Sum`); `fused_gradient=False` keeps
autodiff, `Conv2D.uses_fused_gradient()` says which one a layer takes.

The two algorithms agree to float32 rounding (~1e-6 relative in outputs and
gradients), not bitwise: sums are taken in another order.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfcore import activations, checks, initializers
from tfcore.conv2d_bias_relu import (check_fused_gradient, conv2d_bias_relu,
                                     use_fused_gradient)
from tfcore.conv_base import ConvBase
from tfcore.layer import add_bias
from tfcore.secant import activation_secant

IntOr2 = Union[int, Sequence[int]]

ALGORITHMS = ("auto", "conv", "shift_add")
# 'auto' takes 'shift_add' when SHIFT_ADD_MAX_FILTER_RATIO * filters <= in_channels.
SHIFT_ADD_MAX_FILTER_RATIO = 64


def conv_padding(kernel_size: int, padding: str) -> Tuple[int, int]:
    """(before, after) zero padding of a stride-1, dilation-1 convolution on one axis:
    'valid' (0, 0); 'same' ((k-1)//2, k-1-(k-1)//2), TensorFlow's split (an even
    kernel pads one more after than before)."""
    if padding == "valid":
        return 0, 0
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


def shift_add_conv2d(x: tf.Tensor, kernel: tf.Tensor, padding: str) -> tf.Tensor:
    """Stride-1, dilation-1 convolution computed as one matmul then a shift-add.

    Equals `tf.nn.conv2d(x, kernel, 1, padding.upper())` (see the module docstring
    for the formula). Differentiable by autodiff in graph mode and under XLA. With
    one filter it computes z^T = K^T @ x^T, which comes out tap-major and needs no
    transpose (faster there; with more filters that layout was slower).

    Args:
      x: [batch, H, W, in] with static H, W and in (batch may be unknown).
      kernel: [kh, kw, in, filters].
      padding: 'same' or 'valid' (lower case).

    Returns:
      [batch, H', W', filters]; H' = H ('same') or H - kh + 1 ('valid').
    """
    kh, kw, cin, filters = kernel.shape.as_list()
    _, h, w, _ = x.shape.as_list()
    top, bottom = conv_padding(kh, padding)
    left, right = conv_padding(kw, padding)
    out_h, out_w = h + top + bottom - kh + 1, w + left + right - kw + 1
    taps = kh * kw
    x2 = tf.reshape(x, [-1, cin])
    if filters == 1:
        # z^T = K^T @ x^T comes out tap-major [taps, B*H*W]: no transpose of z.
        k_t = tf.reshape(tf.transpose(kernel, [0, 1, 3, 2]), [taps, cin])
        z = tf.reshape(tf.linalg.matmul(k_t, x2, transpose_b=True), [taps, -1, h, w])
        z = tf.pad(z, [[0, 0], [0, 0], [top, bottom], [left, right]])
        zs = tf.unstack(z, num=taps)  # not z[i]: its gradient is a full-size scatter
        # tf.slice, not z[:, p:...]: Slice's gradient is a Pad, StridedSlice's a
        # slower StridedSliceGrad kernel (docs/decisions.md).
        y = tf.add_n([tf.slice(zs[p * kw + q], [0, p, q], [-1, out_h, out_w])
                      for p in range(kh) for q in range(kw)])
        return y[..., tf.newaxis]
    k = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [cin, taps * filters])
    z = tf.reshape(tf.linalg.matmul(x2, k), [-1, h, w, taps, filters])
    z = tf.transpose(z, [3, 0, 1, 2, 4])                      # [taps, B, H, W, F]
    z = tf.pad(z, [[0, 0], [0, 0], [top, bottom], [left, right], [0, 0]])
    zs = tf.unstack(z, num=taps)
    return tf.add_n([tf.slice(zs[p * kw + q], [0, p, q, 0], [-1, out_h, out_w, -1])
                     for p in range(kh) for q in range(kw)])


def _gpu_visible() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


class Conv2D(ConvBase):
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
      algorithm: 'auto' (default), 'conv' (`tf.nn.convolution`) or 'shift_add'
        (matmul then shift-add; strides 1 and dilation_rate 1 only). See the module
        docstring for what 'auto' picks and the measurements behind it.
      fused_gradient: None (default: on CPU, where measured), True or False: compute
        'conv' with `tfcore.conv2d_bias_relu`'s hand-written gradient when the layer
        has a bias, dilation_rate 1 and a relu activation (otherwise, or
        with False, autodiff). Same values to float32 rounding.
      name: module name.
    """

    def __init__(self, filters: int, kernel_size: IntOr2, strides: IntOr2 = 1,
                 padding: str = "valid", dilation_rate: IntOr2 = 1,
                 activation: Union[None, str, Callable] = None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 algorithm: str = "auto", fused_gradient: Optional[bool] = None,
                 name: Optional[str] = None):
        super().__init__(2, kernel_size, strides, padding, dilation_rate, activation,
                         use_bias, bias_initializer, name=name)
        self.filters = checks.check_int(filters, "Conv2D filters", low=1)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"Conv2D algorithm must be one of "
                             f"{', '.join(repr(a) for a in ALGORITHMS)}, got {algorithm!r}")
        if algorithm == "shift_add" and (max(self.strides) > 1
                                         or max(self.dilation_rate) > 1):
            raise ValueError(f"Conv2D algorithm='shift_add' needs strides 1 and "
                             f"dilation_rate 1, got strides={strides!r} and "
                             f"dilation_rate={dilation_rate!r}")
        self.algorithm = algorithm
        self.fused_gradient = check_fused_gradient(fused_gradient, "Conv2D")
        self.kernel_initializer = initializers.get(kernel_initializer)

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

    def resolved_algorithm(self, input_shape) -> str:
        """'conv' or 'shift_add': what a call on an input of this shape computes with.

        'auto' follows the rule in the module docstring; an explicit 'shift_add'
        needs static H, W and in, and a non-empty output (ValueError otherwise).
        """
        shape = tf.TensorShape(input_shape)
        if self.algorithm == "conv" or shape.rank != 4:
            return "conv"
        kh, kw = self.kernel_size
        h, w, cin = shape[1], shape[2], shape[3]
        known = None not in (h, w, cin)
        if known:
            (t, b), (l, r) = conv_padding(kh, self.padding), conv_padding(kw, self.padding)
            known = h + t + b - kh + 1 > 0 and w + l + r - kw + 1 > 0
        if self.algorithm == "shift_add":
            if not known:
                raise ValueError(f"Conv2D '{self.name}' algorithm='shift_add' needs a "
                                 f"static height, width and channel count and a "
                                 f"non-empty output, got input shape {shape}")
            return "shift_add"
        if (known and self.strides == (1, 1) and self.dilation_rate == (1, 1)
                and kh * kw > 1 and SHIFT_ADD_MAX_FILTER_RATIO * self.filters <= cin
                and not _gpu_visible()):
            return "shift_add"
        return "conv"

    def uses_fused_gradient(self) -> bool:
        """Whether a 'conv' call goes through `conv2d_bias_relu` (see `fused_gradient`)."""
        eligible = (self.use_bias and self.dilation_rate == (1, 1)
                    and self.activation is activations.relu)
        return use_fused_gradient(self.fused_gradient, eligible)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [batch, H, W, in] -> [batch, H', W', filters]."""
        algorithm = self.resolved_algorithm(x.shape)
        if algorithm == "conv" and self.uses_fused_gradient():
            return conv2d_bias_relu(x, self.kernel, self.bias, self.strides,
                                    self.padding.upper())
        y = self._linear(x, algorithm)
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)

    def _linear(self, x: tf.Tensor, algorithm: str) -> tf.Tensor:
        """The convolution alone (no bias, no activation), per `algorithm`."""
        if algorithm == "shift_add":
            return shift_add_conv2d(x, self.kernel, self.padding)
        return tf.nn.convolution(x, self.kernel, strides=self.strides,
                                 padding=self.padding.upper(), dilations=self.dilation_rate)

    def secant(self, x: tf.Tensor, dx: tf.Tensor, training: bool = False, seed=None):
        """(y, dy) with dy = conv(dx) through the activation (`tfcore.secant`)."""
        self.ensure_built(x)
        algorithm = self.resolved_algorithm(x.shape)
        z = self._linear(x, algorithm)
        if self.use_bias:
            z = add_bias(z, self.bias)
        return activation_secant(self.activation, z, self._linear(dx, algorithm))
