"""tfcore.gan: losses vs NumPy, noise, D/G steps (which variables move, per-kind batch
statistics in 'split' mode), the composed train step (order, batch-sized noise, XLA).

The networks are tiny tf.Modules written here: G = tanh(BN(z W + b)), D = BN-optional
MLP; the BN computes batch statistics in training mode and keeps moving averages, as
a real BatchNorm does. Optimizer: a plain SGD stand-in (tfcore's optimizers are not a
dependency of tfcore.gan).
"""
import numpy as np
import pytest
import tensorflow as tf

from tfcore import gan
from tfcore.layer import fold_seed

LATENT, FEAT, HIDDEN = 3, 4, 5
BN_EPS, BN_MOMENTUM = 1e-3, 0.9


class SGD:
    """w <- w - lr * g; the `apply_gradients(zip(grads, vars))` interface."""

    def __init__(self, learning_rate=0.1):
        self.learning_rate = tf.Variable(learning_rate, trainable=False)

    def apply_gradients(self, grads_and_vars):
        for g, v in grads_and_vars:
            v.assign_sub(self.learning_rate * g)


class TinyBN(tf.Module):
    def __init__(self, dim, name=None):
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.ones([dim]) * 1.5, name="gamma")
        self.beta = tf.Variable(tf.fill([dim], 0.2), name="beta")
        self.moving_mean = tf.Variable(tf.zeros([dim]), trainable=False, name="moving_mean")
        self.moving_variance = tf.Variable(tf.ones([dim]), trainable=False,
                                           name="moving_variance")

    def __call__(self, x, training):
        if training:
            mean, var = tf.nn.moments(x, axes=[0])
            self.moving_mean.assign(BN_MOMENTUM * self.moving_mean + (1 - BN_MOMENTUM) * mean)
            self.moving_variance.assign(BN_MOMENTUM * self.moving_variance
                                        + (1 - BN_MOMENTUM) * var)
        else:
            mean, var = self.moving_mean, self.moving_variance
        return self.gamma * (x - mean) / tf.sqrt(var + BN_EPS) + self.beta


class TinyG(tf.Module):
    def __init__(self, seed=0):
        super().__init__(name="tiny_g")
        rng = np.random.default_rng(seed)
        self.kernel = tf.Variable(rng.normal(size=(LATENT, FEAT)).astype("float32"))
        self.bn = TinyBN(FEAT)
        self.last_batch = tf.Variable(0, trainable=False)  # batch size of the last call

    def __call__(self, z, training=False):
        self.last_batch.assign(tf.shape(z)[0])
        return tf.tanh(self.bn(z @ self.kernel, training))


class TinyD(tf.Module):
    def __init__(self, use_bn=True, seed=1):
        super().__init__(name="tiny_d")
        rng = np.random.default_rng(seed)
        self.w1 = tf.Variable(rng.normal(size=(FEAT, HIDDEN)).astype("float32"))
        # No bias before BN (it would get a zero gradient), as Keras DCGANs do.
        self.b1 = None if use_bn else tf.Variable(rng.normal(size=HIDDEN).astype("float32"))
        self.w2 = tf.Variable(rng.normal(size=(HIDDEN, 1)).astype("float32"))
        self.b2 = tf.Variable([0.05])
        self.bn = TinyBN(HIDDEN) if use_bn else None

    def __call__(self, x, training=False):
        h = x @ self.w1
        if self.b1 is not None:
            h = h + self.b1
        if self.bn is not None:
            h = self.bn(h, training)
        return tf.nn.leaky_relu(h, 0.2) @ self.w2 + self.b2


def d_forward_np(d, x):
    """NumPy float64 forward of TinyD in training mode (batch statistics of `x`)."""
    x = np.asarray(x, np.float64)
    h = x @ d.w1.numpy()
    if d.b1 is not None:
        h = h + d.b1.numpy()
    if d.bn is not None:
        m, v = h.mean(0), h.var(0)
        h = d.bn.gamma.numpy() * (h - m) / np.sqrt(v + BN_EPS) + d.bn.beta.numpy()
    h = np.where(h > 0, h, 0.2 * h)
    return h @ d.w2.numpy() + d.b2.numpy()


def bce_np(logits, z):
    s = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    return np.mean(-z * np.log(s) - (1 - z) * np.log(1 - s))


def values(variables):
    return [v.numpy().copy() for v in variables]


def assert_same(a, b, atol=0.0):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def assert_all_changed(before, after):
    for x, y in zip(before, after):
        assert np.max(np.abs(x - y)) > 1e-6


def data(batch, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, FEAT)).astype("float32")


def build(g, d):
    d(g(tf.zeros([2, LATENT]), training=False), training=False)


# --- losses and noise ------------------------------------------------------------------
def test_losses_match_numpy():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(8, 1)) * 3, rng.normal(size=(8, 1)) * 3
    r32, f32 = real.astype("float32"), fake.astype("float32")
    # float32 logits vs a float64 reference: rtol 1e-5.
    np.testing.assert_allclose(gan.discriminator_loss(r32, f32),
                               bce_np(real, 1.0) + bce_np(fake, 0.0), rtol=1e-5)
    np.testing.assert_allclose(gan.discriminator_loss(r32, f32, label_smoothing=0.1),
                               bce_np(real, 0.9) + bce_np(fake, 0.0), rtol=1e-5)
    np.testing.assert_allclose(gan.generator_loss(f32), bce_np(fake, 1.0), rtol=1e-5)
    per_example = gan.bce_with_logits(r32, 1.0, reduction="none")
    assert per_example.shape == (8,)
    np.testing.assert_allclose(per_example, [bce_np(r, 1.0) for r in real], rtol=1e-5)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        gan.discriminator_loss(r32, f32, label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        gan.bce_with_logits(r32, 1.0, reduction="sum")


def test_sample_noise():
    seed = tf.constant([3, 4], tf.int64)
    z = gan.sample_noise(5, LATENT, seed=seed)
    assert z.shape == (5, LATENT) and z.dtype == tf.float32
    np.testing.assert_array_equal(z, gan.sample_noise(5, LATENT, seed=seed))
    assert not np.allclose(z, gan.sample_noise(5, LATENT, seed=tf.constant([3, 5])))
    big = gan.sample_noise(tf.constant(4000), (2, 5), seed=seed).numpy()
    assert big.shape == (4000, 2, 5)
    assert big.min() >= -1.0 and big.max() <= 1.0
    # U(-1, 1): mean 0, variance 1/3; 40000 draws, tolerance ~10 standard errors.
    assert abs(big.mean()) < 0.03 and abs(big.var() - 1 / 3) < 0.03
    normal = gan.sample_noise(4000, 10, seed=seed, dist="normal").numpy()
    assert abs(normal.mean()) < 0.05 and abs(normal.std() - 1.0) < 0.05
    assert gan.sample_noise(2, 7).shape == (2, 7)  # stateful path
    with pytest.raises(ValueError, match="dist must be one of .* got 'gauss'"):
        gan.sample_noise(2, 3, dist="gauss")
    with pytest.raises(ValueError, match=r"latent_shape must be .* got \(3, 0\)"):
        gan.sample_noise(2, (3, 0))


# --- single steps ----------------------------------------------------------------------
@pytest.mark.parametrize("d_batch", ["split", "mixed"])
def test_discriminator_step_updates_only_d(d_batch):
    g, d = TinyG(), TinyD()
    build(g, d)
    g_train, g_state, d_train = (values(g.trainable_variables),
                                 values([g.bn.moving_mean]), values(d.trainable_variables))
    noise = gan.sample_noise(6, LATENT, seed=[0, 1])
    m = gan.discriminator_step(g, d, SGD(), data(6), noise, d_batch=d_batch)
    assert sorted(m) == ["d_acc_fake", "d_acc_real", "d_loss", "d_loss_fake", "d_loss_real"]
    assert_same(values(g.trainable_variables), g_train)
    assert_all_changed(d_train, values(d.trainable_variables))
    # Documented choice: G runs in training mode, its moving statistics update ...
    assert_all_changed(g_state, values([g.bn.moving_mean]))
    # ... unless frozen.
    g_state = values(g.variables)
    gan.discriminator_step(g, d, SGD(), data(6), noise, freeze_generator_state=True)
    assert_same(values(g.variables), g_state)


def test_generator_step_updates_only_g():
    g, d = TinyG(), TinyD()
    build(g, d)
    d_all, g_train = values(d.variables), values(g.trainable_variables)
    noise = gan.sample_noise(6, LATENT, seed=[0, 2])
    fake_logits = d_forward_np(d, g(noise, training=True))
    m = gan.generator_step(g, d, SGD(), noise)
    assert sorted(m) == ["g_loss"]
    np.testing.assert_allclose(m["g_loss"], bce_np(fake_logits, 1.0), rtol=1e-5)
    assert_same(values(d.variables), d_all)  # trainable AND moving statistics
    assert_all_changed(g_train, values(g.trainable_variables))
    # Without freezing, D's moving statistics would have moved (so the check above bites).
    gan.generator_step(g, d, SGD(), noise, freeze_discriminator_state=False)
    assert_all_changed([d_all[i] for i, v in enumerate(d.variables) if not v.trainable],
                       values(d.non_trainable_variables))


def test_generator_step_with_plain_callables():
    g, d = TinyG(), TinyD()
    build(g, d)
    d_fn = lambda x, training: d(x, training=training)  # noqa: E731
    with pytest.raises(ValueError, match="discriminator is a plain callable"):
        gan.discriminator_step(g, d_fn, SGD(), data(2), tf.zeros([2, LATENT]))
    d_train = values(d.trainable_variables)
    gan.discriminator_step(g, d_fn, SGD(), data(4), gan.sample_noise(4, LATENT, seed=[1, 1]),
                           d_variables=d.trainable_variables)
    assert_all_changed(d_train, values(d.trainable_variables))


def test_split_uses_per_kind_batch_statistics():
    g, d = TinyG(), TinyD(use_bn=True)
    build(g, d)
    real = data(6) * 2.0 + 1.0  # a different distribution from G's tanh outputs
    noise = gan.sample_noise(6, LATENT, seed=[5, 6])
    fake = g(noise, training=True).numpy()
    d_vars = list(d.variables)
    d0 = values(d_vars)
    w1 = d.w1.numpy()
    h = lambda x: np.asarray(x, np.float64) @ w1  # noqa: E731  D's pre-BN features

    # Expected losses by hand: two separate passes vs one concatenated pass.
    split_real, split_fake = d_forward_np(d, real), d_forward_np(d, fake)
    mixed = d_forward_np(d, np.concatenate([real, fake]))
    split_loss = (bce_np(split_real, 1.0), bce_np(split_fake, 0.0))
    mixed_loss = (bce_np(mixed[:6], 1.0), bce_np(mixed[6:], 0.0))
    assert abs(split_loss[0] - mixed_loss[0]) > 1e-2  # BN makes the two differ

    m = gan.discriminator_step(g, d, SGD(), real, noise, d_batch="split")
    np.testing.assert_allclose([m["d_loss_real"], m["d_loss_fake"]], split_loss, rtol=1e-4)
    np.testing.assert_allclose(m["d_loss"], sum(split_loss), rtol=1e-4)
    np.testing.assert_allclose(m["d_acc_real"], np.mean(split_real > 0))
    np.testing.assert_allclose(m["d_acc_fake"], np.mean(split_fake < 0))
    # D's BN saw the real batch's mean, then the fake batch's mean (two updates).
    mm0 = d0[[v is d.bn.moving_mean for v in d_vars].index(True)]
    expected_mm = BN_MOMENTUM * (BN_MOMENTUM * mm0 + (1 - BN_MOMENTUM) * h(real).mean(0)) \
        + (1 - BN_MOMENTUM) * h(fake).mean(0)
    np.testing.assert_allclose(d.bn.moving_mean, expected_mm, rtol=1e-4, atol=1e-6)

    # 'mixed' from the same starting point: one pass over the concatenation.
    for v, x in zip(d_vars, d0):
        v.assign(x)
    m = gan.discriminator_step(g, d, SGD(), real, noise, d_batch="mixed")
    np.testing.assert_allclose([m["d_loss_real"], m["d_loss_fake"]], mixed_loss, rtol=1e-4)
    np.testing.assert_allclose(d.bn.moving_mean, (1 - BN_MOMENTUM) * h(
        np.concatenate([real, fake])).mean(0), rtol=1e-4, atol=1e-6)


def test_split_equals_mixed_without_batch_norm():
    g, d = TinyG(), TinyD(use_bn=False)
    build(g, d)
    d0 = values(d.variables)
    noise = gan.sample_noise(5, LATENT, seed=[7, 8])
    out = {}
    for mode in ("split", "mixed"):
        for v, x in zip(d.variables, d0):
            v.assign(x)
        out[mode] = gan.discriminator_step(g, d, SGD(), data(5), noise, d_batch=mode)
        out[mode + "_vars"] = values(d.variables)
    for k in ("d_loss", "d_loss_real", "d_loss_fake"):
        np.testing.assert_allclose(out["split"][k], out["mixed"][k], rtol=1e-6)
    assert_same(out["split_vars"], out["mixed_vars"], atol=1e-6)


# --- the composed train step -----------------------------------------------------------
def _pair():
    g, d = TinyG(), TinyD()
    build(g, d)
    return g, d


def _all_values(g, d):
    return values(g.variables) + values(d.variables)


@pytest.mark.parametrize("order", ["d_then_g", "g_then_d"])
def test_train_step_follows_documented_order(order):
    seed = tf.constant([11, 12], tf.int64)
    real = data(6, seed=3)
    g1, d1 = _pair()
    step = gan.make_gan_train_step(g1, d1, SGD(0.2), SGD(0.1), LATENT, order=order, d_steps=2)
    metrics = step(real, seed)

    # Replay by hand (eager): D step i uses fold_seed(seed, i), the G step fold_seed(seed, 2).
    def replay(replay_order):
        g, d = _pair()
        d_opt, g_opt = SGD(0.1), SGD(0.2)

        def run_d():
            out = {}
            for i in range(2):
                out = gan.discriminator_step(
                    g, d, d_opt, real, gan.sample_noise(6, LATENT, seed=fold_seed(seed, i)))
            return out

        def run_g():
            return gan.generator_step(
                g, d, g_opt, gan.sample_noise(6, LATENT, seed=fold_seed(seed, 2)))

        if replay_order == "d_then_g":
            out = run_d()
            out.update(run_g())
        else:
            out = run_g()
            out.update(run_d())
        return out, _all_values(g, d)

    expected, expected_vars = replay(order)
    for k, v in expected.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert_same(_all_values(g1, d1), expected_vars, atol=1e-5)
    # The other order gives a different result, so the check above can tell them apart.
    other = replay("g_then_d" if order == "d_then_g" else "d_then_g")[1]
    flat = lambda vs: np.concatenate([x.ravel().astype(np.float64) for x in vs])  # noqa: E731
    assert np.max(np.abs(flat(other) - flat(expected_vars))) > 1e-3


def test_noise_follows_the_real_batch_size():
    g, d = _pair()
    step = gan.make_gan_train_step(g, d, SGD(), SGD(), LATENT, d_batch="mixed")
    # The one train-step contract: a plain function (the loop or the caller compiles).
    assert not hasattr(step, "get_concrete_function")
    m = step(data(4), tf.constant([0, 4], tf.int64))
    assert int(g.last_batch.numpy()) == 4
    # Unknown batch size: one graph for every batch size (a short last batch works).
    fn = tf.function(step).get_concrete_function(tf.TensorSpec([None, FEAT], tf.float32),
                                                 tf.TensorSpec([2], tf.int64))
    for batch in (7, 3):
        m = fn(tf.constant(data(batch)), tf.constant([0, batch], tf.int64))
        assert int(g.last_batch.numpy()) == batch
        assert all(np.isfinite(v.numpy()) for v in m.values())


@tf.function(jit_compile=True)
def _xla_noise(batch, seed):
    """The noises the XLA step draws (D step: fold 0, G step: fold 1). TF's stateless RNG
    gives other numbers under XLA than in graph mode, so replay it compiled the same way."""
    return [gan.sample_noise(batch, LATENT, seed=fold_seed(seed, i), dist="normal")
            for i in range(2)]


def test_train_step_under_xla_matches_eager_replay():
    seed = tf.constant([21, 22], tf.int64)
    g1, d1 = _pair()
    step = tf.function(gan.make_gan_train_step(g1, d1, SGD(0.1), SGD(0.2), LATENT,
                                               noise_dist="normal", label_smoothing=0.1),
                       jit_compile=True)
    g2, d2 = _pair()
    d_opt, g_opt = SGD(0.2), SGD(0.1)
    real = data(5, seed=1)
    metrics = step(real, seed)
    noise_d, noise_g = _xla_noise(5, seed)
    expected = gan.discriminator_step(g2, d2, d_opt, real, noise_d, label_smoothing=0.1)
    expected.update(gan.generator_step(g2, d2, g_opt, noise_g))
    for k, v in expected.items():  # XLA fuses differently: rtol 1e-4
        np.testing.assert_allclose(metrics[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    assert_same(_all_values(g1, d1), _all_values(g2, d2), atol=1e-4)


def test_train_step_with_tfcore_adam():
    optimizers = pytest.importorskip("tfcore.optimizers")
    seed = tf.constant([31, 32], tf.int64)
    real = data(6, seed=4)
    g1, d1 = _pair()
    g_opt, d_opt = optimizers.Adam(0.01), optimizers.Adam(0.02)
    step = gan.make_gan_train_step(g1, d1, g_opt, d_opt, LATENT)
    assert g_opt.built and d_opt.built  # slots created eagerly, before tracing
    g2, d2 = _pair()
    g_ref, d_ref = optimizers.Adam(0.01), optimizers.Adam(0.02)
    for _ in range(2):
        step(real, seed)
        gan.discriminator_step(g2, d2, d_ref, real,
                               gan.sample_noise(6, LATENT, seed=fold_seed(seed, 0)))
        gan.generator_step(g2, d2, g_ref, gan.sample_noise(6, LATENT, seed=fold_seed(seed, 1)))
    assert_same(_all_values(g1, d1), _all_values(g2, d2), atol=1e-5)


def test_make_step_validates():
    g, d = _pair()
    with pytest.raises(ValueError, match="order must be one of .* got 'both'"):
        gan.make_gan_train_step(g, d, SGD(), SGD(), LATENT, order="both")
    with pytest.raises(ValueError, match="d_batch must be one of .* got 'concat'"):
        gan.make_gan_train_step(g, d, SGD(), SGD(), LATENT, d_batch="concat")
    with pytest.raises(ValueError, match="d_steps must be a positive integer, got 0"):
        gan.make_gan_train_step(g, d, SGD(), SGD(), LATENT, d_steps=0)
    with pytest.raises(ValueError, match="noise_dist must be one of"):
        gan.make_gan_train_step(g, d, SGD(), SGD(), LATENT, noise_dist="cauchy")
    with pytest.raises(ValueError, match="generator has no trainable variables: build it"):
        gan.make_gan_train_step(tf.Module(), d, SGD(), SGD(), LATENT)
    with pytest.raises(ValueError, match="discriminator is a plain callable"):
        gan.make_gan_train_step(g, lambda x, training: d(x), SGD(), SGD(), LATENT)


def test_ema_update_and_decay_schedule():
    """a <- d a + (1 - d) v, by hand; the warm-up min(decay, (1+t)/(10+t))."""
    from tfcore import gan as gan_lib
    a = [tf.Variable([1.0, 2.0]), tf.Variable([[4.0]])]
    v = [tf.Variable([3.0, -2.0]), tf.Variable([[0.0]])]
    gan_lib.ema_update(a, v, 0.75)
    np.testing.assert_allclose(a[0].numpy(), [1.5, 1.0])
    np.testing.assert_allclose(a[1].numpy(), [[3.0]])
    tf.function(lambda: gan_lib.ema_update(a, v, gan_lib.ema_decay(0.999, 0)))()
    np.testing.assert_allclose(a[0].numpy(), [0.1 * 1.5 + 0.9 * 3.0, 0.1 - 1.8], rtol=1e-6)
    assert float(gan_lib.ema_decay(0.999, 0)) == pytest.approx(0.1)
    assert float(gan_lib.ema_decay(0.999, 90)) == pytest.approx(0.91)
    assert float(gan_lib.ema_decay(0.999, 10 ** 6)) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="as many averages as variables"):
        gan_lib.ema_update(a, v[:1], 0.5)
    with pytest.raises(ValueError, match="does not match"):
        gan_lib.ema_update(a[::-1], v, 0.5)
