"""tfcore.losses against hand-written NumPy formulas and Keras's losses/metrics.

Every Keras comparison runs against Keras 3 (`keras`) and Keras 2 (`tf_keras`), the
`keras_impl` fixture (tests/blocks.py). They agree everywhere except Keras 2's binary
cross-entropy on probabilities, which adds 1e-7 inside the logs: compared with
`binary_crossentropy(..., epsilon_in_log=True)`.

Tolerances: NumPy references are computed in float64 from the same float32 inputs;
tfcore computes in float32, so values agree to rtol=1e-5 (atol=1e-6). Keras
references run the same float32 ops and agree to rtol=1e-5, atol=1e-6, except where
noted (Keras's KL clips probabilities at 1e-7).
"""
import numpy as np
import pytest
import tensorflow as tf

from blocks import is_keras2, keras_impl  # noqa: F401 (a fixture)
from tfcore import gan, losses

RTOL, ATOL = 1e-5, 1e-6
EPS = 1e-7


def _rng(seed=0):
    return np.random.default_rng(seed)


def _log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _logits(b=6, c=5, scale=3.0, seed=0):
    return (_rng(seed).normal(size=(b, c)) * scale).astype(np.float32)


EXTREME = np.array([[1e4, -1e4, 0.0], [-3e3, 2e3, 5e3], [88.0, -88.0, 0.0],
                    [0.0, 0.0, 0.0]], np.float32)


# --- sparse / dense softmax cross-entropy -----------------------------------------
def test_sparse_softmax_cross_entropy_numpy_and_keras(keras_impl):
    logits = _logits()
    labels = np.array([0, 1, 4, 2, 3, 0])
    ref = -_log_softmax(logits)[np.arange(6), labels]
    got = losses.sparse_softmax_cross_entropy(labels, logits, reduction="none")
    assert got.shape == (6,)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.sparse_softmax_cross_entropy(labels, logits),
                               ref.mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.sparse_softmax_cross_entropy(labels, logits, "sum"),
                               ref.sum(), rtol=RTOL, atol=ATOL)
    k = keras_impl.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(got, k, rtol=RTOL, atol=ATOL)
    # labels of shape [batch, 1] are squeezed (as Keras).
    np.testing.assert_allclose(
        losses.sparse_softmax_cross_entropy(labels[:, None], logits, "none"), ref,
        rtol=RTOL, atol=ATOL)


def test_softmax_cross_entropy_soft_labels_numpy_and_keras(keras_impl):
    logits = _logits(seed=1)
    soft = np.abs(_rng(2).normal(size=logits.shape)).astype(np.float32)
    soft /= soft.sum(-1, keepdims=True)
    ref = -(soft * _log_softmax(logits)).sum(-1)
    got = losses.softmax_cross_entropy(soft, logits, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    k = keras_impl.losses.categorical_crossentropy(soft, logits, from_logits=True)
    np.testing.assert_allclose(got, k, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.categorical_crossentropy(soft, logits, from_logits=True),
                               ref.mean(), rtol=RTOL, atol=ATOL)


def test_cross_entropies_extreme_logits_are_finite():
    labels = np.array([1, 0, 0, 2])
    onehot = np.eye(3, dtype=np.float32)[labels]
    ref = -_log_softmax(EXTREME)[np.arange(4), labels]  # exact, up to 2e4
    x = tf.constant(EXTREME)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = losses.sparse_softmax_cross_entropy(labels, x, "none")
        b = losses.softmax_cross_entropy(onehot, x, "none")
    for v in (a, b):
        np.testing.assert_allclose(v, ref, rtol=RTOL, atol=ATOL)
        assert np.all(np.isfinite(tape.gradient(v, x)))


# --- categorical cross-entropy from probabilities ----------------------------------
def test_categorical_crossentropy_probs_clipping_and_renormalisation(keras_impl):
    rng = _rng(3)
    probs = np.abs(rng.normal(size=(5, 4))).astype(np.float32)
    probs[0] = [1.0, 0.0, 0.0, 0.0]          # a zero probability on the true class
    probs[1] *= 3.0                            # not normalised: Keras renormalises
    y = np.eye(4, dtype=np.float32)[[1, 2, 0, 3, 1]]
    q = probs.astype(np.float64) / probs.sum(-1, keepdims=True)
    q = np.clip(q, EPS, 1 - EPS)
    ref = -(y * np.log(q)).sum(-1)
    got = losses.categorical_crossentropy(y, probs, reduction="none")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, keras_impl.losses.categorical_crossentropy(y, probs),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[0], -np.log(EPS), rtol=1e-4)


# --- binary cross-entropy --------------------------------------------------------------
def test_binary_crossentropy_probs_numpy_and_keras(keras_impl):
    rng = _rng(4)
    p = rng.uniform(size=(6, 3)).astype(np.float32)
    p[0, 0], p[1, 1] = 0.0, 1.0               # exercised by the clip
    y = (rng.uniform(size=(6, 3)) > 0.5).astype(np.float32)
    y[0, 0], y[1, 1] = 1.0, 0.0               # worst case: -log(1e-7)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    ref = -(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean(-1)
    got = losses.binary_crossentropy(y, p, reduction="none")
    assert np.all(np.isfinite(got))
    # float32 rounds 1 - 1e-7 to 0.99999988, so the clipped log(1 - p) differs from
    # float64 by ~20% at p == 1; compare that entry with a looser tolerance.
    np.testing.assert_allclose(got, ref, rtol=0.1)
    np.testing.assert_allclose(got[2:], ref[2:], rtol=RTOL, atol=ATOL)
    keras2 = is_keras2(keras_impl)  # Keras 2 adds 1e-7 inside the logs
    ours = losses.binary_crossentropy(y, p, reduction="none", epsilon_in_log=keras2)
    np.testing.assert_allclose(ours, keras_impl.losses.binary_crossentropy(y, p),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.binary_crossentropy(y, p, epsilon_in_log=keras2),
                               keras_impl.losses.BinaryCrossentropy()(y, p), rtol=RTOL)


@pytest.mark.parametrize("epsilon_in_log", [False, True])
def test_binary_crossentropy_epsilon_in_log_is_keras2s(epsilon_in_log):
    """A saturated wrong prediction costs -log(1e-7) = 16.12 (Keras 3) and
    -log(1e-7 + 1e-7) = 15.42 with epsilon_in_log (Keras 2), as each Keras says."""
    import keras
    tf_keras = pytest.importorskip("tf_keras")
    y, p = np.array([[1.0]], np.float32), np.array([[0.0]], np.float32)
    got = losses.binary_crossentropy(y, p, epsilon_in_log=epsilon_in_log)
    np.testing.assert_allclose(got, -np.log(2 * EPS if epsilon_in_log else EPS), rtol=1e-5)
    np.testing.assert_allclose(got, [16.118, 15.425][epsilon_in_log], atol=2e-3)
    theirs = (tf_keras if epsilon_in_log else keras).losses.binary_crossentropy(y, p)
    np.testing.assert_allclose(got, theirs, rtol=RTOL)
    other = (keras if epsilon_in_log else tf_keras).losses.binary_crossentropy(y, p)
    assert abs(float(got) - float(other[0])) > 0.5  # the two Kerases really differ
    logits = np.array([[2.0]], np.float32)  # from logits: no epsilon anywhere
    np.testing.assert_array_equal(
        losses.binary_crossentropy(y, logits, from_logits=True, epsilon_in_log=True),
        losses.binary_crossentropy(y, logits, from_logits=True))


@pytest.mark.parametrize("shape", [(64, 1), (7, 1), (100,)])
@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_gan_bce_with_logits_is_the_losses_bce_bitwise(shape, mode):
    """tfcore.gan.bce_with_logits calls losses.binary_crossentropy: bitwise the former
    body (sigmoid_cross_entropy_with_logits + reduce_mean) on the discriminator
    logit shapes [b, 1] and [b], values and gradients."""
    def former(logits, labels, reduction):
        labels = tf.broadcast_to(tf.cast(labels, logits.dtype), tf.shape(logits))
        per_elem = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        if reduction == "mean":
            return tf.reduce_mean(per_elem)
        return per_elem if per_elem.shape.rank == 1 else tf.reduce_mean(per_elem, axis=1)

    def values_and_grads(fn):
        def run(t):
            out = []
            for label, reduction in ((1.0, "mean"), (0.0, "mean"), (0.9, "none")):
                with tf.GradientTape() as tape:
                    tape.watch(t)
                    y = fn(t, label, reduction)
                    total = tf.reduce_sum(y)
                out += [y, tape.gradient(total, t)]
            return out
        return run if mode == "eager" else tf.function(run, jit_compile=mode == "xla")

    x = tf.constant(_rng(14).normal(size=shape).astype(np.float32) * 5)
    got, expected = values_and_grads(gan.bce_with_logits)(x), values_and_grads(former)(x)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_binary_crossentropy_logits_extreme_and_keras(keras_impl):
    x = np.array([[1e4, -1e4, 0.0, 30.0], [-100.0, 100.0, 2.0, -2.0]], np.float32)
    y = np.array([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.3, 0.7]], np.float32)
    xd = x.astype(np.float64)
    ref = (np.maximum(xd, 0) - xd * y + np.log1p(np.exp(-np.abs(xd)))).mean(-1)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        got = losses.binary_crossentropy(y, xt, from_logits=True, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    assert np.all(np.isfinite(tape.gradient(got, xt)))
    k = keras_impl.losses.binary_crossentropy(y, x, from_logits=True)
    np.testing.assert_allclose(got, k, rtol=RTOL, atol=ATOL)


def test_binary_crossentropy_images_per_example_mean(keras_impl):
    """[b, h, w, c]: 'none' = per-image mean over all pixels; 'mean' = Keras's loss."""
    rng = _rng(5)
    p = rng.uniform(0.01, 0.99, size=(3, 4, 5, 2)).astype(np.float32)
    y = rng.uniform(size=(3, 4, 5, 2)).astype(np.float32)
    elem = -(y * np.log(p.astype(np.float64)) + (1 - y) * np.log(1 - p.astype(np.float64)))
    got = losses.binary_crossentropy(y, p, reduction="none")
    assert got.shape == (3,)
    np.testing.assert_allclose(got, elem.reshape(3, -1).mean(1), rtol=RTOL)
    np.testing.assert_allclose(
        losses.binary_crossentropy(y, p, epsilon_in_log=is_keras2(keras_impl)),
        keras_impl.losses.BinaryCrossentropy()(y, p), rtol=RTOL)


def test_rank_mismatch_is_squeezed_not_broadcast():
    y = np.array([1.0, 0.0, 1.0], np.float32)
    x = np.array([[2.0], [-1.0], [-3.0]], np.float32)
    got = losses.binary_crossentropy(y, x, from_logits=True, reduction="none")
    assert got.shape == (3,)
    ref = losses.binary_crossentropy(y, x[:, 0], from_logits=True, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same shape"):
        losses.mean_squared_error(np.zeros((3, 2)), np.zeros((3, 4)))


# --- KL and entropy ---------------------------------------------------------------------
def test_kl_divergence_from_logits_numpy_and_keras(keras_impl):
    p_logits, q_logits = _logits(seed=6), _logits(seed=7)
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    ref = (np.exp(lp) * (lp - lq)).sum(-1)
    got = losses.kl_divergence_from_logits(p_logits, q_logits, reduction="none")
    assert got.shape == (6,)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.kl_divergence_from_logits(p_logits, q_logits),
                               ref.mean(), rtol=RTOL, atol=ATOL)
    # Keras's kl_divergence takes probabilities and clips them at 1e-7; with these
    # moderate logits every probability exceeds 1e-5, so they agree to 1e-5.
    k = keras_impl.losses.kl_divergence(tf.nn.softmax(p_logits), tf.nn.softmax(q_logits))
    np.testing.assert_allclose(got, k, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence_from_logits(p_logits, p_logits, "none"),
                               np.zeros(6), atol=1e-6)


def test_kl_and_entropy_extreme_logits_finite():
    q = EXTREME[::-1].copy()
    lp, lq = _log_softmax(EXTREME), _log_softmax(q)
    p = np.exp(lp)
    ref_kl = (p * (lp - lq)).sum(-1)           # up to ~1e4: no clipping applied
    ref_h = -(p * lp).sum(-1)
    a, b = tf.constant(EXTREME), tf.constant(q)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([a, b])
        kl = losses.kl_divergence_from_logits(a, b, "none")
        h = losses.entropy_from_logits(a, "none")
    np.testing.assert_allclose(kl, ref_kl, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h, ref_h, rtol=RTOL, atol=ATOL)
    for g in tape.gradient(kl, [a, b]) + [tape.gradient(h, a)]:
        assert np.all(np.isfinite(g))


def test_entropy_from_logits_numpy_and_keras(keras_impl):
    logits = _logits(seed=8)
    lp = _log_softmax(logits)
    ref = -(np.exp(lp) * lp).sum(-1)
    got = losses.entropy_from_logits(logits, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    # H(p) = cross-entropy of p against its own logits.
    k = keras_impl.losses.categorical_crossentropy(tf.nn.softmax(logits), logits,
                                              from_logits=True)
    np.testing.assert_allclose(got, k, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.entropy_from_logits(np.zeros((2, 4))),
                               np.log(4.0), rtol=RTOL)


# --- MSE ---------------------------------------------------------------------------------
def test_mean_squared_error_numpy_and_keras(keras_impl):
    rng = _rng(9)
    a = rng.normal(size=(4, 3, 2)).astype(np.float32)
    b = rng.normal(size=(4, 3, 2)).astype(np.float32)
    ref = ((a.astype(np.float64) - b) ** 2).reshape(4, -1).mean(1)
    got = losses.mean_squared_error(a, b, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.mean_squared_error(a, b),
                               keras_impl.losses.MeanSquaredError()(a, b), rtol=RTOL)


# --- accuracy -------------------------------------------------------------------------------
def test_sparse_categorical_accuracy_vs_keras(keras_impl):
    logits = _logits(b=20, c=4, seed=10)
    labels = _rng(11).integers(0, 4, size=20)
    ref = (logits.argmax(-1) == labels).astype(np.float32)
    got = losses.sparse_categorical_accuracy(labels, logits, reduction="none")
    np.testing.assert_array_equal(got, ref)
    k = keras_impl.metrics.sparse_categorical_accuracy(labels, logits)
    np.testing.assert_array_equal(got, np.reshape(k, [-1]))
    np.testing.assert_allclose(losses.sparse_categorical_accuracy(labels, tf.nn.softmax(logits)),
                               ref.mean(), rtol=1e-6)
    assert 0 < float(ref.mean()) < 1  # the test data has both hits and misses


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_accuracy_probs_and_logits_vs_keras(threshold, keras_impl):
    rng = _rng(12)
    x = rng.normal(size=(10, 3)).astype(np.float32) * 2
    y = (rng.uniform(size=(10, 3)) > 0.5).astype(np.float32)
    p = tf.math.sigmoid(x).numpy()
    # Keras 3.15's function returns the element-wise hits; average per example.
    k = np.reshape(keras_impl.metrics.binary_accuracy(y, p, threshold=threshold), (10, -1))
    k = k.mean(-1)
    got_p = losses.binary_accuracy(y, p, threshold=threshold, reduction="none")
    got_x = losses.binary_accuracy(y, x, threshold=threshold, from_logits=True,
                                   reduction="none")
    np.testing.assert_allclose(got_p, k, rtol=1e-6)
    np.testing.assert_allclose(got_x, k, rtol=1e-6)
    ref = (y == (p > threshold)).mean(-1)
    np.testing.assert_allclose(got_p, ref, rtol=1e-6)
    metric = keras_impl.metrics.BinaryAccuracy(threshold=threshold)
    metric.update_state(y, p)
    np.testing.assert_allclose(losses.binary_accuracy(y, x, threshold, from_logits=True),
                               metric.result(), rtol=1e-6)


# --- argument checks, compilation -----------------------------------------------------------
def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="'average'"):
        losses.mean_squared_error([[1.0]], [[1.0]], reduction="average")
    with pytest.raises(ValueError, match="epsilon_in_log.*'yes'"):
        losses.binary_crossentropy([[1.0]], [[0.7]], epsilon_in_log="yes")
    with pytest.raises(ValueError, match="threshold.*1.5"):
        losses.binary_accuracy([[1.0]], [[0.7]], threshold=1.5)
    with pytest.raises(ValueError, match="labels must have the shape"):
        losses.sparse_softmax_cross_entropy(np.zeros((3, 2), np.int32), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="same shape"):
        losses.kl_divergence_from_logits(np.zeros((3, 4)), np.zeros((3, 5)))


def test_losses_under_xla_and_unknown_batch():
    logits = tf.constant(_logits(seed=13))
    labels = tf.constant([0, 1, 2, 3, 4, 0])

    @tf.function(jit_compile=True,
                 input_signature=[tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, 5], tf.float32)])
    def f(lab, lg):
        return (losses.sparse_softmax_cross_entropy(lab, lg),
                losses.kl_divergence_from_logits(lg, lg[::-1]),
                losses.entropy_from_logits(lg, "none"),
                losses.sparse_categorical_accuracy(lab, lg))

    eager = (losses.sparse_softmax_cross_entropy(labels, logits),
             losses.kl_divergence_from_logits(logits, logits[::-1]),
             losses.entropy_from_logits(logits, "none"),
             losses.sparse_categorical_accuracy(labels, logits))
    for a, b in zip(f(labels, logits), eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
