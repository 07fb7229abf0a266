"""Dropout semantics and reproducibility (see tfcore/dropout.py)."""
import numpy as np
import tensorflow as tf

import tfcore
from tfcore.dropout import dropout


def _x(shape=(8, 50)):
    return tf.constant(np.random.default_rng(0).uniform(0.5, 2.0, size=shape)
                       .astype(np.float32))  # no zeros: y == 0 marks a dropped unit


def _mask(y):
    return y.numpy() != 0


def test_inference_and_rate_zero_are_identity():
    x = _x()
    assert tfcore.Dropout(0.5)(x) is x
    assert tfcore.Dropout(0.5)(x, training=False, seed=tf.constant([1, 2])) is x
    assert tfcore.Dropout(0.0)(x, training=True, seed=tf.constant([1, 2])) is x


def test_training_scales_kept_units_and_drops_at_the_rate():
    x = _x((200, 500))  # 100k units: the keep fraction is within 4 sigma ~ 0.006
    for i, rate in enumerate((0.1, 0.5, 0.8)):
        y = tfcore.Dropout(rate)(x, training=True, seed=tf.constant([5, i])).numpy()
        kept = y != 0
        np.testing.assert_allclose(y[kept], x.numpy()[kept] / (1 - rate), rtol=1e-6)
        assert abs(kept.mean() - (1 - rate)) < 0.006, (rate, kept.mean())


def test_same_seed_same_mask_different_seed_different_mask():
    x = _x()
    layer = tfcore.Dropout(0.5)
    a = layer(x, training=True, seed=tf.constant([1, 2]))
    b = layer(x, training=True, seed=tf.constant([1, 2]))
    c = layer(x, training=True, seed=tf.constant([1, 3]))
    d = tfcore.Dropout(0.5, seed=99)(x, training=True, seed=tf.constant([1, 2]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy(), d.numpy())  # the call seed decides
    assert (_mask(a) != _mask(c)).mean() > 0.3
    # int32 and int64 seeds are both accepted
    layer(x, training=True, seed=tf.constant([1, 2], tf.int64))


def test_seeded_mask_is_the_same_eager_graph_and_xla():
    x, seed = _x(), tf.constant([3, 4], tf.int64)
    fn = lambda t, s: dropout(t, 0.5, s)  # noqa: E731
    eager = fn(x, seed).numpy()
    np.testing.assert_array_equal(tf.function(fn)(x, seed).numpy(), eager)
    np.testing.assert_array_equal(tf.function(fn, jit_compile=True)(x, seed).numpy(), eager)


def test_unseeded_calls_use_the_layer_generator():
    x = _x()
    a, b = tfcore.Dropout(0.5, seed=7), tfcore.Dropout(0.5, seed=7)
    a1, a2 = a(x, training=True), a(x, training=True)
    assert (_mask(a1) != _mask(a2)).mean() > 0.3  # the generator advances
    b1, b2 = b(x, training=True), b(x, training=True)  # same constructor seed: replay
    np.testing.assert_array_equal(a1.numpy(), b1.numpy())
    np.testing.assert_array_equal(a2.numpy(), b2.numpy())
    other = tfcore.Dropout(0.5, seed=8)(x, training=True)
    assert (_mask(a1) != _mask(other)).mean() > 0.3
    state = a.generator.state.numpy()
    step = tf.function(lambda t: a(t, training=True))
    step(x), step(x)  # advances inside tf.function too (state is a Variable)
    assert not np.array_equal(a.generator.state.numpy(), state)


def test_unseeded_default_seed_follows_python_random():
    import random
    x = _x()
    random.seed(3)
    a = tfcore.Dropout(0.5)(x, training=True)
    random.seed(3)
    b = tfcore.Dropout(0.5)(x, training=True)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_noise_shape_broadcasts_the_mask():
    x = _x((4, 6, 5, 3))
    y = tfcore.Dropout(0.5, noise_shape=(None, 1, 1, None))(
        x, training=True, seed=tf.constant([2, 2])).numpy()
    m = y != 0
    assert (m == m[:, :1, :1, :]).all()  # one decision per (example, channel)
    assert 0 < m.mean() < 1


def test_unknown_batch_with_seed_under_xla():
    layer = tfcore.Dropout(0.3)  # (tf.function alone: tests/test_layers_compile.py)
    fn = tf.function(lambda t, s: layer(t, training=True, seed=s), jit_compile=True,
                     input_signature=[tf.TensorSpec([None, 50]), tf.TensorSpec([2], tf.int32)])
    x, seed = _x((5, 50)), tf.constant([9, 9])
    np.testing.assert_array_equal(fn(x, seed).numpy(),
                                  layer(x, training=True, seed=seed).numpy())
