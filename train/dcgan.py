"""Train the DCGAN (`models/dcgan.py`) on MNIST padded to 32x32, or on your own images.

    python -m train.dcgan --workdir=runs/dcgan_split --epochs=5
    python -m train.dcgan --workdir=runs/dcgan_mixed --d_batch=mixed --epochs=5
    python -m train.dcgan --workdir=runs/dcgan_writeup --preset=writeup
    python -m train.dcgan --workdir=runs/dcgan_t --generator=transpose --latent_dim=30
    python -m train.dcgan --workdir=runs/faces --image_dir=my_pngs --augment_factor=20
    python -m train.dcgan --workdir=runs/quick --max_steps=200 --eval_every=100

The step (`models.dcgan.make_train_step` over `tfcore.gan`): per global step,
`--d_steps` discriminator steps and one generator step in `--order`; with
`--d_batch=split` (default) real and generated images go through D in separate passes
(BatchNorm normalises each kind with its own statistics), `--d_batch=mixed` sends their
concatenation through D in one pass (the write-up's failing variant). Noise
z ~ U(-1, 1) of shape [batch, --latent_dim] (default 30, projected to 4x4x4), or
[batch, 4, 4, 4] with --latent_dim=0, sized from the batch. The flat latent was chosen
by measurement: at 1,200 steps its samples were digits (Frechet distance 37, 30 after
800 steps) where the spatial 4x4x4 noise drew blocky patches (96).
Optimizers: two Adams, `--preset=default` (G and D: lr 2e-4, beta_1 0.5, chosen by
measurement, see README) or `--preset=writeup` (D: lr 1e-5, beta_1 0.1; G: 2e-4, 0.5);
--g_learning_rate, --g_beta1, --d_learning_rate, --d_beta1 override them. --g_ema=d
(default 0.999; 0 turns it off) keeps a moving average of G's weights
(`tfcore.gan.ema_update`, decay d after a warm-up) beside the trained G: the pictures,
quality measures, best checkpoint and export use it (checkpointed as `generator_ema`);
D trains against the current G. Measured on the same run seed, the average was ahead
at every epoch (Frechet distance on 2,000 samples after 5 epochs: 10.5 vs 15.9).

Data: MNIST training images padded to 32x32, in [-1, 1] (`--train_limit` keeps the
first N); the first `--val_examples` test images are the held-out real images of the
per-epoch validation. `--image_dir`: the folder's images (grayscale, resized to 32x32),
grown `--augment_factor` times by random scale, shift and brightness
(`tfcore.data.augment`); a tenth of the originals (at least one; all of them when
there are fewer than 10) is held out for validation.

An "epoch" is a pass over the training images, or with `--eval_every=N` a period of N
steps (the data order still runs over whole passes): evaluations, pictures and
checkpoints happen at its end. Written into --workdir:

* `samples_epoch_N.png` (N = 1, 2, ...): a --grid_size^2 grid of G(z) for a fixed z,
  inference mode; `interpolation.png`: --interp_rows rows, each walking in
  --interp_steps steps along the line from one fixed z to another (overwritten each
  epoch). Both also go to TensorBoard (train/, tags `samples`, `interpolation`).
* `metrics.json`: the loop's per-epoch `history` / `epochs`: train means of d_loss,
  d_loss_real, d_loss_fake, d_acc_real, d_acc_fake, d_acc, g_loss and the validation:
  D's loss and accuracy on the held-out real images and as many fresh fakes, in
  inference mode (`val_d_loss`, `val_d_acc_real`, `val_d_acc_fake`, `val_d_acc`, ...:
  BatchNorm's moving statistics, the write-up's Keras `evaluate`) and with batch
  statistics as D is trained (`val_d_*_batch_stats`: per kind for 'split', on the
  concatenation for 'mixed'; a BN discriminator's moving statistics blend real and
  fake batches, so the two can differ wildly); with --eval_samples > 0,
  `val_frechet_distance`,
  `val_classifier_score`, `val_classes_covered` on that many samples (the cheap
  per-epoch version of `train.gan_eval`). At the end, merged in: `steps` (the step
  metrics every --log_every steps; also streamed to `steps.jsonl`), the final
  measurement on --final_eval_samples samples (`classifier_score`, `frechet_distance`,
  `classes_covered`, `class_shares`, `real_classifier_score`, `real_frechet_distance`),
  `seconds`, `config`, `epoch_seconds` (the training time of each epoch, its
  validation, pictures and checkpoint excluded; the first epoch includes tracing) and
  `steps_per_second` (the steady state: this process's epochs after the first, or all
  when there is one; `tfcore.training.callbacks.EpochTimer`).
* TensorBoard logs (train/: step metrics every --log_every steps and epoch means;
  eval/: the validation), checkpoints (checkpoints/, and best/ by val Frechet distance),
  `config.json` (to rebuild the generator: `train.gan_eval --generator=<workdir>`),
  with --export a SavedModel (saved_model/: `z` -> `images`).

Stopping: --epochs / --steps / --max_steps (the first reached); early stopping on
`val_frechet_distance` (--fd_patience epochs without improvement, best weights
restored; needs --eval_samples > 0); and a stop when D's accuracy (--pinned_monitor,
default val_d_acc_batch_stats) is within --pinned_tol of 0 or 1 for --pinned_patience
evaluations in a row (one network has won: training no longer teaches G anything).
The default tolerance 0.002 (at most 4 of 2,000 held-out real and fake images wrong):
with 0.01 a healthy split run whose D scored 0.991-0.997 was stopped at epoch 14
while its Frechet distance was still falling.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import app, flags

from models import dcgan
from tfcore import gan
from tfcore.training import callbacks as tfcb
from tfcore import data as tfdata
from tfcore import image_grid
from tfcore.training import export, loop, metrics_io
from train import flags as common
from train import gan_eval

FLAGS = common.FLAGS
log = logging.getLogger("train.dcgan")

GENERATORS = ("upsample", "transpose")
D_BATCHES = ("split", "mixed")
ORDERS = ("d_then_g", "g_then_d")
PRESETS = ("default", "writeup")
STEPS_FILE = "steps.jsonl"


@dataclasses.dataclass
class DCGANConfig:
    """Everything `train_and_evaluate` needs (the flags of the same names).

    None for the optimizer settings: the `preset`'s. `latent_dim` 30 (default): a flat
    z of 30 numbers projected to 4x4x4; 0: z of shape 4x4x4 (spatial noise, which
    drew blocky patches: see README). 0 for `train_limit`: all images; for `eval_every`: whole epochs; for
    `eval_samples` / `final_eval_samples` / `fd_patience` / `pinned_patience`: off.
    """
    generator: str = "upsample"
    latent_dim: int = dcgan.DEFAULT_LATENT_DIM
    d_batchnorm: bool = True
    d_dense_units: int = 2048
    d_batch: str = "split"
    order: str = "d_then_g"
    d_steps: int = 1
    preset: str = "default"
    g_learning_rate: Optional[float] = None
    g_beta1: Optional[float] = None
    d_learning_rate: Optional[float] = None
    d_beta1: Optional[float] = None
    label_smoothing: float = 0.0
    g_ema: float = 0.999
    batch_size: int = 64
    epochs: Optional[int] = 5
    steps: Optional[int] = None
    max_steps: Optional[int] = None
    eval_every: int = 0
    image_dir: Optional[str] = None
    augment_factor: int = 1
    data_dir: Optional[str] = None
    train_limit: int = 0
    val_examples: int = 1000
    eval_samples: int = 2000
    final_eval_samples: int = 10000
    classifier: Optional[str] = None
    fd_patience: int = 0
    pinned_patience: int = 3
    pinned_tol: float = 0.002
    pinned_monitor: str = "val_d_acc_batch_stats"
    grid_size: int = 8
    interp_rows: int = 8
    interp_steps: int = 10
    log_every: int = 50
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    jit: str = "auto"
    export: bool = False
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> "DCGANConfig":
        """Raises ValueError naming the flag (e.g. `--d_steps`) and quoting the value."""
        for name, choices in (("generator", GENERATORS), ("d_batch", D_BATCHES),
                              ("order", ORDERS), ("preset", PRESETS),
                              ("jit", common.JIT_MODES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name} must be one of {', '.join(choices)}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("d_batchnorm", "deterministic", "resume", "export", "tensorboard",
                     "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"--{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("d_steps", "d_dense_units", "batch_size", "augment_factor",
                     "grid_size", "interp_rows", "log_every"):
            _check_int(getattr(self, name), name, low=1)
        _check_int(self.interp_steps, "interp_steps", low=2)
        for name in ("latent_dim", "eval_every", "train_limit", "fd_patience",
                     "pinned_patience"):
            _check_int(getattr(self, name), name, low=0)
        _check_int(self.val_examples, "val_examples", low=2)
        for name in ("eval_samples", "final_eval_samples"):
            v = getattr(self, name)
            _check_int(v, name, low=0)
            if v == 1:
                raise ValueError(f"--{name} must be 0 (off) or >= 2, got 1")
        for name in ("epochs", "steps", "max_steps"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, low=1)
        if self.epochs is None and self.steps is None and self.max_steps is None:
            raise ValueError("give --epochs, --steps or --max_steps, got none")
        _check_int(self.seed, "seed", low=None)
        for name in ("g_learning_rate", "d_learning_rate"):
            v = getattr(self, name)
            if v is not None and not (_is_real(v) and v > 0):
                raise ValueError(f"--{name} must be a finite number > 0, got {v!r}")
        for name in ("g_beta1", "d_beta1"):
            v = getattr(self, name)
            if v is not None and not (_is_real(v) and 0 <= v < 1):
                raise ValueError(f"--{name} must be in [0, 1), got {v!r}")
        if not (_is_real(self.g_ema) and 0 <= self.g_ema < 1):
            raise ValueError(f"--g_ema must be in [0, 1) (0: off), got {self.g_ema!r}")
        if not (_is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise ValueError(f"--label_smoothing must be in [0, 1), got "
                             f"{self.label_smoothing!r}")
        if not (_is_real(self.pinned_tol) and 0 <= self.pinned_tol < 0.5):
            raise ValueError(f"--pinned_tol must be in [0, 0.5), got {self.pinned_tol!r}")
        if not isinstance(self.pinned_monitor, str) or not self.pinned_monitor:
            raise ValueError(f"--pinned_monitor must be a metric name, got "
                             f"{self.pinned_monitor!r}")
        if self.fd_patience and not self.eval_samples:
            raise ValueError(f"--fd_patience={self.fd_patience} needs --eval_samples > 0 "
                             "(the per-epoch Frechet distance)")
        if self.image_dir is not None and not os.path.isdir(self.image_dir):
            raise ValueError(f"--image_dir must be an existing directory, got "
                             f"{self.image_dir!r}")
        if self.augment_factor > 1 and self.image_dir is None:
            raise ValueError(f"--augment_factor={self.augment_factor} needs --image_dir")
        if self.classifier is not None and not os.path.isdir(self.classifier):
            raise ValueError(f"--classifier must be an existing directory, got "
                             f"{self.classifier!r}")
        return self

    @property
    def total_steps_cap(self) -> Optional[int]:
        caps = [s for s in (self.steps, self.max_steps) if s]
        return min(caps) if caps else None


def _is_real(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _check_int(value, name: str, low: Optional[int]) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok and low is not None:
        ok = value >= low
    if not ok:
        bound = "" if low is None else f" >= {low}"
        raise ValueError(f"--{name} must be an integer{bound}, got {value!r}")


# -- data -----------------------------------------------------------------------------

def load_data(config: DCGANConfig, mnist=None):
    """(train [N, 32, 32, 1], val [M, 32, 32, 1]) float32 in [-1, 1], and the raw MNIST
    ((x_train, y_train), (x_test, y_test)) (None with --image_dir).

    `mnist` (as `tfcore.data.load_mnist` returns) replaces loading from --data_dir.
    """
    if config.image_dir is not None:
        images = tfdata.load_image_folder(config.image_dir, size=(32, 32), grayscale=True)
        n = len(images)
        order = np.random.default_rng(config.seed).permutation(n)
        n_val = max(1, n // 10) if n >= 10 else n
        val = images[order[:n_val]]
        train = images[order[n_val:]] if n >= 10 else images
        train = tfdata.augment(train, config.augment_factor, seed=config.seed)
        return train * 2.0 - 1.0, val * 2.0 - 1.0, None
    mnist = mnist if mnist is not None else tfdata.load_mnist(config.data_dir)
    (x_train, _), (x_test, _) = mnist
    if config.train_limit:
        x_train = x_train[:config.train_limit]
    train = tfdata.mnist_images(x_train, scale="tanh", pad_to=32)
    val = tfdata.mnist_images(x_test[:config.val_examples], scale="tanh", pad_to=32)
    return train, val, mnist


class PeriodData:
    """A data source whose "epochs" are periods of `steps_per_epoch` steps.

    Wraps a `tfcore.data.DeviceDataset` (`inner`): global step g = period * K + j uses
    batch g % S of the inner epoch g // S (S = inner steps per epoch), so the data still
    runs over whole shuffled passes while evaluations happen every K steps.
    """

    def __init__(self, inner, steps_per_epoch: int):
        self.inner = inner
        self.steps_per_epoch = int(steps_per_epoch)

    def batch(self, epoch, step):
        g = tf.cast(epoch, tf.int64) * self.steps_per_epoch + tf.cast(step, tf.int64)
        s = self.inner.steps_per_epoch
        return self.inner.batch(g // s, g % s)


# -- callbacks --------------------------------------------------------------------------

class DiscriminatorPinnedStop(tfcb.Callback):
    """Stops when `monitor` (D's accuracy) is within `tol` of 0 or of 1 at `patience`
    consecutive epoch ends. `pinned` counts the current run of such epochs;
    `stopped_epoch` is set when it stops."""

    def __init__(self, monitor: str = "val_d_acc_batch_stats", patience: int = 3,
                 tol: float = 0.01):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if not (_is_real(tol) and 0 <= tol < 0.5):
            raise ValueError(f"tol must be in [0, 0.5), got {tol!r}")
        self.monitor, self.patience, self.tol = monitor, patience, float(tol)
        self.pinned = 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            log.warning("DiscriminatorPinnedStop: %r not in logs", self.monitor)
            return
        pinned = value <= self.tol or value >= 1.0 - self.tol
        self.pinned = self.pinned + 1 if pinned else 0
        if self.pinned >= self.patience:
            self.stopped_epoch = epoch
            self.loop.stop_training = True
            log.warning("stopping: %s = %.4g pinned at %s for %d evaluations", self.monitor,
                        value, "0" if value <= self.tol else "1", self.pinned)


class StepRecorder(tfcb.Callback):
    """The step metrics every `every` steps: kept in `records` and appended to
    `path` (JSON lines; on resume, lines past the restored step are dropped)."""

    def __init__(self, path: Optional[str], every: int):
        self.path, self.every = path, every
        self.records: List[Dict[str, Any]] = []

    def on_train_begin(self, logs=None):
        start = int(self.loop.step.numpy())
        self.records = []
        if self.path and os.path.exists(self.path):
            with open(self.path, "r", encoding="utf-8") as f:
                old = [json.loads(line) for line in f if line.strip()]
            self.records = [r for r in old if r.get("step", 0) <= start]
        if self.path:
            metrics_io.atomic_write_text(
                self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._last = start

    def on_batch_end(self, step, logs=None):
        if step // self.every > self._last // self.every:
            self._last = step
            record = {"step": int(step)}
            record.update({k: float(v) for k, v in (logs or {}).items()})
            self.records.append(record)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")


class SamplePictures(tfcb.Callback):
    """Writes samples_epoch_N.png and interpolation.png at every epoch end."""

    def __init__(self, workdir: str, grid_fn, interpolation_fn):
        self.workdir = workdir
        self.grid_fn, self.interpolation_fn = grid_fn, interpolation_fn
        self.grid = self.interpolation = None
        self.paths: List[str] = []

    def on_epoch_end(self, epoch, logs=None):
        self.grid, self.interpolation = self.grid_fn(), self.interpolation_fn()
        if self.loop.is_chief:
            self.paths.append(image_grid.save_png(
                os.path.join(self.workdir, f"samples_epoch_{epoch + 1}.png"), self.grid))
            image_grid.save_png(os.path.join(self.workdir, "interpolation.png"),
                                self.interpolation)


# -- the library call -----------------------------------------------------------------

def interpolation_latents(latent_shape, rows: int, steps: int, seed: int) -> np.ndarray:
    """[rows * steps, *latent_shape]: row r walks linearly from z_a[r] to z_b[r]
    (both U(-1, 1), NumPy seed `seed`) in `steps` points, ends included."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, size=(rows, 1, *latent_shape))
    b = rng.uniform(-1, 1, size=(rows, 1, *latent_shape))
    t = np.linspace(0.0, 1.0, steps).reshape((1, steps) + (1,) * len(latent_shape))
    return ((1 - t) * a + t * b).reshape((rows * steps, *latent_shape)).astype(np.float32)


def train_and_evaluate(config: DCGANConfig, workdir: str, *, mnist=None,
                       classifier=None, callbacks=()) -> Dict[str, Any]:
    """Trains the DCGAN per `config`; writes pictures, metrics.json, checkpoints.

    Args:
      config: a `DCGANConfig` (validated here).
      workdir: the run directory.
      mnist: optional ((x_train, y_train), (x_test, y_test)) as `load_mnist` returns.
      classifier: optional built VatCNN for the quality measurements (default: the
        `--classifier` workdir, else the cached plain CNN of `train.gan_eval`); only
        used when --eval_samples or --final_eval_samples is > 0 on MNIST.
      callbacks: extra `tfcore.training.callbacks.Callback`s.

    Returns:
      The metrics dict written to `workdir/metrics.json`.
    """

    if not workdir:
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    c = dataclasses.replace(config).validate()
    common.apply_determinism(c.seed, c.deterministic)
    os.makedirs(workdir, exist_ok=True)
    metrics_io.atomic_write_json(os.path.join(workdir, gan_eval.CONFIG_FILE),
                                 dataclasses.asdict(c))

    train, val, mnist = load_data(c, mnist)
    if c.batch_size > len(train):
        raise ValueError(f"--batch_size must be at most the {len(train)} training images, "
                         f"got {c.batch_size}")
    generator = dcgan.Generator(latent_dim=c.latent_dim or None, upsampling=c.generator)
    discriminator = dcgan.Discriminator(batchnorm=c.d_batchnorm,
                                        dense_units=c.d_dense_units)
    dcgan.build(generator, discriminator)
    g_opt, d_opt = dcgan.make_optimizers(c.preset, c.g_learning_rate, c.g_beta1,
                                         c.d_learning_rate, c.d_beta1)
    gan_step = dcgan.make_train_step(generator, discriminator, g_opt, d_opt,
                                     order=c.order, d_steps=c.d_steps, d_batch=c.d_batch,
                                     label_smoothing=c.label_smoothing)
    # --g_ema: a second generator holding the moving average of G's weights (and
    # BatchNorm statistics), updated after every G step; pictures, quality measures
    # and the export use it. D keeps training against the current G.
    ema_generator = None
    if c.g_ema:
        ema_generator = dcgan.Generator(latent_dim=c.latent_dim or None,
                                        upsampling=c.generator, name="generator_ema")
        ema_generator(tf.zeros([1, *generator.latent_shape]))
        for a, v in zip(ema_generator.variables_in_keras_order(),
                        generator.variables_in_keras_order()):
            a.assign(v)
    sampler = ema_generator or generator

    def step_fn(batch, seed):
        logs = gan_step(batch, seed)
        if ema_generator is not None:
            gan.ema_update(ema_generator.variables_in_keras_order(),
                           generator.variables_in_keras_order(),
                           gan.ema_decay(c.g_ema, g_opt.iterations - 1))
        logs["d_acc"] = 0.5 * (logs["d_acc_real"] + logs["d_acc_fake"])
        return logs

    source = tfdata.DeviceDataset(train, c.batch_size, seed=c.seed)
    if c.eval_every:
        source = PeriodData(source, c.eval_every)
    latent = tuple(generator.latent_shape)

    # -- evaluation: D on held-out real images and as many fresh fakes (from G in
    # inference mode), in batches of --batch_size, two ways:
    #   inference mode (BatchNorm's moving statistics): val_d_loss, val_d_acc_real, ...
    #   batch statistics, as D is trained (training=True without updating the moving
    #   statistics; 'split': real and fake batches apart, 'mixed': concatenated):
    #   val_d_loss_batch_stats, val_d_acc_real_batch_stats, ...
    bce = tf.nn.sigmoid_cross_entropy_with_logits

    def _sums(real_logits, fake_logits):
        return [tf.reduce_sum(bce(tf.ones_like(real_logits), real_logits)),
                tf.reduce_sum(bce(tf.zeros_like(fake_logits), fake_logits)),
                tf.reduce_sum(tf.cast(real_logits > 0, tf.float32)),
                tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32))]

    @tf.function(autograph=False)
    def d_eval_batch(real, z):
        fake = generator(z, training=False)
        inference = _sums(discriminator(real, training=False),
                          discriminator(fake, training=False))
        if c.d_batch == "split":
            r = discriminator(real, training=True, update_stats=False)
            f = discriminator(fake, training=True, update_stats=False)
        else:
            both = discriminator(tf.concat([real, fake], 0), training=True,
                                 update_stats=False)
            r, f = both[:tf.shape(real)[0]], both[tf.shape(real)[0]:]
        return tf.stack(inference + _sums(r, f))

    epoch_counter = [0]

    def d_validation() -> Dict[str, float]:
        rng = np.random.default_rng([c.seed, 1, epoch_counter[0]])
        epoch_counter[0] += 1
        sums = np.zeros(8)
        for i in range(0, len(val), c.batch_size):
            real = val[i:i + c.batch_size]
            z = rng.uniform(-1, 1, size=(len(real), *latent)).astype(np.float32)
            sums += d_eval_batch(tf.constant(real), tf.constant(z)).numpy()
        out = {}
        for suffix, (lr, lf, ar, af) in (("", sums[:4] / len(val)),
                                         ("_batch_stats", sums[4:] / len(val))):
            out.update({"d_loss" + suffix: lr + lf, "d_loss_real" + suffix: lr,
                        "d_loss_fake" + suffix: lf, "d_acc_real" + suffix: ar,
                        "d_acc_fake" + suffix: af, "d_acc" + suffix: 0.5 * (ar + af)})
        return out

    g_infer = tf.function(lambda z: sampler(z, training=False), autograph=False,
                          input_signature=[tf.TensorSpec([None, *latent], tf.float32)])
    quality = mnist is not None and (c.eval_samples or c.final_eval_samples)
    reference = None
    if quality and classifier is None:
        classifier = (gan_eval.load_classifier(c.classifier) if c.classifier
                      else gan_eval.cached_classifier(c.data_dir)[0])
    if quality and c.eval_samples:
        reference = gan_eval.real_reference(classifier, mnist[0][0], mnist[1][0],
                                            c.eval_samples, seed=c.seed)
        log.info("per-epoch quality on %d samples; real test vs train: classifier score "
                 "%.3f, Frechet distance %.3f", c.eval_samples,
                 reference.real_classifier_score, reference.real_frechet_distance)

    def eval_fn() -> Dict[str, float]:
        out = d_validation()
        if reference is not None:
            q = gan_eval.evaluate_generator(g_infer, classifier, latent,
                                            num_samples=c.eval_samples, seed=c.seed,
                                            reference=reference)
            out.update({k: q[k] for k in ("frechet_distance", "classifier_score",
                                          "classes_covered")})
        return out

    # -- pictures from fixed latents.
    grid_z = tf.constant(np.random.default_rng([c.seed, 2]).uniform(
        -1, 1, size=(c.grid_size ** 2, *latent)).astype(np.float32))
    interp_z = tf.constant(interpolation_latents(latent, c.interp_rows, c.interp_steps,
                                                 seed=c.seed + 3))

    def to_unit(images):
        return (np.asarray(images) + 1.0) / 2.0

    def grid_fn():
        return image_grid.image_grid(to_unit(g_infer(grid_z)), c.grid_size, c.grid_size)

    def interpolation_fn():
        return image_grid.image_grid(to_unit(g_infer(interp_z)), c.interp_rows,
                                     c.interp_steps)

    pictures = SamplePictures(workdir, grid_fn, interpolation_fn)
    recorder = StepRecorder(os.path.join(workdir, STEPS_FILE), c.log_every)
    timer = tfcb.EpochTimer()  # first, so its batch hook runs before the others'
    cbs: List[Any] = [timer, pictures, recorder]
    if c.tensorboard:
        cbs.append(tfcb.TensorBoard(
            log_every=c.log_every, histograms=False, graph=False, max_images=1,
            images=lambda: {"samples": pictures.grid[None] / 255.0,
                            "interpolation": pictures.interpolation[None] / 255.0}))
    if reference is not None:
        cbs.append(tfcb.ModelCheckpoint(save_best_only=True,
                                        monitor="val_frechet_distance", mode="min"))
    if c.fd_patience:
        cbs.append(tfcb.EarlyStopping("val_frechet_distance", mode="min",
                                      patience=c.fd_patience, restore_best_weights=True))
    pinned = None
    if c.pinned_patience:
        pinned = DiscriminatorPinnedStop(c.pinned_monitor, c.pinned_patience, c.pinned_tol)
        cbs.append(pinned)
    cbs += list(callbacks)

    objects = {"generator": generator, "discriminator": discriminator,
               "g_opt": g_opt, "d_opt": d_opt}
    if ema_generator is not None:
        objects["generator_ema"] = ema_generator
    start = time.perf_counter()
    history = loop.fit(step_fn, source, objects=objects,
                       eval_fn=eval_fn, epochs=c.epochs, steps=c.total_steps_cap,
                       workdir=workdir, seed=c.seed, resume=c.resume, jit=c.jit,
                       callbacks=cbs, progress=c.progress, log_every=c.log_every)
    seconds = time.perf_counter() - start

    metrics = metrics_io.read_metrics(workdir) or history.to_json()
    metrics.update({
        "steps": recorder.records,
        "seconds": seconds,
        "epoch_seconds": [e.get("epoch_seconds") for e in history.epochs],
        "steps_per_second": timer.steady_steps_per_second(),
        "global_step": int(history.loop.step.numpy()),
        "steps_per_epoch": source.steps_per_epoch,
        "num_train": len(train),
        "samples": [os.path.basename(p) for p in pictures.paths],
        "pinned_stop_epoch": pinned.stopped_epoch if pinned else None,
        "config": dataclasses.asdict(c),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    })
    if quality and c.final_eval_samples:
        result = gan_eval.evaluate_generator(g_infer, classifier, latent, mnist[0][0],
                                             mnist[1][0], num_samples=c.final_eval_samples,
                                             seed=c.seed)
        metrics.update(result)
        log.info("final (%d samples): classifier score %.3f (real %.3f), Frechet "
                 "distance %.3f (real %.3f), classes covered %d", c.final_eval_samples,
                 result["classifier_score"], result["real_classifier_score"],
                 result["frechet_distance"], result["real_frechet_distance"],
                 result["classes_covered"])
    if c.export:
        # The results first: a failing export must not lose the final evaluation.
        metrics_io.write_metrics(workdir, metrics)
        spec = tf.TensorSpec([None, *latent], tf.float32, name="z")
        metrics["saved_model"] = export.export_saved_model(
            sampler, os.path.join(workdir, "saved_model"), spec,
            fn=lambda z: {"images": sampler(z, training=False)})
    metrics_io.write_metrics(workdir, metrics)
    return metrics


# -- the binary -----------------------------------------------------------------------

def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the common flags (train/flags.py) and this binary's on `flag_values`
    (once). `__main__` calls it, so importing this module defines no flags."""
    common.define_flags(flag_values)
    if "d_batchnorm" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    d = DCGANConfig()
    flag_values.set_default("batch_size", d.batch_size)
    flag_values.set_default("epochs", d.epochs)
    flags.DEFINE_enum("generator", d.generator, list(GENERATORS), "upsample: "
                      "UpSampling2D + Conv2D (the write-up's); transpose: stride-2 "
                      "Conv2DTranspose (the DCGAN paper's).", **fv)
    flags.DEFINE_integer("latent_dim", d.latent_dim, "N: a flat z of N numbers "
                         "projected by a Dense layer to 4x4x4 (default 30, chosen by "
                         "measurement); 0: z of shape 4x4x4.", **fv)
    flags.DEFINE_boolean("d_batchnorm", d.d_batchnorm, "BatchNorm in the "
                         "discriminator.", **fv)
    flags.DEFINE_integer("d_dense_units", d.d_dense_units, "Width of D's hidden Dense "
                         "layer (the write-up's 2048).", **fv)
    flags.DEFINE_enum("d_batch", d.d_batch, list(D_BATCHES), "split: real and fake "
                      "through D separately; mixed: concatenated in one pass.", **fv)
    flags.DEFINE_enum("order", d.order, list(ORDERS), "Which network steps first.", **fv)
    flags.DEFINE_integer("d_steps", d.d_steps, "Discriminator steps per generator "
                         "step.", **fv)
    flags.DEFINE_enum("preset", d.preset, list(PRESETS), "Optimizer settings: default "
                      "(Adam 2e-4, beta_1 0.5 for both) or writeup (D: 1e-5, 0.1).", **fv)
    flags.DEFINE_float("g_learning_rate", None, "G's Adam learning rate (default: the "
                       "preset's).", **fv)
    flags.DEFINE_float("g_beta1", None, "G's Adam beta_1 (default: the preset's).", **fv)
    flags.DEFINE_float("d_learning_rate", None, "D's Adam learning rate (default: the "
                       "preset's).", **fv)
    flags.DEFINE_float("d_beta1", None, "D's Adam beta_1 (default: the preset's).", **fv)
    flags.DEFINE_float("label_smoothing", d.label_smoothing, "One-sided smoothing of "
                       "D's real label.", **fv)
    flags.DEFINE_float("g_ema", d.g_ema, "Decay of a moving average of G's weights "
                       "used for pictures, quality measures and the export (default "
                       "0.999, chosen by measurement; 0: off, the last G).", **fv)
    flags.DEFINE_integer("max_steps", None, "Cap on the global steps (quick looks).", **fv)
    flags.DEFINE_integer("eval_every", d.eval_every, "0: evaluate per epoch; N: every "
                         "N steps (an 'epoch' is then N steps).", **fv)
    flags.DEFINE_string("image_dir", None, "Train on this folder's images instead of "
                        "MNIST.", **fv)
    flags.DEFINE_integer("augment_factor", d.augment_factor, "With --image_dir: grow "
                         "the set this many times by random scale/shift/brightness.", **fv)
    flags.DEFINE_integer("train_limit", d.train_limit, "Use the first N MNIST training "
                         "images (0: all).", **fv)
    flags.DEFINE_integer("val_examples", d.val_examples, "Held-out real images (test "
                         "set) for D's validation.", **fv)
    flags.DEFINE_integer("eval_samples", d.eval_samples, "Samples for the per-epoch "
                         "Frechet distance / classifier score (0: off).", **fv)
    flags.DEFINE_integer("final_eval_samples", d.final_eval_samples, "Samples for the "
                         "final measurement (0: off).", **fv)
    flags.DEFINE_string("classifier", None, "A train.vat workdir (default: the cached "
                        "plain CNN of train.gan_eval).", **fv)
    flags.DEFINE_integer("fd_patience", d.fd_patience, "Early stopping: epochs without a "
                         "better val Frechet distance (0: off).", **fv)
    flags.DEFINE_integer("pinned_patience", d.pinned_patience, "Stop when D's accuracy "
                         "is pinned at 0 or 1 for this many evaluations (0: off).", **fv)
    flags.DEFINE_float("pinned_tol", d.pinned_tol, "Pinned means within this of 0 or 1.",
                       **fv)
    flags.DEFINE_string("pinned_monitor", d.pinned_monitor, "The accuracy watched for "
                        "the pinned stop (e.g. val_d_acc_batch_stats, val_d_acc, "
                        "d_acc).", **fv)
    flags.DEFINE_integer("grid_size", d.grid_size, "Sample grid: N x N images.", **fv)
    flags.DEFINE_integer("interp_rows", d.interp_rows, "Interpolation rows.", **fv)
    flags.DEFINE_integer("interp_steps", d.interp_steps, "Images per interpolation row.",
                         **fv)
    flags.DEFINE_integer("log_every", d.log_every, "Steps between step-metric records "
                         "and progress lines.", **fv)

    def check(name, fn, message):
        flags.register_validator(name, fn, message=message, **fv)

    for name in ("d_steps", "d_dense_units", "augment_factor", "grid_size", "interp_rows",
                 "log_every"):
        check(name, lambda v: v is not None and v > 0, f"--{name} must be positive")
    check("interp_steps", lambda v: v is not None and v >= 2, "--interp_steps must be >= 2")
    check("val_examples", lambda v: v is not None and v >= 2, "--val_examples must be >= 2")
    for name in ("latent_dim", "eval_every", "train_limit", "fd_patience",
                 "pinned_patience"):
        check(name, lambda v: v is not None and v >= 0, f"--{name} must be >= 0")
    for name in ("eval_samples", "final_eval_samples"):
        check(name, lambda v: v is not None and (v == 0 or v >= 2),
              f"--{name} must be 0 (off) or >= 2")
    check("max_steps", lambda v: v is None or v > 0, "--max_steps must be positive")
    for name in ("g_learning_rate", "d_learning_rate"):
        check(name, lambda v: v is None or (math.isfinite(v) and v > 0),
              f"--{name} must be > 0")
    for name in ("g_beta1", "d_beta1"):
        check(name, lambda v: v is None or 0 <= v < 1, f"--{name} must be in [0, 1)")
    check("label_smoothing", lambda v: v is not None and 0 <= v < 1,
          "--label_smoothing must be in [0, 1)")
    check("g_ema", lambda v: v is not None and 0 <= v < 1, "--g_ema must be in [0, 1)")
    check("pinned_tol", lambda v: v is not None and 0 <= v < 0.5,
          "--pinned_tol must be in [0, 0.5)")
    check("image_dir", lambda v: v is None or os.path.isdir(v),
          "--image_dir must be an existing directory")
    check("classifier", lambda v: v is None or os.path.isdir(v),
          "--classifier must be an existing directory")
    # The common flags this binary does not use: refuse them rather than ignore them.
    check("optimizer", lambda v: v is None, "--optimizer is not used by train.dcgan (two "
          "Adams: use --preset, --g_learning_rate, --d_learning_rate, --g_beta1, "
          "--d_beta1)")
    check("learning_rate", lambda v: v is None, "--learning_rate is not used by "
          "train.dcgan: use --g_learning_rate / --d_learning_rate")
    check("strategy", lambda v: v == "default", "--strategy: train.dcgan runs on one "
          "device (default)")
    flags.register_multi_flags_validator(
        ["augment_factor", "image_dir"],
        lambda f: f["augment_factor"] == 1 or f["image_dir"] is not None,
        message="--augment_factor needs --image_dir", **fv)
    flags.register_multi_flags_validator(
        ["fd_patience", "eval_samples"],
        lambda f: f["fd_patience"] == 0 or f["eval_samples"] > 0,
        message="--fd_patience needs --eval_samples > 0", **fv)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> DCGANConfig:
    """The `DCGANConfig` of the parsed flags."""
    names = [f.name for f in dataclasses.fields(DCGANConfig)
             if f.name not in ("tensorboard", "progress")]
    return DCGANConfig(**{n: flag_values[n].value for n in names})


def summary_line(metrics: Dict[str, Any]) -> str:
    keys = ("classifier_score", "frechet_distance", "classes_covered",
            "real_classifier_score", "real_frechet_distance", "global_step", "seconds",
            "steps_per_second", "status")
    return json.dumps({k: metrics.get(k) for k in keys})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    config = config_from_flags(FLAGS)
    try:
        config.validate()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    logging.getLogger("tfcore").setLevel(logging.INFO)
    logging.getLogger("train").setLevel(logging.INFO)
    metrics = train_and_evaluate(config, FLAGS.workdir)
    print(summary_line(metrics), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    define_flags(FLAGS)
    app.run(main)
