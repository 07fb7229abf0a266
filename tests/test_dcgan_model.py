"""models/dcgan.py: shapes and ranges, Keras 3 parity, and the train step's wiring.

* Output shapes and ranges of both generator variants (upsample / transpose) with both
  latent options (4x4x4 noise / a flat latent projected by Dense), and of D with and
  without BatchNorm.
* Parity with the same networks built as `keras.Sequential` (Keras 3 layers, weights
  copied 1:1 in Keras's order, BatchNorm statistics set to random values first): the
  forward pass in training mode (batch statistics) and inference mode (moving
  statistics), and the gradients of sum(y * w) w.r.t. the input and every trainable
  variable. float32; tolerances in `TOL` (relative to the outputs' scale: D's
  Dense(4096 -> 2048) sums many terms).
* The wrapper `make_train_step` (through `tfcore.gan`): D's update touches only D's
  variables and G's only G's (optimizer stand-ins record what they are given; one of
  them applies nothing, so any change of the other network's variables would show);
  in 'split' mode D's BatchNorm moving statistics after a step equal a NumPy-side
  computation with per-kind batch statistics (real batch, then fake batch), in 'mixed'
  mode with the concatenation's; the G step leaves them as the D step left them.
* The generator's weight average is part of the step: a step_fn call (eager) and the
  loop's compiled step each move `make_ema_generator`'s copy by the documented formula
  a <- d_t a + (1 - d_t) v (with the warm-up d_t), and only with an ema_generator.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from models import dcgan
from tfcore import gan
from tfcore.layer import fold_seed

TOL = dict(rtol=2e-4, atol=2e-5)
GRAD_TOL = dict(rtol=1e-3, atol=1e-4)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _z(generator, batch, seed=0):
    return tf.constant(_rng(seed).uniform(-1, 1, size=(batch, *generator.latent_shape))
                       .astype(np.float32))


def _images(batch, seed=0):
    return tf.constant(_rng(seed).uniform(-1, 1, size=(batch, 32, 32, 1)).astype(np.float32))


# --- shapes, ranges, validation ---------------------------------------------------------

@pytest.mark.parametrize("upsampling,latent_dim", [("upsample", None), ("upsample", 30),
                                                   ("transpose", None), ("transpose", 7)])
def test_generator_shapes_and_range(upsampling, latent_dim):
    g = dcgan.Generator(latent_dim=latent_dim, upsampling=upsampling)
    assert g.latent_shape == ((latent_dim,) if latent_dim else (4, 4, 4))
    z = _z(g, 2) * 50.0  # large inputs saturate the tanh: still within [-1, 1]
    for training in (False, True):
        y = g(z, training=training).numpy()
        assert y.shape == (2, 32, 32, 1)
        assert np.all(np.abs(y) <= 1.0) and np.max(np.abs(y)) > 0.5
    # An unknown batch size works through a TensorSpec (the export path).
    f = tf.function(lambda z: g(z, training=False),
                    input_signature=[tf.TensorSpec([None, *g.latent_shape], tf.float32)])
    assert f(z[:1]).shape == (1, 32, 32, 1)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_discriminator_shape(batchnorm):
    d = dcgan.Discriminator(batchnorm=batchnorm)
    for training in (False, True):
        assert d(_images(3), training=training).shape == (3, 1)
    assert len(d.bns) == (3 if batchnorm else 0)
    # Parameters: convs 640 + 73,856 + 295,168; Dense 4096*2048+2048; logit 2049;
    # BN (4 per channel) 128*4 + 256*4 + 2048*4.
    expected = 640 + 73856 + 295168 + 4096 * 2048 + 2048 + 2049
    assert d.count_params() == expected + (4 * (128 + 256 + 2048) if batchnorm else 0)


def test_validation_errors():
    with pytest.raises(ValueError, match="upsampling.*'bilinear'"):
        dcgan.Generator(upsampling="bilinear")
    with pytest.raises(ValueError, match="latent_dim.*-3"):
        dcgan.Generator(latent_dim=-3)
    with pytest.raises(ValueError, match="batchnorm.*'yes'"):
        dcgan.Discriminator(batchnorm="yes")
    with pytest.raises(ValueError, match="negative_slope.*1.5"):
        dcgan.Discriminator(negative_slope=1.5)
    with pytest.raises(ValueError, match=r"z must have shape \[batch, 4, 4, 4\]"):
        dcgan.Generator()(tf.zeros([2, 30]))
    with pytest.raises(ValueError, match="preset.*'fast'"):
        dcgan.make_optimizers("fast")
    g_opt, d_opt = dcgan.make_optimizers("writeup")
    assert (float(d_opt.learning_rate.numpy()), d_opt.beta_1) == pytest.approx((1e-5, 0.1))
    assert (float(g_opt.learning_rate.numpy()), g_opt.beta_1) == pytest.approx((2e-4, 0.5))
    g_opt, d_opt = dcgan.make_optimizers("default", d_lr=3e-4)
    assert float(d_opt.learning_rate.numpy()) == pytest.approx(3e-4) and d_opt.beta_1 == 0.5


# --- Keras 3 parity ------------------------------------------------------------------------

def keras_generator(upsampling, latent_dim):
    L = keras.layers
    layers = [keras.Input((latent_dim,) if latent_dim else (4, 4, 4))]
    if latent_dim:
        layers += [L.Dense(64), L.Reshape((4, 4, 4))]
    layers.append(L.Conv2D(64, 3, padding="same"))
    if upsampling == "upsample":
        for _ in range(2):
            layers += [L.UpSampling2D(2), L.Conv2D(128, 3, padding="same"),
                       L.BatchNormalization(), L.Activation("elu")]
        layers += [L.UpSampling2D(2), L.Conv2D(1, 5, padding="same", activation="tanh")]
    else:
        for _ in range(2):
            layers += [L.Conv2DTranspose(128, 5, strides=2, padding="same"),
                       L.BatchNormalization(), L.Activation("elu")]
        layers.append(L.Conv2DTranspose(1, 5, strides=2, padding="same",
                                        activation="tanh"))
    return keras.Sequential(layers)


def keras_discriminator():
    L = keras.layers
    return keras.Sequential([
        keras.Input((32, 32, 1)),
        L.Conv2D(64, 3, strides=2, padding="same"), L.LeakyReLU(0.2),
        L.Conv2D(128, 3, strides=2, padding="same"), L.BatchNormalization(), L.LeakyReLU(0.2),
        L.Conv2D(256, 3, strides=2, padding="same"), L.BatchNormalization(), L.LeakyReLU(0.2),
        L.Flatten(), L.Dense(2048), L.BatchNormalization(), L.LeakyReLU(0.2), L.Dense(1)])


def randomize_and_copy(ours, theirs, seed=0):
    """Random BN parameters/statistics in Keras's model, then copy Keras -> ours."""
    rng = _rng(seed)
    ours_vars = ours.variables_in_keras_order()
    assert len(ours_vars) == len(theirs.weights)
    for v, w in zip(ours_vars, theirs.weights):
        name = w.path.split("/")[-1]
        assert v.name.split(":")[0].endswith(name), (v.name, w.path)
        assert tuple(v.shape) == tuple(w.shape) and v.trainable == w.trainable, w.path
        if name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
        elif name in ("beta", "moving_mean"):
            w.assign(rng.normal(scale=0.3, size=w.shape).astype(np.float32))
        v.assign(np.asarray(w.numpy()))
    assert {id(v) for v in ours_vars} == {id(v) for v in ours.variables}


def check_parity(ours, theirs, x, cot):
    for training in (False, True):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours = ours(x, training=training, update_stats=False)
            y_keras = theirs(x, training=training)
            l_ours = tf.reduce_sum(y_ours * cot)
            l_keras = tf.reduce_sum(y_keras * cot)
        scale = float(np.max(np.abs(y_keras.numpy())))
        np.testing.assert_allclose(y_ours, y_keras, rtol=TOL["rtol"],
                                   atol=TOL["atol"] * max(scale, 1.0))
        ours_t = [v for v in ours.variables_in_keras_order() if v.trainable]
        keras_t = [w for w in theirs.weights if w.trainable]
        g_ours = tape.gradient(l_ours, [x] + ours_t)
        g_keras = tape.gradient(l_keras, [x] + keras_t)
        # A conv bias that feeds a training-mode BatchNorm has a true gradient of 0;
        # both sides then hold float32 rounding noise on the scale of the largest
        # gradients (tfcore's shift-add conv and Keras's conv round differently), so
        # the absolute floor is 1e-5 of the largest gradient of the whole pass.
        global_scale = max(float(np.max(np.abs(np.asarray(b)))) for b in g_keras)
        for a, b, name in zip(g_ours, g_keras, ["input"] + [w.path for w in keras_t]):
            b = np.asarray(b)
            gscale = max(float(np.max(np.abs(b))), 1e-3)
            np.testing.assert_allclose(a, b, rtol=GRAD_TOL["rtol"],
                                       atol=GRAD_TOL["atol"] * gscale
                                       + 1e-5 * global_scale, err_msg=name)


@pytest.mark.parametrize("upsampling,latent_dim", [("upsample", 30), ("transpose", None)])
def test_generator_matches_keras(upsampling, latent_dim):
    theirs = keras_generator(upsampling, latent_dim)
    ours = dcgan.Generator(latent_dim=latent_dim, upsampling=upsampling)
    z = _z(ours, 3, seed=1)
    ours(z)
    randomize_and_copy(ours, theirs, seed=2)
    cot = tf.constant(_rng(3).normal(size=(3, 32, 32, 1)).astype(np.float32))
    check_parity(ours, theirs, z, cot)


def test_discriminator_matches_keras():
    theirs = keras_discriminator()
    ours = dcgan.Discriminator()
    x = _images(4, seed=4)
    ours(x)
    randomize_and_copy(ours, theirs, seed=5)
    cot = tf.constant(_rng(6).normal(size=(4, 1)).astype(np.float32))
    check_parity(ours, theirs, x, cot)


# --- the train step wrapper -----------------------------------------------------------------

class Recorder:
    """An optimizer stand-in: records the variables it is given and applies plain SGD
    (v -= 0.01 g) with `apply=True`, nothing with `apply=False` (so any change of that
    network's variables would come from elsewhere)."""

    def __init__(self, apply):
        self.apply = apply
        self.seen = []

    def apply_gradients(self, grads_and_vars):
        pairs = list(grads_and_vars)
        self.seen.append([v for _, v in pairs])
        if self.apply:
            for grad, v in pairs:
                v.assign_sub(0.01 * grad)


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _ids(variables):
    return sorted(id(v) for v in variables)


@pytest.mark.parametrize("d_batch,update", [("split", "generator"),
                                            ("mixed", "discriminator")])
def test_step_updates_one_network_each_and_bn_statistics_per_kind(d_batch, update):
    """split: only G's optimizer applies -> D's weights stay bitwise the same through
    the whole step (D step + G step); mixed: only D's applies -> G's stay the same.
    Either way D's BN moving statistics after the step are those of its own passes
    (per kind for split, of the concatenation for mixed): the G step restored them.
    The step runs eagerly here (the loop compiles it; see tests/test_train_dcgan.py).
    """
    g, d = dcgan.Generator(), dcgan.Discriminator()
    dcgan.build(g, d)
    g_opt, d_opt = Recorder(update == "generator"), Recorder(update == "discriminator")
    step = dcgan.make_train_step(g, d, g_opt, d_opt, order="d_then_g", d_batch=d_batch)
    batch, seed = 4, tf.constant([5, 6], tf.int64)
    real = _images(batch, seed=7) * 0.5 + 0.3  # a different distribution from G's
    # What the D step will see: an eager replay of its noise draw (philox).
    noise = gan.sample_noise(batch, list(g.latent_shape), seed=fold_seed(seed, 0))
    fake = g(noise, training=True, update_stats=False)
    d_train0, g_train0 = _values(d.trainable_variables), _values(g.trainable_variables)
    bn = d.bns[0]
    mm0, mv0 = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()

    def pre_bn(x):  # D's features entering its first BatchNorm, float64
        return d.convs[1](d._act(d.convs[0](x))).numpy().astype(np.float64)

    h_r, h_f = pre_bn(real), pre_bn(fake)
    if d_batch == "split":
        expected_real_logits = d(real, training=True, update_stats=False).numpy()
    else:
        both = d(tf.concat([real, fake], 0), training=True, update_stats=False).numpy()
        expected_real_logits = both[:batch]

    logs = step((real,), seed)  # a tuple batch: its first element is the images

    assert set(logs) == {"d_loss", "d_loss_real", "d_loss_fake", "d_acc_real",
                         "d_acc_fake", "d_acc", "g_loss"}
    np.testing.assert_allclose(logs["d_acc"], (logs["d_acc_real"] + logs["d_acc_fake"]) / 2)
    assert [_ids(s) for s in d_opt.seen] == [_ids(d.trainable_variables)]
    assert [_ids(s) for s in g_opt.seen] == [_ids(g.trainable_variables)]
    fixed, moved = (d, g) if update == "generator" else (g, d)
    before_fixed, before_moved = ((d_train0, g_train0) if update == "generator"
                                  else (g_train0, d_train0))
    for before, after in zip(before_fixed, _values(fixed.trainable_variables)):
        np.testing.assert_array_equal(before, after)
    kernels = [(b, v) for b, v in zip(before_moved, moved.trainable_variables)
               if "kernel" in v.name]
    assert len(kernels) == (5 if moved is d else 4)  # G (no latent_dim) has no Dense
    assert all(np.max(np.abs(v.numpy() - b)) > 0 for b, v in kernels)

    m = bn.momentum
    if d_batch == "split":  # two updates: the real batch's moments, then the fake one's
        exp_mm = m * (m * mm0 + (1 - m) * h_r.mean((0, 1, 2))) + (1 - m) * h_f.mean((0, 1, 2))
        exp_mv = m * (m * mv0 + (1 - m) * h_r.var((0, 1, 2))) + (1 - m) * h_f.var((0, 1, 2))
    else:  # one update with the concatenation's moments
        h = np.concatenate([h_r, h_f])
        exp_mm = m * mm0 + (1 - m) * h.mean((0, 1, 2))
        exp_mv = m * mv0 + (1 - m) * h.var((0, 1, 2))
    np.testing.assert_allclose(bn.moving_mean, exp_mm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance, exp_mv, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(exp_mm - mm0)) > 1e-4  # the statistics did move
    bce = np.mean(np.logaddexp(0.0, -expected_real_logits.astype(np.float64)))
    np.testing.assert_allclose(logs["d_loss_real"], bce, rtol=1e-4)
    np.testing.assert_allclose(logs["d_acc_real"], np.mean(expected_real_logits > 0))


def test_train_step_validates():
    g, d = dcgan.Generator(), dcgan.Discriminator()
    g_opt, d_opt = dcgan.make_optimizers()
    with pytest.raises(ValueError, match="d_batch.*'both'"):
        dcgan.make_train_step(g, d, g_opt, d_opt, d_batch="both")
    with pytest.raises(ValueError, match="order.*'g_first'"):
        dcgan.make_train_step(g, d, g_opt, d_opt, order="g_first")
    with pytest.raises(ValueError, match="d_steps.*0"):
        dcgan.make_train_step(g, d, g_opt, d_opt, d_steps=0)


def _keras_values(net):
    return [v.numpy().astype(np.float64) for v in net.variables_in_keras_order()]


def test_weight_average_is_part_of_the_step():
    """a <- d_t a + (1 - d_t) v over every G variable in Keras order (BatchNorm
    statistics too), d_t = min(0.999, (1 + t) / (10 + t)) at G update t: 0.1 for the
    eager call (t = 0), then 2/11 for the loop's compiled step (t = 1)."""
    from tfcore.training import loop
    g, d = dcgan.Generator(latent_dim=5), dcgan.Discriminator(dense_units=32)
    dcgan.build(g, d)
    g_opt, d_opt = dcgan.make_optimizers()
    ema = dcgan.make_ema_generator(g)
    assert ema.name == "generator_ema" and ema.latent_shape == g.latent_shape
    for a, v in zip(_keras_values(ema), _keras_values(g)):
        np.testing.assert_array_equal(a, v)  # a copy to start from
    for i, a in enumerate(ema.variables_in_keras_order()):  # away from G, so the
        a.assign(a + 0.5 * (i + 1))                        # formula's a-term shows
    step = dcgan.make_train_step(g, d, g_opt, d_opt, ema_generator=ema)
    images = _images(8, seed=9)
    before = _keras_values(ema)
    step(images[:4], tf.constant([1, 2], tf.int64))
    after = _keras_values(ema)
    for b, a, v in zip(before, after, _keras_values(g)):
        np.testing.assert_allclose(a, 0.1 * b + 0.9 * v, rtol=1e-5, atol=1e-6)
    loop.fit(step, images.numpy(), batch_size=4, steps=1, progress=False, jit="off",
             autograph=False, objects={"generator": g, "discriminator": d,
                                       "generator_ema": ema, "g_opt": g_opt,
                                       "d_opt": d_opt})
    decay = 2.0 / 11.0
    for b, a, v in zip(after, _keras_values(ema), _keras_values(g)):
        np.testing.assert_allclose(a, decay * b + (1 - decay) * v, rtol=1e-5, atol=1e-6)
    # Without an ema_generator the step leaves the copy alone.
    frozen = _keras_values(ema)
    dcgan.make_train_step(g, d, g_opt, d_opt)(images[:4], tf.constant([3, 4], tf.int64))
    for a, b in zip(frozen, _keras_values(ema)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ema_decay must be a finite number in"):
        dcgan.make_train_step(g, d, g_opt, d_opt, ema_generator=ema, ema_decay=1.0)
