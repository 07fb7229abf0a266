"""Keras 3 equivalents of the tfcore benchmark models, each with a custom train_step.

Every model here has the architecture, initialisers, optimizer and loss of the
tfcore model of the same bench name (see `bench.run.MODELS`), and a `train_step`
written the way a Keras 3 user writes one (`tf.GradientTape`, `self.optimizer`), so
the bench compares like with like:

| bench name            | Keras model                                                  |
| --------------------- | ------------------------------------------------------------ |
| vat_cnn[_dropout]     | MNIST CNN, CE loss, Adadelta(1.0)                            |
| vat_cnn_vat[_dropout] | the same + VAT (xi=10, eps=1, one power iteration)           |
| dense_ae[_tied/_small]| 784-625(sigmoid)-784 (tied: decoder = encoder kernel^T; small: 32 relu), BCE from logits, Adam(1e-3) |
| conv_ae[_upsample]    | 16-8-8 conv AE, Conv2DTranspose (or UpSampling2D) decoder, BCE from logits, Adam(1e-3) |
| dcgan, dcgan_mixed    | the write-up's G (flat latent of 30 as train.dcgan) and D (BN in D), D step (split or mixed) then G step, two Adam(2e-4, 0.5) |
| separable_convnet, residual, qa, siamese_lstm, multi_output | the functional-API models of models/functional.py, Adam(1e-3), their CE / BCE (multi_output: the three weighted losses) |

`build(name, data, jit_compile)` returns a `KerasSetup` whose `run(n)` performs n
steps with `model.train_on_batch(...)` (Keras's per-step entry point; it runs the
custom `train_step` in Keras's compiled train function: `tf.function`, with XLA when
`jit_compile=True`, and returns the logs as NumPy, so every call is synchronous).

Keras draws its randomness (dropout, VAT's d, GAN noise) from Keras's own
`SeedGenerator`s; masks and noise therefore differ from tfcore's, the work does not.

The architectures alone (no train step) come from builders that take the Keras
module, `keras` (Keras 3, the default) or `tf_keras` (Keras 2), so the same twins
serve the Keras 2 and Keras 3 weight-file tests (`tests/test_keras_io.py`):
`vat_cnn_net`, `autoencoder_net`, `dcgan_generator`, `dcgan_discriminator` and
`functional_net` (layers named as the tfcore models' modules, nested paths joined by
'__', see `tfcore.keras_io`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402



@dataclasses.dataclass
class KerasSetup:
    """A compiled Keras model and its inputs.

    Attributes:
      model: the `keras.Model` (compiled).
      inputs: the `train_on_batch` arguments (tensors on the current device).
      run: `run(n)`: n calls of `model.train_on_batch(*inputs)`; returns the last logs.
    """

    model: keras.Model
    inputs: Tuple[Any, ...]
    run: Callable[[int], Any]


# -- shared maths (written as a Keras user would, on tf ops) --------------------------
def _kl_from_logits(p_logits, q_logits):
    """Per-example KL(p || q) from logits: sum_c p_c (log p_c - log q_c)."""
    p_log = tf.nn.log_softmax(p_logits)
    return tf.reduce_sum(tf.exp(p_log) * (p_log - tf.nn.log_softmax(q_logits)), axis=-1)


def _l2_normalize(d):
    axes = list(range(1, d.shape.rank))
    d = d / (1e-12 + tf.reduce_max(tf.abs(d), axis=axes, keepdims=True))
    return d / tf.sqrt(1e-6 + tf.reduce_sum(tf.square(d), axis=axes, keepdims=True))


# -- VAT CNN ---------------------------------------------------------------------------
def vat_cnn_net(dropout: bool = True, batch_norm: bool = False, num_classes: int = 10,
                seed: int = 0, keras_module: Any = keras):
    """`models.vat_cnn.VatCNN` as a Keras Sequential (logits): Conv2D(32, 3) x 2 (each
    followed by BatchNormalization + relu with `batch_norm`, else relu), MaxPooling2D,
    [Dropout(0.25)], Flatten, Dense(128, relu), [Dropout(0.5)], Dense(num_classes)."""
    kl = keras_module.layers
    stack = []
    for _ in range(2):
        if batch_norm:
            stack += [kl.Conv2D(32, 3), kl.BatchNormalization(), kl.Activation("relu")]
        else:
            stack.append(kl.Conv2D(32, 3, activation="relu"))
    stack.append(kl.MaxPooling2D(2))
    if dropout:
        stack.append(kl.Dropout(0.25, seed=seed))
    stack += [kl.Flatten(), kl.Dense(128, activation="relu")]
    if dropout:
        stack.append(kl.Dropout(0.5, seed=seed + 1))
    stack.append(kl.Dense(num_classes))
    return keras_module.Sequential(stack)


class VatCNN(keras.Model):
    """The Keras MNIST CNN (logits) with an optional VAT term in its train_step."""

    def __init__(self, dropout: bool, vat: bool, xi: float = 10.0, eps: float = 1.0,
                 power_iterations: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.net = vat_cnn_net(dropout=dropout, seed=seed)
        self.vat, self.xi, self.eps = vat, xi, eps
        self.power_iterations = power_iterations
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        return self.net(x, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            loss = ce
            if self.vat:
                p_logits = tf.stop_gradient(logits)
                d = keras.random.normal(tf.shape(x), seed=self.seed_generator)
                for _ in range(self.power_iterations):
                    r = self.xi * _l2_normalize(d)
                    with tf.GradientTape() as inner:
                        inner.watch(r)
                        dist = tf.reduce_sum(_kl_from_logits(p_logits,
                                                             self(x + r, training=True)))
                    d = tf.stop_gradient(inner.gradient(dist, r))
                r_adv = self.eps * _l2_normalize(d)
                loss = loss + tf.reduce_mean(
                    _kl_from_logits(p_logits, self(x + r_adv, training=True)))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


# -- autoencoders ----------------------------------------------------------------------
_TIED_DENSE: Dict[str, type] = {}


def tied_dense_class(keras_module: Any = keras) -> type:
    """The Keras layer class `TiedDense` of `keras_module`: the decoder half of a tied
    autoencoder, x @ transpose(encoder.kernel) + bias (its only own weight: bias)."""
    key = keras_module.__name__
    if key not in _TIED_DENSE:
        class TiedDense(keras_module.layers.Layer):  # pylint: disable=redefined-outer-name
            """x @ transpose(encoder.kernel) + bias."""

            def __init__(self, encoder, **kwargs):
                super().__init__(**kwargs)
                self.encoder = encoder

            def build(self, input_shape):
                self.bias = self.add_weight(shape=(self.encoder.kernel.shape[0],),
                                            initializer="zeros", name="bias")

            def call(self, x):
                return tf.matmul(x, self.encoder.kernel, transpose_b=True) + self.bias

            def get_config(self):  # the encoder is a layer: not serialisable config
                return {k: v for k, v in super().get_config().items() if k != "encoder"}

        _TIED_DENSE[key] = TiedDense
    return _TIED_DENSE[key]


TiedDense = tied_dense_class(keras)


def autoencoder_net(kind: str, hidden: int = 625, hidden_activation: str = "sigmoid",
                    tied: bool = False, keras_module: Any = keras):
    """`models.autoencoder`'s models as a Keras Sequential returning LOGITS [b, 28, 28, 1].

    kind 'dense': Reshape 784 - Dense(hidden, hidden_activation) - Dense(784) (tied:
    `TiedDense`) - Reshape; 'conv_transpose' / 'conv_upsample': the 16-8-8 conv encoder
    and the Conv2DTranspose / UpSampling2D decoder, last Conv2D(1, 3) linear.
    """
    kl = keras_module.layers
    if kind == "dense":
        enc = kl.Dense(hidden, activation=hidden_activation)
        dec = tied_dense_class(keras_module)(enc) if tied else kl.Dense(784)
        return keras_module.Sequential([kl.Reshape((784,)), enc, dec,
                                        kl.Reshape((28, 28, 1))])
    encoder = []
    for f in (16, 8, 8):
        encoder += [kl.Conv2D(f, 3, padding="same", activation="relu"),
                    kl.MaxPooling2D(2, padding="same")]
    if kind == "conv_transpose":
        decoder = [kl.Conv2DTranspose(8, 3, strides=2, padding="same", output_padding=0,
                                      activation="relu"),
                   kl.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu"),
                   kl.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
                   kl.Conv2D(1, 3, padding="same")]
    elif kind == "conv_upsample":
        decoder = [kl.Conv2D(8, 3, padding="same", activation="relu"), kl.UpSampling2D(2),
                   kl.Conv2D(8, 3, padding="same", activation="relu"), kl.UpSampling2D(2),
                   kl.Conv2D(16, 3, activation="relu"), kl.UpSampling2D(2),
                   kl.Conv2D(1, 3, padding="same")]
    else:
        raise ValueError(f"no Keras autoencoder {kind!r}")
    return keras_module.Sequential(encoder + decoder)


class Autoencoder(keras.Model):
    """An autoencoder returning LOGITS; train_step minimises BCE from logits."""

    def __init__(self, kind: str, hidden: int = 625, hidden_activation: str = "sigmoid",
                 tied: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.net = autoencoder_net(kind, hidden, hidden_activation, tied)

    def call(self, x, training=False):
        return self.net(x, training=training)

    def train_step(self, data):
        x = data[0]
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=x,
                                                                          logits=logits))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


# -- DCGAN -----------------------------------------------------------------------------
def dcgan_generator(latent_dim: Optional[int] = None, upsampling: str = "upsample",
                    keras_module: Any = keras, name: Optional[str] = None):
    """`models.dcgan.Generator` as a Keras Sequential: z -> 32x32x1 in [-1, 1].

    [Dense(64) - Reshape 4x4x4] - Conv64 - then with 'upsample': (Up - Conv128 - BN -
    ELU) x 2 - Up - Conv1(5) tanh; with 'transpose': (ConvT128(5, s2) - BN - ELU) x 2 -
    ConvT1(5, s2) tanh. z [4, 4, 4], or [latent_dim] projected.
    """
    kl = keras_module.layers
    head = ([keras_module.Input((latent_dim,)), kl.Dense(4 * 4 * 4), kl.Reshape((4, 4, 4))]
            if latent_dim else [keras_module.Input((4, 4, 4))])
    body = [kl.Conv2D(64, 3, padding="same")]
    for i, filters in enumerate((128, 128, 1)):
        act = "tanh" if i == 2 else None
        if upsampling == "upsample":
            body += [kl.UpSampling2D(2),
                     kl.Conv2D(filters, 5 if i == 2 else 3, padding="same", activation=act)]
        else:
            body.append(kl.Conv2DTranspose(filters, 5, strides=2, padding="same",
                                           activation=act))
        if i < 2:
            body += [kl.BatchNormalization(), kl.Activation("elu")]
    return keras_module.Sequential(head + body, name=name)


def dcgan_discriminator(keras_module: Any = keras, dense_units: int = 2048,
                        name: Optional[str] = None):
    """`models.dcgan.Discriminator` (BN in D) as a Keras Sequential: 32x32x1 -> logit:
    Conv64/s2 - LReLU - (Conv/s2 - BN - LReLU) x 2 - Dense(dense_units) - BN - LReLU -
    Dense1."""
    kl = keras_module.layers
    return keras_module.Sequential([
        keras_module.Input((32, 32, 1)),
        kl.Conv2D(64, 3, strides=2, padding="same"), kl.LeakyReLU(0.2),
        kl.Conv2D(128, 3, strides=2, padding="same"), kl.BatchNormalization(),
        kl.LeakyReLU(0.2),
        kl.Conv2D(256, 3, strides=2, padding="same"), kl.BatchNormalization(),
        kl.LeakyReLU(0.2),
        kl.Flatten(), kl.Dense(dense_units), kl.BatchNormalization(),
        kl.LeakyReLU(0.2), kl.Dense(1)], name=name)


class DCGAN(keras.Model):
    """Keras's DCGAN-example pattern: one D step (split or mixed batch), then one G step."""

    def __init__(self, mixed: bool = False, seed: int = 0, latent_dim: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.generator = dcgan_generator(latent_dim)
        self.z_shape = [latent_dim] if latent_dim else [4, 4, 4]
        self.discriminator = dcgan_discriminator()
        self.mixed = mixed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compile(self, d_optimizer, g_optimizer, **kwargs):  # pylint: disable=arguments-differ
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def call(self, images, training=False):
        """D's logits on images: `train_on_batch(images)` builds the model by calling it
        on its data (real images), so `call` must take images; G is `self.generator`."""
        return self.discriminator(images, training=training)

    def train_step(self, data):
        real = data[0]
        batch = tf.shape(real)[0]
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        z = keras.random.uniform(tf.stack([batch] + self.z_shape), -1.0, 1.0,
                                 seed=self.seed_generator)
        fake = self.generator(z, training=True)
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            if self.mixed:
                logits = self.discriminator(tf.concat([real, fake], 0), training=True)
                real_logits, fake_logits = logits[:batch], logits[batch:]
            else:
                real_logits = self.discriminator(real, training=True)
                fake_logits = self.discriminator(fake, training=True)
            d_loss = (tf.reduce_mean(bce(tf.ones_like(real_logits), real_logits))
                      + tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits)))
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        z = keras.random.uniform(tf.stack([batch] + self.z_shape), -1.0, 1.0,
                                 seed=self.seed_generator)
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.generator(z, training=True), training=True)
            g_loss = tf.reduce_mean(bce(tf.ones_like(logits), logits))
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return {"d_loss": d_loss, "g_loss": g_loss}


# -- functional-API models --------------------------------------------------------------
class CustomStepModel(keras.Model):
    """A functional model with a custom train_step on `self.loss_fn(y, predictions)`."""

    loss_fn: Callable = None

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            loss = self.loss_fn(y, self(x, training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def _mean(fn):
    return lambda y, p: tf.reduce_mean(fn(y, p))


def _multi_output_loss(y, p):
    age, income, gender = y
    return (0.25 * tf.reduce_mean(keras.losses.mean_squared_error(age, p["age"]))
            + tf.reduce_mean(keras.losses.categorical_crossentropy(income, p["income"]))
            + 10.0 * tf.reduce_mean(keras.losses.binary_crossentropy(gender, p["gender"])))


def _sequential_graph(name: str, kl: Any, keras_module: Any):
    """(inputs, outputs) of the single-input image models (see `functional_net`)."""
    if name == "separable_convnet":
        x = inp = keras_module.Input((64, 64, 3))
        for i, f in enumerate((32, 64, 64, 128, 64, 128)):
            x = kl.SeparableConv2D(f, 3, activation="relu", name=f"separable_conv2d_{i + 1}")(x)
            if i in (1, 3):
                x = kl.MaxPooling2D(2)(x)
        x = kl.Dense(32, activation="relu", name="dense_1")(kl.GlobalAveragePooling2D()(x))
        return inp, kl.Dense(10, activation="softmax", name="dense_2")(x)
    if name == "residual":
        x = inp = keras_module.Input((32, 32, 3))
        for b, (f, down) in enumerate(((64, False), (64, False), (128, True))):
            p = f"block_{b + 1}__"
            y = kl.Conv2D(f, 3, padding="same", activation="relu", name=p + "conv_1")(x)
            y = kl.Conv2D(f, 3, padding="same", activation="relu", name=p + "conv_2")(y)
            if down:
                y = kl.MaxPooling2D(2, strides=2)(y)
                x = kl.Conv2D(f, 1, strides=2, padding="same", name=p + "projection")(x)
            elif x.shape[-1] != f:
                x = kl.Conv2D(f, 1, padding="same", name=p + "projection")(x)
            x = kl.add([y, x])
        return inp, kl.Dense(10, activation="softmax", name="classifier")(
            kl.GlobalAveragePooling2D()(x))
    if name == "inception":
        x = keras_module.Input((32, 32, 64))

        def conv(k, s, n):
            return kl.Conv2D(128, k, strides=s, padding="same", activation="relu", name=n)

        a = conv(1, 2, "branch_a")(x)
        b = conv(3, 2, "branch_b_2")(conv(1, 1, "branch_b_1")(x))
        c = conv(3, 1, "branch_c_conv")(kl.AveragePooling2D(3, strides=2, padding="same")(x))
        d = conv(3, 2, "branch_d_3")(conv(3, 1, "branch_d_2")(conv(1, 1, "branch_d_1")(x)))
        return x, kl.concatenate([a, b, c, d])
    if name == "dense_example":
        x = inp = keras_module.Input((64,))
        for i in (1, 2):
            x = kl.Dense(32, activation="relu", name=f"dense_{i}")(x)
        return inp, kl.Dense(10, activation="softmax", name="dense_3")(x)
    return None


def _functional_graph(name: str, keras_module: Any):
    """(inputs, outputs) of `functional_net(name, keras_module)`."""
    kl = keras_module.layers
    graph = _sequential_graph(name, kl, keras_module)
    if graph is not None:
        return graph
    if name == "qa":
        text = keras_module.Input((100,), dtype="int32", name="text")
        question = keras_module.Input((20,), dtype="int32", name="question")
        t = kl.LSTM(32, name="text_lstm")(kl.Embedding(10000, 64, name="text_embedding")(text))
        q = kl.LSTM(16, name="question_lstm")(
            kl.Embedding(10000, 32, name="question_embedding")(question))
        return [text, question], kl.Dense(500, activation="softmax", name="answer")(
            kl.concatenate([t, q]))
    if name in ("siamese_lstm", "vision_tower"):
        shape = (20, 128) if name == "siamese_lstm" else (64, 64, 3)
        left, right = keras_module.Input(shape), keras_module.Input(shape)
        if name == "siamese_lstm":
            lstm = kl.LSTM(32, name="lstm")
            return [left, right], kl.Dense(1, activation="sigmoid", name="classifier")(
                kl.concatenate([lstm(left), lstm(right)]))
        x = inp = keras_module.Input(shape)
        for i, f in enumerate((32, 64, 64)):
            x = kl.Conv2D(f, 3, activation="relu", name=f"conv_{i + 1}")(x)
            x = kl.MaxPooling2D(2)(x) if i < 2 else kl.GlobalAveragePooling2D()(x)
        tower = keras_module.Model(inp, x, name="vision_tower")
        return [left, right], kl.concatenate([tower(left), tower(right)])
    if name == "multi_output":
        inp = keras_module.Input((500,), dtype="int32", name="posts")
        conv = [kl.Conv1D(f, 5, activation="relu", name=f"conv1d_{i + 1}")
                for i, f in enumerate((128, 256, 256, 256, 256))]
        x = kl.MaxPooling1D(5)(conv[0](kl.Embedding(50000, 256, name="embedding")(inp)))
        x = conv[4](conv[3](kl.MaxPooling1D(5)(conv[2](conv[1](x)))))
        x = kl.Dense(128, activation="relu", name="dense")(kl.GlobalMaxPooling1D()(x))
        return inp, {"age": kl.Dense(1, name="age")(x),
                     "income": kl.Dense(10, activation="softmax", name="income")(x),
                     "gender": kl.Dense(1, activation="sigmoid", name="gender")(x)}
    raise ValueError(f"no Keras functional model {name!r}")


def functional_net(name: str, keras_module: Any = keras):
    """The functional model `name` of models/functional.py (its default sizes) as a
    `keras_module.Model`, its layers named as the tfcore model's modules (nested paths
    joined by '__'; the vision tower is a nested model named 'vision_tower')."""
    inputs, outputs = _functional_graph(name, keras_module)
    return keras_module.Model(inputs, outputs)


_FUNCTIONAL_LOSSES = {"separable_convnet": keras.losses.categorical_crossentropy,
                      "residual": keras.losses.categorical_crossentropy,
                      "qa": keras.losses.categorical_crossentropy,
                      "siamese_lstm": keras.losses.binary_crossentropy}


def functional_model(name: str) -> keras.Model:
    """The Keras 3 functional model of the same name in models/functional.py, with
    the bench's custom train_step on its loss."""
    if name not in FUNCTIONAL:
        raise ValueError(f"no Keras functional model {name!r}")
    inputs, outputs = _functional_graph(name, keras)
    model = CustomStepModel(inputs, outputs)
    model.loss_fn = (_multi_output_loss if name == "multi_output"
                     else _mean(_FUNCTIONAL_LOSSES[name]))
    return model


FUNCTIONAL = ("separable_convnet", "residual", "qa", "siamese_lstm", "multi_output")


# -- registry --------------------------------------------------------------------------
def _make(name: str, seed: int) -> Tuple[keras.Model, Callable[[], Dict[str, Any]]]:
    """(uncompiled model, () -> compile kwargs) for a bench model name."""
    if name.startswith("vat_cnn"):
        model = VatCNN(dropout=name.endswith("dropout"), vat="_vat" in name, seed=seed)
        return model, lambda: {"optimizer": keras.optimizers.Adadelta(1.0)}
    dense = {"dense_ae": {}, "dense_ae_tied": {"tied": True},
             "dense_ae_small": {"hidden": 32, "hidden_activation": "relu"}}
    if name in dense:
        return (Autoencoder("dense", **dense[name]),
                lambda: {"optimizer": keras.optimizers.Adam(1e-3)})
    if name in ("conv_ae", "conv_ae_upsample"):
        kind = "conv_transpose" if name == "conv_ae" else "conv_upsample"
        return Autoencoder(kind), lambda: {"optimizer": keras.optimizers.Adam(1e-3)}
    if name in ("dcgan", "dcgan_mixed"):
        from models.dcgan import DEFAULT_LATENT_DIM  # train.dcgan's default (30)
        return (DCGAN(mixed=name == "dcgan_mixed", seed=seed,
                      latent_dim=DEFAULT_LATENT_DIM),
                lambda: {"d_optimizer": keras.optimizers.Adam(2e-4, beta_1=0.5),
                         "g_optimizer": keras.optimizers.Adam(2e-4, beta_1=0.5)})
    if name in FUNCTIONAL:
        return functional_model(name), lambda: {"optimizer": keras.optimizers.Adam(1e-3)}
    raise ValueError(f"no Keras equivalent for model {name!r}; known: {', '.join(NAMES)}")


NAMES = ("vat_cnn", "vat_cnn_dropout", "vat_cnn_vat", "vat_cnn_vat_dropout", "dense_ae",
         "dense_ae_tied", "dense_ae_small", "conv_ae", "conv_ae_upsample", "dcgan",
         "dcgan_mixed") + FUNCTIONAL


def build(name: str, batch: Any, jit_compile: bool, seed: int = 0) -> KerasSetup:
    """The compiled Keras model `name` and a runner of `train_on_batch` on `batch`.

    Args:
      name: a bench model name (see the module docstring / `NAMES`).
      batch: one tfcore batch of that model: `(x, y)` for the classifiers (x may itself
        be a tuple of inputs, y of targets), images for the autoencoders and the GAN
        (NumPy or tensors; copied to the current device).
      jit_compile: compile Keras's train function with XLA.
      seed: Keras's seeds (initialisers, dropout, noise).

    Returns:
      A `KerasSetup`; the model is built and its optimizer(s) hold their slots.
    """
    keras.utils.set_random_seed(seed)
    model, compile_kwargs = _make(name, seed)
    parts = batch if isinstance(batch, (tuple, list)) else (batch,)
    on_device = tf.nest.map_structure(lambda t: tf.identity(tf.convert_to_tensor(t)),
                                      tuple(parts))
    # Keras takes several inputs / targets as lists.
    inputs = tuple(list(p) if isinstance(p, tuple) else p for p in on_device)
    model(tf.nest.map_structure(lambda t: t[:1], inputs[0]))  # build the variables
    model.compile(jit_compile=bool(jit_compile), **compile_kwargs())

    def run(n: int):
        logs = None
        for _ in range(n):
            logs = model.train_on_batch(*inputs, return_dict=True)
        return logs

    return KerasSetup(model, inputs, run)
