"""Train the VAT classifier (the Keras MNIST CNN, `models/vat_cnn.py`) on MNIST.

    python -m train.vat --workdir=runs/vat --vat --dropout=false --epochs=12   # make run
    python -m train.vat --workdir=runs/plain --vat=false --dropout=true
    python -m train.vat --workdir=runs/vat100 --num_labeled=100 --preset=official
    python -m train.vat --workdir=runs/vat100_entmin --num_labeled=100 --preset=official \
        --entmin --translate=2 --eps=1.5 --epochs=15   # make vat100 (README: 1.36 %)

Presets (explicit flags win over them):
* `writeup` (default): the Keras VAT write-up: xi=10, eps=1, one power iteration,
  Adadelta with Keras 1's learning rate 1.0, batch 128, 12 epochs.
* `official`: the official implementation's VAT constants: xi=1e-6, eps=2.1 with all
  labels and eps=0.3 with --num_labeled > 0, with Adam (learning rate 1e-3).

Full labels (--num_labeled=0): each step takes a batch of --batch_size labeled images;
the loss is CE + vat_weight * VAT on that same batch (the CE pass's logits are the
VAT target). An epoch is one pass over the training images (N // batch_size steps).

Semi-supervised (--num_labeled=N > 0): a class-balanced subset of N training images
keeps its labels (`tfcore.data.balanced_subset`, fixed by --split_seed); EVERY training
image (the labeled ones too) is also used unlabeled. Each step takes
--unlabeled_batch_size unlabeled images (for VAT, and the entropy with --entmin) and
--labeled_batch_size labeled ones (for the CE). An epoch is one pass over the
unlabeled images (N_train // unlabeled_batch_size steps); the labeled images are
cycled meanwhile, reshuffled at every pass over them (so with 100 labels and 32 per
batch, a labeled image is seen ~150 times per epoch). --batch_size is unused there.

Evaluation: the test set once, at the end (test_accuracy, test_loss); it never picks
anything. --val_size=N holds out N training images as the per-epoch validation set
(`val_loss`, `val_accuracy` in the history), the one to use for choosing
hyperparameters; never labeled ones: the labeled subset is drawn first, so
--val_size does not change it. The default 0 trains on all 60,000
images, the write-up's protocol. --test_each_epoch adds the test metrics to every
epoch's log (a learning curve for reports, not for selection). With a validation set,
--early_stopping_patience=N stops after N epochs without a better validation accuracy
and tests (and exports) the best epoch's weights; `early_stopping` in metrics.json
says which epoch (its state restarts on --resume). --lr_decay_fraction=f decays the
rate linearly to 0 over the run's last share f (the VAT paper's schedule).
Options beyond the write-up: --batch_norm (BatchNorm after each conv; the perturbed
passes leave its moving statistics alone) and --translate=N (shift every training
image by up to N whole pixels, a fresh draw each step).

Seeds: --split_seed (default 0) alone chooses the held-out validation images and the
labeled subset (`split_indices`), so runs that differ only in --seed (an ensemble's
members, repeated runs) hold out the same images; --seed drives everything random in
training: initialisation, data order, dropout masks, VAT's random directions.
`split_digest` in metrics.json fingerprints the split (equal digests: the same
validation and labeled images).

Writes <workdir>/metrics.json (also printed): `test_accuracy`, `test_loss`,
`test_error`, `split_digest`, `epoch_seconds` (the training time of each epoch, excluding
evaluation; the first epoch includes tracing/compilation), `steps_per_second` (the
steady state: epochs after the first of this process, or all when there is one),
`num_params`, `config`, plus the loop's `status`, `step`, `final`, `history`,
`epochs`. Checkpoints go to <workdir>/checkpoints (--resume continues from the
newest), and with --export a SavedModel to <workdir>/saved_model (`images`
[N, 28, 28, 1] float in [0, 1] -> `probabilities` [N, 10]).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

from models import vat_cnn
from tfcore.training import callbacks as tfcallbacks
from tfcore import data as tfdata
from tfcore import optimizers
from tfcore.training import distribute, export, loop, lr_schedule, metrics_io
from train import flags as common

FLAGS = common.FLAGS

PRESETS = ("writeup", "official")
WRITEUP = {"xi": 10.0, "eps": 1.0, "optimizer": "adadelta", "learning_rate": 1.0}
OFFICIAL = {"xi": 1e-6, "eps": 2.1, "eps_semi_supervised": 0.3, "optimizer": "adam",
            "learning_rate": 1e-3}
NUM_CLASSES = 10


@dataclasses.dataclass
class VatConfig:
    """Everything `train_and_evaluate` needs (the flags of the same names).

    `xi`, `eps`, `optimizer`, `learning_rate` left None take the `preset`'s values
    (`resolved()`); limits of 0 mean "all".
    """
    preset: str = "writeup"
    dropout: bool = False
    batch_norm: bool = False
    translate: int = 0
    vat: bool = True
    xi: Optional[float] = None
    eps: Optional[float] = None
    power_iterations: int = 1
    hvp: str = "finite_difference"
    vat_weight: float = 1.0
    entmin: bool = False
    shared_dropout_mask: bool = True
    num_labeled: int = 0
    labeled_batch_size: int = 32
    unlabeled_batch_size: int = 128
    epochs: Optional[int] = 12
    steps: Optional[int] = None
    batch_size: int = 128
    optimizer: Optional[str] = None
    learning_rate: Optional[float] = None
    lr_decay_fraction: float = 0.0
    early_stopping_patience: int = 0
    seed: int = 0
    split_seed: int = 0
    data_dir: Optional[str] = None
    resume: bool = False
    export: bool = False
    jit: str = "auto"
    val_size: int = 0
    train_limit: int = 0
    test_limit: int = 0
    eval_batch_size: int = 1000
    steps_per_call: int = 1
    test_each_epoch: bool = False
    progress: bool = True
    log_every: int = 100

    def resolved(self) -> "VatConfig":
        """A copy with the preset's values filled in where None; validated."""
        self.validate()
        preset = WRITEUP if self.preset == "writeup" else OFFICIAL
        eps = preset["eps"]
        if self.preset == "official" and self.num_labeled > 0:
            eps = preset["eps_semi_supervised"]
        out = dataclasses.replace(
            self,
            xi=preset["xi"] if self.xi is None else self.xi,
            eps=eps if self.eps is None else self.eps,
            optimizer=(self.optimizer or preset["optimizer"]).lower(),
            learning_rate=(preset["learning_rate"] if self.learning_rate is None
                           else self.learning_rate))
        out.validate()
        return out

    def validate(self) -> None:
        """Raises ValueError naming the flag (e.g. `--eps`) and quoting the bad value."""
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, "
                             f"got {self.preset!r}")
        for name in ("dropout", "batch_norm", "vat", "entmin", "shared_dropout_mask", "resume",
                     "export", "test_each_epoch", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"--{name} must be a bool, got {getattr(self, name)!r}")
        _check_real(self.xi, "xi", allow_zero=False, allow_none=True)
        _check_real(self.eps, "eps", allow_zero=True, allow_none=True)
        _check_real(self.vat_weight, "vat_weight", allow_zero=True)
        _check_real(self.learning_rate, "learning_rate", allow_zero=False, allow_none=True)
        if (isinstance(self.lr_decay_fraction, bool)
                or not isinstance(self.lr_decay_fraction, (int, float))
                or not 0.0 <= self.lr_decay_fraction <= 1.0):
            raise ValueError(f"--lr_decay_fraction must be in [0, 1], got "
                             f"{self.lr_decay_fraction!r}")
        _check_int(self.power_iterations, "power_iterations", low=0)
        _check_int(self.num_labeled, "num_labeled", low=0)
        if self.num_labeled % NUM_CLASSES:
            raise ValueError(f"--num_labeled must be 0 or a multiple of {NUM_CLASSES} "
                             f"(a class-balanced subset), got {self.num_labeled!r}")
        for name in ("labeled_batch_size", "unlabeled_batch_size", "batch_size",
                     "eval_batch_size", "steps_per_call", "log_every"):
            _check_int(getattr(self, name), name, low=1)
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, low=1)
        if self.epochs is None and self.steps is None:
            raise ValueError("give --epochs or --steps (a positive integer), got neither")
        for name in ("val_size", "train_limit", "test_limit", "early_stopping_patience",
                     "translate"):
            _check_int(getattr(self, name), name, low=0)
        if self.early_stopping_patience and not self.val_size:
            raise ValueError(f"--early_stopping_patience={self.early_stopping_patience} "
                             f"needs a validation set (--val_size > 0), got --val_size=0")
        _check_int(self.seed, "seed", low=None)
        _check_int(self.split_seed, "split_seed", low=0)
        if self.optimizer is not None and (not isinstance(self.optimizer, str) or
                                           self.optimizer.lower() not in common.OPTIMIZERS):
            raise ValueError(f"--optimizer must be one of {', '.join(common.OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if str(self.jit).lower() not in common.JIT_MODES:
            raise ValueError(f"--jit must be one of {', '.join(common.JIT_MODES)}, "
                             f"got {self.jit!r}")


def _check_real(value, name: str, allow_zero: bool, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"--{name} must be a finite number {bound}, got {value!r}")


def _check_int(value, name: str, low: Optional[int]) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok and low is not None:
        ok = value >= low
    if not ok:
        bound = "" if low is None else (" >= 0" if low == 0 else " >= 1")
        raise ValueError(f"--{name} must be an integer{bound}, got {value!r}")


# -- data ---------------------------------------------------------------------------

class SemiSupervisedData:
    """Batches `{'labeled': (x_l, y_l), 'unlabeled': x_u}` for `tfcore.loop`.

    Epoch k = one pass over the unlabeled images in the order
    `tfcore.data.tfdata.permutation_tensor(N_u, seed, k)` (`steps_per_epoch = N_u //
    unlabeled_batch_size`, the remainder dropped). The labeled images form an endless
    stream of passes, pass m in the order `tfdata.permutation_tensor(N_l, seed, -2 - m)` (a
    stream disjoint from the unlabeled one); global step g takes its items
    g * B_l ... (g + 1) * B_l - 1 (B_l may exceed N_l). Everything is a function of
    (seed, epoch, step), so a resumed run sees the same batches.

    Args:
      labeled: (x_l [N_l, ...], y_l [N_l]) arrays.
      unlabeled: x_u [N_u, ...].
      labeled_batch_size, unlabeled_batch_size: B_l, B_u.
      seed: data-order seed.
    """

    def __init__(self, labeled, unlabeled, labeled_batch_size: int,
                 unlabeled_batch_size: int, seed: int = 0):
        x_l, y_l = labeled
        if len(x_l) != len(y_l) or len(x_l) == 0:
            raise ValueError(f"labeled x and y must be non-empty and of equal length, got "
                             f"{len(x_l)} and {len(y_l)}")
        if unlabeled_batch_size > len(unlabeled):
            raise ValueError(f"--unlabeled_batch_size must be at most the number of "
                             f"unlabeled images {len(unlabeled)}, got {unlabeled_batch_size}")
        self.x_l, self.y_l = tf.constant(x_l), tf.constant(y_l)
        self.x_u = tf.constant(unlabeled)
        self.num_labeled, self.num_unlabeled = len(x_l), len(unlabeled)
        self.labeled_batch_size = int(labeled_batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size)
        self.batch_size = self.unlabeled_batch_size
        self.steps_per_epoch = self.num_unlabeled // self.unlabeled_batch_size
        self.seed = int(seed)
        # Labeled passes a batch can touch: ceil(B_l / N_l) + 1.
        self._passes = -(-self.labeled_batch_size // self.num_labeled) + 1

    def labeled_indices(self, global_step):
        """int32 [B_l]: the labeled items of global step `global_step`."""
        n, b = self.num_labeled, self.labeled_batch_size
        pos = tf.cast(global_step, tf.int64) * b + tf.range(b, dtype=tf.int64)
        first = pos[0] // n
        perms = tf.stack([tfdata.permutation_tensor(n, self.seed, -2 - (first + k))
                          for k in range(self._passes)])
        where = tf.stack([pos // n - first, pos % n], axis=1)
        return tf.gather_nd(perms, where)

    def batch(self, epoch, step):
        """The batch of (epoch, step) (Python ints or scalar tensors)."""
        epoch = tf.cast(epoch, tf.int64)
        step = tf.cast(step, tf.int64)
        perm = tfdata.permutation_tensor(self.num_unlabeled, self.seed, epoch)
        idx_u = perm[step * self.unlabeled_batch_size:
                     (step + 1) * self.unlabeled_batch_size]
        idx_u = tf.ensure_shape(idx_u, [self.unlabeled_batch_size])
        idx_l = self.labeled_indices(epoch * self.steps_per_epoch + step)
        return {"labeled": (tf.gather(self.x_l, idx_l), tf.gather(self.y_l, idx_l)),
                "unlabeled": tf.gather(self.x_u, idx_u)}


def load_data(config: VatConfig, data=None):
    """((x_train, y_train), (x_test, y_test)): float32 [N, 28, 28, 1] in [0, 1], int32.

    `data` (uint8 arrays as `tfcore.data.load_mnist` returns) replaces loading from
    `config.data_dir`; `train_limit` / `test_limit` keep the first N images.
    """
    (x_tr, y_tr), (x_te, y_te) = data if data is not None else tfdata.load_mnist(
        config.data_dir)
    if config.train_limit:
        x_tr, y_tr = x_tr[:config.train_limit], y_tr[:config.train_limit]
    if config.test_limit:
        x_te, y_te = x_te[:config.test_limit], y_te[:config.test_limit]
    return ((tfdata.mnist_images(x_tr), np.asarray(y_tr, np.int32)),
            (tfdata.mnist_images(x_te), np.asarray(y_te, np.int32)))


def split_indices(labels: np.ndarray, config: VatConfig):
    """The data split of `config`, fixed by `config.split_seed` (never by `seed`).

    The labeled subset is drawn first, from all N images
    (`tfcore.data.balanced_subset(..., num_labeled, split_seed)`), and the validation
    images are held out from the others (`tfcore.data.train_val_split(...,
    val_size, split_seed)`), so --val_size never changes which images carry labels: a
    run that chose its hyperparameters on a validation split and the final run
    without one train on the same labeled images.

    Args:
      labels: int labels [N] of the (limited) training set.
      config: uses `val_size`, `num_labeled`, `split_seed`.

    Returns:
      (train_idx, val_idx, labeled_idx): sorted int indices into the N images: the
      training images (the labeled ones included; all that are not held out), the
      held-out validation images (empty when val_size is 0) and the labeled subset
      (empty when num_labeled is 0).

    Raises:
      ValueError: a val_size or num_labeled that the N images cannot provide.
    """
    labels = np.asarray(labels)
    n = len(labels)
    everything = np.arange(n)
    labeled_idx = np.zeros([0], np.int64)
    if config.num_labeled:
        if config.num_labeled > n:
            raise ValueError(f"--num_labeled must be at most the {n} training images, "
                             f"got {config.num_labeled}")
        labeled_idx = tfdata.balanced_subset(everything, labels, config.num_labeled,
                                             config.split_seed, num_classes=NUM_CLASSES)
    train_idx, val_idx = everything, np.zeros([0], np.int64)
    if config.val_size:
        rest = np.setdiff1d(everything, labeled_idx)
        if config.val_size >= len(rest):
            raise ValueError(f"--val_size must be smaller than the {len(rest)} training "
                             f"images that are not labeled, got {config.val_size}")
        (_, _), (val_idx, _) = tfdata.train_val_split(rest, labels[rest],
                                                      config.val_size, config.split_seed)
        train_idx = np.setdiff1d(everything, val_idx)
    return train_idx, val_idx, labeled_idx


def split_digest(val_idx: np.ndarray, labeled_idx: np.ndarray) -> str:
    """A short fingerprint (SHA-256, 16 hex digits) of the held-out and labeled
    indices: equal digests mean the same split."""
    h = hashlib.sha256()
    for part in (val_idx, labeled_idx):
        h.update(np.asarray(part, np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


# -- test monitoring ----------------------------------------------------------------

class TestMonitor(tfcallbacks.Callback):
    """Adds `test_loss` / `test_accuracy` to each epoch's logs (for reports only)."""

    def __init__(self, eval_fn):
        self.eval_fn = eval_fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({"test_" + k: v for k, v in self.eval_fn().items()})


# -- the library call -----------------------------------------------------------------

def train_and_evaluate(config: VatConfig, workdir: Optional[str], *, data=None,
                       strategy=None, callbacks: Sequence = ()) -> Dict[str, Any]:
    """Trains the VAT classifier per `config`, evaluates it on the test set.

    Args:
      config: a `VatConfig` (unresolved preset values are filled in).
      workdir: run directory (metrics.json, checkpoints, saved_model), or None to
        save nothing (then `resume` and `export` are refused).
      data: optional ((x_train, y_train), (x_test, y_test)) uint8/int arrays, as
        `tfcore.data.load_mnist` returns (default: loaded from `config.data_dir`).
      strategy: a `tf.distribute.Strategy` (default: the current one).
      callbacks: extra `tfcore.training.callbacks.Callback`s.

    Returns:
      The metrics dict written to <workdir>/metrics.json (see the module docstring).

    Raises:
      ValueError: a bad config value (the message names the flag), or a labeled
        subset / batch size that the data cannot provide.
    """

    config = config.resolved()
    if not workdir and (config.resume or config.export):
        raise ValueError("--resume and --export need --workdir")
    strategy = strategy or tf.distribute.get_strategy()

    (x_train, y_train), (x_test, y_test) = load_data(config, data)
    train_idx, val_idx, labeled_idx = split_indices(y_train, config)
    val = (x_train[val_idx], y_train[val_idx]) if config.val_size else None
    labeled = (x_train[labeled_idx], y_train[labeled_idx])
    x_train, y_train = x_train[train_idx], y_train[train_idx]
    if config.num_labeled:
        source = SemiSupervisedData(labeled, x_train, config.labeled_batch_size,
                                    config.unlabeled_batch_size, seed=config.seed)
    else:
        if config.batch_size > len(x_train):
            raise ValueError(f"--batch_size must be at most the {len(x_train)} training "
                             f"images, got {config.batch_size}")
        source = tfdata.DeviceDataset((x_train, y_train), config.batch_size,
                                      seed=config.seed)

    with distribute.scope(strategy):
        model = vat_cnn.VatCNN(num_classes=NUM_CLASSES, dropout=config.dropout,
                               batch_norm=config.batch_norm)
        model(tf.zeros([1, *vat_cnn.IMAGE_SHAPE]))
        opt = optimizers.get(config.optimizer, learning_rate=config.learning_rate)
        opt.build(model.trainable_variables)
    step_fn = vat_cnn.make_train_step(
        model, opt, vat=config.vat, xi=config.xi, eps=config.eps,
        power_iterations=config.power_iterations, hvp=config.hvp,
        vat_weight=config.vat_weight,
        entmin=config.entmin, shared_dropout_mask=config.shared_dropout_mask,
        translate=config.translate)
    if config.lr_decay_fraction:
        # Constant, then linear decay to 0 over the run's last lr_decay_fraction (the
        # VAT paper's schedule), from the optimizer's step count (exact on resume).
        total = loop.total_steps(config.epochs, config.steps, source.steps_per_epoch)
        step_fn = lr_schedule.scheduled_step(step_fn, opt, lr_schedule.make_learning_rate_fn(
            "wsd", config.learning_rate, total, decay_fraction=config.lr_decay_fraction))
    metric_fn = vat_cnn.make_eval_metrics(model)
    # The VAT step and metrics have no Python control flow on tensors: tracing without
    # AutoGraph's source conversion is ~6x faster (7.2 s -> 1.2 s on 2 CPU cores, see
    # tfcore/loop.py) and builds the same graph.
    eval_fn = (loop.make_eval_fn(metric_fn, val, config.eval_batch_size, jit=config.jit,
                                 autograph=False)
               if val is not None else None)
    test_fn = loop.make_eval_fn(metric_fn, (x_test, y_test),
                                min(config.eval_batch_size, len(x_test)), jit=config.jit,
                                autograph=False)

    timer = tfcallbacks.EpochTimer()  # first, so its batch hook runs before the others'
    cbs = [timer] + ([TestMonitor(test_fn)] if config.test_each_epoch else [])
    stopper = None
    if config.early_stopping_patience:
        # Stop when the validation accuracy has not improved for N epochs and put the
        # best epoch's weights back before the test (and the export).
        stopper = tfcallbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=config.early_stopping_patience,
            restore_best_weights=True)
        cbs.append(stopper)

    start = time.perf_counter()
    history = loop.fit(step_fn, source, objects={"model": model, "optimizer": opt},
                       eval_fn=eval_fn, epochs=config.epochs, steps=config.steps,
                       workdir=workdir, seed=config.seed, resume=config.resume,
                       jit=config.jit, strategy=strategy, callbacks=cbs + list(callbacks),
                       steps_per_call=config.steps_per_call, progress=config.progress,
                       log_every=config.log_every, autograph=False)
    train_seconds = time.perf_counter() - start
    test = test_fn()

    # Per-epoch times, those of a run resumed here included (the History keeps them).
    epoch_seconds = [e.get("epoch_seconds") for e in history.epochs]
    steps_per_second = timer.steady_steps_per_second()

    metrics = history.to_json()
    metrics.update({
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_error": 1.0 - test["accuracy"],
        "split_digest": split_digest(val_idx, labeled_idx),
        "epoch_seconds": epoch_seconds,
        "steps_per_second": steps_per_second,
        "steps_per_epoch": source.steps_per_epoch,
        "train_seconds": train_seconds,
        # With --early_stopping_patience: the epoch (0-based) whose weights were
        # tested and exported, and the epoch it stopped after (0: ran to the end).
        "early_stopping": ({"best_epoch": stopper.best_epoch, "best_val_accuracy":
                            stopper.best, "stopped_epoch": stopper.stopped_epoch}
                           if stopper else None),
        "num_params": model.count_params(),
        "num_train": len(x_train),
        "num_test": len(x_test),
        "config": dataclasses.asdict(config),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    })
    if workdir:
        metrics_io.write_metrics(workdir, metrics)
        if config.export:
            metrics["saved_model"] = export.export_saved_model(
                model, os.path.join(workdir, "saved_model"),
                tf.TensorSpec([None, *vat_cnn.IMAGE_SHAPE], tf.float32, name="images"),
                fn=vat_cnn.probabilities(model))
            metrics_io.write_metrics(workdir, metrics)
    return metrics


def summary_line(metrics: Dict[str, Any]) -> str:
    """One JSON line with the headline numbers of `metrics`."""
    keys = ("test_accuracy", "test_loss", "test_error", "steps_per_second",
            "epoch_seconds", "status", "step")
    return json.dumps({k: metrics.get(k) for k in keys})


# -- the binary -----------------------------------------------------------------------

def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the common flags (train/flags.py) and this binary's on `flag_values`
    (once). Called by `__main__`, so importing this module defines nothing."""
    common.define_flags(flag_values)
    if "vat_weight" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    d = VatConfig()
    flag_values.set_default("epochs", d.epochs)
    flags.DEFINE_enum("preset", d.preset, list(PRESETS), "Defaults of xi, eps, optimizer "
                      "and learning rate: writeup (xi=10, eps=1, Adadelta 1.0) or "
                      "official (xi=1e-6, eps=2.1, or 0.3 with --num_labeled; Adam 1e-3).",
                      **fv)
    flags.DEFINE_boolean("dropout", d.dropout, "Dropout(0.25) and Dropout(0.5) in the "
                         "CNN.", **fv)
    flags.DEFINE_boolean("batch_norm", d.batch_norm, "BatchNorm after each conv, before "
                         "its relu (not in the write-up; the VAT paper's MNIST MLP had "
                         "BatchNorm).", **fv)
    flags.DEFINE_integer("translate", d.translate, "Data augmentation: shift each "
                         "training image by up to N whole pixels (0: none).", **fv)
    flags.DEFINE_boolean("vat", d.vat, "Add the VAT loss.", **fv)
    flags.DEFINE_float("xi", None, "Power-iteration step (default: the preset's).", **fv)
    flags.DEFINE_float("eps", None, "Adversarial perturbation norm (default: the "
                       "preset's).", **fv)
    flags.DEFINE_integer("power_iterations", d.power_iterations, "Power iterations K.",
                         **fv)
    flags.DEFINE_enum("hvp", d.hvp, ["finite_difference", "exact"], "Power-iteration "
                      "product H d: a finite difference of step --xi (the write-up's), or "
                      "exact (J^T F J d, linearised at x + xi d/|d|).", **fv)
    flags.DEFINE_float("vat_weight", d.vat_weight, "Weight of the VAT term.", **fv)
    flags.DEFINE_integer("early_stopping_patience", d.early_stopping_patience, "Stop "
                         "after N epochs without a better validation accuracy and test "
                         "the best epoch's weights (needs --val_size); 0: off.", **fv)
    flags.DEFINE_float("lr_decay_fraction", d.lr_decay_fraction, "Decay the learning "
                       "rate linearly to 0 over this last share of the run's steps (the "
                       "VAT paper's schedule); 0: constant.", **fv)
    flags.DEFINE_boolean("entmin", d.entmin, "Add the entropy of the unlabeled "
                         "predictions (VAT + EntMin).", **fv)
    flags.DEFINE_boolean("shared_dropout_mask", d.shared_dropout_mask, "Same dropout "
                         "mask in the clean and perturbed passes.", **fv)
    flags.DEFINE_integer("num_labeled", d.num_labeled, "0: all labels; N: a "
                         "class-balanced labeled subset of N (semi-supervised).", **fv)
    flags.DEFINE_integer("labeled_batch_size", d.labeled_batch_size, "Semi-supervised: "
                         "labeled images per step.", **fv)
    flags.DEFINE_integer("unlabeled_batch_size", d.unlabeled_batch_size, "Semi-"
                         "supervised: unlabeled images per step.", **fv)
    flags.DEFINE_integer("val_size", d.val_size, "Training images held out as the "
                         "per-epoch validation set (0: none).", **fv)
    flags.DEFINE_integer("split_seed", d.split_seed, "Seed of the validation split "
                         "(--val_size) and of the labeled subset (--num_labeled); "
                         "--seed does not change them.", **fv)
    flags.DEFINE_integer("train_limit", d.train_limit, "Use the first N training images "
                         "(0: all).", **fv)
    flags.DEFINE_integer("test_limit", d.test_limit, "Use the first N test images "
                         "(0: all).", **fv)
    flags.DEFINE_integer("eval_batch_size", d.eval_batch_size, "Batch of the "
                         "evaluations.", **fv)
    flags.DEFINE_integer("steps_per_call", d.steps_per_call, "Train steps per compiled "
                         "call.", **fv)
    flags.DEFINE_boolean("test_each_epoch", d.test_each_epoch, "Log the test metrics "
                         "every epoch (a learning curve; never used for selection).", **fv)
    flags.DEFINE_integer("log_every", d.log_every, "Steps between progress lines.", **fv)

    def check(name, fn, message):
        flags.register_validator(name, fn, message=message, **fv)

    finite = math.isfinite
    check("xi", lambda v: v is None or (finite(v) and v > 0), "--xi must be > 0")
    check("eps", lambda v: v is None or (finite(v) and v >= 0), "--eps must be >= 0")
    check("power_iterations", lambda v: v is not None and v >= 0,
          "--power_iterations must be >= 0")
    check("vat_weight", lambda v: v is not None and finite(v) and v >= 0,
          "--vat_weight must be >= 0")
    check("early_stopping_patience", lambda v: v is not None and v >= 0,
          "--early_stopping_patience must be >= 0")
    check("lr_decay_fraction", lambda v: v is not None and 0 <= v <= 1,
          "--lr_decay_fraction must be in [0, 1]")
    check("num_labeled", lambda v: v is not None and v >= 0 and v % NUM_CLASSES == 0,
          f"--num_labeled must be 0 or a positive multiple of {NUM_CLASSES}")
    for name in ("labeled_batch_size", "unlabeled_batch_size", "eval_batch_size",
                 "steps_per_call", "log_every"):
        check(name, lambda v: v is not None and v > 0, f"--{name} must be positive")
    for name in ("val_size", "train_limit", "test_limit", "split_seed", "translate"):
        check(name, lambda v: v is not None and v >= 0, f"--{name} must be >= 0")


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> VatConfig:
    """The `VatConfig` of the parsed flags (not yet resolved)."""
    names = [f.name for f in dataclasses.fields(VatConfig) if f.name != "progress"]
    return VatConfig(**{n: flag_values[n].value for n in names})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    config = config_from_flags(FLAGS)
    try:
        config = config.resolved()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    logging.getLogger("tfcore").setLevel(logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # checkpoint/export chatter
    strategy = common.setup(FLAGS)
    metrics = train_and_evaluate(config, FLAGS.workdir, strategy=strategy)
    print(summary_line(metrics), flush=True)


if __name__ == "__main__":
    define_flags(FLAGS)
    app.run(main)
