"""The VAT classifier's training library: `VatConfig` and `train_and_evaluate`.

The binary (`python -m train.vat`, train/vat.py) is flags over this; the VAT table,
the search, the bench and the tests call it directly.

Presets (explicit options win over them):
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
--labeled_batch_size labeled ones (for the CE), `tfcore.data.SemiSupervisedData`. An
epoch is one pass over the unlabeled images; --batch_size is unused there.

Evaluation: the test set once, at the end (test_accuracy, test_loss); it never picks
anything. --val_size=N holds out N training images as the per-epoch validation set
(`val_loss`, `val_accuracy`), the one to use for choosing hyperparameters; never
labeled ones: the labeled subset is drawn first, so --val_size does not change it.
--test_each_epoch adds the test metrics to every epoch's log (a learning curve for
reports). With a validation set, --early_stopping_patience=N stops after N epochs
without a better validation accuracy and tests (and exports) the best epoch's
weights (`early_stopping` in metrics.json). --lr_decay_fraction=f decays the rate
linearly to 0 over the run's last share f (the VAT paper's schedule).

Seeds: --split_seed alone chooses the held-out validation images and the labeled
subset (`split_indices`); --seed drives everything random in training. `split_digest`
in metrics.json fingerprints the split.

Writes, through `tfcore.training.run`: metrics.json (`test_accuracy`, `test_loss`,
`test_error`, `split_digest`, `early_stopping`, `num_params`, `num_train`,
`num_test`, `steps_per_epoch`, plus the run layer's record and timing),
config.json, checkpoints, TensorBoard `train/` and `eval/`, and with --export a
SavedModel (`images` [N, 28, 28, 1] float in [0, 1] -> `probabilities` [N, 10]).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import vat_cnn
from tfcore import checks, optimizers
from tfcore import vat as vat_loss
from tfcore import data as tfdata
from tfcore.training import callbacks as tfcallbacks
from tfcore.training import distribute, loop, lr_schedule, options
from tfcore.training.compile import resolve_jit
from tfcore.training.options import option, override
from tfcore.training.run import Export, Run, TrainOptions

BINARY = "train.vat"
PRESETS = ("writeup", "official")
HVPS = vat_loss.HVP_METHODS
WRITEUP = {"xi": 10.0, "eps": 1.0, "optimizer": "adadelta", "learning_rate": 1.0}
OFFICIAL = {"xi": 1e-6, "eps": 2.1, "eps_semi_supervised": 0.3, "optimizer": "adam",
            "learning_rate": 1e-3}
NUM_CLASSES = 10


@dataclasses.dataclass
class VatConfig(TrainOptions):
    """The options of `train.vat` (each is the flag of the same name).

    `xi`, `eps`, `optimizer`, `learning_rate` left None take the `preset`'s values
    (`resolved()`); limits of 0 mean "all".
    """

    epochs: Optional[int] = override(TrainOptions, "epochs", 12)
    preset: str = option("writeup", "Defaults of xi, eps, optimizer and learning rate: "
                         "writeup (xi=10, eps=1, Adadelta 1.0) or official (xi=1e-6, "
                         "eps=2.1, or 0.3 with --num_labeled; Adam 1e-3).",
                         choices=PRESETS)
    dropout: bool = option(False, "Dropout(0.25) and Dropout(0.5) in the CNN.")
    batch_norm: bool = option(False, "BatchNorm after each conv, before its relu (the "
                              "perturbed passes leave its statistics alone).")
    translate: int = option(0, "Shift each training image by up to N whole pixels, a "
                            "fresh draw each step (0: none).", low=0)
    vat: bool = option(True, "Add the VAT loss.")
    xi: Optional[float] = option(None, "Power-iteration step (default: the preset's).",
                                 low=0, low_open=True)
    eps: Optional[float] = option(None, "Adversarial perturbation norm (default: the "
                                  "preset's).", low=0)
    power_iterations: int = option(1, "Power iterations K (0: a random direction).",
                                   low=0)
    hvp: str = option("finite_difference", "Power-iteration product H d: a finite "
                      "difference of step --xi (the write-up's), exact (J^T F J d, "
                      "linearised at x + xi d/|d|), or secant (the finite difference "
                      "with the logits' change propagated layer by layer: accurate in "
                      "float32 at any --xi).", choices=HVPS)
    vat_weight: float = option(1.0, "Weight of the VAT term.", low=0)
    entmin: bool = option(False, "Add the entropy of the unlabeled predictions (VAT + "
                          "EntMin).")
    shared_dropout_mask: bool = option(True, "Same dropout mask in the clean and "
                                       "perturbed passes.")
    num_labeled: int = option(0, "0: all labels; N: a class-balanced labeled subset of N "
                              "(semi-supervised), a multiple of 10.", low=0)
    labeled_batch_size: int = option(32, "Semi-supervised: labeled images per step.",
                                     low=1, resume="opt_in")
    unlabeled_batch_size: int = option(128, "Semi-supervised: unlabeled images per step.",
                                       low=1, resume="opt_in")
    lr_decay_fraction: float = option(0.0, "Decay the learning rate linearly to 0 over "
                                      "this last share of the run (the VAT paper's "
                                      "schedule); 0: constant.", low=0, high=1)
    early_stopping_patience: int = option(0, "Stop after N epochs without a better "
                                          "validation accuracy and test the best epoch's "
                                          "weights (needs --val_size); 0: off.", low=0,
                                          resume="free")
    val_size: int = option(0, "Training images held out as the per-epoch validation set "
                           "(0: none).", low=0)
    split_seed: int = option(0, "Seed of the validation split and of the labeled subset; "
                             "--seed does not change them.", low=0)
    train_limit: int = option(0, "Use the first N training images (0: all).", low=0)
    test_limit: int = option(0, "Use the first N test images (0: all).", low=0,
                             resume="free")
    eval_batch_size: int = option(1000, "Batch of the evaluations.", low=1, resume="free")
    steps_per_call: int = option(1, "Train steps per compiled call.", low=1, resume="free")
    test_each_epoch: bool = option(False, "Log the test metrics every epoch (a learning "
                                   "curve; never used for selection).", resume="free")

    def validate(self) -> "VatConfig":
        super().validate()
        if self.num_labeled % NUM_CLASSES:
            raise checks.ArgumentError(
                f"--num_labeled must be 0 or a multiple of {NUM_CLASSES} (a class-"
                f"balanced subset), got {self.num_labeled!r}")
        if self.early_stopping_patience and not self.val_size:
            raise checks.ArgumentError(
                f"--early_stopping_patience={self.early_stopping_patience} needs a "
                "validation set (--val_size > 0), got --val_size=0")
        return self

    def resolved(self) -> "VatConfig":
        """A copy with the preset's values filled in where None; validated."""
        preset = WRITEUP if self.preset == "writeup" else OFFICIAL
        eps = preset["eps_semi_supervised"] if (self.preset == "official"
                                                and self.num_labeled) else preset["eps"]
        return dataclasses.replace(
            self, xi=preset["xi"] if self.xi is None else self.xi,
            eps=eps if self.eps is None else self.eps,
            optimizer=self.optimizer or preset["optimizer"],
            learning_rate=(preset["learning_rate"] if self.learning_rate is None
                           else self.learning_rate)).validate()


# -- data ---------------------------------------------------------------------------

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

    The labeled subset is drawn first, from all N images (`tfcore.data.
    balanced_subset`); then `val_size` of the images that are not labeled are held
    out (`tfcore.data.train_val_split(..., val_size, split_seed)`), so --val_size never
    changes which images carry labels.

    Returns:
      (train_idx, val_idx, labeled_idx): sorted int indices into the N images: the
      training images (the labeled ones included; all that are not held out), the
      held-out validation images (empty when val_size is 0) and the labeled subset
      (empty when num_labeled is 0).

    Raises:
      ArgumentError: a val_size or num_labeled that the N images cannot provide.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    labeled_idx = np.zeros([0], np.int64)
    if config.num_labeled:
        checks.check_int(config.num_labeled, "--num_labeled", low=0, high=len(labels))
        labeled_idx = tfdata.balanced_subset(everything, labels, config.num_labeled,
                                             config.split_seed, num_classes=NUM_CLASSES)
    train_idx, val_idx = everything, np.zeros([0], np.int64)
    if config.val_size:
        rest = np.setdiff1d(everything, labeled_idx)
        checks.check_int(config.val_size, "--val_size (with the images that are not "
                         "labeled)", low=0, high=len(rest) - 1)
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


def make_source(config: VatConfig, train, labeled):
    """The training data source: `SemiSupervisedData` with labels, else a
    `DeviceDataset` of (x, y) batches of --batch_size."""
    x_train, y_train = train
    if config.num_labeled:
        return tfdata.SemiSupervisedData(labeled, x_train, config.labeled_batch_size,
                                         config.unlabeled_batch_size, seed=config.seed)
    checks.check_int(config.batch_size, "--batch_size (with the training images)", low=1,
                     high=len(x_train))
    return tfdata.DeviceDataset((x_train, y_train), config.batch_size, seed=config.seed)


# -- the model and its step ---------------------------------------------------------

def build(config: VatConfig, strategy=None, total_steps: Optional[int] = None):
    """(model, optimizer, step_fn) of a resolved `config`: the VatCNN (built), its
    optimizer and `models.vat_cnn.make_train_step`, with the linear decay of
    --lr_decay_fraction over `total_steps` (needed then)."""
    with distribute.scope(strategy):
        # Under XLA the max pool's one-hot gradient: XLA's own second derivative of max
        # pooling (which --hvp=exact takes) is inexact (tfcore.max_pool2d).
        model = vat_cnn.VatCNN(num_classes=NUM_CLASSES, dropout=config.dropout,
                               batch_norm=config.batch_norm,
                               pool_gradient="one_hot" if resolve_jit(config.jit) else "kernel")
        model(tf.zeros([1, *vat_cnn.IMAGE_SHAPE]))
        opt = optimizers.get(config.optimizer, learning_rate=config.learning_rate)
        opt.build(model.trainable_variables)
    step_fn = vat_cnn.make_train_step(
        model, opt, vat=config.vat, xi=config.xi, eps=config.eps,
        power_iterations=config.power_iterations, hvp=config.hvp,
        vat_weight=config.vat_weight, entmin=config.entmin,
        shared_dropout_mask=config.shared_dropout_mask, translate=config.translate)
    if config.lr_decay_fraction:
        # Constant, then linear decay to 0 over the run's last lr_decay_fraction, from
        # the optimizer's step count (exact on resume).
        step_fn = lr_schedule.scheduled_step(step_fn, opt, lr_schedule.make_learning_rate_fn(
            "wsd", config.learning_rate, total_steps,
            decay_fraction=config.lr_decay_fraction))
    return model, opt, step_fn


def _callbacks(config: VatConfig, test_fn):
    cbs = [tfcallbacks.EvalMonitor(test_fn)] if config.test_each_epoch else []
    stopper = None
    if config.early_stopping_patience:
        # Stop when the validation accuracy has not improved for N epochs and put the
        # best epoch's weights back before the test (and the export).
        stopper = tfcallbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=config.early_stopping_patience,
            restore_best_weights=True)
        cbs.append(stopper)
    return cbs, stopper


def train_and_evaluate(config: VatConfig, workdir: Optional[str], *, data=None,
                       callbacks: Sequence = ()) -> Dict[str, Any]:
    """Trains the VAT classifier per `config`, evaluates it on the test set.

    Args:
      config: a `VatConfig` (unresolved preset values are filled in).
      workdir: run directory (metrics.json, checkpoints, saved_model), or None to
        save nothing (then `resume` and `export` are refused).
      data: optional ((x_train, y_train), (x_test, y_test)) uint8/int arrays, as
        `tfcore.data.load_mnist` returns (default: loaded from `config.data_dir`).
      callbacks: extra `tfcore.training.callbacks.Callback`s.

    Returns:
      The metrics dict written to <workdir>/metrics.json (see the module docstring).

    Raises:
      tfcore.checks.ArgumentError: a bad option or combination (the message names the
        flag), a workdir or resume the run layer refuses, or data that cannot provide
        the labeled subset, validation set or batch; nothing is written then.
    """
    config = config.resolved()
    with Run(workdir, config, binary=BINARY) as run:
        (x_train, y_train), (x_test, y_test) = load_data(config, data)
        train_idx, val_idx, labeled_idx = split_indices(y_train, config)
        val = (x_train[val_idx], y_train[val_idx]) if config.val_size else None
        labeled = (x_train[labeled_idx], y_train[labeled_idx])
        source = make_source(config, (x_train[train_idx], y_train[train_idx]), labeled)
        model, opt, step_fn = build(config, run.strategy,
                                    run.total_steps(source.steps_per_epoch))
        metric_fn = vat_cnn.make_eval_metrics(model)
        # The VAT step and metrics have no Python control flow on tensors: traced without
        # AutoGraph's conversion (docs/decisions.md, "AutoGraph off").
        eval_fn = (loop.make_eval_fn(metric_fn, val, config.eval_batch_size, jit=config.jit,
                                     autograph=False) if val is not None else None)
        test_fn = loop.make_eval_fn(metric_fn, (x_test, y_test),
                                    min(config.eval_batch_size, len(x_test)), jit=config.jit,
                                    autograph=False)
        cbs, stopper = _callbacks(config, test_fn)
        run.fit(step_fn, source, objects={"model": model, "optimizer": opt}, eval_fn=eval_fn,
                callbacks=cbs + list(callbacks), learning_rates={"learning_rate": opt},
                steps_per_call=config.steps_per_call, autograph=False)
        test = test_fn()
        return run.finish({
            "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "test_error": 1.0 - test["accuracy"],
            "split_digest": split_digest(val_idx, labeled_idx),
            "steps_per_epoch": source.steps_per_epoch,
            # With --early_stopping_patience: the epoch (0-based) whose weights were
            # tested and exported, and the epoch it stopped after (0: ran to the end).
            "early_stopping": ({"best_epoch": stopper.best_epoch, "best_val_accuracy":
                                stopper.best, "stopped_epoch": stopper.stopped_epoch}
                               if stopper else None),
            "num_params": model.count_params(), "num_train": len(train_idx),
            "num_test": len(x_test)},
            Export(model, tf.TensorSpec([None, *vat_cnn.IMAGE_SHAPE], tf.float32,
                                        name="images"), vat_cnn.probabilities(model)))


def summary_line(metrics: Dict[str, Any]) -> str:
    """One JSON line with the headline numbers of `metrics`."""
    keys = ("test_accuracy", "test_loss", "test_error", "steps_per_second",
            "epoch_seconds", "status", "step")
    return json.dumps({k: metrics.get(k) for k in keys})


