"""Generic GAN training steps: losses, noise, one discriminator step, one generator step.

Pure functions in the style of TF-GAN's `losses_impl.py` and the TensorFlow DCGAN
tutorial, written against small interfaces so they work with any networks:

* `generator` and `discriminator` are callables `net(x, training=...)`: a
  `tfcore.Layer` / `tf.Module`, or a small lambda that forwards extra keyword
  arguments, e.g. `lambda x, training: disc(x, training=training, update_stats=False)`.
  The variables to train are `net.trainable_variables`, or the list passed as
  `g_variables=` / `d_variables=` (required when `net` is a plain callable).
* optimizers are objects with `apply_gradients(zip(grads, vars))` (Keras's API, and
  tfcore's optimizers).

Losses (logits are pre-sigmoid discriminator outputs, any shape, e.g. [batch, 1];
BCE(x, z) = max(x, 0) - x z + log(1 + exp(-|x|)) = -z log s(x) - (1 - z) log(1 - s(x)),
s = sigmoid; each term is a mean over all elements of the batch):

    L_D = BCE(D(x), 1 - label_smoothing) + BCE(D(G(z)), 0)
    L_G = BCE(D(G(z)), 1)          (non-saturating loss, Goodfellow et al. 2014, s. 3)

Choices made here (each can be changed by an argument):

* Discriminator step, `d_batch='split'` (default): real and generated images go through
  D in two SEPARATE passes, so a batch-normalising D normalises each kind with its own
  batch statistics (as the TF DCGAN tutorial and TF-GAN do). `d_batch='mixed'` is the
  classic Keras-era variant, `D(concat([real, fake]))` in ONE pass, whose BatchNorm then
  mixes the two kinds' statistics; it is kept to reproduce that failure. Both sum the
  two batch-mean terms (the Keras-era `train_on_batch` on the concatenation reports
  their average, half of this).
* In the D step the generator runs with `training=True` (batch statistics, like the
  samples the G step produces and like the tutorial's `generator(noise, training=True)`);
  G is run outside the gradient tape and only D's variables are updated. G's BatchNorm
  moving averages DO update during D steps (they track the current G's batch
  statistics, which is what inference-mode G should use); pass
  `freeze_generator_state=True` to restore them, or `generator_training=False`.
* In the G step the discriminator runs with `training=True` (per-kind batch
  statistics, the same normalisation D used on generated images in its own split step)
  and only G's variables are updated. D's non-trainable state (BatchNorm moving
  averages) is restored after the pass (`freeze_discriminator_state=True`), so D's
  moving statistics learn from D steps only. Restoring uses
  `discriminator.non_trainable_variables`; for a plain callable, forward
  `update_stats=False` (or the equivalent) in the lambda instead.

`make_gan_train_step` composes these into one train step, uncompiled (the training
loop, or the caller, compiles it).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

import tensorflow as tf

from tfcore import checks, losses
from tfcore.layer import fold_seed

Net = Callable[..., tf.Tensor]

_D_BATCH = ("split", "mixed")
_ORDERS = ("d_then_g", "g_then_d")
_DISTS = ("uniform", "normal")


# --- losses -------------------------------------------------------------------------
def bce_with_logits(logits, labels, reduction: str = "mean") -> tf.Tensor:
    """Binary cross-entropy from logits (`tfcore.losses.binary_crossentropy`).

    BCE(x, z) = max(x, 0) - x z + log(1 + exp(-|x|))
              = -z log sigmoid(x) - (1 - z) log(1 - sigmoid(x))   (stable form,
    `tf.nn.sigmoid_cross_entropy_with_logits`).

    Args:
      logits: float tensor [batch, ...] (e.g. [batch, 1]).
      labels: targets in [0, 1], a scalar or a tensor broadcastable to `logits`.
      reduction: 'mean' (default) the mean over all elements, a scalar; 'none' the
        mean over the non-batch axes, shape [batch].

    Returns:
      A scalar, or a [batch] tensor for reduction='none'.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    logits = tf.convert_to_tensor(logits)
    labels = tf.broadcast_to(tf.cast(labels, logits.dtype), tf.shape(logits))
    return losses.binary_crossentropy(labels, logits, from_logits=True, reduction=reduction)


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def discriminator_loss(real_logits, fake_logits, label_smoothing: float = 0.0) -> tf.Tensor:
    """Standard GAN discriminator loss (minimax form, TF-GAN's `modified_discriminator_loss`).

    L_D = mean BCE(real_logits, 1 - label_smoothing) + mean BCE(fake_logits, 0)

    Args:
      real_logits: D's logits on real images, e.g. [batch, 1].
      fake_logits: D's logits on generated images, e.g. [batch, 1].
      label_smoothing: one-sided smoothing of the real target (Salimans et al. 2016),
        in [0, 1); default 0.

    Returns:
      Scalar loss.
    """
    ls = _check_smoothing(label_smoothing)
    return bce_with_logits(real_logits, 1.0 - ls) + bce_with_logits(fake_logits, 0.0)


def generator_loss(fake_logits) -> tf.Tensor:
    """Non-saturating generator loss: L_G = mean BCE(D(G(z)), 1) = -mean log sigmoid(D(G(z))).

    Args:
      fake_logits: D's logits on generated images, e.g. [batch, 1].

    Returns:
      Scalar loss.
    """
    return bce_with_logits(fake_logits, 1.0)


# --- noise --------------------------------------------------------------------------
def _latent_dims(latent_shape) -> list:
    dims = [latent_shape] if isinstance(latent_shape, int) else list(latent_shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                            for d in dims):
        raise ValueError(f"latent_shape must be a positive int or a sequence of positive "
                         f"ints, got {latent_shape!r}")
    return dims


def sample_noise(batch_size, latent_shape: Union[int, Sequence[int]], seed=None,
                 dist: str = "uniform", dtype=tf.float32) -> tf.Tensor:
    """Latent noise z of shape [batch_size, *latent_shape].

    Args:
      batch_size: int or scalar int tensor, e.g. `tf.shape(real_images)[0]`: size the
        noise from the batch at hand, never from a global batch size.
      latent_shape: int (e.g. 100) or a sequence of ints.
      seed: optional stateless seed (int tensor of shape [2]); when given the draw is
        `tf.random.stateless_*(..., alg='philox')` and replays exactly; else stateful.
        The numbers for a seed differ between XLA (`jit_compile=True`) and eager/graph
        mode (TF's kernels differ; measured with TF 2.21), so replay a compiled draw
        compiled the same way.
      dist: 'uniform' (default): U(-1, 1); 'normal': N(0, 1).
      dtype: float dtype (default float32).

    Returns:
      A `dtype` tensor [batch_size, *latent_shape].
    """
    if dist not in _DISTS:
        raise ValueError(f"dist must be one of {_DISTS}, got {dist!r}")
    dims = _latent_dims(latent_shape)
    shape = tf.concat([tf.reshape(tf.cast(batch_size, tf.int32), [1]),
                       tf.constant(dims, tf.int32)], axis=0)
    if seed is None:
        if dist == "uniform":
            return tf.random.uniform(shape, -1.0, 1.0, dtype=dtype)
        return tf.random.normal(shape, dtype=dtype)
    seed = tf.cast(seed, tf.int64)
    if dist == "uniform":
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=dtype, alg="philox")
    return tf.random.stateless_normal(shape, seed, dtype=dtype, alg="philox")


# --- helpers ------------------------------------------------------------------------
def _trainable(net, given, what: str) -> list:
    """The variables to train: `given`, else `net.trainable_variables`."""
    if given is not None:
        variables = list(given)
    elif hasattr(net, "trainable_variables"):
        variables = list(net.trainable_variables)
    else:
        raise ValueError(f"{what} is a plain callable ({net!r}): pass its variables "
                         f"explicitly ({what[0]}_variables=...)")
    if not variables:
        raise ValueError(f"{what} has no trainable variables: build it by calling it once "
                         f"on an example batch before training")
    return variables


def _snapshot(net, enabled: bool) -> list:
    """(variable, value) pairs of `net`'s non-trainable state, to restore later."""
    if not enabled or not hasattr(net, "non_trainable_variables"):
        return []
    return [(v, tf.identity(v.read_value())) for v in net.non_trainable_variables]


def _restore(pairs) -> None:
    for v, value in pairs:
        v.assign(value)


def _build_optimizer(optimizer, variables) -> None:
    """Creates an optimizer's slots now (eagerly) when it has Keras's `build`/`built`."""
    if hasattr(optimizer, "build") and getattr(optimizer, "built", True) is False:
        optimizer.build(variables)


def _accuracy(logits, positive: bool) -> tf.Tensor:
    hit = logits > 0 if positive else logits < 0
    return tf.reduce_mean(tf.cast(hit, tf.float32))


# --- weight averaging ----------------------------------------------------------------
def ema_decay(decay: float, step) -> tf.Tensor:
    """The decay used at (0-based) update `step`: min(decay, (1 + step) / (10 + step)).

    The warm-up (as TensorFlow's `ExponentialMovingAverage` with `num_updates`) keeps
    the first updates from averaging in the random initial weights for ~1/(1-decay)
    steps: step 0 uses 0.1, step 90 0.91, and from about 1/(1-decay) steps on, `decay`.
    """
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (10.0 + step))


def ema_update(averages: Sequence[tf.Variable], variables: Sequence[tf.Variable],
               decay) -> None:
    """Exponential moving average of weights, in place (Polyak averaging of G):

        a <- decay * a + (1 - decay) * v      for each pair (a, v)

    Used for the generator (Yazici et al. 2019, "The Unusual Effectiveness of Averaging
    in GAN Training"; Karras et al.): samples from the averaged weights are smoother
    than from the last iterate, which oscillates in the two-player game.

    Args:
      averages: the average variables (e.g. a second generator's, same order/shapes).
      variables: the trained variables they follow (BatchNorm's moving statistics may
        be included: they are averaged like the weights).
      decay: a float or scalar tensor in [0, 1) (e.g. `ema_decay(0.999, step)`).

    Raises:
      ValueError: the two lists differ in length or in a shape.
    """
    averages, variables = list(averages), list(variables)
    if len(averages) != len(variables):
        raise ValueError(f"ema_update needs as many averages as variables, got "
                         f"{len(averages)} and {len(variables)}")
    for a, v in zip(averages, variables):
        if a.shape != v.shape:
            raise ValueError(f"ema_update: average {a.name} {a.shape} does not match "
                             f"variable {v.name} {v.shape}")
    for a, v in zip(averages, variables):
        d = tf.cast(decay, a.dtype)
        a.assign(d * a + (1.0 - d) * tf.cast(v, a.dtype))


# --- steps --------------------------------------------------------------------------
def discriminator_step(generator: Net, discriminator: Net, d_optimizer: Any, real_images,
                       noise, d_batch: str = "split", label_smoothing: float = 0.0,
                       d_variables: Optional[Sequence[tf.Variable]] = None,
                       generator_training: bool = True,
                       freeze_generator_state: bool = False) -> Dict[str, tf.Tensor]:
    """One gradient step on D: minimise L_D over D's variables only.

    fake = G(noise, training=generator_training) (outside the tape: no gradient to G);
    'split':  real_logits = D(real, training=True); fake_logits = D(fake, training=True)
    'mixed':  [real_logits; fake_logits] = D(concat([real, fake]), training=True)
    L_D = BCE(real_logits, 1 - label_smoothing) + BCE(fake_logits, 0); one tape, one
    `d_optimizer.apply_gradients` over `d_variables` (default D.trainable_variables).

    Args:
      generator: callable `G(z, training=...)` -> images.
      discriminator: callable `D(x, training=...)` -> logits [batch, 1] (or [batch]).
      d_optimizer: object with `apply_gradients(zip(grads, vars))`.
      real_images: [batch, ...] float tensor.
      noise: [n_fake, *latent] tensor (usually n_fake = batch).
      d_batch: 'split' (default) or 'mixed' (see the module docstring).
      label_smoothing: one-sided real-label smoothing in [0, 1); default 0.
      d_variables: variables to update; default `discriminator.trainable_variables`.
      generator_training: the `training` flag G is called with (default True).
      freeze_generator_state: restore G's non-trainable variables after its pass
        (default False: G's moving statistics update).

    Returns:
      Dict of float32 scalars, all computed before the update: d_loss, d_loss_real,
      d_loss_fake, d_acc_real (share of real logits > 0), d_acc_fake (share of fake
      logits < 0).
    """
    if d_batch not in _D_BATCH:
        raise ValueError(f"d_batch must be one of {_D_BATCH}, got {d_batch!r}")
    ls = _check_smoothing(label_smoothing)
    real_images = tf.convert_to_tensor(real_images)
    saved = _snapshot(generator, freeze_generator_state)
    fake_images = tf.stop_gradient(generator(noise, training=generator_training))
    _restore(saved)
    with tf.GradientTape() as tape:
        if d_batch == "split":
            real_logits = discriminator(real_images, training=True)
            fake_logits = discriminator(fake_images, training=True)
        else:
            n_real = tf.shape(real_images)[0]
            logits = discriminator(tf.concat([real_images, fake_images], axis=0),
                                   training=True)
            real_logits, fake_logits = logits[:n_real], logits[n_real:]
        d_loss_real = bce_with_logits(real_logits, 1.0 - ls)
        d_loss_fake = bce_with_logits(fake_logits, 0.0)
        d_loss = d_loss_real + d_loss_fake
    variables = _trainable(discriminator, d_variables, "discriminator")
    grads = tape.gradient(d_loss, variables)
    d_optimizer.apply_gradients(zip(grads, variables))
    return {"d_loss": tf.cast(d_loss, tf.float32),
            "d_loss_real": tf.cast(d_loss_real, tf.float32),
            "d_loss_fake": tf.cast(d_loss_fake, tf.float32),
            "d_acc_real": _accuracy(real_logits, True),
            "d_acc_fake": _accuracy(fake_logits, False)}


def generator_step(generator: Net, discriminator: Net, g_optimizer: Any, noise,
                   g_variables: Optional[Sequence[tf.Variable]] = None,
                   discriminator_training: bool = True,
                   freeze_discriminator_state: bool = True) -> Dict[str, tf.Tensor]:
    """One gradient step on G: minimise L_G = BCE(D(G(z)), 1) over G's variables only.

    G runs with training=True inside the tape (its BatchNorm moving statistics update);
    D with `training=discriminator_training`
    (default True); gradients flow through D, but only `g_variables` (default
    G.trainable_variables) are updated.

    Args:
      generator: callable `G(z, training=...)` -> images.
      discriminator: callable `D(x, training=...)` -> logits.
      g_optimizer: object with `apply_gradients(zip(grads, vars))`.
      noise: [batch, *latent] tensor.
      g_variables: variables to update; default `generator.trainable_variables`.
      discriminator_training: the `training` flag D is called with (default True).
      freeze_discriminator_state: restore D's non-trainable variables (BatchNorm
        moving averages) after the pass (default True).

    Returns:
      Dict with the float32 scalar g_loss, computed before the update.
    """
    saved = _snapshot(discriminator, freeze_discriminator_state)
    with tf.GradientTape() as tape:
        fake_images = generator(noise, training=True)
        fake_logits = discriminator(fake_images, training=discriminator_training)
        g_loss = generator_loss(fake_logits)
    _restore(saved)
    variables = _trainable(generator, g_variables, "generator")
    grads = tape.gradient(g_loss, variables)
    g_optimizer.apply_gradients(zip(grads, variables))
    return {"g_loss": tf.cast(g_loss, tf.float32)}


def make_gan_train_step(generator: Net, discriminator: Net, g_opt: Any, d_opt: Any,
                        latent_shape: Union[int, Sequence[int]], order: str = "d_then_g",
                        d_steps: int = 1, d_batch: str = "split",
                        noise_dist: str = "uniform", label_smoothing: float = 0.0,
                        g_variables: Optional[Sequence[tf.Variable]] = None,
                        d_variables: Optional[Sequence[tf.Variable]] = None,
                        generator_training: bool = True,
                        discriminator_training: bool = True,
                        freeze_discriminator_state: bool = True) -> Callable:
    """A GAN train step `step(real_images, seed=None) -> dict of scalars`, UN-compiled.

    Each call draws noise sized from the batch it is given (`tf.shape(real_images)[0]`,
    so a short last batch works) and runs, in `order`:
      'd_then_g' (default): `d_steps` discriminator steps, then one generator step (the
        G step sees the updated D);
      'g_then_d': one generator step, then `d_steps` discriminator steps (the D steps
        see the updated G).
    Noise: D step i (i = 0 .. d_steps-1) uses seed `fold_seed(seed, i)`, the G step
    `fold_seed(seed, d_steps)` (`tfcore.layer.fold_seed`, philox); with seed=None
    stateful draws (the seeded numbers differ under XLA, see `sample_noise`). All D
    steps reuse the same real batch with fresh noise.

    The step is a plain Python function of tensors (no Python control flow on them): it
    runs eagerly as it is, and `tfcore.training.loop` compiles it (`tf.function`, XLA per
    its `jit`); wrap it in `tf.function(step, jit_compile=...)` to compile it yourself.
    Build before compiling: the networks' variables must exist (call each once on an
    example; a ValueError says so otherwise) and the optimizers must hold their slots
    before the step is traced, since a `tf.function` may not create variables after its
    first trace. Optimizers with Keras's `build(vars)` / `built` (Keras 3's and
    tfcore's) are built here, eagerly, with G's and D's variables respectively.

    Args:
      generator, discriminator: callables `net(x, training=...)` (see module docstring).
      g_opt, d_opt: objects with `apply_gradients(zip(grads, vars))`.
      latent_shape: int or sequence, the noise shape without the batch axis.
      order: 'd_then_g' (default) or 'g_then_d'.
      d_steps: discriminator steps per call (positive int, default 1).
      d_batch: 'split' (default) or 'mixed', see `discriminator_step`.
      noise_dist: 'uniform' (default, U(-1, 1)) or 'normal'.
      label_smoothing: one-sided real-label smoothing for D, in [0, 1).
      g_variables, d_variables: variables to train (default `.trainable_variables`).
      generator_training: `training` flag of G inside D steps (default True).
      discriminator_training: `training` flag of D inside the G step (default True).
      freeze_discriminator_state: restore D's moving statistics after the G step.

    Returns:
      The function `step(real_images, seed=None)`; `seed` is an int tensor [2].
      It returns the merged dicts: d_loss, d_loss_real, d_loss_fake, d_acc_real,
      d_acc_fake (from the last D step) and g_loss.
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if d_batch not in _D_BATCH:
        raise ValueError(f"d_batch must be one of {_D_BATCH}, got {d_batch!r}")
    if noise_dist not in _DISTS:
        raise ValueError(f"noise_dist must be one of {_DISTS}, got {noise_dist!r}")
    d_steps = checks.check_int(d_steps, "d_steps", low=1)
    latent_dims = _latent_dims(latent_shape)
    _check_smoothing(label_smoothing)
    # Fail early (eagerly) if a network is unbuilt or its variables are unknown.
    g_vars = _trainable(generator, g_variables, "generator")
    d_vars = _trainable(discriminator, d_variables, "discriminator")
    _build_optimizer(g_opt, g_vars)
    _build_optimizer(d_opt, d_vars)

    def step(real_images, seed=None):
        real_images = tf.convert_to_tensor(real_images)
        batch = tf.shape(real_images)[0]
        dtype = real_images.dtype if real_images.dtype.is_floating else tf.float32

        def noise(i):
            s = None if seed is None else fold_seed(seed, i)
            return sample_noise(batch, latent_dims, seed=s, dist=noise_dist, dtype=dtype)

        metrics: Dict[str, tf.Tensor] = {}

        def run_d():
            for i in range(d_steps):
                metrics.update(discriminator_step(
                    generator, discriminator, d_opt, real_images, noise(i), d_batch=d_batch,
                    label_smoothing=label_smoothing, d_variables=d_vars,
                    generator_training=generator_training))

        def run_g():
            metrics.update(generator_step(
                generator, discriminator, g_opt, noise(d_steps), g_variables=g_vars,
                discriminator_training=discriminator_training,
                freeze_discriminator_state=freeze_discriminator_state))

        if order == "d_then_g":
            run_d()
            run_g()
        else:
            run_g()
            run_d()
        return metrics

    return step
