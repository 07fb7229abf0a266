"""The pieces of `train.dcgan`'s run around the step: its data periods, D's validation,
the pinned-discriminator stop, the step records and the sample pictures.

* `PeriodData`: "epochs" of N steps (`--eval_every`) over whole shuffled passes.
* `DiscriminatorValidation`: the per-epoch `eval_fn` (D on held-out real images and as
  many fresh fakes, two ways) and a callback that keys its fake noise by the epoch.
* `DiscriminatorPinnedStop`: stop when D's accuracy sits at 0 or 1 (one network won).
* `StepRecorder`: the step metrics every N steps, streamed to `steps.jsonl`.
* `SamplePictures` + `interpolation_latents`: the sample grid and the latent walks.

The callbacks keep what they must remember in the checkpoint's run state
(`get_state` / `set_state`), so a resumed run continues them.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfcore import checks, image_grid
from tfcore.training import callbacks as tfcb
from tfcore.training import metrics_io

log = logging.getLogger("train.dcgan")


class PeriodData:
    """A data source whose "epochs" are periods of `steps_per_epoch` steps.

    Wraps a `tfcore.data.DeviceDataset` (`inner`): global step g = period * K + j uses
    batch g % S of the inner epoch g // S (S = inner steps per epoch), so the data still
    runs over whole shuffled passes while evaluations happen every K steps.
    """

    def __init__(self, inner, steps_per_epoch: int):
        self.inner = inner
        self.steps_per_epoch = checks.check_int(steps_per_epoch, "steps_per_epoch", low=1)

    def batch(self, epoch, step):
        g = tf.cast(epoch, tf.int64) * self.steps_per_epoch + tf.cast(step, tf.int64)
        s = self.inner.steps_per_epoch
        return self.inner.batch(g // s, g % s)


class DiscriminatorValidation(tfcb.Callback):
    """D on held-out real images and as many fresh fakes G(z) (G in inference mode),
    in batches of `batch_size`; calling it returns the epoch's numbers (the loop logs
    them as `val_<name>`).

    Two ways, each giving d_loss_real, d_loss_fake, d_loss (their sum), d_acc_real
    (share of real logits > 0), d_acc_fake (share of fake logits < 0) and d_acc (their
    mean), means over the M held-out images:
      inference mode (BatchNorm's moving statistics): `d_loss`, `d_acc_real`, ...;
      batch statistics, as D is trained (`training=True` without updating the moving
      statistics; 'split': real and fake batches apart, 'mixed': concatenated):
      `d_loss_batch_stats`, `d_acc_real_batch_stats`, ...
    z ~ U(-1, 1) [M, *latent_shape] from NumPy seed [seed, 1, epoch]: the epoch index
    comes from `on_epoch_begin`, so a resumed run draws what a straight one does.

    Args:
      generator, discriminator: the networks (`models.dcgan`).
      images: the held-out real images [M, 32, 32, 1] in [-1, 1].
      batch_size: images per compiled call.
      d_batch: 'split' or 'mixed', as D is trained.
      seed: the run's seed.
    """

    def __init__(self, generator, discriminator, images: np.ndarray, batch_size: int,
                 d_batch: str, seed: int):
        self.generator, self.discriminator = generator, discriminator
        self.images, self.batch_size = images, batch_size
        self.split, self.seed, self.epoch = d_batch == "split", seed, 0
        self._batch_fn = tf.function(self._sums_of_batch, autograph=False)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    @staticmethod
    def _sums(real_logits, fake_logits):
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        return [tf.reduce_sum(bce(tf.ones_like(real_logits), real_logits)),
                tf.reduce_sum(bce(tf.zeros_like(fake_logits), fake_logits)),
                tf.reduce_sum(tf.cast(real_logits > 0, tf.float32)),
                tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32))]

    def _sums_of_batch(self, real, z):
        d = self.discriminator
        fake = self.generator(z, training=False)
        inference = self._sums(d(real, training=False), d(fake, training=False))
        if self.split:
            r = d(real, training=True, update_stats=False)
            f = d(fake, training=True, update_stats=False)
        else:
            both = d(tf.concat([real, fake], 0), training=True, update_stats=False)
            r, f = both[:tf.shape(real)[0]], both[tf.shape(real)[0]:]
        return tf.stack(inference + self._sums(r, f))

    def __call__(self) -> Dict[str, float]:
        rng = np.random.default_rng([self.seed, 1, self.epoch])
        latent = tuple(self.generator.latent_shape)
        n, sums = len(self.images), np.zeros(8)
        for i in range(0, n, self.batch_size):
            real = self.images[i:i + self.batch_size]
            z = rng.uniform(-1, 1, size=(len(real), *latent)).astype(np.float32)
            sums += self._batch_fn(tf.constant(real), tf.constant(z)).numpy()
        out = {}
        for suffix, (lr, lf, ar, af) in (("", sums[:4] / n), ("_batch_stats", sums[4:] / n)):
            out.update({"d_loss" + suffix: lr + lf, "d_loss_real" + suffix: lr,
                        "d_loss_fake" + suffix: lf, "d_acc_real" + suffix: ar,
                        "d_acc_fake" + suffix: af, "d_acc" + suffix: 0.5 * (ar + af)})
        return out


class DiscriminatorPinnedStop(tfcb.MonitoredCallback):
    """Stops when `monitor` (D's accuracy) is within `tol` of 0 or of 1 at `patience`
    consecutive epoch ends (one network has won: training no longer teaches G).

    Args:
      monitor: the accuracy in the epoch logs (default 'val_d_acc_batch_stats').
      patience: consecutive pinned epochs before stopping (>= 1).
      tol: pinned means value <= tol or value >= 1 - tol, tol in [0, 0.5).

    Attributes:
      pinned: the current run of pinned epochs; stopped_epoch: the epoch it stopped
      after (None if it did not). Both survive a resume (`state_keys`).
    """

    state_keys = ("pinned", "stopped_epoch")

    def __init__(self, monitor: str = "val_d_acc_batch_stats", patience: int = 3,
                 tol: float = 0.01):
        super().__init__(monitor, mode="max")
        self.patience = checks.check_int(patience, "patience", low=1)
        self.tol = checks.check_real(tol, "tol", low=0, high=0.5, high_open=True)
        self.pinned, self.stopped_epoch = 0, None

    def on_train_begin(self, logs=None):
        self.pinned, self.stopped_epoch = 0, None  # a resume sets them back after this

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        if value is None:
            return
        pinned = value <= self.tol or value >= 1.0 - self.tol
        self.pinned = self.pinned + 1 if pinned else 0
        if self.pinned >= self.patience:
            self.stopped_epoch = epoch
            self.loop.stop_training = True
            log.warning("stopping: %s = %.4g pinned at %s for %d evaluations", self.monitor,
                        value, "0" if value <= self.tol else "1", self.pinned)


class StepRecorder(tfcb.Callback):
    """The step metrics every `every` steps: kept in `records` ({'step', name: value})
    and appended to `path` (JSON lines; None: kept only). On resume the file's records
    up to the restored step are kept and later ones (past the checkpoint) dropped."""

    def __init__(self, path: Optional[str], every: int):
        self.path = path
        self.every = checks.check_int(every, "every", low=1)
        self.records: List[Dict[str, Any]] = []
        self._last = 0

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


def interpolation_latents(latent_shape: Sequence[int], rows: int, steps: int,
                          seed: int) -> np.ndarray:
    """[rows * steps, *latent_shape]: row r walks linearly from z_a[r] to z_b[r]
    (both U(-1, 1), NumPy seed `seed`) in `steps` points, ends included."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, size=(rows, 1, *latent_shape))
    b = rng.uniform(-1, 1, size=(rows, 1, *latent_shape))
    t = np.linspace(0.0, 1.0, steps).reshape((1, steps) + (1,) * len(latent_shape))
    return ((1 - t) * a + t * b).reshape((rows * steps, *latent_shape)).astype(np.float32)


class SamplePictures(tfcb.Callback):
    """At every epoch end: `grid` (a `grid_size` x `grid_size` grid of G(z) for a fixed
    z ~ U(-1, 1), NumPy seed [seed, 2]) and `interpolation` (`interp_rows` rows of
    `interp_steps` images along `interpolation_latents(..., seed + 3)`), uint8 images
    [H, W, 1]; written to `workdir` (None: kept only) as `samples_epoch_<N>.png`
    (N = epoch + 1) and `interpolation.png` (overwritten). `paths` lists the sample
    pictures' names, those of earlier attempts included (run state).

    Args:
      workdir: where the PNGs go (None: nowhere).
      sample: `sample(z) -> images [n, 32, 32, 1] in [-1, 1]` (G in inference mode).
      latent_shape: z's shape without the batch axis.
      grid_size, interp_rows, interp_steps, seed: see above.
    """

    def __init__(self, workdir: Optional[str], sample: Callable, latent_shape,
                 grid_size: int, interp_rows: int, interp_steps: int, seed: int):
        self.workdir, self.sample = workdir, sample
        self.shape = (grid_size, grid_size, interp_rows, interp_steps)
        self.grid_z = tf.constant(np.random.default_rng([seed, 2]).uniform(
            -1, 1, size=(grid_size ** 2, *latent_shape)).astype(np.float32))
        self.interp_z = tf.constant(interpolation_latents(latent_shape, interp_rows,
                                                          interp_steps, seed=seed + 3))
        self.grid = self.interpolation = None
        self.paths: List[str] = []

    def _pictures(self, z, rows: int, cols: int) -> np.ndarray:
        return image_grid.image_grid((np.asarray(self.sample(z)) + 1.0) / 2.0, rows, cols)

    def on_epoch_end(self, epoch, logs=None):
        g_rows, g_cols, i_rows, i_cols = self.shape
        self.grid = self._pictures(self.grid_z, g_rows, g_cols)
        self.interpolation = self._pictures(self.interp_z, i_rows, i_cols)
        name = f"samples_epoch_{epoch + 1}.png"
        if self.workdir and self.loop.is_chief:
            image_grid.save_png(os.path.join(self.workdir, name), self.grid)
            image_grid.save_png(os.path.join(self.workdir, "interpolation.png"),
                                self.interpolation)
        if name not in self.paths:
            self.paths.append(name)

    def images(self) -> Dict[str, np.ndarray]:
        """The newest pictures for TensorBoard: {'samples', 'interpolation'} as floats
        [1, H, W, 1] in [0, 1]."""
        return {"samples": self.grid[None] / 255.0,
                "interpolation": self.interpolation[None] / 255.0}

    def get_state(self) -> Optional[dict]:
        return {"paths": list(self.paths)}

    def set_state(self, state: dict) -> None:
        self.paths = list(state.get("paths", []))


def stopping_callbacks(config, workdir: Optional[str], with_quality: bool):
    """(the stopping and saving callbacks of a `train.dcgan_lib.DCGANConfig`: the best
    checkpoint by the Frechet distance, its patience, the pinned-D stop; the pinned
    stop or None)."""
    cbs = []
    if with_quality and workdir:
        cbs.append(tfcb.ModelCheckpoint(save_best_only=True, monitor="val_frechet_distance",
                                        mode="min"))
    if config.fd_patience:
        cbs.append(tfcb.EarlyStopping("val_frechet_distance", mode="min",
                                      patience=config.fd_patience,
                                      restore_best_weights=True))
    pinned = None
    if config.pinned_patience:
        pinned = DiscriminatorPinnedStop(config.pinned_monitor, config.pinned_patience,
                                         config.pinned_tol)
        cbs.append(pinned)
    return cbs, pinned
