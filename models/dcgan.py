"""DCGAN on 32x32x1 images in [-1, 1]: the write-up's generator and discriminator.

Generator, `upsampling='upsample'` (the write-up's final network; every conv 'same'):

    z [B, 4, 4, 4]  (or z [B, latent_dim] -> Dense(4*4*C) -> reshape [B, 4, 4, C])
    -> Conv2D(64, 3)                                       [B, 4, 4, 64]
    -> UpSampling2D(2) -> Conv2D(128, 3) -> BN -> ELU      [B, 8, 8, 128]
    -> UpSampling2D(2) -> Conv2D(128, 3) -> BN -> ELU      [B, 16, 16, 128]
    -> UpSampling2D(2) -> Conv2D(1, 5) -> tanh             [B, 32, 32, 1] in [-1, 1]

`upsampling='transpose'` (the DCGAN paper's fractionally-strided convolutions,
`tf.nn.conv2d_transpose`): each UpSampling2D + Conv2D pair becomes one
Conv2DTranspose(filters, 5, strides=2, 'same') (5x5 kernels as in Radford et al. 2015,
which avoid the uneven overlap of 3x3 kernels at stride 2):

    z -> Conv2D(64, 3) -> ConvT(128) -> BN -> ELU -> ConvT(128) -> BN -> ELU
      -> ConvT(1) -> tanh

Discriminator (every conv 3x3, stride 2, 'same'; LeakyReLU slope 0.2 as in the DCGAN
paper and `keras.activations.leaky_relu`, not the 0.3 of Keras's `LeakyReLU` layer;
[BN] only with `batchnorm=True`, the default):

    x [B, 32, 32, 1] -> Conv2D(64) -> LReLU                    [B, 16, 16, 64]
    -> Conv2D(128) -> [BN] -> LReLU                            [B, 8, 8, 128]
    -> Conv2D(256) -> [BN] -> LReLU                            [B, 4, 4, 256]
    -> Flatten -> Dense(2048) -> [BN] -> LReLU -> Dense(1)     logits [B, 1]

Layers use Keras 3 defaults (glorot_uniform kernels, zero biases, BatchNorm momentum
0.99 and epsilon 1e-3) and Keras's variable layout, so weights copy 1:1 from the same
networks built with `keras.Sequential` (`variables_in_keras_order` gives the order).
Both networks take `update_stats=False` (training-mode batch statistics without
moving-average updates), forwarded to their BatchNorms.

`make_train_step` binds them to `tfcore.gan`'s D and G steps, plus the weight average
of G when given an `ema_generator` (`make_ema_generator`), as the one UN-compiled
`step_fn(batch, seed) -> dict of scalars` that `train.dcgan` (through
`tfcore.training.loop`, which compiles it) and `bench.run` run.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

import tfcore
from tfcore import checks, gan
from tfcore.layer import Layer

UPSAMPLINGS = ("upsample", "transpose")
IMAGE_SHAPE = (32, 32, 1)
Z_SHAPE = (4, 4, 4)
# The binaries' default flat latent (`train.dcgan --latent_dim`, the bench's `dcgan`):
# the write-up found 30 learns faster than 4x4x4 noise, and so did the runs in README.
DEFAULT_LATENT_DIM = 30
# The decay of the generator's weight average (`make_train_step(ema_generator=...)`),
# `train.dcgan --g_ema`'s default and the bench's `dcgan` step.
DEFAULT_G_EMA = 0.999


class Generator(Layer):
    """z -> a 32x32x1 image in [-1, 1] (see the module docstring for the layers).

    Args:
      latent_dim: None or 0 (default): z is uniform noise of shape [B, 4, 4, 4];
        a positive int: z is [B, latent_dim], projected by Dense(4*4*projection_channels)
        (linear) and reshaped to [B, 4, 4, projection_channels] (the write-up found a
        flat latent of 30 learns faster).
      upsampling: 'upsample' (default: UpSampling2D + Conv2D) or 'transpose'
        (Conv2DTranspose, stride 2).
      projection_channels: C of the projected 4x4xC tensor with a flat latent (default 4,
        the shape of the 4x4x4 noise, so the rest of the network is the same).
      name: module name.

    Attributes:
      latent_shape: the shape of z without the batch axis, (4, 4, 4) or (latent_dim,).

    Call: `G(z, training=False, seed=None, update_stats=True)` -> [B, 32, 32, 1].
    """

    def __init__(self, latent_dim: Optional[int] = None, upsampling: str = "upsample",
                 projection_channels: int = 4, name: Optional[str] = "generator"):
        super().__init__(name=name)
        if latent_dim is not None and latent_dim != 0:
            checks.check_int(latent_dim, "Generator latent_dim", low=1)
        checks.check_choice(upsampling, "Generator upsampling", UPSAMPLINGS)
        self.latent_dim = int(latent_dim) if latent_dim else None
        self.upsampling = upsampling
        self.projection_channels = checks.check_int(projection_channels,
                                                      "Generator projection_channels", low=1)
        self.latent_shape: Tuple[int, ...] = ((self.latent_dim,) if self.latent_dim
                                              else Z_SHAPE)
        with self.name_scope:
            self.dense = (tfcore.Dense(4 * 4 * self.projection_channels, name="dense")
                          if self.latent_dim else None)
            self.conv_in = tfcore.Conv2D(64, 3, padding="same", name="conv2d")
            if upsampling == "upsample":
                self.ups = [tfcore.UpSampling2D(2, name=f"up_sampling2d_{i}")
                            for i in range(3)]
                self.convs = [tfcore.Conv2D(128, 3, padding="same", name="conv2d_1"),
                              tfcore.Conv2D(128, 3, padding="same", name="conv2d_2"),
                              tfcore.Conv2D(1, 5, padding="same", activation="tanh",
                                            name="conv2d_3")]
            else:
                self.ups = []
                self.convs = [
                    tfcore.Conv2DTranspose(128, 5, strides=2, padding="same",
                                           name="conv2d_transpose"),
                    tfcore.Conv2DTranspose(128, 5, strides=2, padding="same",
                                           name="conv2d_transpose_1"),
                    tfcore.Conv2DTranspose(1, 5, strides=2, padding="same",
                                           activation="tanh", name="conv2d_transpose_2")]
            self.bns = [tfcore.BatchNorm(name="batch_normalization"),
                        tfcore.BatchNorm(name="batch_normalization_1")]

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank is None or tuple(shape[1:].as_list()) != self.latent_shape:
            raise ValueError(f"Generator '{self.name}': z must have shape "
                             f"[batch, {', '.join(map(str, self.latent_shape))}], "
                             f"got {shape}")

    def call(self, z, training: bool = False, seed=None, update_stats: bool = True):
        """z [B, *latent_shape] -> images [B, 32, 32, 1] in [-1, 1]."""
        h = tf.convert_to_tensor(z)
        if self.dense is not None:
            h = tf.reshape(self.dense(h), [-1, 4, 4, self.projection_channels])
        h = self.conv_in(h)
        for i, conv in enumerate(self.convs):
            if self.ups:
                h = self.ups[i](h)
            h = conv(h)
            if i < 2:
                h = self.bns[i](h, training=training, update_stats=update_stats)
                h = tf.nn.elu(h)
        return h

    def variables_in_keras_order(self) -> List[tf.Variable]:
        """Variables in the order of the equivalent `keras.Sequential`'s `weights`."""
        layers = ([self.dense] if self.dense is not None else []) + [self.conv_in]
        for i, conv in enumerate(self.convs):
            layers.append(conv)
            if i < 2:
                layers.append(self.bns[i])
        return _keras_order(layers)


class Discriminator(Layer):
    """A 32x32x1 image -> one real/fake logit (see the module docstring for the layers).

    Args:
      batchnorm: BatchNorm after the 2nd and 3rd conv and the Dense(2048) (default True).
      negative_slope: LeakyReLU slope (default 0.2, the DCGAN paper's).
      dense_units: width of the hidden Dense layer (default 2048).
      name: module name.

    Call: `D(x, training=False, seed=None, update_stats=True)` -> logits [B, 1].
    """

    def __init__(self, batchnorm: bool = True, negative_slope: float = 0.2,
                 dense_units: int = 2048, name: Optional[str] = "discriminator"):
        super().__init__(name=name)
        self.batchnorm = checks.check_bool(batchnorm, "Discriminator batchnorm")
        self.negative_slope = checks.check_real(negative_slope,
                                                "Discriminator negative_slope", low=0,
                                                high=1, high_open=True)
        self.dense_units = checks.check_int(dense_units, "Discriminator dense_units", low=1)
        with self.name_scope:
            self.convs = [tfcore.Conv2D(f, 3, strides=2, padding="same",
                                        name="conv2d" + ("" if i == 0 else f"_{i}"))
                          for i, f in enumerate((64, 128, 256))]
            self.flatten = tfcore.Flatten(name="flatten")
            self.dense = tfcore.Dense(self.dense_units, name="dense")
            self.logit = tfcore.Dense(1, name="dense_1")
            self.bns = ([tfcore.BatchNorm(name="batch_normalization" +
                                          ("" if i == 0 else f"_{i}")) for i in range(3)]
                        if self.batchnorm else [])

    def build(self, input_shape):
        self._require_dims(input_shape, [1, 2, 3], "image size")

    def _act(self, h):
        return tf.nn.leaky_relu(h, alpha=self.negative_slope)

    def _bn(self, i, h, training, update_stats):
        if not self.batchnorm:
            return h
        return self.bns[i](h, training=training, update_stats=update_stats)

    def call(self, x, training: bool = False, seed=None, update_stats: bool = True):
        """x [B, 32, 32, 1] -> logits [B, 1]."""
        h = self._act(self.convs[0](x))
        h = self._act(self._bn(0, self.convs[1](h), training, update_stats))
        h = self._act(self._bn(1, self.convs[2](h), training, update_stats))
        h = self._act(self._bn(2, self.dense(self.flatten(h)), training, update_stats))
        return self.logit(h)

    def variables_in_keras_order(self) -> List[tf.Variable]:
        """Variables in the order of the equivalent `keras.Sequential`'s `weights`."""
        layers = [self.convs[0], self.convs[1]]
        if self.batchnorm:
            layers += [self.bns[0], self.convs[2], self.bns[1], self.dense, self.bns[2]]
        else:
            layers += [self.convs[2], self.dense]
        return _keras_order(layers + [self.logit])


def _keras_order(layers) -> List[tf.Variable]:
    out = []
    for layer in layers:
        for name in ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"):
            if hasattr(layer, name):
                out.append(getattr(layer, name))
    return out


def build(generator: Generator, discriminator: Discriminator, batch: int = 2) -> None:
    """Creates both networks' variables with one inference-mode call on zeros."""
    z = tf.zeros([batch, *generator.latent_shape])
    discriminator(generator(z, training=False), training=False)


def make_optimizers(preset: str = "default", g_lr: Optional[float] = None,
                    g_beta1: Optional[float] = None, d_lr: Optional[float] = None,
                    d_beta1: Optional[float] = None) -> Tuple[Any, Any]:
    """(g_opt, d_opt): two tfcore Adams from a preset, each setting overridable.

    Presets ((learning_rate, beta_1) for G, then D; beta_2 0.999, epsilon 1e-7):
      'default': G (2e-4, 0.5), D (2e-4, 0.5): the DCGAN paper's settings, chosen by
        measurement (see README): they learn digit strokes within a few hundred steps.
      'writeup': G (2e-4, 0.5), D (1e-5, 0.1): the write-up's final settings.

    Args:
      preset: 'default' or 'writeup'.
      g_lr, g_beta1, d_lr, d_beta1: override the preset's value when not None.
    """
    checks.check_choice(preset, "preset", tuple(PRESETS))
    (glr, gb1), (dlr, db1) = PRESETS[preset]
    g_opt = tfcore.Adam(learning_rate=glr if g_lr is None else g_lr,
                        beta_1=gb1 if g_beta1 is None else g_beta1, name="g_adam")
    d_opt = tfcore.Adam(learning_rate=dlr if d_lr is None else d_lr,
                        beta_1=db1 if d_beta1 is None else d_beta1, name="d_adam")
    return g_opt, d_opt


PRESETS: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "default": ((2e-4, 0.5), (2e-4, 0.5)),
    "writeup": ((2e-4, 0.5), (1e-5, 0.1)),
}


def make_ema_generator(generator: Generator, name: str = "generator_ema") -> Generator:
    """A second generator of `generator`'s architecture, built and holding a copy of
    its weights (BatchNorm statistics included): the weight average that
    `make_train_step(..., ema_generator=...)` updates (checkpointed as
    'generator_ema' by `train.dcgan`)."""
    ema = Generator(latent_dim=generator.latent_dim, upsampling=generator.upsampling,
                    projection_channels=generator.projection_channels, name=name)
    ema(tf.zeros([1, *generator.latent_shape]))
    copy_weights(ema, generator)
    return ema


def copy_weights(target: Generator, source: Generator) -> None:
    """Assigns `source`'s weights (BatchNorm statistics included) to `target`, a built
    generator of the same architecture."""
    for a, v in zip(target.variables_in_keras_order(), source.variables_in_keras_order()):
        a.assign(v)


class GAN(tf.Module):
    """The generator and the discriminator under one module named like Keras's combined
    model (`keras.Sequential([generator, discriminator])`, the nested models named
    'generator' and 'discriminator'): what `tfcore.keras_io.load_weights` reads a Keras
    GAN's weights into. Holds no variables of its own."""

    def __init__(self, generator: Generator, discriminator: Discriminator,
                 name: str = "gan"):
        super().__init__(name=name)
        self.generator = generator
        self.discriminator = discriminator


def make_train_step(generator: Generator, discriminator: Discriminator, g_opt: Any,
                    d_opt: Any, *, order: str = "d_then_g", d_steps: int = 1,
                    d_batch: str = "split", label_smoothing: float = 0.0,
                    noise_dist: str = "uniform", ema_generator: Optional[Generator] = None,
                    ema_decay: float = DEFAULT_G_EMA
                    ) -> Callable[..., Dict[str, tf.Tensor]]:
    """The DCGAN's train step, UN-compiled: `step_fn(batch, seed=None) -> dict of scalars`.

    `tfcore.gan.make_gan_train_step` over these networks: `d_steps` D steps ('split':
    real and fake through D in separate passes; 'mixed': one pass over their
    concatenation) and one G step, in `order`, with noise of shape
    [batch, *generator.latent_shape] sized from the batch and seeded from `seed`
    (stateless philox; stateful draws when None). Only D's variables move in D steps,
    only G's in G steps; D's BatchNorm moving statistics are restored after the G step.
    Then, with `ema_generator`, the weight average of G (`tfcore.gan.ema_update`) over
    every variable in Keras order (BatchNorm statistics included):

        a <- d_t a + (1 - d_t) v,   d_t = tfcore.gan.ema_decay(ema_decay, t)

    with t = g_opt.iterations - 1, the 0-based count of G updates. D trains against
    the current G; the average is what `train.dcgan` samples, measures and exports.
    `tfcore.training.loop` compiles the step (graph mode or XLA per `--jit`; it has no
    Python control flow on tensors, so AutoGraph may be off); wrap it in a
    `tf.function` yourself to call it compiled.

    Builds the networks (one call on zeros) and the optimizers' slots if needed.

    Args:
      generator, discriminator: the networks.
      g_opt, d_opt: optimizers (`apply_gradients`; `g_opt.iterations` with an EMA).
      order: 'd_then_g' (default) or 'g_then_d'.
      d_steps: D steps per step (default 1).
      d_batch: 'split' (default) or 'mixed'.
      label_smoothing: one-sided real-label smoothing for D, in [0, 1) (default 0).
      noise_dist: 'uniform' (default, U(-1, 1)) or 'normal'.
      ema_generator: None (default: no average) or a generator of the same
        architecture (`make_ema_generator(generator)`), updated in place each step.
      ema_decay: the average's decay d in [0, 1) (default `DEFAULT_G_EMA`, the
        binary's `--g_ema`); used only with `ema_generator`.

    Returns:
      `step_fn(batch, seed=None)`; `batch` is real images [B, 32, 32, 1] (or a tuple
      whose first element they are). It returns float32 scalars d_loss, d_loss_real,
      d_loss_fake, d_acc_real, d_acc_fake (last D step, before its update),
      d_acc = (d_acc_real + d_acc_fake) / 2 and g_loss.
    """
    if not generator.built or not discriminator.built:
        build(generator, discriminator)
    if ema_generator is not None:
        ema_decay = checks.check_real(ema_decay, "ema_decay", low=0, high=1,
                                      high_open=True)
    body = gan.make_gan_train_step(
        generator, discriminator, g_opt, d_opt, latent_shape=list(generator.latent_shape),
        order=order, d_steps=d_steps, d_batch=d_batch, noise_dist=noise_dist,
        label_smoothing=label_smoothing)
    averages = ema_generator.variables_in_keras_order() if ema_generator else None
    trained = generator.variables_in_keras_order()

    # No Python control flow on tensors: AutoGraph's conversion of the layers' and
    # optimizers' code would only slow the tracing down.
    @tf.autograph.experimental.do_not_convert
    def step_fn(batch, seed=None):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        logs = body(images, seed)
        if averages is not None:
            gan.ema_update(averages, trained,
                           gan.ema_decay(ema_decay, g_opt.iterations - 1))
        logs["d_acc"] = 0.5 * (logs["d_acc_real"] + logs["d_acc_fake"])
        return logs

    return step_fn
