"""MaxPool2D(gradient='one_hot'): the kernel's values and gradient, bit for bit, in every
compile mode, and a derivative of the gradient (what VAT's hvp='exact' takes) that is
exact under XLA, where XLA's own MaxPoolGradGrad is not."""
import numpy as np
import pytest
import tensorflow as tf

import tfcore

MODES = ("eager", "graph", "xla")
CASES = [((2, 8, 8, 3), dict()), ((2, 7, 6, 3), dict()), ((2, 7, 6, 3), dict(padding="same")),
         ((2, 9, 8, 2), dict(pool_size=(3, 2))), ((2, 9, 8, 2), dict(pool_size=(3, 2),
                                                                      padding="same"))]


def _compiled(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=mode == "xla", autograph=False)


def _with_ties(shape, seed=0):
    """Uniform [0, 1) with 40 % exact zeros (a ReLU's output) and a block of equal
    positive values, so windows hold ties at 0 and above."""
    x = np.random.RandomState(seed).uniform(0, 1, shape).astype(np.float32)
    x[x < 0.4] = 0.0
    x[:, :3, :3, :] = 0.9
    return tf.constant(x)


def _value_and_grad(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return y, tape.gradient(y, x, output_gradients=dy)


def _gradient_jvp(layer, x, v):
    """d/du <J^T u, v> at u = 0: the derivative of the backward pass, as
    tfcore.vat's exact product takes it (J v by transposing J^T)."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
    u = tf.zeros_like(y)
    with tf.GradientTape() as inner:
        inner.watch(u)
        jt_u = tape.gradient(y, x, output_gradients=u)
    return inner.gradient(jt_u, u, output_gradients=v)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,kwargs", CASES)
def test_one_hot_equals_the_kernel(shape, kwargs, mode):
    x = _with_ties(shape)
    kernel = tfcore.MaxPool2D(**kwargs)
    y_ref = kernel(x)
    dy = tf.constant(np.random.RandomState(1).normal(size=y_ref.shape).astype(np.float32))
    y_ref, g_ref = _compiled(_value_and_grad, "graph")(kernel, x, dy)
    y, g = _compiled(_value_and_grad, mode)(tfcore.MaxPool2D(gradient="one_hot", **kwargs),
                                            x, dy)
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
    np.testing.assert_array_equal(g.numpy(), g_ref.numpy())
    # Each window's dy goes to one input: ties are not split.
    assert np.count_nonzero(g.numpy()) == np.count_nonzero(dy.numpy())


def test_first_maximum_of_a_window_takes_the_gradient():
    x = tf.constant([[[[1.0], [3.0]], [[3.0], [3.0]]]])  # one 2x2 window, three ties
    _, g = _value_and_grad(tfcore.MaxPool2D(gradient="one_hot"), x, tf.ones([1, 1, 1, 1]))
    np.testing.assert_array_equal(g.numpy()[0, ..., 0], [[0.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize("mode", MODES)
def test_derivative_of_the_gradient_is_exact_near_ties(mode):
    # Windows whose entries differ by ~1e-3 relative: XLA's MaxPoolGradGrad compares
    # bf16-rounded values there (docs/vat_direction.md); the reference is TensorFlow's
    # graph-mode kernel, which compares exactly.
    rng = np.random.RandomState(2)
    x = tf.constant((0.5 + 1e-3 * rng.normal(size=(4, 12, 12, 8))).astype(np.float32))
    v = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    ref = _compiled(_gradient_jvp, "graph")(tfcore.MaxPool2D(), x, v).numpy()
    got = _compiled(_gradient_jvp, mode)(tfcore.MaxPool2D(gradient="one_hot"), x, v).numpy()
    np.testing.assert_array_equal(got, ref)
    if mode == "xla":  # the case the one-hot gradient exists for
        xla_kernel = _compiled(_gradient_jvp, "xla")(tfcore.MaxPool2D(), x, v).numpy()
        assert np.mean(xla_kernel != ref) > 0.1


def test_one_hot_needs_a_static_height_and_width():
    pool = tfcore.MaxPool2D(gradient="one_hot")
    fn = tf.function(pool, input_signature=[tf.TensorSpec([None, None, None, 1])])
    with pytest.raises(ValueError, match="static height and width"):
        fn.get_concrete_function()
