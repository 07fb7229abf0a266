"""Autoencoder models, TiedDense, image grids, the train step and LR schedules.

Parity: each tfcore autoencoder against the same Keras 3 model (the tied decoder as a
custom Keras layer using the encoder's kernel transposed) with copied weights;
forward outputs within atol 1e-5, gradients of the mean BCE (ours from logits,
Keras's on probabilities: equal where nothing is clipped, as here) within
rtol 1e-4 / atol 1e-7.
"""
import io
import math

import numpy as np
import pytest
import tensorflow as tf

import tfcore
from models import autoencoder as ae
from tfcore import image_grid
from tfcore.training import lr_schedule
from tfcore.tied_dense import TiedDense

keras = pytest.importorskip("keras")

MODELS = {
    "dense": dict(model="dense"),
    "dense_tied": dict(model="dense", tied=True),
    "conv_transpose": dict(model="conv", decoder="transpose"),
    "conv_upsample": dict(model="conv", decoder="upsample"),
}


def _images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)


class KerasTiedDense(keras.layers.Layer):
    """Keras reference of the tied decoder: x @ transpose(tied.kernel) + bias."""

    def __init__(self, tied, activation=None, **kwargs):
        super().__init__(**kwargs)
        self._kernel = lambda: tied.kernel  # a function: not tracked as a sub-layer
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self._kernel().shape[0],), initializer="zeros",
                                    name="bias")

    def call(self, x):
        k = self._kernel()
        return self.activation(keras.ops.matmul(x, keras.ops.transpose(k)) + self.bias)


def keras_model(kind):
    L = keras.layers
    cfg = MODELS[kind]
    inp = keras.Input((28, 28, 1))
    if cfg["model"] == "dense":
        enc = L.Dense(cfg.get("hidden", 625), activation="sigmoid")
        h = enc(L.Flatten()(inp))
        dec = KerasTiedDense(enc, "sigmoid") if cfg.get("tied") else L.Dense(784, "sigmoid")
        out = L.Reshape((28, 28, 1))(dec(h))
        return keras.Model(inp, out)
    x = inp
    for f in (16, 8, 8):
        x = L.Conv2D(f, 3, activation="relu", padding="same")(x)
        x = L.MaxPooling2D(2, padding="same")(x)
    if cfg["decoder"] == "transpose":
        x = L.Conv2DTranspose(8, 3, strides=2, padding="same", output_padding=0,
                              activation="relu")(x)
        x = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
        x = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
    else:
        x = L.Conv2D(8, 3, activation="relu", padding="same")(x)
        x = L.UpSampling2D(2)(x)
        x = L.Conv2D(8, 3, activation="relu", padding="same")(x)
        x = L.UpSampling2D(2)(x)
        x = L.Conv2D(16, 3, activation="relu", padding="valid")(x)
        x = L.UpSampling2D(2)(x)
    out = L.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(inp, out)


def _copy_from_keras(ours, theirs):
    """Copies Keras weights into ours layer by layer; returns the pairs of variables
    (ours, keras) for gradient comparison."""
    k_layers = [l for l in theirs.layers if l.trainable_weights]
    t_layers = ours.weight_layers()
    assert len(k_layers) == len(t_layers)
    pairs = []
    for t, k in zip(t_layers, k_layers):
        names = ["bias"] if isinstance(t, TiedDense) else ["kernel", "bias"]
        for name in names:
            kv = getattr(k, name)
            getattr(t, name).assign(np.asarray(kv.numpy()))
            pairs.append((getattr(t, name), kv))
    return pairs


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_parity_with_keras_forward_and_gradients(kind):
    model = ae.make_model(**MODELS[kind])
    ref = keras_model(kind)
    pairs = _copy_from_keras(model, ref)
    x = _images(3, seed=1)
    y_ref = ref(x).numpy()
    np.testing.assert_allclose(model(x).numpy(), y_ref, atol=1e-5)

    with tf.GradientTape() as tape:
        ours = tf.reduce_mean(ae.reconstruction_loss(x, model.logits(x)))
    g_ours = tape.gradient(ours, [p[0] for p in pairs])
    with tf.GradientTape() as tape:
        theirs = keras.ops.mean(keras.losses.binary_crossentropy(x, ref(x)))
    g_ref = tape.gradient(theirs, [p[1] for p in pairs])
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)
    for (v, _), a, b in zip(pairs, g_ours, g_ref):
        np.testing.assert_allclose(a.numpy(), np.asarray(b), rtol=1e-4, atol=1e-7,
                                   err_msg=v.name)


def test_tied_shares_one_kernel_and_sums_both_gradients():
    tied = ae.DenseAutoencoder(hidden=20, tied=True)
    untied = ae.DenseAutoencoder(hidden=20, tied=False)
    x = _images(4, seed=2)
    tied(x), untied(x)
    kernels = [v for v in tied.trainable_variables if "kernel" in v.name]
    assert len(kernels) == 1 and len(tied.trainable_variables) == 3
    assert len(untied.trainable_variables) == 4
    assert tied.count_params() == 784 * 20 + 20 + 784
    assert untied.count_params() == 2 * 784 * 20 + 20 + 784
    assert tied.decoder.variables == (tied.decoder.bias,)
    # Same function: untied with decoder kernel = encoder kernel^T.
    rng = np.random.default_rng(3)
    for v in tied.trainable_variables:
        v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
    untied.encoder.kernel.assign(tied.encoder.kernel)
    untied.encoder.bias.assign(tied.encoder.bias)
    untied.decoder.kernel.assign(tf.transpose(tied.encoder.kernel))
    untied.decoder.bias.assign(tied.decoder.bias)
    np.testing.assert_allclose(tied(x).numpy(), untied(x).numpy(), atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(ae.reconstruction_loss(x, tied.logits(x)))
    g_tied = tape.gradient(loss, tied.encoder.kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(ae.reconstruction_loss(x, untied.logits(x)))
    g_enc, g_dec = tape.gradient(loss, [untied.encoder.kernel, untied.decoder.kernel])
    np.testing.assert_allclose(g_tied.numpy(), (g_enc + tf.transpose(g_dec)).numpy(),
                               rtol=1e-5, atol=1e-8)
    assert np.abs(g_dec.numpy()).max() > 1e-4  # the decoder use contributes


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_shapes_range_and_encode_decode_compose(kind):
    model = ae.make_model(**MODELS[kind])
    x = _images(2, seed=4)
    y = model(x).numpy()
    assert y.shape == (2, 28, 28, 1) and y.min() >= 0.0 and y.max() <= 1.0
    code = model.encode(x)
    assert tuple(code.shape) == (2, *model.code_shape)
    np.testing.assert_allclose(model.decode(code).numpy(), y, atol=1e-6)
    np.testing.assert_allclose(tf.sigmoid(model.logits(x)).numpy(), y, atol=1e-6)


def test_decode_alone_builds_the_model():
    tied = ae.DenseAutoencoder(hidden=16, tied=True)
    assert tied.decode(tf.zeros([2, 16])).shape == (2, 28, 28, 1)
    conv = ae.ConvAutoencoder("upsample")
    assert conv.decode(tf.zeros([3, 4, 4, 8])).shape == (3, 28, 28, 1)


def test_static_shapes_in_a_trace():
    model = ae.make_model("conv")
    shapes = []

    @tf.function(autograph=False)
    def f(x):
        y = model(x)
        shapes.append(y.shape)
        return y

    f(tf.zeros([5, 28, 28, 1]))
    assert shapes[0].as_list() == [5, 28, 28, 1]


def test_argument_validation():
    with pytest.raises(ValueError, match="hidden.*0"):
        ae.DenseAutoencoder(hidden=0)
    with pytest.raises(ValueError, match="'nope'"):
        ae.DenseAutoencoder(hidden_activation="nope")
    with pytest.raises(ValueError, match="tied.*'yes'"):
        ae.DenseAutoencoder(tied="yes")
    with pytest.raises(ValueError, match="decoder.*'bogus'"):
        ae.ConvAutoencoder(decoder="bogus")
    with pytest.raises(ValueError, match=r"expects images.*\(2, 28, 28\)"):
        ae.ConvAutoencoder()(tf.zeros([2, 28, 28]))
    with pytest.raises(ValueError, match="model must be 'dense' or 'conv'.*'rnn'"):
        ae.make_model("rnn")
    with pytest.raises(ValueError, match="noise_factor.*-0.1"):
        ae.make_train_step(ae.make_model("dense", hidden=4), tfcore.Adam(), -0.1)


def test_tied_dense_block():
    with pytest.raises(ValueError, match="tied_to must be a tfcore.Dense"):
        TiedDense("dense")
    enc = tfcore.Dense(3)
    with pytest.raises(ValueError, match="must be built"):
        TiedDense(enc)(tf.zeros([2, 3]))
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 4)), tf.float32)
    enc(x)
    dec = TiedDense(enc, activation="relu")
    with pytest.raises(ValueError, match="tied_to.units=3"):
        dec(tf.zeros([2, 5]))
    dec = TiedDense(enc, activation="relu")
    dec.build(tf.TensorShape([None, 3]))
    dec.built = True
    dec.bias.assign([0.1, -0.2, 0.3, 0.0])
    h = np.random.default_rng(6).normal(size=(2, 3)).astype(np.float32)
    want = np.maximum(h @ enc.kernel.numpy().T + dec.bias.numpy(), 0)
    np.testing.assert_allclose(dec(tf.constant(h)).numpy(), want, atol=1e-6)
    h3 = tf.constant(h.reshape(1, 2, 3))
    np.testing.assert_allclose(dec(h3).numpy()[0], want, atol=1e-6)
    assert tfcore.TiedDense is TiedDense


def test_image_grid_layout_and_png(tmp_path):
    imgs = np.random.default_rng(7).uniform(size=(5, 4, 3, 1)).astype(np.float32)
    grid = image_grid.image_grid(imgs, rows=2, cols=3, pad=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 4 + 3 * 2, 3 * 3 + 4 * 2, 1)
    np.testing.assert_array_equal(grid[2:6, 2 + 5:2 + 5 + 3],
                                  np.round(imgs[1] * 255).astype(np.uint8))
    assert (grid[0] == 255).all()  # the frame
    cells = image_grid.split_grid(grid, 2, 3, pad=2)
    np.testing.assert_array_equal(cells[:5], np.round(imgs * 255).astype(np.uint8))
    assert (cells[5] == 0).all()  # the empty cell
    path = image_grid.save_png(tmp_path / "g.png", grid)
    decoded = tf.io.decode_png(open(path, "rb").read()).numpy()
    np.testing.assert_array_equal(decoded, grid)
    from PIL import Image  # an independent decoder
    assert Image.open(io.BytesIO(open(path, "rb").read())).size == (17, 14)
    with pytest.raises(ValueError, match="do not fit.*rows=1 x cols=3"):
        image_grid.image_grid(imgs, rows=1, cols=3)
    with pytest.raises(ValueError, match="rows must be a positive integer, got 0"):
        image_grid.image_grid(imgs, rows=0, cols=3)
    with pytest.raises(ValueError, match=r"images must be \[n, h, w, c\]"):
        image_grid.image_grid(np.zeros([2, 4, 4, 2]), 1, 2)


def test_noise_is_stateless_clipped_and_target_clean():
    x = tf.constant(_images(2, seed=8))
    seed = tf.constant([3, 4], tf.int64)
    a, b = ae.add_noise(x, 0.5, seed), ae.add_noise(x, 0.5, seed)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = ae.add_noise(x, 0.5, tf.constant([3, 5], tf.int64))
    assert not np.allclose(a.numpy(), c.numpy())
    assert a.numpy().min() == 0.0 and a.numpy().max() == 1.0
    assert ae.add_noise(x, 0.0, seed) is x
    want = np.clip(x.numpy() + 0.5 * tf.random.stateless_normal(
        x.shape, seed, alg="philox").numpy(), 0, 1)
    np.testing.assert_allclose(a.numpy(), want, atol=1e-6)


def test_train_step_denoising_schedule_and_loss():
    model = ae.make_model("dense", hidden=8)
    opt = tfcore.Adam(learning_rate=0.5)
    opt.build(model.trainable_variables)
    lr_fn = lr_schedule.make_learning_rate_fn("cosine", 0.01, total_steps=4)
    step = tf.function(ae.make_train_step(model, opt, noise_factor=0.3,
                                          learning_rate_fn=lr_fn))
    x = tf.constant(_images(4, seed=9))
    seed = tf.constant([1, 2], tf.int64)
    noisy = ae.add_noise(x, 0.3, seed)
    want = float(tf.reduce_mean(ae.reconstruction_loss(x, model.logits(noisy))))
    logs = step(x, seed)
    assert set(logs) == {"loss", "mse", "learning_rate"}
    np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-6)  # clean target
    assert float(logs["learning_rate"]) == pytest.approx(0.01)
    step(x, seed)
    assert float(opt.learning_rate) == pytest.approx(0.01 * (1 + math.cos(math.pi / 4)) / 2)
    assert step.experimental_get_tracing_count() == 1


def test_metrics_fn_is_keras_bce_on_probabilities():
    model = ae.make_model("dense", hidden=8)
    x = _images(3, seed=10)
    out = ae.make_metrics_fn(model)(tf.constant(x))
    p = model(x).numpy()
    bce = keras.ops.mean(keras.losses.binary_crossentropy(x, p), axis=(1, 2))
    np.testing.assert_allclose(out["bce"].numpy(), np.asarray(bce), rtol=1e-5)
    np.testing.assert_allclose(out["mse"].numpy(), ((x - p) ** 2).mean(axis=(1, 2, 3)),
                               rtol=1e-5)


def test_jit_auto_choice_per_model():
    """--jit=auto's CPU choice, as measured by bench.run: XLA for the dense model only."""
    from models import autoencoder as ae_model
    assert ae_model.prefers_xla_on_cpu("dense") is True
    assert ae_model.prefers_xla_on_cpu("conv") is False
    with pytest.raises(ValueError, match="model must be 'dense' or 'conv', got 'mlp'"):
        ae_model.prefers_xla_on_cpu("mlp")
