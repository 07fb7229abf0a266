"""tfcore.conv2d_bias_relu (conv + bias + relu with a hand-written gradient) and
Conv2D's choice of it (`fused_gradient`, `uses_fused_gradient`).

The hand-written gradient must equal autodiff of the same ops (float32, rtol = atol =
1e-5) for the output and d sum(y * cot) w.r.t. x, kernel and bias: eager, in a
`tf.function` with an unknown batch size, and under XLA; 'same'/'valid', strides 1
and 2, rectangular kernels, 1 to 4 input channels. Conv2D with its default picks it on CPU
(checked by counting the graph's ops) and its outputs/gradients match a Keras 3
Conv2D with copied weights either way. SeparableConv2D takes it for its pointwise
part (same checks against Keras's SeparableConv2D); the graph optimiser still runs
cleanly on the DCGAN and separable-convnet steps.
"""
import importlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from blocks import value_and_grads
from tfcore.conv2d_bias_relu import conv2d_bias_relu

# The module (tfcore's package attribute of that name is the function).
fused_lib = importlib.import_module("tfcore.conv2d_bias_relu")

TOL = dict(rtol=1e-5, atol=1e-5)


def _t(shape, seed):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _autodiff(x, kernel, bias, strides, padding):
    return tf.nn.relu(tf.nn.conv2d(x, kernel, [1, *strides, 1], padding) + bias)


def _value_and_grads(fn, x, kernel, bias, cot):
    """blocks.value_and_grads for fn(x, kernel, bias) with kernel and bias plain
    tensors (function arguments here), so the tape watches them too."""
    with tf.GradientTape() as tape:
        tape.watch([x, kernel, bias])
        y = fn(x, kernel, bias)
        loss = tf.reduce_sum(y * cot)
    return [y, *tape.gradient(loss, [x, kernel, bias])]


CASES = [
    ((2, 7, 6, 3), (3, 3, 3, 4), (1, 1), "VALID"),
    ((2, 7, 6, 3), (3, 3, 3, 4), (1, 1), "SAME"),
    ((3, 8, 7, 2), (3, 2, 2, 5), (2, 2), "SAME"),
    ((2, 9, 8, 4), (2, 3, 4, 3), (2, 1), "VALID"),
    ((2, 6, 6, 1), (3, 3, 1, 6), (1, 1), "VALID"),
]


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("xs,ks,strides,padding", CASES)
def test_gradient_equals_autodiff(xs, ks, strides, padding, mode):
    x, kernel, bias = _t(xs, 0), _t(ks, 1), _t(ks[-1:], 2)
    cot = _t(_autodiff(x, kernel, bias, strides, padding).shape, 3)

    def ours(x, kernel, bias):
        return _value_and_grads(
            lambda a, k, b: conv2d_bias_relu(a, k, b, strides, padding),
            x, kernel, bias, cot)

    if mode != "eager":  # unknown batch size: the gradient's reshapes are dynamic
        spec = [tf.TensorSpec([None, *xs[1:]]), tf.TensorSpec(ks), tf.TensorSpec(ks[-1:])]
        ours = tf.function(ours, input_signature=spec, jit_compile=(mode == "xla"))
    want = _value_and_grads(
        lambda a, k, b: _autodiff(a, k, b, strides, padding), x, kernel, bias, cot)
    got = ours(x, kernel, bias)
    assert len(got) == 4
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)
    assert 0 < np.mean(got[0].numpy() == 0) < 1  # the relu's mask matters: some are cut


def test_gradients_reach_variables():
    kernel = tf.Variable(_t((3, 3, 2, 4), 1), name="kernel")
    bias = tf.Variable(_t((4,), 2), name="bias")
    x = _t((2, 5, 5, 2), 0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(conv2d_bias_relu(x, kernel, bias, (1, 1), "SAME") ** 2)
    g = tape.gradient(loss, [kernel, bias])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(_autodiff(x, kernel, bias, (1, 1), "SAME") ** 2)
    want = tape.gradient(loss, [kernel, bias])
    for a, b in zip(g, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


def _op_types(layer, x):
    f = tf.function(lambda x: tf.gradients(layer(x), layer.trainable_variables))
    return {op.type for op in f.get_concrete_function(x).graph.get_operations()}


def test_conv2d_picks_it_on_cpu_when_eligible(monkeypatch):
    monkeypatch.setattr(fused_lib, "_gpu_visible", lambda: False)
    x = _t((2, 6, 6, 3), 0)
    assert tfcore.Conv2D(4, 3, activation="relu").uses_fused_gradient()
    assert tfcore.Conv2D(4, 3, strides=2, padding="same",
                         activation="relu").uses_fused_gradient()
    assert not tfcore.Conv2D(4, 3).uses_fused_gradient()  # linear: see the docstring
    assert not tfcore.Conv2D(4, 3, use_bias=False).uses_fused_gradient()
    assert not tfcore.Conv2D(4, 3, dilation_rate=2).uses_fused_gradient()
    assert not tfcore.Conv2D(4, 3, activation="elu").uses_fused_gradient()
    assert not tfcore.Conv2D(4, 3, activation="relu",
                             fused_gradient=False).uses_fused_gradient()
    # The graphs: the hand-written gradient's matmul for the bias vs autodiff's Sum.
    fused, plain = tfcore.Conv2D(4, 3, activation="relu"), tfcore.Conv2D(
        4, 3, activation="relu", fused_gradient=False)
    fused_ops, plain_ops = _op_types(fused, x), _op_types(plain, x)
    assert "MatMul" in fused_ops and "ReluGrad" in fused_ops and "Sum" not in fused_ops
    assert "MatMul" not in plain_ops and "Sum" in plain_ops
    # On a GPU the default keeps autodiff (measured on CPU only); True forces it.
    monkeypatch.setattr(fused_lib, "_gpu_visible", lambda: True)
    assert not tfcore.Conv2D(4, 3, activation="relu").uses_fused_gradient()
    assert tfcore.Conv2D(4, 3, activation="relu", fused_gradient=True).uses_fused_gradient()


@pytest.mark.parametrize("fused", [True, False])
def test_conv2d_matches_keras_either_way(fused):
    kwargs = dict(filters=5, kernel_size=3, strides=2, padding="same", activation="relu")
    x = _t((2, 9, 8, 3), 0)
    theirs = keras.layers.Conv2D(**kwargs)
    ours = tfcore.Conv2D(fused_gradient=fused, **kwargs)
    theirs(x), ours(x)
    assert ours.uses_fused_gradient() is fused
    ours.kernel.assign(theirs.kernel.numpy())
    ours.bias.assign(np.random.default_rng(4).normal(size=5).astype(np.float32))
    theirs.bias.assign(ours.bias.numpy())
    cot = _t(ours(x).shape, 5)
    got = value_and_grads(ours, x, [ours.kernel, ours.bias], cot)
    want = value_and_grads(theirs, x, [theirs.kernel, theirs.bias], cot)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


def test_separable_conv2d_picks_it_on_cpu_when_eligible(monkeypatch):
    """SeparableConv2D: the 1x1 pointwise conv + bias + relu through conv2d_bias_relu."""
    monkeypatch.setattr(fused_lib, "_gpu_visible", lambda: False)
    sep = tfcore.SeparableConv2D
    assert sep(4, 3, activation="relu").uses_fused_gradient()
    assert sep(4, 3, strides=2, padding="same", depth_multiplier=2,
               activation="relu").uses_fused_gradient()
    assert sep(4, 3, dilation_rate=2, activation="relu").uses_fused_gradient()
    assert not sep(4, 3).uses_fused_gradient()
    assert not sep(4, 3, activation="relu", use_bias=False).uses_fused_gradient()
    assert not sep(4, 3, activation="relu", fused_gradient=False).uses_fused_gradient()
    x = _t((2, 7, 7, 3), 0)
    fused_ops = _op_types(sep(4, 3, activation="relu"), x)
    plain_ops = _op_types(sep(4, 3, activation="relu", fused_gradient=False), x)
    assert "MatMul" in fused_ops and "ReluGrad" in fused_ops and "Sum" not in fused_ops
    assert "MatMul" not in plain_ops and "Sum" in plain_ops
    monkeypatch.setattr(fused_lib, "_gpu_visible", lambda: True)
    assert not sep(4, 3, activation="relu").uses_fused_gradient()
    assert sep(4, 3, activation="relu", fused_gradient=True).uses_fused_gradient()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kwargs", [
    dict(filters=5, kernel_size=3, strides=2, padding="same", depth_multiplier=2),
    dict(filters=4, kernel_size=(3, 2), dilation_rate=2),
], ids=["s2_same_dm2", "dilated_valid"])
def test_separable_conv2d_matches_keras_either_way(fused, kwargs):
    x = _t((2, 9, 8, 3), 0)
    theirs = keras.layers.SeparableConv2D(activation="relu", **kwargs)
    ours = tfcore.SeparableConv2D(activation="relu", fused_gradient=fused, **kwargs)
    theirs(x), ours(x)
    assert ours.uses_fused_gradient() is fused
    ours.depthwise_kernel.assign(theirs.depthwise_kernel.numpy())
    ours.pointwise_kernel.assign(theirs.pointwise_kernel.numpy())
    ours.bias.assign(np.random.default_rng(4).normal(
        size=ours.bias.shape).astype(np.float32))
    theirs.bias.assign(ours.bias.numpy())
    cot = _t(ours(x).shape, 5)
    names = ("depthwise_kernel", "pointwise_kernel", "bias")
    got = value_and_grads(ours, x, [getattr(ours, n) for n in names], cot)
    want = value_and_grads(theirs, x, [getattr(theirs, n) for n in names], cot)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


@pytest.mark.parametrize("layer", [tfcore.Conv2D, tfcore.SeparableConv2D])
@pytest.mark.parametrize("bad", [0, 1, "yes", "auto"])
def test_fused_gradient_rejects_bad_values(layer, bad):
    with pytest.raises(ValueError, match=f"{layer.__name__} fused_gradient must be "
                                         f"None, True or False, got {bad!r}"):
        layer(4, 3, fused_gradient=bad)


_GRAPPLER_CHECK = """
import numpy as np, tensorflow as tf
from bench import run
spec = run.MODELS[{model!r}]
setup = spec.build(16, np.random.default_rng(0))
batch = tf.nest.map_structure(lambda a: tf.constant(a[:8]), setup.arrays)
step = tf.function(tf.autograph.experimental.do_not_convert(setup.step_fn))
step(batch, tf.constant([1, 2], tf.int64))
print("stepped")
"""


@pytest.mark.parametrize("model", ["dcgan", "separable_convnet"])
def test_step_graph_optimises_without_errors(model):
    """TensorFlow's graph optimiser runs on the step without failing (it did on the
    DCGAN's when linear convs, followed by LeakyReLU in D, took the hand-written
    gradient; the separable convnet's relu layers take it in their pointwise part)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _GRAPPLER_CHECK.format(model=model)],
                         cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stepped" in out.stdout
    assert "remapper failed" not in out.stderr
    assert "failed" not in "\n".join(l for l in out.stderr.splitlines()
                                      if "meta_optimizer" in l)
