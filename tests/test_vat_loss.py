"""Tests for tfcore/vat.py: the VAT loss against a hand-written reference on real Keras 3
layers, power-iteration convergence to the Hessian's top eigenvector, stop_gradient,
normalisation safety, eager == tf.function == XLA, and argument validation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcore.vat import (entropy_loss, kl_from_logits, l2_normalize_per_example,
                        stateless_standard_normal, virtual_adversarial_loss)

SEED = tf.constant([7, 11], tf.int64)


# --------------------------------------------------------------------------------------
# Small models
# --------------------------------------------------------------------------------------
def _keras_conv_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])


class _PureConv(tf.Module):
    """Conv2D(3, 3, valid, relu) -> Flatten -> Dense(5), plain tf.Variables."""

    def __init__(self, keras_model):
        super().__init__()
        conv, dense = keras_model.layers[0], keras_model.layers[2]
        self.conv_kernel = tf.Variable(conv.kernel.numpy())
        self.conv_bias = tf.Variable(conv.bias.numpy())
        self.dense_kernel = tf.Variable(dense.kernel.numpy())
        self.dense_bias = tf.Variable(dense.bias.numpy())
        self.pairs = [(self.conv_kernel, conv.kernel), (self.conv_bias, conv.bias),
                      (self.dense_kernel, dense.kernel), (self.dense_bias, dense.bias)]

    def __call__(self, x):
        h = tf.nn.relu(tf.nn.conv2d(x, self.conv_kernel, 1, "VALID") + self.conv_bias)
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        return tf.matmul(h, self.dense_kernel) + self.dense_bias


class _Linear(tf.Module):
    def __init__(self, d_in, classes, dtype=tf.float32, seed=0):
        super().__init__()
        rng = np.random.RandomState(seed)
        self.w = tf.Variable(rng.normal(0, 1, (d_in, classes)), dtype=dtype)
        self.b = tf.Variable(rng.normal(0, 0.5, (classes,)), dtype=dtype)

    def __call__(self, x):
        return tf.matmul(x, self.w) + self.b


def _images(n=4, seed=1):
    return np.random.RandomState(seed).uniform(-1, 1, (n, 6, 6, 2)).astype(np.float32)


def _np_normal(shape, seed):
    """The documented draw, in NumPy: Philox uint32 bits -> 24-bit uniforms -> Box-Muller."""
    bits = tf.random.stateless_uniform([2] + list(shape), seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg="philox").numpy()
    u = ((bits >> 8).astype(np.float64) + 0.5) / 2.0 ** 24
    return np.sqrt(-2.0 * np.log(u[0])) * np.cos(2.0 * np.pi * u[1])


def _norm_per_example(t):
    axes = list(range(1, t.shape.rank))
    return t / tf.sqrt(tf.reduce_sum(tf.square(t), axes, keepdims=True))


# --------------------------------------------------------------------------------------
# 1. Parity with a hand-written reference loop on a real Keras 3 model
# --------------------------------------------------------------------------------------
def _reference_vat(model, x, seed, xi, eps, k):
    """VAT written out on the Keras model with Keras's own (clipped-probability) KL."""
    p = tf.stop_gradient(tf.nn.softmax(model(x)))
    d = tf.constant(_np_normal(x.shape, seed), tf.float32)
    for _ in range(k):
        r = xi * _norm_per_example(d)
        with tf.GradientTape() as tape:
            tape.watch(r)
            q = tf.nn.softmax(model(x + r))
            dist = tf.reduce_mean(keras.losses.kl_divergence(p, q))  # mean: scale is irrelevant
        d = tape.gradient(dist, r)
    r_adv = eps * _norm_per_example(d)
    with tf.GradientTape() as tape:
        q = tf.nn.softmax(model(x + r_adv))
        loss = tf.reduce_mean(keras.losses.kl_divergence(p, q))
    return loss, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize("xi,eps,k", [(10.0, 1.0, 1), (0.1, 2.0, 2)])
def test_matches_keras_reference(xi, eps, k):
    km = _keras_conv_model()
    pure = _PureConv(km)
    x = tf.constant(_images())
    ref_loss, ref_grads = _reference_vat(km, x, SEED, xi, eps, k)
    with tf.GradientTape() as tape:
        loss = virtual_adversarial_loss(pure, x, xi=xi, eps=eps, power_iterations=k, seed=SEED)
    grads = tape.gradient(loss, [v for v, _ in pure.pairs])
    assert float(ref_loss) > 1e-4  # a non-trivial comparison
    # float32, two independent implementations (Keras clips probabilities at 1e-7).
    np.testing.assert_allclose(loss.numpy(), ref_loss.numpy(), rtol=1e-4, atol=1e-6)
    by_keras_var = {id(kv): g for kv, g in zip(km.trainable_weights, ref_grads)}
    for g, (_, kv) in zip(grads, pure.pairs):
        assert np.abs(g.numpy()).max() > 0
        np.testing.assert_allclose(g.numpy(), by_keras_var[id(kv)].numpy(), rtol=1e-3, atol=1e-6)


def test_given_logits_equal_recomputed_logits():
    km = _keras_conv_model()
    pure = _PureConv(km)
    x = tf.constant(_images())
    a = virtual_adversarial_loss(pure, x, seed=SEED)
    b = virtual_adversarial_loss(pure, x, pure(x), seed=SEED)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------
# 2. Power iteration converges to the top eigenvector of the KL Hessian
# --------------------------------------------------------------------------------------
def _top_eigvecs(model, x):
    w = model.w.numpy().astype(np.float64)
    logits = x.astype(np.float64) @ w + model.b.numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    vecs, gaps = [], []
    for pi in p:
        h = w @ (np.diag(pi) - np.outer(pi, pi)) @ w.T
        vals, v = np.linalg.eigh(h)
        vecs.append(v[:, -1])
        gaps.append(vals[-2] / vals[-1])
    return np.stack(vecs), np.array(gaps)


@pytest.mark.parametrize("dtype,xi", [(tf.float64, 1e-6), (tf.float32, 1e-2)])
def test_power_iteration_finds_top_eigenvector(dtype, xi):
    model = _Linear(6, 3, dtype=dtype, seed=4)
    x_np = np.random.RandomState(5).normal(0, 1, (5, 6))
    top, gaps = _top_eigvecs(model, x_np)
    assert gaps.max() < 0.9  # precondition: 30 iterations are enough to converge
    x = tf.constant(x_np, dtype)
    _, d = virtual_adversarial_loss(model, x, xi=xi, power_iterations=30, seed=SEED,
                                    return_direction=True)
    cos = np.abs(np.sum(d.numpy() * top, axis=1))
    assert np.all(cos > 0.99), cos
    # The random start (K = 0) is far from it: the check above can fail.
    _, d0 = virtual_adversarial_loss(model, x, xi=xi, power_iterations=0, seed=SEED,
                                     return_direction=True)
    assert np.mean(np.abs(np.sum(d0.numpy() * top, axis=1))) < 0.9


# --------------------------------------------------------------------------------------
# 3. stop_gradient on the clean pass and on d
# --------------------------------------------------------------------------------------
def test_no_gradient_through_clean_logits_or_direction():
    model = _Linear(4, 3, seed=1)
    clean_model = _Linear(4, 3, seed=1)  # same weights, separate variables
    x = tf.constant(np.random.RandomState(2).normal(0, 1, (6, 4)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        loss, d = virtual_adversarial_loss(model, x, clean_model(x), seed=SEED,
                                           return_direction=True)
    for g in tape.gradient(loss, [clean_model.w, clean_model.b]):
        assert g is None or np.all(g.numpy() == 0)
    g_model = tape.gradient(loss, [model.w, model.b])
    assert all(np.abs(g.numpy()).max() > 1e-6 for g in g_model)

    # Recomputing the clean logits inside (logits=None) adds no gradient.
    with tf.GradientTape() as tape:
        loss_none = virtual_adversarial_loss(model, x, seed=SEED)
    for a, b in zip(tape.gradient(loss_none, [model.w, model.b]), g_model):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)

    # d is a constant: the loss's gradient is that of KL(p || p(x + eps * const_d)).
    with tf.GradientTape() as tape:
        manual = kl_from_logits(tf.stop_gradient(model(x)), model(x + 1.0 * tf.constant(d)))
    for a, b in zip(tape.gradient(manual, [model.w, model.b]), g_model):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------
# 4. Per-example normalisation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 5), (4, 3, 3, 2)])
@pytest.mark.parametrize("dtype,tiny,huge", [(np.float32, 1e-30, 1e30),
                                             (np.float64, 1e-300, 1e300)])
def test_normalize_tiny_huge_zero(shape, dtype, tiny, huge):
    base = np.random.RandomState(0).normal(0, 1, shape)
    d = np.stack([base[0] * tiny, base[1] * huge, np.zeros(shape[1:]), base[3]]).astype(dtype)
    for fn in (l2_normalize_per_example, tf.function(l2_normalize_per_example, jit_compile=True)):
        out = fn(tf.constant(d)).numpy()
        assert out.dtype == dtype
        assert np.all(np.isfinite(out))
        flat = out.reshape(shape[0], -1).astype(np.float64)
        expected = base.reshape(shape[0], -1) / np.linalg.norm(base.reshape(shape[0], -1),
                                                               axis=1, keepdims=True)
        for i in (0, 1, 3):
            np.testing.assert_allclose(np.linalg.norm(flat[i]), 1.0, atol=1e-6)
            np.testing.assert_allclose(flat[i], expected[i], atol=1e-6)
        assert np.all(flat[2] == 0)


# --------------------------------------------------------------------------------------
# 5. eager == tf.function == XLA; unknown batch size
# --------------------------------------------------------------------------------------
def test_eager_function_xla_agree():
    pure = _PureConv(_keras_conv_model())
    x = tf.constant(_images())

    def f(x, seed):
        return virtual_adversarial_loss(pure, x, seed=seed, power_iterations=1,
                                        return_direction=True)

    eager = f(x, SEED)
    graph = tf.function(f)(x, SEED)
    xla = tf.function(f, jit_compile=True)(x, SEED)
    for other in (graph, xla):
        np.testing.assert_allclose(other[0].numpy(), eager[0].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(other[1].numpy(), eager[1].numpy(), rtol=1e-4, atol=1e-5)
    # Same seed -> same loss; another seed -> another direction.
    np.testing.assert_array_equal(f(x, SEED)[1].numpy(), eager[1].numpy())
    assert not np.allclose(f(x, tf.constant([1, 2], tf.int64))[1].numpy(), eager[1].numpy())

    unknown_batch = tf.function(lambda x: virtual_adversarial_loss(pure, x, seed=SEED),
                                input_signature=[tf.TensorSpec([None, 6, 6, 2], tf.float32)])
    np.testing.assert_allclose(unknown_batch(x).numpy(),
                               virtual_adversarial_loss(pure, x, seed=SEED).numpy(), rtol=1e-5)
    unseeded = virtual_adversarial_loss(pure, x)  # tf.random.normal path
    assert np.isfinite(unseeded.numpy()) and unseeded.numpy() > 0


def test_stateless_normal_same_everywhere_and_standard():
    seed = tf.constant([3, -9], tf.int32)
    eager = stateless_standard_normal([50, 41], seed).numpy()
    np.testing.assert_allclose(eager, _np_normal([50, 41], seed), rtol=1e-5, atol=1e-5)
    xla = tf.function(stateless_standard_normal, jit_compile=True)([50, 41], seed).numpy()
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-6)
    assert abs(eager.mean()) < 0.05 and abs(eager.std() - 1.0) < 0.03  # 2050 samples
    big = stateless_standard_normal([100000], SEED, dtype=tf.float64).numpy()
    assert big.dtype == np.float64
    assert abs(big.mean()) < 0.015 and abs(big.std() - 1.0) < 0.01
    assert abs(np.mean(big ** 4) - 3.0) < 0.1  # Gaussian kurtosis
    assert stateless_standard_normal([2], SEED, dtype=tf.float16).dtype == tf.float16


# --------------------------------------------------------------------------------------
# 6. Sanity: input-independent model, growth with eps
# --------------------------------------------------------------------------------------
def test_zero_loss_when_output_ignores_x():
    x = tf.constant(np.random.RandomState(0).normal(0, 1, (3, 4)), tf.float32)
    bias = tf.constant([0.3, -1.0, 2.0])
    constant_fns = [lambda x: tf.zeros([tf.shape(x)[0], 3]) + bias,  # unconnected
                    lambda x: 0.0 * tf.matmul(x, tf.ones([4, 3])) + bias]  # zero gradient
    for fn in constant_fns:
        loss, d = virtual_adversarial_loss(fn, x, seed=SEED, return_direction=True)
        assert np.all(np.isfinite(d.numpy())) and np.all(d.numpy() == 0)
        np.testing.assert_allclose(loss.numpy(), 0.0, atol=1e-7)
    assert virtual_adversarial_loss(_Linear(4, 3), x, seed=SEED).numpy() > 1e-3


def test_loss_grows_with_eps():
    model = _Linear(4, 3, seed=2)
    x = tf.constant(np.random.RandomState(1).normal(0, 1, (8, 4)), tf.float32)
    losses = [float(virtual_adversarial_loss(model, x, eps=e, seed=SEED))
              for e in (0.0, 0.05, 0.2, 1.0, 3.0)]
    assert losses[0] == pytest.approx(0.0, abs=1e-7)
    assert all(a < b for a, b in zip(losses, losses[1:])), losses


# --------------------------------------------------------------------------------------
# Helpers against NumPy, argument validation
# --------------------------------------------------------------------------------------
def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_kl_and_entropy_against_numpy():
    rng = np.random.RandomState(3)
    a, b = rng.normal(0, 2, (5, 4)), rng.normal(0, 2, (5, 4))
    la, lb = _np_log_softmax(a), _np_log_softmax(b)
    kl = (np.exp(la) * (la - lb)).sum(-1)
    np.testing.assert_allclose(kl_from_logits(a, b, reduction="none").numpy(), kl, rtol=1e-12)
    np.testing.assert_allclose(kl_from_logits(a, b).numpy(), kl.mean(), rtol=1e-12)
    np.testing.assert_allclose(kl_from_logits(a, b, reduction="sum").numpy(), kl.sum(), rtol=1e-12)
    ent = -(np.exp(la) * la).sum(-1)
    np.testing.assert_allclose(entropy_loss(a, reduction="none").numpy(), ent, rtol=1e-12)
    np.testing.assert_allclose(entropy_loss(a).numpy(), ent.mean(), rtol=1e-12)
    np.testing.assert_allclose(entropy_loss(tf.zeros([2, 7])).numpy(), np.log(7), rtol=1e-6)
    # Saturated logits: exact and finite (no clipping); KL(p || p) = 0.
    sat = tf.constant([[1000.0, -1000.0, 0.0]])
    assert np.isfinite(kl_from_logits(sat, -sat).numpy())
    assert kl_from_logits(sat, sat).numpy() == 0.0
    np.testing.assert_allclose(entropy_loss(sat).numpy(), 0.0, atol=1e-30)
    # Half precision is computed in float32.
    assert kl_from_logits(tf.constant(a, tf.float16), tf.constant(b, tf.float16)).dtype == tf.float32


@pytest.mark.parametrize("kwargs,match", [
    (dict(xi=0.0), "xi must be finite and > 0, got 0.0"),
    (dict(xi=-1), "xi must be finite and > 0, got -1"),
    (dict(eps=-0.5), "eps must be finite and >= 0, got -0.5"),
    (dict(eps=float("nan")), "eps must be finite and >= 0, got nan"),
    (dict(power_iterations=-1), "power_iterations must be an integer >= 0, got -1"),
    (dict(power_iterations=1.5), "power_iterations must be an integer >= 0, got 1.5"),
    (dict(power_iterations=True), "power_iterations must be an integer >= 0, got True"),
    (dict(seed=[1, 2, 3]), r"seed must have shape \[2\], got shape \(3,\)"),
    (dict(seed=[1.0, 2.0]), "seed must be an int32/int64 tensor of shape \\[2\\], got dtype 'float32'"),
])
def test_bad_arguments(kwargs, match):
    x = tf.zeros([2, 3])
    with pytest.raises(ValueError, match=match):
        virtual_adversarial_loss(lambda t: t, x, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="logits_fn must be callable, got 3"):
        virtual_adversarial_loss(3, tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="x must be a floating tensor, got dtype 'int32'"):
        virtual_adversarial_loss(lambda t: t, tf.zeros([2, 3], tf.int32))
    with pytest.raises(ValueError, match="reduction must be one of .*, got 'avg'"):
        kl_from_logits(tf.zeros([2, 3]), tf.zeros([2, 3]), reduction="avg")
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(2, 4\)"):
        kl_from_logits(tf.zeros([2, 3]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="d must have a known rank >= 1"):
        l2_normalize_per_example(tf.constant(1.0))
