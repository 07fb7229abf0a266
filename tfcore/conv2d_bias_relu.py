"""conv2d_bias_relu: y = relu(conv2d(x, kernel) + bias), with a hand-written gradient.

Shapes: x [batch, H, W, in], kernel [kh, kw, in, filters], bias [filters] ->
y [batch, H', W', filters] (`tf.nn.conv2d` with `strides`, 'SAME' or 'VALID' padding,
no dilation). The forward pass is the same ops `Conv2D` would run (TensorFlow's graph
optimiser fuses them into one `_FusedConv2D`). The gradient, for dL/dy = dy:

    dz = dy * (y > 0)   (`ReluGrad`)
    d bias   = ones[1, batch*H'*W'] @ reshape(dz, [-1, filters])   (a matmul)
    d kernel = Conv2DBackpropFilter(x, dz),  d x = Conv2DBackpropInput(kernel, dz)

which is what autodiff computes, except the bias gradient: autodiff sums dz over
(batch, H', W') with a `Sum` reduction, which on CPU runs at a fraction of the
matmul's speed (docs/decisions.md, "Conv + bias + relu with a hand-written
gradient").

`Conv2D` takes this path on CPU for 'conv' layers with a bias, dilation_rate 1 and a
relu activation (`Conv2D.uses_fused_gradient`), and `SeparableConv2D` for its 1x1
pointwise convolution when it has a bias and a relu; both take a
`fused_gradient` argument (`check_fused_gradient`) resolved by `use_fused_gradient`.
Values agree with autodiff to float32 rounding (the bias sums are taken in another
order). There is no linear variant: its custom gradient's IdentityN sat between the
bias add and the next op, and with a LeakyReLU there (the DCGAN discriminator)
TensorFlow's graph optimiser failed ("remapper failed: ... fanout 'LeakyReluGrad'
exist for missing node 'add'") and skipped its fusions for the whole step; with the
relu inside, nothing follows the add.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf


def _gpu_visible() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def check_fused_gradient(setting, layer: str) -> Optional[bool]:
    """A layer's `fused_gradient` argument, checked: None, True or False (else a
    ValueError naming `layer`, the layer's class name)."""
    if not (setting is None or isinstance(setting, bool)):
        raise ValueError(f"{layer} fused_gradient must be None, True or False, "
                         f"got {setting!r}")
    return setting


def use_fused_gradient(setting: Optional[bool], eligible: bool) -> bool:
    """Whether a layer computes its conv + bias + relu with `conv2d_bias_relu`.

    Args:
      setting: the layer's checked `fused_gradient`: None (the default: yes on CPU,
        where it was measured; a visible GPU keeps autodiff), True or False.
      eligible: whether the layer has a bias and a relu (and whatever else its
        convolution needs for this path).
    """
    if setting is None:
        return eligible and not _gpu_visible()
    return eligible and setting


def conv2d_bias_relu(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor,
                     strides: Sequence[int], padding: str) -> tf.Tensor:
    """relu(conv2d(x, kernel, strides, padding) + bias), gradient as in the docstring.

    Args:
      x: [batch, H, W, in] float tensor.
      kernel: [kh, kw, in, filters] (a variable or tensor).
      bias: [filters].
      strides: (sh, sw).
      padding: 'SAME' or 'VALID'.
    """
    full_strides = [1, int(strides[0]), int(strides[1]), 1]

    @tf.custom_gradient
    def fn(x, kernel, bias):
        y = tf.nn.relu(tf.nn.conv2d(x, kernel, full_strides, padding) + bias)

        def grad(dy):
            dz = tf.raw_ops.ReluGrad(gradients=dy, features=y)
            dz2 = tf.reshape(dz, [-1, tf.shape(dz)[-1]])
            ones = tf.ones([1, tf.shape(dz2)[0]], dz.dtype)
            d_bias = tf.reshape(tf.matmul(ones, dz2), tf.shape(bias))
            d_kernel = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=dz,
                strides=full_strides, padding=padding)
            d_x = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dz,
                strides=full_strides, padding=padding)
            return d_x, d_kernel, d_bias
        return y, grad

    return fn(x, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))
