"""Sequential: order, training, per-child seeds (fold_seed), update_stats forwarding;
and the base Layer's keyword forwarding that carries update_stats."""
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from tfcore.layer import call_accepts, fold_seed


def _x(shape=(6, 5)):
    return tf.constant(np.random.default_rng(1).uniform(0.5, 2.0, size=shape)
                       .astype(np.float32))


def test_calls_children_in_order_and_exposes_them():
    d1, d2 = tfcore.Dense(4), tfcore.Dense(3)
    model = tfcore.Sequential([d1, tf.nn.relu, d2], name="mlp")
    x = _x()
    y = model(x)
    assert list(model.layers) == [d1, tf.nn.relu, d2]
    np.testing.assert_allclose(y.numpy(), d2(tf.nn.relu(d1(x))).numpy(), rtol=1e-6)
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in (d1.kernel, d1.bias, d2.kernel, d2.bias)}
    assert tfcore.Sequential([])(x) is x


def test_child_i_gets_fold_seed_of_i():
    a, b = tfcore.Dropout(0.5), tfcore.Dropout(0.5)
    model = tfcore.Sequential([a, tfcore.Dense(5), b])
    x, seed = _x(), tf.constant([4, 2], tf.int64)
    y = model(x, training=True, seed=seed)
    manual = b(model.layers[1](a(x, training=True, seed=fold_seed(seed, 0))),
               training=True, seed=fold_seed(seed, 2))
    np.testing.assert_array_equal(y.numpy(), manual.numpy())
    np.testing.assert_array_equal(y.numpy(), model(x, training=True, seed=seed).numpy())
    other = model(x, training=True, seed=tf.constant([4, 3], tf.int64))
    assert ((y.numpy() != 0) != (other.numpy() != 0)).mean() > 0.2
    # the two dropout layers do not share a mask although they share the call seed
    mask0 = a(tf.ones([6, 5]), training=True, seed=fold_seed(seed, 0)).numpy() != 0
    mask2 = b(tf.ones([6, 5]), training=True, seed=fold_seed(seed, 2)).numpy() != 0
    assert (mask0 != mask2).any()
    np.testing.assert_array_equal(model(x).numpy(), b(model.layers[1](x)).numpy())


def test_update_stats_is_forwarded_to_nested_batch_norm():
    bn = tfcore.BatchNorm(momentum=0.5)
    model = tfcore.Sequential([tfcore.Dense(4), tfcore.Sequential([bn, tfcore.Dropout(0.2)])])
    x = _x() * 3.0
    model(x)
    before = bn.moving_mean.numpy().copy()
    step = tf.function(lambda t, u: model(t, training=True, seed=tf.constant([1, 1]),
                                          update_stats=u))
    y_frozen = step(x, False)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    y_update = step(x, True)
    assert not np.allclose(bn.moving_mean.numpy(), before)
    np.testing.assert_array_equal(y_frozen.numpy(), y_update.numpy())  # same batch stats
    model(x, training=False, update_stats=True)  # inference never updates
    after = bn.moving_mean.numpy().copy()
    model(x, training=False)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), after)


def test_batch_norm_update_stats_false_uses_batch_moments_without_update():
    bn = tfcore.BatchNorm()
    x = _x((8, 3)) * 4.0 + 2.0
    bn(x)
    frozen = bn(x, training=True, update_stats=False).numpy()
    np.testing.assert_allclose(frozen.mean(0), 0.0, atol=1e-5)  # batch moments used
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
    bn(x, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * x.numpy().mean(0), rtol=1e-5)


def test_call_accepts_and_keyword_forwarding():
    assert call_accepts(tfcore.BatchNorm(), "update_stats")
    assert call_accepts(tfcore.Sequential([]), "update_stats")
    assert not call_accepts(tfcore.Dense(2), "update_stats")
    assert not call_accepts(tf.nn.relu, "update_stats")

    class TakesAnything(tfcore.Layer):
        def call(self, x, training=False, seed=None, **kwargs):
            self.got = kwargs
            return x

    layer = TakesAnything()
    assert call_accepts(layer, "update_stats")
    tfcore.Sequential([layer])(_x(), update_stats=False)
    assert layer.got == {"update_stats": False}
    with pytest.raises(TypeError, match="update_stats"):
        tfcore.Dense(2)(_x(), update_stats=False)  # undeclared keyword: plain TypeError
