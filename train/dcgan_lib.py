"""The DCGAN's training library: `DCGANConfig` and `train_and_evaluate`.

The binary (`python -m train.dcgan`, train/dcgan.py) is flags over this; the bench and
the tests call it directly. It trains `models/dcgan.py` on MNIST padded to 32x32, or
on your own images, through the run layer (`tfcore.training.run`).

The step is `models.dcgan.make_train_step`: per global step, `--d_steps` discriminator
steps and one generator step in `--order`; with `--d_batch=split` (default) real and
generated images go through D in separate passes (BatchNorm normalises each kind with
its own statistics), `--d_batch=mixed` sends their concatenation through D in one pass
(the write-up's failing variant). Noise z ~ U(-1, 1) of shape [batch, --latent_dim]
(default 30, projected to 4x4x4), or [batch, 4, 4, 4] with --latent_dim=0, sized from
the batch. Then, with --g_ema=d (default `models.dcgan.DEFAULT_G_EMA`, 0.999; 0 turns
it off), the step updates a moving average of G's weights (decay d after a warm-up,
`tfcore.gan.ema_decay`) beside the trained G: the pictures, quality measures, best
checkpoint and export use it (checkpointed as `generator_ema`); D trains against the
current G. The flat latent and the average were chosen by measurement (README,
"DCGAN on MNIST").
Optimizers: two Adams, `--preset=default` (G and D: lr 2e-4, beta_1 0.5) or
`--preset=writeup` (D: lr 1e-5, beta_1 0.1; G: 2e-4, 0.5); --g_learning_rate,
--g_beta1, --d_learning_rate, --d_beta1 override them. The learning rates and
--batch_size may change on --resume when named in --change_on_resume.
--init_from=PATH: G and D from a Keras GAN's weights (`Sequential([generator,
discriminator])`, `models.dcgan.GAN`); the weight average starts from the loaded G.

Data: MNIST training images padded to 32x32, in [-1, 1] (`--train_limit` keeps the
first N); the first `--val_examples` test images are the held-out real images of the
per-epoch validation. `--image_dir`: the folder's images (grayscale, resized to 32x32),
grown `--augment_factor` times by random scale, shift and brightness
(`tfcore.data.augment`); a tenth of the originals (at least one; all of them when
there are fewer than 10) is held out for validation.

An "epoch" is a pass over the training images, or with `--eval_every=N` a period of N
steps (the data order still runs over whole passes): evaluations, pictures and
checkpoints happen at its end. Written into --workdir, besides the run layer's
config.json ({"binary": "train.dcgan", "config": ...}: `train.gan_eval` rebuilds the
generator from it), checkpoints/, TensorBoard train/ and eval/ and metrics.json:

* `samples_epoch_N.png` (N = 1, 2, ...): a --grid_size^2 grid of G(z) for a fixed z,
  inference mode; `interpolation.png`: --interp_rows rows, each walking in
  --interp_steps steps along the line from one fixed z to another (overwritten each
  epoch). Both also go to TensorBoard (train/, tags `samples`, `interpolation`).
* metrics.json: per epoch the train means of d_loss, d_loss_real, d_loss_fake,
  d_acc_real, d_acc_fake, d_acc, g_loss and the validation
  (`train.dcgan_callbacks.DiscriminatorValidation`: `val_d_loss`, `val_d_acc_real`,
  ..., and `val_d_*_batch_stats`; a BN discriminator's moving statistics blend real
  and fake batches, so the two can differ wildly); with --eval_samples > 0,
  `val_frechet_distance`, `val_classifier_score`, `val_classes_covered` on that many
  samples (the cheap per-epoch version of `train.gan_eval`). At the end: `steps` (the
  step metrics every --log_every steps; also streamed to `steps.jsonl`), the final
  measurement on --final_eval_samples samples (`classifier_score`,
  `frechet_distance`, `classes_covered`, `class_shares`, `real_classifier_score`,
  `real_frechet_distance`), `seconds`, `global_step`, `steps_per_epoch`,
  `num_train`, `samples`, `pinned_stop_epoch`, and the run layer's `config`,
  `epoch_seconds`, `steps_per_second`, `attempts`, ...
* best/ (the checkpoint of the best val Frechet distance, with --eval_samples > 0),
  and with --export a SavedModel (saved_model/: `z` -> `images`).

Stopping: --epochs / --steps / --max_steps (the first reached); early stopping on
`val_frechet_distance` (--fd_patience epochs without improvement, best weights
restored; needs --eval_samples > 0); and a stop when D's accuracy (--pinned_monitor,
default val_d_acc_batch_stats) is within --pinned_tol of 0 or 1 for --pinned_patience
evaluations in a row (`DiscriminatorPinnedStop`). The default tolerance 0.002 (at
most 4 of 2,000 held-out real and fake images wrong) is tight on purpose: a healthy
split run's D scores close to 1 for many epochs while G keeps improving.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import dcgan
from tfcore import checks
from tfcore import data as tfdata
from tfcore.training.options import option, override
from tfcore.training.run import Export, Run, RunOptions
from train import dcgan_callbacks as dcb
from train import gan_eval_lib as gan_eval

BINARY = "train.dcgan"
GENERATORS = dcgan.UPSAMPLINGS
D_BATCHES = ("split", "mixed")
ORDERS = ("d_then_g", "g_then_d")
PRESETS = tuple(dcgan.PRESETS)
STEPS_FILE = "steps.jsonl"
log = logging.getLogger("train.dcgan")


@dataclasses.dataclass
class DCGANConfig(RunOptions):
    """The options of `train.dcgan` (each is the flag of the same name).

    None for the optimizer settings: the `preset`'s (`resolved()`). 0 for
    `train_limit`: all images; for `eval_every`: whole epochs; for `eval_samples` /
    `final_eval_samples` / `fd_patience` / `pinned_patience`: off.
    """

    epochs: Optional[int] = override(RunOptions, "epochs", 5)
    log_every: int = override(RunOptions, "log_every", 50)
    generator: str = option("upsample", "upsample: UpSampling2D + Conv2D (the write-up's); "
                            "transpose: stride-2 Conv2DTranspose (the DCGAN paper's).",
                            choices=GENERATORS)
    latent_dim: int = option(dcgan.DEFAULT_LATENT_DIM, "N: a flat z of N numbers projected "
                             "by a Dense layer to 4x4x4 (default 30, chosen by measurement);"
                             " 0: z of shape 4x4x4.", low=0)
    d_batchnorm: bool = option(True, "BatchNorm in the discriminator.")
    d_dense_units: int = option(2048, "Width of D's hidden Dense layer (the write-up's "
                                "2048).", low=1)
    d_batch: str = option("split", "split: real and fake through D separately; mixed: "
                          "concatenated in one pass.", choices=D_BATCHES)
    order: str = option("d_then_g", "Which network steps first.", choices=ORDERS)
    d_steps: int = option(1, "Discriminator steps per generator step.", low=1)
    preset: str = option("default", "Optimizer settings: default (Adam 2e-4, beta_1 0.5 "
                         "for both) or writeup (D: 1e-5, 0.1).", choices=PRESETS)
    g_learning_rate: Optional[float] = option(None, "G's Adam learning rate (default: the "
                                              "preset's).", low=0, low_open=True,
                                              resume="opt_in")
    g_beta1: Optional[float] = option(None, "G's Adam beta_1 (default: the preset's).",
                                      low=0, high=1, high_open=True)
    d_learning_rate: Optional[float] = option(None, "D's Adam learning rate (default: the "
                                              "preset's).", low=0, low_open=True,
                                              resume="opt_in")
    d_beta1: Optional[float] = option(None, "D's Adam beta_1 (default: the preset's).",
                                      low=0, high=1, high_open=True)
    label_smoothing: float = option(0.0, "One-sided smoothing of D's real label.", low=0,
                                    high=1, high_open=True)
    g_ema: float = option(dcgan.DEFAULT_G_EMA, "Decay of a moving average of G's weights "
                          "used for pictures, quality measures and the export (default "
                          "0.999, chosen by measurement; 0: off, the last G).", low=0,
                          high=1, high_open=True)
    batch_size: int = option(64, "Batch size.", low=1, resume="opt_in")
    max_steps: Optional[int] = option(None, "Cap on the global steps (quick looks).",
                                      low=1, resume="free")
    eval_every: int = option(0, "0: evaluate per epoch; N: every N steps (an 'epoch' is "
                             "then N steps).", low=0)
    image_dir: Optional[str] = option(None, "Train on this folder's images instead of "
                                      "MNIST.", is_dir=True)
    augment_factor: int = option(1, "With --image_dir: grow the set this many times by "
                                 "random scale/shift/brightness.", low=1)
    train_limit: int = option(0, "Use the first N MNIST training images (0: all).", low=0)
    val_examples: int = option(1000, "Held-out real images (test set) for D's "
                               "validation.", low=2)
    eval_samples: int = option(2000, "Samples for the per-epoch Frechet distance / "
                               "classifier score (0: off; else >= 2).", low=0)
    final_eval_samples: int = option(10000, "Samples for the final measurement (0: off; "
                                     "else >= 2).", low=0, resume="free")
    classifier: Optional[str] = option(None, "A train.vat workdir (default: the cached "
                                       "plain CNN of train.gan_eval).", is_dir=True)
    fd_patience: int = option(0, "Early stopping: epochs without a better val Frechet "
                              "distance (0: off).", low=0, resume="free")
    pinned_patience: int = option(3, "Stop when D's accuracy is pinned at 0 or 1 for this "
                                  "many evaluations (0: off).", low=0, resume="free")
    pinned_tol: float = option(0.002, "Pinned means within this of 0 or 1.", low=0,
                               high=0.5, high_open=True, resume="free")
    pinned_monitor: str = option("val_d_acc_batch_stats", "The accuracy watched for the "
                                 "pinned stop (e.g. val_d_acc_batch_stats, val_d_acc, "
                                 "d_acc).", resume="free")
    grid_size: int = option(8, "Sample grid: N x N images.", low=1, resume="free")
    interp_rows: int = option(8, "Interpolation rows.", low=1, resume="free")
    interp_steps: int = option(10, "Images per interpolation row.", low=2, resume="free")

    @property
    def total_steps_cap(self) -> Optional[int]:
        """The smaller of --steps and --max_steps (None: neither)."""
        caps = [s for s in (self.steps, self.max_steps) if s]
        return min(caps) if caps else None

    def validate(self) -> "DCGANConfig":
        """The rules spanning several options (and those the declarations cannot say);
        raises `tfcore.checks.ArgumentError` naming the flags."""
        if self.epochs is None and self.total_steps_cap is None:
            raise checks.ArgumentError("give --epochs, --steps or --max_steps, got none")
        RunOptions.validate(dataclasses.replace(self, steps=self.total_steps_cap))
        for name in ("eval_samples", "final_eval_samples"):
            if getattr(self, name) == 1:
                raise checks.ArgumentError(f"--{name} must be 0 (off) or >= 2, got 1")
        checks.check_name(self.pinned_monitor, "--pinned_monitor")
        if self.fd_patience and not self.eval_samples:
            raise checks.ArgumentError(
                f"--fd_patience={self.fd_patience} needs --eval_samples > 0 (the "
                "per-epoch Frechet distance), got --eval_samples=0")
        if self.augment_factor > 1 and self.image_dir is None:
            raise checks.ArgumentError(f"--augment_factor={self.augment_factor} needs "
                                       "--image_dir")
        return self

    def resolved(self) -> "DCGANConfig":
        """A copy with the preset's optimizer settings filled in where None and --steps
        capped by --max_steps; validated."""
        (glr, gb1), (dlr, db1) = dcgan.PRESETS[self.preset]
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return dataclasses.replace(
            self, steps=self.total_steps_cap,
            g_learning_rate=pick(self.g_learning_rate, glr),
            g_beta1=pick(self.g_beta1, gb1), d_learning_rate=pick(self.d_learning_rate, dlr),
            d_beta1=pick(self.d_beta1, db1)).validate()


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


def make_source(config: DCGANConfig, train: np.ndarray):
    """A `DeviceDataset` of --batch_size images (per --eval_every step periods with
    `PeriodData`)."""
    checks.check_int(config.batch_size, "--batch_size (with the training images)", low=1,
                     high=len(train))
    source = tfdata.DeviceDataset(train, config.batch_size, seed=config.seed)
    return dcb.PeriodData(source, config.eval_every) if config.eval_every else source


# -- the networks and the step ----------------------------------------------------------

def build(config: DCGANConfig):
    """(networks, step_fn) of a resolved `config`: networks = {'generator',
    'discriminator', 'g_opt', 'd_opt'} (+ 'generator_ema' with --g_ema > 0), built,
    as checkpointed; step_fn = `models.dcgan.make_train_step` over them, the weight
    average included."""
    generator = dcgan.Generator(latent_dim=config.latent_dim or None,
                                upsampling=config.generator)
    discriminator = dcgan.Discriminator(batchnorm=config.d_batchnorm,
                                        dense_units=config.d_dense_units)
    dcgan.build(generator, discriminator)
    g_opt, d_opt = dcgan.make_optimizers(config.preset, config.g_learning_rate,
                                         config.g_beta1, config.d_learning_rate,
                                         config.d_beta1)
    nets = {"generator": generator, "discriminator": discriminator, "g_opt": g_opt,
            "d_opt": d_opt}
    ema = dcgan.make_ema_generator(generator) if config.g_ema else None
    if ema is not None:
        nets["generator_ema"] = ema
    step_fn = dcgan.make_train_step(
        generator, discriminator, g_opt, d_opt, order=config.order,
        d_steps=config.d_steps, d_batch=config.d_batch,
        label_smoothing=config.label_smoothing, ema_generator=ema,
        ema_decay=config.g_ema)
    return nets, step_fn


def _average_from_start(nets) -> None:
    """After --init_from: the weight average starts from the loaded generator too."""
    if "generator_ema" in nets:
        dcgan.copy_weights(nets["generator_ema"], nets["generator"])


def _sampler(nets):
    """The generator that pictures, measures and the export use: the average if any."""
    return nets.get("generator_ema") or nets["generator"]


def _quality(config: DCGANConfig, mnist, classifier, sample, latent):
    """(classifier, eval_fn of the per-epoch quality or None); the classifier is
    `classifier`, else --classifier's, else the cached one (None without MNIST or
    without any quality measurement)."""
    if mnist is None or not (config.eval_samples or config.final_eval_samples):
        return None, None
    if classifier is None:
        classifier = gan_eval.cached_classifier(config.data_dir)[0]
    if not config.eval_samples:
        return classifier, None
    reference = gan_eval.real_reference(classifier, mnist[0][0], mnist[1][0],
                                        config.eval_samples, seed=config.seed)
    log.info("per-epoch quality on %d samples; real test vs train: classifier score %.3f,"
             " Frechet distance %.3f", config.eval_samples,
             reference.real_classifier_score, reference.real_frechet_distance)

    def quality() -> Dict[str, float]:
        q = gan_eval.evaluate_generator(sample, classifier, latent,
                                        num_samples=config.eval_samples, seed=config.seed,
                                        reference=reference)
        return {k: q[k] for k in ("frechet_distance", "classifier_score",
                                  "classes_covered")}
    return classifier, quality


def _final_measurement(config: DCGANConfig, mnist, classifier, sample, latent):
    if classifier is None or not config.final_eval_samples:
        return {}
    result = gan_eval.evaluate_generator(sample, classifier, latent, mnist[0][0],
                                         mnist[1][0], num_samples=config.final_eval_samples,
                                         seed=config.seed)
    log.info("final (%d samples): classifier score %.3f (real %.3f), Frechet distance "
             "%.3f (real %.3f), classes covered %d", config.final_eval_samples,
             result["classifier_score"], result["real_classifier_score"],
             result["frechet_distance"], result["real_frechet_distance"],
             result["classes_covered"])
    return result


def train_and_evaluate(config: DCGANConfig, workdir: Optional[str], *, mnist=None,
                       classifier=None, callbacks: Sequence = ()) -> Dict[str, Any]:
    """Trains the DCGAN per `config`; writes pictures, metrics.json, checkpoints.

    Args:
      config: a `DCGANConfig` (unresolved preset values are filled in).
      workdir: the run directory, or None to save nothing (then `resume` and `export`
        are refused).
      mnist: optional ((x_train, y_train), (x_test, y_test)) as `load_mnist` returns.
      classifier: optional built VatCNN for the quality measurements (default: the
        --classifier workdir's, else the cached plain CNN of `train.gan_eval_lib`);
        only used when --eval_samples or --final_eval_samples is > 0 on MNIST.
      callbacks: extra `tfcore.training.callbacks.Callback`s.

    Returns:
      The metrics dict written to `workdir/metrics.json` (see the module docstring).

    Raises:
      tfcore.checks.ArgumentError: a bad option or combination, a --classifier of the
        wrong kind, a workdir or resume the run layer refuses, a batch larger than the
        data; nothing is written then.
    """
    config = config.resolved()
    if classifier is None and config.classifier:  # its kind, before any work
        classifier = gan_eval.load_classifier(config.classifier)
    with Run(workdir, config, binary=BINARY) as run:
        train, val, mnist = load_data(config, mnist)
        source = make_source(config, train)
        nets, step_fn = build(config)
        latent = tuple(nets["generator"].latent_shape)
        sampler = _sampler(nets)
        sample = tf.function(lambda z: sampler(z, training=False), autograph=False,
                             input_signature=[tf.TensorSpec([None, *latent], tf.float32)])
        classifier, quality = _quality(config, mnist, classifier, sample, latent)
        validation = dcb.DiscriminatorValidation(nets["generator"], nets["discriminator"],
                                                 val, config.batch_size, config.d_batch,
                                                 config.seed)
        pictures = dcb.SamplePictures(workdir, sample, latent, config.grid_size,
                                      config.interp_rows, config.interp_steps, config.seed)
        recorder = dcb.StepRecorder(workdir and os.path.join(workdir, STEPS_FILE),
                                    config.log_every)
        stops, pinned = dcb.stopping_callbacks(config, workdir, quality is not None)
        run.fit(step_fn, source, objects=nets, callbacks=[validation, pictures, recorder,
                                                         *stops, *callbacks],
                eval_fn=lambda: {**validation(), **(quality() if quality else {})},
                images=pictures.images, autograph=False,
                learning_rates={"g_learning_rate": nets["g_opt"],
                                "d_learning_rate": nets["d_opt"]},
                init_model=dcgan.GAN(nets["generator"], nets["discriminator"]),
                after_init=lambda: _average_from_start(nets))
        results = {
            "steps": recorder.records, "seconds": run.train_seconds,
            "global_step": int(run.loop.step.numpy()),
            "steps_per_epoch": source.steps_per_epoch, "num_train": len(train),
            "samples": list(pictures.paths),
            "pinned_stop_epoch": pinned.stopped_epoch if pinned else None,
            **_final_measurement(config, mnist, classifier, sample, latent)}
        return run.finish(results, Export(
            sampler, tf.TensorSpec([None, *latent], tf.float32, name="z"),
            lambda z: {"images": sampler(z, training=False)}))


def summary_line(metrics: Dict[str, Any]) -> str:
    """One JSON line with the headline numbers of `metrics`."""
    keys = ("classifier_score", "frechet_distance", "classes_covered",
            "real_classifier_score", "real_frechet_distance", "global_step", "seconds",
            "steps_per_second", "status")
    return json.dumps({k: metrics.get(k) for k in keys})
