"""Conv2D's 'shift_add' algorithm (matmul then shift-add) and its 'auto' choice.

Parity, float32, rtol = atol = 1e-5: a tfcore Conv2D with algorithm='shift_add' (in a
`tf.function` and under `jit_compile=True`) against a real Keras 3 Conv2D with the
weights copied in (outputs and the gradients of sum(y * cot) w.r.t. the input,
`kernel` and `bias`) and against `tf.nn.convolution` + bias on the same variables.
Cases cover 'same'/'valid', odd, even (asymmetric 'same' padding) and rectangular
kernels, 1 and 3 filters, batch 2, non-square images. Then the 'auto' rule of
tfcore/conv2d.py's docstring (strides = dilation = 1, kernel > 1x1, static H, W,
non-empty output, 64 * filters <= in, no GPU) and the argument errors.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from blocks import value_and_grads
from tfcore import conv2d as conv2d_lib

TOL = dict(rtol=1e-5, atol=1e-5)


def _x(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _assert_all_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


@pytest.mark.parametrize("shape,kwargs", [
    ((2, 7, 6, 5), dict(filters=1, kernel_size=3, padding="same")),
    ((2, 7, 6, 5), dict(filters=3, kernel_size=4, padding="same")),        # even: pad 1/2
    ((2, 6, 9, 4), dict(filters=1, kernel_size=(2, 5), padding="same")),
    ((2, 6, 9, 4), dict(filters=3, kernel_size=(5, 2), padding="same", activation="tanh")),
    ((2, 7, 6, 5), dict(filters=3, kernel_size=(3, 2), padding="valid")),
    ((2, 7, 6, 5), dict(filters=1, kernel_size=4, padding="valid")),
])
def test_shift_add_matches_keras_and_tf_nn_convolution(shape, kwargs):
    x = _x(shape)
    ours = tfcore.Conv2D(algorithm="shift_add", **kwargs)
    theirs = keras.layers.Conv2D(**kwargs)
    theirs(x)
    ours(x)
    assert ours.resolved_algorithm(x.shape) == "shift_add"
    for w in theirs.weights:  # same names and layout: copied 1:1
        assert tuple(getattr(ours, w.name).shape) == tuple(w.shape)
        getattr(ours, w.name).assign(np.asarray(w.numpy()))
    # a non-zero bias, so that its gradient and addition are checked too
    ours.bias.assign(_x([kwargs["filters"]], seed=5))
    theirs.bias.assign(ours.bias.numpy())
    cot = _x(theirs(x).shape, seed=99)
    want = value_and_grads(theirs, x, [theirs.kernel, theirs.bias], cot)
    variables = [ours.kernel, ours.bias]
    act = tfcore.activations.get(kwargs.get("activation"))
    reference = value_and_grads(lambda t: act(tf.nn.bias_add(tf.nn.convolution(
        t, ours.kernel, padding=kwargs["padding"].upper()), ours.bias)), x, variables, cot)
    _assert_all_close(reference, want)  # the reference itself agrees with Keras
    for jit in (False, True):
        got = tf.function(lambda t: value_and_grads(ours, t, variables, cot),
                          jit_compile=jit)(x)
        _assert_all_close(got, want)
        _assert_all_close(got, reference)


def test_auto_takes_shift_add_and_matches_keras(monkeypatch):
    """Default algorithm, 64 * 2 <= 128 in channels: 'shift_add', still Keras's numbers;
    the traced graph has no Conv2D op, while algorithm='conv' has one."""
    monkeypatch.setattr(conv2d_lib, "_gpu_visible", lambda: False)  # the CPU rule
    x = _x((2, 5, 6, 128))
    ours = tfcore.Conv2D(2, 3, padding="same")
    theirs = keras.layers.Conv2D(2, 3, padding="same")
    theirs(x)
    ours(x)
    assert ours.algorithm == "auto" and ours.resolved_algorithm(x.shape) == "shift_add"
    ours.kernel.assign(theirs.kernel.numpy())
    cot = _x((2, 5, 6, 2), seed=99)
    got = tf.function(lambda t: value_and_grads(ours, t, [ours.kernel, ours.bias], cot))(x)
    _assert_all_close(got, value_and_grads(theirs, x, [theirs.kernel, theirs.bias], cot))

    conv = tfcore.Conv2D(2, 3, padding="same", algorithm="conv")
    conv(x)
    spec = tf.TensorSpec([None, 5, 6, 128], tf.float32)  # unknown batch works too
    op_types = {name: {op.type for op in tf.function(layer).get_concrete_function(spec)
                       .graph.get_operations()}
                for name, layer in (("auto", ours), ("conv", conv))}
    assert "Conv2D" not in op_types["auto"] and "MatMul" in op_types["auto"]
    assert "Conv2D" in op_types["conv"]


def test_shift_add_with_unknown_batch():
    layer = tfcore.Conv2D(1, 3, padding="same", algorithm="shift_add")
    x = _x((3, 4, 5, 6))
    layer(x)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, 4, 5, 6], tf.float32)])
    y = fn(x)
    assert y.shape == (3, 4, 5, 1)
    want = tf.nn.convolution(x, layer.kernel, padding="SAME") + layer.bias
    np.testing.assert_allclose(y.numpy(), want.numpy(), **TOL)


@pytest.mark.parametrize("kwargs,shape,expected", [
    # the model layers the rule was measured on
    (dict(filters=1, kernel_size=5, padding="same"), (None, 32, 32, 128), "shift_add"),
    (dict(filters=1, kernel_size=3, padding="same"), (None, 28, 28, 16), "conv"),
    # the threshold: 64 * filters <= in
    (dict(filters=2, kernel_size=5, padding="same"), (64, 32, 32, 128), "shift_add"),
    (dict(filters=3, kernel_size=5, padding="same"), (64, 32, 32, 128), "conv"),
    (dict(filters=1, kernel_size=3, padding="same"), (128, 28, 28, 32), "conv"),
    (dict(filters=1, kernel_size=3, padding="valid"), (2, 8, 8, 63), "conv"),
    (dict(filters=1, kernel_size=(1, 2), padding="valid"), (2, 8, 8, 64), "shift_add"),
    # the other conditions
    (dict(filters=1, kernel_size=1), (2, 8, 8, 128), "conv"),                  # 1x1
    (dict(filters=1, kernel_size=3, strides=2, padding="same"), (2, 8, 8, 128), "conv"),
    (dict(filters=1, kernel_size=3, dilation_rate=2), (2, 8, 8, 128), "conv"),
    (dict(filters=1, kernel_size=3, padding="same"), (None, None, 8, 128), "conv"),
    (dict(filters=1, kernel_size=3), (2, 2, 8, 128), "conv"),                 # empty out
    (dict(filters=1, kernel_size=3, algorithm="conv"), (2, 8, 8, 128), "conv"),
])
def test_auto_rule(kwargs, shape, expected, monkeypatch):
    monkeypatch.setattr(conv2d_lib, "_gpu_visible", lambda: False)  # the CPU rule
    assert tfcore.Conv2D(**kwargs).resolved_algorithm(shape) == expected


def test_auto_keeps_conv_when_a_gpu_is_visible(monkeypatch):
    layer = tfcore.Conv2D(1, 5, padding="same")
    monkeypatch.setattr(conv2d_lib, "_gpu_visible", lambda: False)
    assert layer.resolved_algorithm((64, 32, 32, 128)) == "shift_add"
    monkeypatch.setattr(conv2d_lib, "_gpu_visible", lambda: True)
    assert layer.resolved_algorithm((64, 32, 32, 128)) == "conv"
    explicit = tfcore.Conv2D(1, 5, padding="same", algorithm="shift_add")
    assert explicit.resolved_algorithm((64, 32, 32, 128)) == "shift_add"


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"algorithm='shift_add' needs strides 1 and "
                                         r"dilation_rate 1, got strides=2 and "
                                         r"dilation_rate=1"):
        tfcore.Conv2D(1, 3, strides=2, algorithm="shift_add")
    with pytest.raises(ValueError, match=r"algorithm='shift_add'.*got strides=1 and "
                                         r"dilation_rate=\(1, 2\)"):
        tfcore.Conv2D(1, 3, dilation_rate=(1, 2), algorithm="shift_add")
    with pytest.raises(ValueError, match=r"Conv2D algorithm must be one of 'auto', "
                                         r"'conv', 'shift_add', got 'fft'"):
        tfcore.Conv2D(1, 3, algorithm="fft")
    with pytest.raises(ValueError, match=r"got 'Shift_Add'"):
        tfcore.Conv2D(1, 3, algorithm="Shift_Add")
    layer = tfcore.Conv2D(1, 3, padding="same", algorithm="shift_add")
    with pytest.raises(ValueError, match=r"needs a static height, width.*\(None, None, "
                                         r"None, 4\)"):
        layer.resolved_algorithm((None, None, None, 4))
    with pytest.raises(ValueError, match="non-empty output"):
        tfcore.Conv2D(1, 3, algorithm="shift_add").resolved_algorithm((1, 2, 5, 4))
