"""Accuracy of VAT's float32 power-iteration direction against float64, on MNIST.

    python -m bench.vat_direction [--modes=graph,xla] [--steps=300] [--worst=1e-4]

A VatCNN without dropout is trained for `--steps` Adam(1e-3) steps of cross-entropy on
MNIST (batch 128), so that most predictions are confident (where the float32 direction
is hard). On the first 64 test images, from one initial direction d_0, the float32
direction after K power iterations (`tfcore.vat.virtual_adversarial_loss(...,
return_direction=True)`) is compared with the float64 finite difference at the same xi
(the same weights in float64, plain tf.nn ops), iterated K times: the mean (min) cosine
per example (0 for a direction that is exactly zero; "n zero" counts them). Rows:
hvp='finite_difference', hvp='secant' (`VatCNN.secant`), hvp='exact', hvp='exact' with
the max pool's one-hot gradient
(`VatCNN(pool_gradient='one_hot')`, the same weights; what `train.vat` uses under XLA),
'autodiff' (the gradient of the KL through tf.nn.log_softmax, tfcore's finite
difference before issue 17) and 'official' (takerum/vat_tf's own direction, ported: its
hand-written `logsoftmax`, `kl_divergence_with_logit` and `get_normalized_vector`, the
bar of issue 17's first item).
Tables (markdown) go to stdout; docs/vat_direction.md holds a run.
"""
from __future__ import annotations

import argparse
from typing import Dict

import numpy as np
import tensorflow as tf

from models import vat_cnn
from tfcore import losses, optimizers
from tfcore.data.mnist import load_mnist
from tfcore.secant import secant
from tfcore.vat import (kl_from_logits, l2_normalize_per_example, stateless_standard_normal,
                        virtual_adversarial_loss)

XIS = (1e-2, 1e-4, 1e-5, 1e-6)
METHODS = ("autodiff", "official", "finite_difference", "secant", "exact",
           "exact, one-hot pool")
SEED = tf.constant([3, 4], tf.int64)


def trained_model(steps: int):
    """(VatCNN after `steps` Adam steps of CE on MNIST, test images [64, 28, 28, 1])."""
    (x_train, y_train), (x_test, _) = load_mnist()
    x_train = (x_train[..., None] / 255.0).astype(np.float32)
    tf.random.set_seed(0)
    model = vat_cnn.VatCNN(dropout=False)
    model(x_train[:1])
    opt = optimizers.Adam(learning_rate=1e-3)
    opt.build(model.trainable_variables)

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = losses.sparse_softmax_cross_entropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    rng = np.random.RandomState(0)
    for _ in range(steps):
        idx = rng.randint(0, len(x_train), 128)
        step(x_train[idx], y_train[idx].astype(np.int32))
    return model, (x_test[:64, ..., None] / 255.0).astype(np.float32)


def logits64(weights: Dict[str, np.ndarray], x: tf.Tensor) -> tf.Tensor:
    """The VatCNN (no dropout) in float64 with plain tf.nn ops."""
    w = {k: tf.constant(v) for k, v in weights.items()}
    h = tf.nn.relu(tf.nn.conv2d(x, w["conv2d/kernel"], 1, "VALID") + w["conv2d/bias"])
    h = tf.nn.relu(tf.nn.conv2d(h, w["conv2d_1/kernel"], 1, "VALID") + w["conv2d_1/bias"])
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    h = tf.nn.relu(tf.matmul(tf.reshape(h, [tf.shape(h)[0], -1]), w["dense/kernel"])
                   + w["dense/bias"])
    return tf.matmul(h, w["dense_1/kernel"]) + w["dense_1/bias"]


def _autodiff_direction(logits_fn, x, xi, k, d):
    """K finite-difference iterations with the KL differentiated through log_softmax."""
    p_logits = tf.stop_gradient(logits_fn(x))
    for _ in range(k):
        r = xi * l2_normalize_per_example(d)
        with tf.GradientTape() as tape:
            tape.watch(r)
            dist = kl_from_logits(p_logits, logits_fn(x + r), reduction="sum")
        d = tape.gradient(dist, r)
    return d


def _official_logsoftmax(x):
    """takerum/vat_tf `logsoftmax`: the max subtracted, then log-sum-exp by hand."""
    xdev = x - tf.reduce_max(x, 1, keepdims=True)
    return xdev - tf.math.log(tf.reduce_sum(tf.exp(xdev), 1, keepdims=True))


def _official_kl(q_logit, p_logit):
    """takerum/vat_tf `kl_divergence_with_logit`: the batch mean of KL(q || p)."""
    q = tf.nn.softmax(q_logit)
    qlogq = tf.reduce_mean(tf.reduce_sum(q * _official_logsoftmax(q_logit), 1))
    qlogp = tf.reduce_mean(tf.reduce_sum(q * _official_logsoftmax(p_logit), 1))
    return qlogq - qlogp


def _official_normalized(d):
    """takerum/vat_tf `get_normalized_vector` (its 1e-12 and 1e-6 guards included)."""
    axes = list(range(1, len(d.shape)))
    d /= 1e-12 + tf.reduce_max(tf.abs(d), axes, keepdims=True)
    return d / tf.sqrt(1e-6 + tf.reduce_sum(tf.pow(d, 2.0), axes, keepdims=True))


def _official_direction(logits_fn, x, xi, k, d):
    """takerum/vat_tf `generate_virtual_adversarial_perturbation`'s power iteration (the
    direction before its final eps scaling)."""
    logit_p = logits_fn(x)
    for _ in range(k):
        d = xi * _official_normalized(d)
        with tf.GradientTape() as tape:
            tape.watch(d)
            dist = _official_kl(logit_p, logits_fn(x + d))
        d = tf.stop_gradient(tape.gradient(dist, d))
    return d


def reference(weights, x, d0, xi, k):
    return _autodiff_direction(lambda z: logits64(weights, z), tf.constant(x, tf.float64),
                               xi, k, tf.constant(d0, tf.float64)).numpy()


def one_hot_pool_twin(model):
    """A VatCNN (no dropout) with the max pool's one-hot gradient and `model`'s weights."""
    twin = vat_cnn.VatCNN(dropout=False, pool_gradient="one_hot")
    twin(tf.zeros([1, *vat_cnn.IMAGE_SHAPE]))
    for mine, theirs in zip(twin.trainable_variables, model.trainable_variables):
        mine.assign(theirs)
    return twin


def direction(model, x, d0, xi, k, method, mode):
    """The float32 direction of `method` (a METHODS entry; its one-hot pool row takes a
    `one_hot_pool_twin` as `model`) from d0, eager / graph / xla."""
    def fn(x):
        if method in ("autodiff", "official"):
            fd = _autodiff_direction if method == "autodiff" else _official_direction
            return fd(model, x, xi, k, tf.constant(d0, tf.float32))
        _, d = virtual_adversarial_loss(model, x, xi=xi, power_iterations=k,
                                        hvp=method.split(",")[0], seed=SEED,
                                        return_direction=True,
                                        secant_fn=lambda z, dz: secant(model, z, dz))
        return d
    if mode != "eager":
        fn = tf.function(fn, jit_compile=mode == "xla", autograph=False)
    return fn(tf.constant(x)).numpy()


def cosines(a, b):
    """Per-example cosine of a and b; 0 where either is exactly zero (a float32 finite
    difference whose perturbed logits round to the clean ones)."""
    a, b = np.reshape(a, (len(a), -1)), np.reshape(b, (len(b), -1))
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, 1) / np.where(norms > 0, norms, 1), 0.0)


def table(model, weights, x, k, mode) -> str:
    # virtual_adversarial_loss draws d_0 from SEED; the references start from the same d_0.
    d0 = stateless_standard_normal(x.shape, SEED).numpy()
    _, probe = virtual_adversarial_loss(model, tf.constant(x), xi=1e-2, power_iterations=0,
                                        seed=SEED, return_direction=True)
    assert cosines(probe.numpy(), d0).min() > 0.9999, "d_0 differs from the loss's own"
    rows = [f"| method ({mode}, K={k}) | " + " | ".join(f"xi={xi:g}" for xi in XIS) + " |",
            "| --- |" + " ---: |" * len(XIS)]
    refs = {xi: reference(weights, x, d0, xi, k) for xi in XIS}
    twin = one_hot_pool_twin(model)
    for method in METHODS:
        cells = []
        for xi in XIS:
            d = direction(twin if "one-hot" in method else model, x, d0, xi, k, method, mode)
            c = cosines(d, refs[xi])
            zero = int(np.sum(~np.any(np.reshape(d, (len(d), -1)), axis=1)))
            cells.append(f"{c.mean():.3f} ({c.min():.2f})" + (f", {zero} zero" if zero else ""))
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def worst_image(model, weights, x, xi, mode) -> str:
    """Why the finite difference's worst image at `xi` is off: the change of its two
    most probable classes' logits between x and x + xi d_hat, in float64 and in float32
    (`mode`), and their difference, the quantity the direction's sign follows."""
    d0 = stateless_standard_normal(x.shape, SEED).numpy()
    d = direction(model, x, d0, xi, 1, "finite_difference", mode)
    i = int(np.argmin(cosines(d, reference(weights, x, d0, xi, 1))))
    r = xi * l2_normalize_per_example(tf.constant(d0[i:i + 1]))

    def changes(logits_fn, dtype):
        xi_ = tf.constant(x[i:i + 1], dtype)
        return (logits_fn(xi_ + tf.cast(r, dtype)) - logits_fn(xi_)).numpy()[0], \
            logits_fn(xi_).numpy()[0]
    dz64, z64 = changes(lambda z: logits64(weights, z), tf.float64)
    fn = model if mode == "eager" else tf.function(model, jit_compile=mode == "xla")
    dz32, _ = changes(fn, tf.float32)
    a, b = np.argsort(z64)[::-1][:2]
    return (f"xi={xi:g} ({mode}): worst image {i}, classes {a} / {b} (logits {z64[a]:.2f} / "
            f"{z64[b]:.2f}): logit changes float64 {dz64[a]:.3g} / {dz64[b]:.3g} "
            f"(difference {dz64[b] - dz64[a]:.3g}), float32 {dz32[a]:.3g} / {dz32[b]:.3g} "
            f"(difference {dz32[b] - dz32[a]:.3g})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modes", default="graph")
    parser.add_argument("--iterations", default="1,3")
    parser.add_argument("--worst", default="", help="xi values (comma-separated): "
                        "explain the finite difference's worst image there")
    args = parser.parse_args(argv)
    model, x = trained_model(args.steps)
    p = tf.nn.softmax(model(x)).numpy().max(1)
    print(f"after {args.steps} steps: mean max-probability {p.mean():.3f}, "
          f"{np.mean(p > 0.97):.0%} above 0.97 (64 test images)\n")
    weights = {v.name.split(":")[0]: v.numpy().astype(np.float64)
               for v in model.trainable_variables}
    for mode in args.modes.split(","):
        for k in (int(s) for s in args.iterations.split(",")):
            print(table(model, weights, x, k, mode) + "\n", flush=True)
        for xi in (float(v) for v in args.worst.split(",") if v):
            print(worst_image(model, weights, x, xi, mode), flush=True)


if __name__ == "__main__":
    main()
