"""MNIST autoencoders: dense (optionally tied) and convolutional, plus their train step.

Models (images [batch, 28, 28, 1] in [0, 1] -> reconstructions of the same shape,
in (0, 1)); each has `encode(x) -> code`, `decode(code) -> images` (usable on its own,
as the Keras blog's separate encoder/decoder models), `__call__(x, training) =
decode(encode(x))` and, for training, the pre-sigmoid `decode_logits(code)` /
`logits(x)`:

* `DenseAutoencoder(hidden=625, hidden_activation='sigmoid', tied=False)`:
  784 -> Dense(hidden, hidden_activation) -> Dense(784) -> sigmoid. The defaults are
  the original TensorFlow port's 625 sigmoid units; the Keras blog's is
  `hidden=32, hidden_activation='relu'`. `tied=True`: the decoder is a
  `tfcore.TiedDense` using the encoder's kernel transposed (one kernel variable,
  plus the decoder's own bias): 3 variables, 784*h + h + 784 parameters, against 4
  and 2*784*h + h + 784 untied.
* `ConvAutoencoder(decoder='transpose')`: encoder (the Keras blog's)
  Conv2D(16, 3, relu, same) - MaxPool(2, same) - Conv2D(8, 3, relu, same) -
  MaxPool(2, same) - Conv2D(8, 3, relu, same) - MaxPool(2, same): a 4x4x8 code.
  Decoder 'transpose' (the original TensorFlow port's, `tf.nn.conv2d_transpose`
  through `tfcore.Conv2DTranspose`): stride-2 3x3 transposed convolutions to
  7x7x8, 14x14x8, 28x28x16 (relu), then Conv2D(1, 3, same) -> sigmoid. Decoder
  'upsample' (the Keras blog's): Conv2D(8, 3, relu, same) - UpSampling2D -
  Conv2D(8, 3, relu, same) - UpSampling2D - Conv2D(16, 3, relu, valid) [16 -> 14] -
  UpSampling2D - Conv2D(1, 3, same) -> sigmoid. Static shapes throughout.

Layers are named as the same Keras 3 model's (`dense`, `dense_1`; `conv2d`,
`conv2d_1`, ...), so weights copy 1:1 in layer order (`model.weight_layers()`).

Loss: training minimises the per-pixel binary cross-entropy computed FROM LOGITS
(`tf.nn.sigmoid_cross_entropy_with_logits`: exact and finite however saturated the
sigmoid gets). The reported `bce` (and the binary's `test_bce`) is Keras's
`binary_crossentropy` on the sigmoid PROBABILITIES (clipped to [1e-7, 1 - 1e-7]),
averaged over pixels then images, the figure Keras's `evaluate` and the blog quote;
it equals the from-logits value except where a pixel's probability is clipped.
Both include the targets' own entropy (grey pixels), so 0 is not reachable.

Denoising (`noise_factor > 0`): inputs are `clip(x + noise_factor * N(0, 1), 0, 1)`
with the noise drawn statelessly from the step's seed (`alg='philox'`); the target
stays the clean `x`.

`make_train_step(model, optimizer, noise_factor, learning_rate_fn)` returns an
un-compiled `step_fn(batch, seed) -> {'loss', 'mse'[, 'learning_rate']}` for
`tfcore.training.loop.fit` (which compiles it); `make_metrics_fn(model)` the per-example
`{'bce', 'mse'}` for `tfcore.training.loop.make_eval_fn`. Learning-rate schedules come from
`tfcore.training.lr_schedule.make_learning_rate_fn` (constant / cosine / step /
warm-up-stable-decay), evaluated from `optimizer.iterations` inside the step (no
retracing, exact on resume).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple, Union

import tensorflow as tf

import tfcore
from tfcore import activations, checks, losses
from tfcore.training import distribute, lr_schedule
from tfcore.layer import Layer
from tfcore.tied_dense import TiedDense

IMAGE_SHAPE = (28, 28, 1)
MODELS = ("dense", "conv")
DECODERS = ("transpose", "upsample")


class _Autoencoder(Layer):
    """Shared machinery: build from a zero image, encode / decode / logits."""

    image_shape: Tuple[int, int, int] = IMAGE_SHAPE

    def build(self, input_shape: tf.TensorShape) -> None:
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4 or shape[1:] != tf.TensorShape(self.image_shape):
            raise ValueError(f"{type(self).__name__} expects images [batch, "
                             f"{', '.join(map(str, self.image_shape))}], got shape {shape}")

    def _ensure_built(self) -> None:
        """Builds every variable from a zero image (eagerly, also inside a trace)."""
        if not self.built:
            with tf.init_scope():
                self(tf.zeros([1, *self.image_shape]))

    def encode(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """images [batch, 28, 28, 1] -> codes [batch, *code_shape]."""
        raise NotImplementedError

    def decode_logits(self, code: tf.Tensor, training: bool = False) -> tf.Tensor:
        """codes [batch, *code_shape] -> pre-sigmoid images [batch, 28, 28, 1]."""
        raise NotImplementedError

    def decode(self, code: tf.Tensor, training: bool = False) -> tf.Tensor:
        """codes [batch, *code_shape] -> images [batch, 28, 28, 1] in (0, 1)."""
        return tf.math.sigmoid(self.decode_logits(code, training=training))

    def logits(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """images -> the reconstructions' logits [batch, 28, 28, 1]."""
        return self.decode_logits(self.encode(x, training=training), training=training)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """images [batch, 28, 28, 1] -> reconstructions [batch, 28, 28, 1] in (0, 1)."""
        return tf.math.sigmoid(self.logits(x, training=training))

    def weight_layers(self) -> List[Layer]:
        """The layers with variables, in the Keras model's order (for weight copies)."""
        raise NotImplementedError


class DenseAutoencoder(_Autoencoder):
    """784 -> Dense(hidden, hidden_activation) -> Dense(784) -> sigmoid.

    Args:
      hidden: code size (default 625, the original TensorFlow port's; the Keras
        blog's is 32).
      hidden_activation: the code's activation (default 'sigmoid'; the blog's 'relu').
      tied: decoder kernel = transpose of the encoder kernel (one shared variable)
        plus the decoder's own bias.
      name: module name.

    Layers: `encoder` (`dense`, kernel [784, hidden], bias [hidden]) and `decoder`
    (`dense_1`, kernel [hidden, 784], bias [784]; tied: `tied_dense`, bias [784]).
    """

    def __init__(self, hidden: int = 625, hidden_activation: Union[str, Callable] = "sigmoid",
                 tied: bool = False, name: Optional[str] = "dense_autoencoder"):
        super().__init__(name=name)
        self.hidden = checks.check_int(hidden, "DenseAutoencoder hidden", low=1)
        self.hidden_activation = hidden_activation
        activations.get(hidden_activation)  # validates the name
        self.tied = checks.check_bool(tied, "DenseAutoencoder tied")
        self.pixels = int(math.prod(self.image_shape))
        self.encoder = tfcore.Dense(self.hidden, activation=hidden_activation, name="dense")
        if tied:
            self.decoder = TiedDense(self.encoder, name="tied_dense")
        else:
            self.decoder = tfcore.Dense(self.pixels, name="dense_1")

    @property
    def code_shape(self) -> Tuple[int, ...]:
        return (self.hidden,)

    def encode(self, x, training=False):
        flat = tf.reshape(tf.convert_to_tensor(x, tf.float32), [-1, self.pixels])
        return self.encoder(flat, training=training)

    def decode_logits(self, code, training=False):
        self._ensure_built()
        flat = self.decoder(tf.convert_to_tensor(code, tf.float32), training=training)
        return tf.reshape(flat, [-1, *self.image_shape])

    def weight_layers(self):
        return [self.encoder, self.decoder]


class ConvAutoencoder(_Autoencoder):
    """The 16-8-8 convolutional autoencoder (see the module docstring).

    Args:
      decoder: 'transpose' (default; stride-2 `conv2d_transpose`, the original
        TensorFlow port's) or 'upsample' (Conv2D + UpSampling2D, the Keras blog's).
      name: module name.

    Layers: `encoder` and `decoder`, `tfcore.Sequential`s; the decoder's last
    Conv2D is linear (its logits are exposed, the sigmoid applied after).
    """

    def __init__(self, decoder: str = "transpose", name: Optional[str] = "conv_autoencoder"):
        super().__init__(name=name)
        self.decoder_kind = checks.check_choice(decoder, "ConvAutoencoder decoder",
                                                DECODERS)
        self.encoder = tfcore.Sequential([
            tfcore.Conv2D(16, 3, padding="same", activation="relu", name="conv2d"),
            tfcore.MaxPool2D(2, padding="same", name="max_pooling2d"),
            tfcore.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_1"),
            tfcore.MaxPool2D(2, padding="same", name="max_pooling2d_1"),
            tfcore.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_2"),
            tfcore.MaxPool2D(2, padding="same", name="max_pooling2d_2"),
        ], name="encoder")
        if decoder == "transpose":
            # 4 -> 7 needs output_padding=0 with 'same': (4 - 1) * 2 + 3 % 2 + 0 = 7.
            layers = [
                tfcore.Conv2DTranspose(8, 3, strides=2, padding="same", output_padding=0,
                                       activation="relu", name="conv2d_transpose"),
                tfcore.Conv2DTranspose(8, 3, strides=2, padding="same",
                                       activation="relu", name="conv2d_transpose_1"),
                tfcore.Conv2DTranspose(16, 3, strides=2, padding="same",
                                       activation="relu", name="conv2d_transpose_2"),
                tfcore.Conv2D(1, 3, padding="same", name="conv2d_3"),
            ]
        else:
            layers = [
                tfcore.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_3"),
                tfcore.UpSampling2D(2, name="up_sampling2d"),
                tfcore.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_4"),
                tfcore.UpSampling2D(2, name="up_sampling2d_1"),
                tfcore.Conv2D(16, 3, padding="valid", activation="relu", name="conv2d_5"),
                tfcore.UpSampling2D(2, name="up_sampling2d_2"),
                tfcore.Conv2D(1, 3, padding="same", name="conv2d_6"),
            ]
        self.decoder = tfcore.Sequential(layers, name="decoder")

    @property
    def code_shape(self) -> Tuple[int, ...]:
        return (4, 4, 8)

    def encode(self, x, training=False):
        return self.encoder(tf.convert_to_tensor(x, tf.float32), training=training)

    def decode_logits(self, code, training=False):
        self._ensure_built()
        return self.decoder(tf.convert_to_tensor(code, tf.float32), training=training)

    def weight_layers(self):
        return [l for l in self.encoder.layers + self.decoder.layers
                if isinstance(l, (tfcore.Conv2D, tfcore.Conv2DTranspose))]


def _check_model(model) -> str:
    """`model` if it is one of MODELS; `tfcore.checks.ArgumentError` otherwise."""
    if isinstance(model, bool) or model not in MODELS:
        raise checks.ArgumentError(f"model must be 'dense' or 'conv', got {model!r}")
    return model


def prefers_xla_on_cpu(model: str) -> bool:
    """The compile mode `--jit=auto` takes on CPU for this model (the `cpu_xla` of
    `tfcore.training.compile.resolve_jit`): XLA for 'dense', graph mode for 'conv'.

    Measured with `bench.run` (README; docs/decisions.md, "Compile mode per device"):
    XLA fuses the dense autoencoder's element-wise work (bias adds, sigmoids, the BCE),
    while its CPU conv kernels are slower for the conv autoencoder.
    """
    return _check_model(model) == "dense"


def make_model(model: str = "dense", hidden: int = 625,
               hidden_activation: str = "sigmoid", tied: bool = False,
               decoder: str = "transpose") -> _Autoencoder:
    """A BUILT autoencoder by name: 'dense' (hidden, hidden_activation, tied) or
    'conv' (decoder)."""
    if _check_model(model) == "dense":
        m = DenseAutoencoder(hidden=hidden, hidden_activation=hidden_activation, tied=tied)
    else:
        m = ConvAutoencoder(decoder=decoder)
    m._ensure_built()
    return m


# --- noise, losses, schedules, steps ---------------------------------------------------

def add_noise(x: tf.Tensor, noise_factor: float, seed) -> tf.Tensor:
    """`clip(x + noise_factor * N(0, 1), 0, 1)`, the noise from the stateless `seed`
    (int [2], `alg='philox'`); `x` itself when `noise_factor` is 0."""
    if not noise_factor:
        return x
    shape = x.shape if x.shape.is_fully_defined() else tf.shape(x)
    noise = tf.random.stateless_normal(shape, seed=seed, dtype=x.dtype, alg="philox")
    return tf.clip_by_value(x + noise_factor * noise, 0.0, 1.0)


def reconstruction_loss(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example BCE from logits, mean over pixels: [batch] (training's loss)."""
    return losses.binary_crossentropy(targets, logits, from_logits=True, reduction="none")


def make_train_step(model: _Autoencoder, optimizer, noise_factor: float = 0.0,
                    learning_rate_fn: Optional[Callable] = None) -> Callable:
    """One un-compiled train step `step_fn(batch, seed) -> logs` (the loop compiles it).

    Args:
      model: a BUILT autoencoder.
      optimizer: a `tfcore.optimizers` optimizer (built on the model's variables).
      noise_factor: > 0 for a denoising autoencoder (noise from `seed`).
      learning_rate_fn: optional `lr(t)`
        (`tfcore.training.lr_schedule.make_learning_rate_fn`); before each update
        the optimizer's `learning_rate` variable is assigned `lr(optimizer.iterations)`.

    Returns:
      `step_fn(batch, seed)`: `batch` clean images [b, 28, 28, 1] (or a 1-tuple of
      them), `seed` int [2]; returns `{'loss': BCE from logits, 'mse': per pixel}`
      (+ 'learning_rate' with a schedule), means over the batch.
    """
    noise_factor = checks.check_real(noise_factor, "noise_factor", low=0)
    variables = model.trainable_variables

    def step_fn(batch, seed):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        inputs = add_noise(x, noise_factor, seed)
        with tf.GradientTape() as tape:
            logits = model.logits(inputs, training=True)
            per_example = reconstruction_loss(x, logits)
            loss = distribute.average_loss(per_example)
        grads = distribute.gradients(tape, loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        mse = losses.mean_squared_error(x, tf.math.sigmoid(logits))
        return {"loss": tf.reduce_mean(per_example), "mse": mse}

    # No tensor-dependent Python control flow here: skipping AutoGraph's conversion
    # of the step and everything it calls cuts tracing time several-fold.
    step_fn = tf.autograph.experimental.do_not_convert(step_fn)
    if learning_rate_fn is not None:
        return lr_schedule.scheduled_step(step_fn, optimizer, learning_rate_fn)
    return step_fn


def make_metrics_fn(model: _Autoencoder) -> Callable:
    """Per-example evaluation metrics for `tfcore.training.loop.make_eval_fn`.

    Returns:
      `metric_fn(batch) -> {'bce': [b], 'mse': [b]}`; `batch` is clean images (the
      input is the target) or `(inputs, targets)` (denoising: noisy inputs, clean
      targets). 'bce' is Keras's clipped BCE on probabilities, 'mse' the squared
      error, both means over the pixels (see the module docstring).
    """

    def metric_fn(batch):
        if isinstance(batch, (tuple, list)):
            inputs, targets = batch
        else:
            inputs = targets = batch
        probs = model(inputs, training=False)
        return {"bce": losses.binary_crossentropy(targets, probs, reduction="none"),
                "mse": losses.mean_squared_error(targets, probs, reduction="none")}

    return tf.autograph.experimental.do_not_convert(metric_fn)
