"""tfcore.secant: (f(x), f(x + dx) - f(x)) propagated through the blocks. Each block's
secant against its own two calls (a large dx, where subtraction is accurate), against
float64 at a tiny dx (where float32 subtraction is not), the exact forms of relu and
max pooling, one dropout mask, the subtraction fallback, and its gradient: J at x + dx."""
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from bench.vat_direction import logits64
from models import vat_cnn
from tfcore.secant import relu_secant, secant

SEED = tf.constant([3, 1], tf.int64)

BLOCKS = [
    ("dense_relu", lambda: tfcore.Dense(7, activation="relu"), (4, 5)),
    ("dense_tanh", lambda: tfcore.Dense(3, activation="tanh"), (4, 5)),
    ("conv_relu", lambda: tfcore.Conv2D(4, 3, activation="relu"), (2, 8, 8, 3)),
    ("conv_same", lambda: tfcore.Conv2D(4, 3, padding="same"), (2, 7, 7, 2)),
    ("pool", lambda: tfcore.MaxPool2D(2), (2, 7, 6, 3)),
    ("pool_one_hot", lambda: tfcore.MaxPool2D(2, gradient="one_hot"), (2, 8, 8, 3)),
    ("pool_overlapping", lambda: tfcore.MaxPool2D(3, strides=2), (2, 9, 9, 2)),
    ("flatten", lambda: tfcore.Flatten(), (2, 3, 4)),
    ("dropout", lambda: tfcore.Dropout(0.5), (4, 6)),
    ("batch_norm", lambda: tfcore.BatchNorm(), (8, 3)),
    ("vat_cnn", lambda: vat_cnn.VatCNN(dropout=True), (3, 28, 28, 1)),
    ("vat_cnn_batch_norm", lambda: vat_cnn.VatCNN(dropout=False, batch_norm=True),
     (3, 28, 28, 1)),
]


def _pair(shape, scale, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    return tf.constant(x), tf.constant((scale * rng.normal(size=shape)).astype(np.float32))


@pytest.mark.parametrize("name,make,shape", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_secant_is_the_difference_of_two_calls(name, make, shape):
    block = make()
    x, dx = _pair(shape, 1e-2)
    kwargs = {"update_stats": False} if "batch_norm" in name else {}
    y, dy = secant(block, x, dx, training=True, seed=SEED, **kwargs)
    y0 = block(x, training=True, seed=SEED, **kwargs)
    y1 = block(x + dx, training=True, seed=SEED, **kwargs)
    np.testing.assert_array_equal(y.numpy(), y0.numpy())
    scale = np.abs((y1 - y0).numpy()).max()
    assert scale > 1e-4
    np.testing.assert_allclose(dy.numpy(), (y1 - y0).numpy(), atol=1e-4 * scale)


def test_vat_cnn_secant_is_accurate_where_subtraction_is_not():
    """A tiny dx (1e-6 of the input): the float32 secant of the VatCNN against the
    float64 difference of the same weights; float32 subtraction of two calls is far off."""
    model = vat_cnn.VatCNN(dropout=False)
    x, dx = _pair((8, 28, 28, 1), 1e-6)
    x = tf.abs(x)
    model(x)
    weights = {v.name.split(":")[0]: v.numpy().astype(np.float64)
               for v in model.trainable_variables}
    x64, dx64 = tf.cast(x, tf.float64), tf.cast(dx, tf.float64)
    want = (logits64(weights, x64 + dx64) - logits64(weights, x64)).numpy()
    _, dy = secant(model, x, dx)
    err = np.linalg.norm(dy.numpy() - want, axis=1) / np.linalg.norm(want, axis=1)
    assert err.max() < 1e-3, err
    sub = (model(x + dx) - model(x)).numpy()
    assert np.median(np.linalg.norm(sub - want, axis=1) / np.linalg.norm(want, axis=1)) > 0.05


def test_relu_secant_exact_forms():
    z = tf.constant([2.0, 2.0, -1.0, -1.0, 0.5, 0.0])
    dz = tf.constant([1e-7, -3.0, -1.0, 2.0, -0.5, 1e-9])
    np.testing.assert_array_equal(relu_secant(z, dz).numpy(),
                                  np.float32([1e-7, -2.0, 0.0, 1.0, -0.5, 1e-9]))


def test_max_pool_secant_follows_the_window_maximum():
    # One window, maximum 1e4: a change of 1e-4 at the maximum is below float32's
    # resolution there (ulp 1e-3), yet the secant returns it.
    x = tf.constant([[[[1e4], [3.0]], [[-2.0], [1e4 - 1.0]]]])
    dx = tf.constant([[[[1e-4], [0.0]], [[0.0], [0.0]]]])
    _, dy = tfcore.MaxPool2D(2).secant(x, dx)
    np.testing.assert_allclose(dy.numpy().ravel(), [1e-4], rtol=1e-6)
    pool = tfcore.MaxPool2D(2)
    assert not np.any((pool(x + dx) - pool(x)).numpy())  # subtraction loses it
    # Another entry overtakes the maximum: the change is the new maximum's excess.
    dx = tf.constant([[[[0.0], [0.0]], [[0.0], [1.5]]]])
    _, dy = tfcore.MaxPool2D(2).secant(x, dx)
    np.testing.assert_allclose(dy.numpy().ravel(), [0.5], rtol=1e-6)


def test_dropout_secant_uses_one_mask():
    drop = tfcore.Dropout(0.5)
    x, dx = _pair((64, 8), 1.0)
    y, dy = drop.secant(x, dx, training=True, seed=SEED)
    np.testing.assert_array_equal(dy.numpy(), drop(dx, training=True, seed=SEED).numpy())
    np.testing.assert_array_equal(y.numpy() == 0, dy.numpy() == 0)
    y, dy = drop.secant(x, dx, training=True)  # seed None: one draw for both
    np.testing.assert_array_equal(y.numpy() == 0, dy.numpy() == 0)
    assert 0.3 < np.mean(y.numpy() == 0) < 0.7


@pytest.mark.parametrize("name", ["vat_cnn", "vat_cnn_batch_norm"])
def test_gradient_of_the_secant_is_the_jacobian_at_the_perturbed_point(name):
    make, shape = {b[0]: (b[1], b[2]) for b in BLOCKS}[name]
    model = make()
    x, dx = _pair(shape, 1e-3)
    x = tf.abs(x)
    model(x)
    kwargs = {"update_stats": False} if "batch_norm" in name else {}
    u = tf.constant(np.random.RandomState(4).normal(size=(shape[0], 10)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(dx)
        _, dy = secant(model, x, dx, training=True, seed=SEED, **kwargs)
    got = tape.gradient(dy, dx, output_gradients=u).numpy()
    xp = x + dx
    with tf.GradientTape() as tape:
        tape.watch(xp)
        y = model(xp, training=True, seed=SEED, **kwargs)
    want = tape.gradient(y, xp, output_gradients=u).numpy()
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())


def test_plain_callables_relu_exactly_others_by_subtraction():
    x, dx = _pair((4, 5), 1e-7)
    _, dy = secant(tf.nn.relu, x, dx)
    np.testing.assert_array_equal(dy.numpy(), relu_secant(x, dx).numpy())
    y, dy = secant(tf.math.sin, x, dx)
    np.testing.assert_array_equal(dy.numpy(), (tf.math.sin(x + dx) - y).numpy())
