"""Tests for models/vat_cnn.py: the CNN against Keras 3 (layout, outputs), the VAT term
and a whole train step against a Keras 3 reference with copied weights and the same
initial d, BatchNorm statistics untouched by the perturbed passes, shared dropout masks,
stop_gradient on the clean logits, and argument validation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from models import vat_cnn
from tfcore import optimizers
from tfcore.vat import stateless_standard_normal

SEED = tf.constant([3, 5], tf.int64)


def _batch(n=8, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
    y = rng.randint(0, 10, n).astype(np.int32)
    return tf.constant(x), tf.constant(y)


def _keras_cnn(dropout: bool):
    keras.utils.set_random_seed(11)
    layers = [keras.Input((28, 28, 1)),
              keras.layers.Conv2D(32, 3, activation="relu"),
              keras.layers.Conv2D(32, 3, activation="relu"),
              keras.layers.MaxPooling2D(2)]
    if dropout:
        layers.append(keras.layers.Dropout(0.25))
    layers += [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(0.5))
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers)


def _weighted(model):
    """(kernel, bias) variable pairs of the tfcore model, in layer order."""
    return [(l.kernel, l.bias) for l in model.layers if hasattr(l, "kernel")]


def _twin(dropout: bool, x):
    """A Keras CNN and a VatCNN holding the same weights (copied 1:1 by layer order)."""
    km = _keras_cnn(dropout)
    model = vat_cnn.VatCNN(dropout=dropout)
    model(x[:1])
    klayers = [l for l in km.layers if l.weights]
    pairs = _weighted(model)
    assert len(klayers) == len(pairs) == 4
    for (kernel, bias), kl in zip(pairs, klayers):
        assert kernel.shape == kl.kernel.shape and bias.shape == kl.bias.shape
        kernel.assign(kl.kernel.numpy())
        bias.assign(kl.bias.numpy())
    return km, model


def _norm(d):
    return d / tf.sqrt(tf.reduce_sum(tf.square(d), axis=[1, 2, 3], keepdims=True))


def _keras_vat(km, x, clean_logits, seed, xi, eps, k):
    """VAT written out on the Keras model with Keras's KL (clipped probabilities)."""
    p = tf.stop_gradient(tf.nn.softmax(clean_logits))
    d = stateless_standard_normal(tf.shape(x), vat_cnn.direction_seed(seed))
    for _ in range(k):
        r = xi * _norm(d)
        with tf.GradientTape() as tape:
            tape.watch(r)
            dist = tf.reduce_sum(keras.losses.kl_divergence(
                p, tf.nn.softmax(km(x + r, training=True))))
        d = tf.stop_gradient(tape.gradient(dist, r))  # the direction is a constant
    r_adv = eps * _norm(d)
    return tf.reduce_mean(keras.losses.kl_divergence(
        p, tf.nn.softmax(km(x + r_adv, training=True))))


def test_layout_and_outputs_match_keras():
    x, _ = _batch(4)
    km, model = _twin(True, x)
    assert model.count_params() == km.count_params() == 600810
    # Inference (dropout off): same logits, float32 tolerance.
    np.testing.assert_allclose(model(x).numpy(), km(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    names = [l.name for l in model.layers]
    assert names == ["conv2d", "conv2d_1", "max_pooling2d", "dropout", "flatten", "dense",
                     "dropout_1", "dense_1"]


# The VAT KL is a difference of O(1) terms (sum p log p - sum p log q), so each side
# carries an absolute float32 rounding error of ~1e-7 whatever its (here ~3e-4) value:
# measured 1.0e-7 apart on this project's CPU (oneDNN kernels), 0 on others.
KL_ATOL = 5e-7


# xi >= 1: with much smaller xi the float32 finite difference lets the rounding of the
# two KLs (Keras clips probabilities, tfcore uses log_softmax) move d by ~1 %.
@pytest.mark.parametrize("xi,eps,k", [(10.0, 1.0, 1), (1.0, 2.0, 2)])
def test_vat_term_matches_keras_reference(xi, eps, k):
    x, _ = _batch(8)
    km, model = _twin(False, x)
    with tf.GradientTape() as tape:
        logits = model(x, training=True, seed=SEED)
        loss = vat_cnn.vat_term(model, x, logits, SEED, xi=xi, eps=eps, power_iterations=k)
    grads = tape.gradient(loss, [v for pair in _weighted(model) for v in pair])
    with tf.GradientTape() as tape:
        ref = _keras_vat(km, x, km(x, training=True), SEED, xi, eps, k)
    kvars = [w for l in km.layers if l.weights for w in (l.kernel, l.bias)]
    ref_grads = tape.gradient(ref, kvars)
    assert float(ref) > 1e-6  # non-trivial
    # float32; Keras's KL clips probabilities at 1e-7, ours uses log_softmax.
    np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=2e-4, atol=KL_ATOL)
    for g, rg in zip(grads, ref_grads):
        assert np.abs(rg.numpy()).max() > 0
        np.testing.assert_allclose(g.numpy(), rg.numpy(), rtol=2e-3,
                                   atol=2e-3 * np.abs(rg.numpy()).max())


def test_train_step_matches_keras_adadelta():
    """Two compiled steps of CE + VAT with Adadelta(1.0) == the same with Keras 3."""
    x, y = _batch(8)
    km, model = _twin(False, x)
    opt = optimizers.Adadelta(learning_rate=1.0)
    opt.build(model.trainable_variables)
    step = tf.function(vat_cnn.make_train_step(model, opt, vat=True, xi=10.0, eps=1.0))
    kopt = keras.optimizers.Adadelta(learning_rate=1.0)
    kvars = km.trainable_weights
    initial = [v.numpy().copy() for v in model.trainable_variables]
    for i in range(2):
        seed = SEED + i
        logs = step((x, y), seed)
        with tf.GradientTape() as tape:
            logits = km(x, training=True)
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
            v = _keras_vat(km, x, logits, seed, 10.0, 1.0, 1)
            total = ce + v
        kopt.apply_gradients(zip(tape.gradient(total, kvars), kvars))
        np.testing.assert_allclose(logs["ce"].numpy(), ce.numpy(), rtol=1e-5)
        np.testing.assert_allclose(logs["vat"].numpy(), v.numpy(), rtol=2e-4, atol=KL_ATOL)
        np.testing.assert_allclose(logs["loss"].numpy(), total.numpy(), rtol=1e-5)
    for (kernel, bias), kl in zip(_weighted(model), [l for l in km.layers if l.weights]):
        for ours, theirs in ((kernel, kl.kernel), (bias, kl.bias)):
            # Adadelta's step is ~1e-3 per weight; float32 round-off in the gradients.
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)
    moved = max(np.abs(v.numpy() - v0).max()
                for v, v0 in zip(model.trainable_variables, initial))
    assert moved > 1e-4  # the weights did change


def test_stop_gradient_clean_logits_get_no_vat_gradient():
    x, _ = _batch(8)
    model = vat_cnn.VatCNN(dropout=True)
    with tf.GradientTape(persistent=True) as tape:
        logits = model(x, training=True, seed=SEED)
        loss = vat_cnn.vat_term(model, x, logits, SEED)
    g_logits = tape.gradient(loss, logits)
    assert g_logits is None or not np.any(g_logits.numpy())
    g_vars = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in g_vars)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in g_vars) > 0


@pytest.mark.parametrize("hvp", ["finite_difference", "exact", "secant"])
def test_dropout_mask_shared_when_asked(hvp):
    x, _ = _batch(8)
    model = vat_cnn.VatCNN(dropout=True)
    a = model(x, training=True, seed=SEED)
    np.testing.assert_array_equal(a.numpy(), model(x, training=True, seed=SEED).numpy())
    assert not np.allclose(a.numpy(), model(x, training=True, seed=SEED + 1).numpy())
    # xi, eps -> 0: with one mask the perturbed prediction equals the clean one (KL ~ 0);
    # with independent masks the KL measures two dropout draws (> 0).
    kw = dict(xi=1e-4, eps=1e-4, power_iterations=1, hvp=hvp)
    shared = float(vat_cnn.vat_term(model, x, a, SEED, shared_dropout_mask=True, **kw))
    indep = float(vat_cnn.vat_term(model, x, a, SEED, shared_dropout_mask=False, **kw))
    assert shared < 1e-7, shared
    assert indep > 1e-5 and indep > 1e3 * max(shared, 1e-12), (shared, indep)


def _bn_model(x):
    model = vat_cnn.VatCNN(dropout=False, batch_norm=True)
    model(x[:1])
    return model


def _stats(model):
    return [v.numpy().copy() for v in model.variables if "moving" in v.name]


@pytest.mark.parametrize("semi,hvp", [(False, "finite_difference"),
                                      (True, "finite_difference"), (True, "exact"),
                                      (True, "secant")])
def test_perturbed_passes_leave_batchnorm_statistics(semi, hvp):
    """The moving statistics after a VAT step == after a CE-only step (one update by
    the labeled pass); the clean unlabeled and the perturbed passes do not update.
    (hvp='exact' runs traced: see test_vat_hvp.test_exact_eager_function_xla_agree.)"""
    x, y = _batch(8)
    x_u, _ = _batch(16, seed=1)
    models = [_bn_model(x), _bn_model(x)]
    for a, b in zip(models[0].variables, models[1].variables):
        b.assign(a)
    before = _stats(models[0])
    assert len(before) == 4  # two BatchNorms, mean + variance each
    results = []
    for model, use_vat in zip(models, (True, False)):
        opt = optimizers.SGD(learning_rate=0.01)
        opt.build(model.trainable_variables)
        step = vat_cnn.make_train_step(model, opt, vat=use_vat, entmin=use_vat, hvp=hvp)
        if hvp == "exact":
            step = tf.function(step, autograph=False)
        batch = {"labeled": (x, y), "unlabeled": x_u} if (semi and use_vat) else (x, y)
        logs = step(batch, SEED)
        if use_vat:
            assert float(logs["vat"]) > 0 and "entropy" in logs
        results.append(_stats(model))
    for s_vat, s_ce, s0 in zip(results[0], results[1], before):
        assert np.abs(s_ce - s0).max() > 1e-4  # the labeled pass did update
        np.testing.assert_allclose(s_vat, s_ce, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("semi", [False, True])
def test_translate_shifts_the_inputs_with_the_steps_seed(semi):
    """A step with translate=2 == a step without it on inputs shifted beforehand by
    tfcore.random_translate with the documented streams of the step's seed."""
    from tfcore.random_translate import random_translate
    x, y = _batch(4)
    x_u, _ = _batch(6, seed=3)
    models = []
    for translate in (2, 0, 0):
        model = vat_cnn.VatCNN(dropout=False)
        model(x[:1])
        if models:
            for a, b in zip(models[0][0].variables, model.variables):
                b.assign(a)
        opt = optimizers.SGD(learning_rate=0.1)
        opt.build(model.trainable_variables)
        models.append((model, vat_cnn.make_train_step(model, opt, xi=1e-6, eps=0.3,
                                                      translate=translate)))
    shifted_l = random_translate(x, 2, vat_cnn._fold(SEED, vat_cnn._TRANSLATE_STREAM))
    shifted_u = random_translate(x_u, 2,
                                 vat_cnn._fold(SEED, vat_cnn._TRANSLATE_STREAM + 1))
    assert not np.array_equal(shifted_l.numpy(), x.numpy())
    if semi:
        batches = ({"labeled": (x, y), "unlabeled": x_u},
                   {"labeled": (shifted_l, y), "unlabeled": shifted_u},
                   {"labeled": (x, y), "unlabeled": x_u})
    else:
        batches = ((x, y), (shifted_l, y), (x, y))
    logs = [step(batch, SEED) for (_, step), batch in zip(models, batches)]
    np.testing.assert_allclose(float(logs[0]["loss"]), float(logs[1]["loss"]), rtol=1e-6)
    for a, b in zip(models[0][0].variables, models[1][0].variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # The same weights without translate see other inputs: another loss.
    assert float(logs[2]["ce"]) != pytest.approx(float(logs[0]["ce"]), rel=1e-4)


def test_semi_supervised_step_uses_both_batches():
    x, y = _batch(4)
    x_u, _ = _batch(12, seed=2)
    model = vat_cnn.VatCNN(dropout=True)
    model(x[:1])
    opt = optimizers.Adam(learning_rate=1e-3)
    opt.build(model.trainable_variables)
    step = vat_cnn.make_train_step(model, opt, xi=1e-6, eps=0.3, entmin=True)
    logs = step({"labeled": (x, y), "unlabeled": x_u}, SEED)
    assert set(logs) == {"loss", "ce", "accuracy", "grad_norm", "vat", "entropy"}
    np.testing.assert_allclose(float(logs["loss"]),
                               float(logs["ce"] + logs["vat"] + logs["entropy"]), rtol=1e-5)
    assert 0 < float(logs["entropy"]) <= np.log(10) + 1e-5


@pytest.mark.parametrize("kwargs,name", [
    (dict(xi=0.0), "xi"), (dict(eps=-1.0), "eps"), (dict(vat_weight=float("nan")), "vat_weight"),
    (dict(power_iterations=1.5), "power_iterations"), (dict(vat="yes"), "vat"),
    (dict(shared_dropout_mask=1), "shared_dropout_mask"), (dict(translate=-1), "translate"),
    (dict(translate=1.0), "translate"), (dict(hvp="forward"), "hvp")])
def test_make_train_step_rejects_bad_arguments(kwargs, name):
    model = vat_cnn.VatCNN()
    with pytest.raises(ValueError, match=name):
        vat_cnn.make_train_step(model, optimizers.SGD(), **kwargs)


def test_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        vat_cnn.VatCNN(num_classes=0)
    with pytest.raises(ValueError, match="dropout"):
        vat_cnn.VatCNN(dropout="no")
