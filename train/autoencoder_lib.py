"""The MNIST autoencoders' training library: `Config` and `train_and_evaluate`.

The binary (`python -m train.autoencoder`, train/autoencoder.py) is flags over this;
the table (`train.ae_table`), the bench and the tests call it directly.

Models (`models/autoencoder.py`): dense 784-hidden-784 (`--hidden`,
`--hidden_activation`, `--tied`: the decoder kernel is the encoder's transposed) or
the 16-8-8 convolutional one (`--decoder=transpose|upsample`). `--noise_factor` > 0
trains a denoising autoencoder (noisy inputs, clean targets). Training minimises the
per-pixel BCE from logits.

Defaults (explicit options win): Adam, batch 128, 10,000 steps when neither --steps
nor --epochs is given; dense: learning rate `DENSE_LEARNING_RATE` (1e-3), constant;
conv: `CONV_LEARNING_RATE[decoder]` (2e-2 transpose, 1e-2 upsample) with the
`CONV_SCHEDULE` ('wsd', decay over the last --decay_fraction) and
`CONV_WARMUP_STEPS` (200) warm-up steps, or a tenth of a run that is not longer
than that (these defaults were chosen on a validation split: train/ae_table_lib.py's
--search). Learning-rate schedules span the run's total steps
(`Run.total_steps`).

Evaluation: after each epoch on the evaluation set (`val_bce`, `val_mse`): the test
set, or with --val_size=N a validation split of N training images (fixed by --seed);
at the end on the test images (`test_bce`, `test_mse`: per pixel, Keras's
`binary_crossentropy` on the probabilities; noisy inputs and clean targets when
denoising; the noise is fixed: stateless seeds [seed, 7919], [seed + 1, 7919] for
the validation images).

Writes, through `tfcore.training.run`: metrics.json (`test_bce`, `test_mse`,
`eval_set`, `seconds` (training time of this process, = `train_seconds`), `steps`,
`steps_per_epoch`, `warmup_steps` (the warm-up used), `xla` (the compile mode --jit
resolved to), `num_params`, `num_variables`, `reconstructions`, plus the run layer's
record: `history`, `epoch_seconds`, `steps_per_second`, `config`, ...), config.json,
checkpoints, TensorBoard `train/` and `eval/` (with the reconstructions picture, tag
`reconstructions`, every epoch), `reconstructions.png` (one column per test digit:
the digits, their noisy versions when denoising, their reconstructions), and with
--export a SavedModel (`images` [N, 28, 28, 1] float in [0, 1] ->
`reconstructions`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import autoencoder as ae
from tfcore import checks, image_grid, optimizers
from tfcore import data as tfdata
from tfcore.training import distribute, loop, lr_schedule
from tfcore.training.compile import resolve_jit
from tfcore.training.options import option
from tfcore.training.run import Export, Run, TrainOptions

BINARY = "train.autoencoder"

# The conv defaults, per decoder, chosen on a 5,000-image validation split of the
# training set (`python -m train.ae_table --search`; test set untouched): README.
CONV_LEARNING_RATE = {"transpose": 2e-2, "upsample": 1e-2}
CONV_SCHEDULE = "wsd"
CONV_WARMUP_STEPS = 200
DENSE_LEARNING_RATE = 1e-3
DENSE_SCHEDULE = "constant"
DEFAULT_OPTIMIZER = "adam"
DEFAULT_STEPS = 10000

MODELS = ae.MODELS
DECODERS = ae.DECODERS
SCHEDULES = lr_schedule.SCHEDULES
# The names tfcore.activations.get knows (a test checks them).
ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear", "elu", "leaky_relu")
NOISE_SEED = 7919  # second half of the evaluation noise's stateless seeds
IMAGE_SPEC = tf.TensorSpec([None, *ae.IMAGE_SHAPE], tf.float32, name="images")


@dataclasses.dataclass
class Config(TrainOptions):
    """The options of `train.autoencoder` (each is the flag of the same name).

    `decoder`, `optimizer`, `learning_rate`, `lr_schedule` left None take the model's
    defaults (`resolved()`; see the module docstring), as do `steps` (10,000) when
    neither it nor `epochs` is given; `warmup_steps` None is the model's default
    warm-up (`schedule`).
    """

    model: str = option("dense", "Autoencoder: dense or conv.", choices=MODELS)
    hidden: int = option(625, "Dense: code size (625: the original TF port; 32: the "
                         "Keras blog).", low=1)
    hidden_activation: str = option("sigmoid", "Dense: the code's activation (sigmoid: "
                                    "the original TF port; relu: the Keras blog).",
                                    choices=ACTIVATIONS)
    tied: bool = option(False, "Dense: decoder kernel = transpose of the encoder kernel "
                        "(one shared variable).")
    decoder: Optional[str] = option(None, "Conv: 'transpose' (conv2d_transpose, "
                                    "default) or 'upsample' (Conv2D + UpSampling2D).",
                                    choices=DECODERS)
    noise_factor: float = option(0.0, "Denoising: Gaussian noise of this std added to "
                                 "the inputs (clipped to [0, 1]); the target stays "
                                 "clean.", low=0)
    lr_schedule: Optional[str] = option(None, "Learning-rate schedule over the run's "
                                        f"steps (default: dense {DENSE_SCHEDULE}, conv "
                                        f"{CONV_SCHEDULE}).", choices=SCHEDULES)
    decay_fraction: float = option(0.3, "'wsd' schedule: the share of the steps spent "
                                   "decaying the rate linearly to 0.", low=0,
                                   low_open=True, high=1)
    warmup_steps: Optional[int] = option(None, "Linear warm-up steps of the schedule "
                                         f"(default 0; conv {CONV_WARMUP_STEPS}, or a "
                                         "tenth of a shorter run).", low=0)
    val_size: int = option(0, "Hold out this many training images as the per-epoch "
                           "evaluation set (0: the test set).", low=0)
    num_images: int = option(10, "Test digits (columns) in reconstructions.png.", low=1,
                             high=100, resume="free")
    train_subset: Optional[int] = option(None, "Use only the first N training images "
                                         "(smoke tests).", low=1)
    test_subset: Optional[int] = option(None, "Use only the first N test images (smoke "
                                        "tests; test_* then cover those).", low=1,
                                        resume="free")
    eval_batch_size: int = option(500, "Batch of the evaluations.", low=1, resume="free")
    steps_per_call: int = option(1, "Train steps per compiled call.", low=1,
                                 resume="free")

    def validate(self) -> "Config":
        super().validate()
        if self.tied and self.model != "dense":
            raise checks.ArgumentError(f"--tied needs --model=dense, got "
                                       f"--model={self.model}")
        if self.decoder is not None and self.model != "conv":
            raise checks.ArgumentError(f"--decoder={self.decoder} needs --model=conv, "
                                       f"got --model={self.model}")
        if (self.warmup_steps is not None and self.steps is not None
                and self.warmup_steps >= self.steps):
            raise checks.ArgumentError(
                f"--warmup_steps must be smaller than --steps, got "
                f"--warmup_steps={self.warmup_steps} --steps={self.steps}")
        return self

    def resolved(self) -> "Config":
        """A copy with the model's defaults filled in where None; validated."""
        conv = self.model == "conv"
        decoder = self.decoder or ("transpose" if conv else None)
        default_rate = CONV_LEARNING_RATE[decoder] if conv else DENSE_LEARNING_RATE
        neither = self.steps is None and self.epochs is None
        return dataclasses.replace(
            self, steps=DEFAULT_STEPS if neither else self.steps, decoder=decoder,
            optimizer=self.optimizer or DEFAULT_OPTIMIZER,
            learning_rate=default_rate if self.learning_rate is None
            else self.learning_rate,
            lr_schedule=self.lr_schedule or (CONV_SCHEDULE if conv
                                             else DENSE_SCHEDULE)).validate()


# -- data ---------------------------------------------------------------------------

def load_data(config: Config, data=None):
    """(x_train, x_val or None, x_test): float32 images [N, 28, 28, 1] in [0, 1].

    `data` (uint8 arrays as `tfcore.data.load_mnist` returns) replaces loading from
    `config.data_dir`; `train_subset` / `test_subset` keep the first N images;
    `val_size` images of the training ones are held out (`tfcore.data.
    train_val_split`, fixed by `seed`).

    Raises:
      ArgumentError: a val_size or batch_size that the training images cannot provide.
    """
    (x_train, y_train), (x_test, _) = data if data is not None else tfdata.load_mnist(
        config.data_dir)
    if config.train_subset:
        x_train, y_train = x_train[:config.train_subset], y_train[:config.train_subset]
    if config.test_subset:
        x_test = x_test[:config.test_subset]
    x_val = None
    if config.val_size:
        checks.check_int(config.val_size, "--val_size (with the training images)",
                         low=0, high=len(x_train) - 1)
        (x_train, _), (x_val, _) = tfdata.train_val_split(x_train, y_train,
                                                          config.val_size, config.seed)
        x_val = tfdata.mnist_images(x_val)
    checks.check_int(config.batch_size, "--batch_size (with the training images)", low=1,
                     high=len(x_train))
    return tfdata.mnist_images(x_train), x_val, tfdata.mnist_images(x_test)


def noisy(images: np.ndarray, noise_factor: float, seed: int) -> np.ndarray:
    """Fixed noisy versions of evaluation images (`models.autoencoder.add_noise` with
    the stateless seed [seed, 7919]); the images themselves without noise."""
    if not noise_factor:
        return images
    seeds = tf.constant([seed, NOISE_SEED], tf.int64)
    return ae.add_noise(tf.convert_to_tensor(images), noise_factor, seeds).numpy()


# -- the model, its schedule and step -------------------------------------------------

def schedule(config: Config, total_steps: int) -> Tuple[Optional[Callable], int]:
    """(lr(t) or None for a constant rate, warm-up steps) of a resolved `config` over a
    run of `total_steps`.

    The warm-up is --warmup_steps when given (then it must be < total_steps), else 0,
    or for a conv model with a schedule `CONV_WARMUP_STEPS`: meant for 10,000-step
    runs, a run that is not longer warms up over its first tenth instead.
    """
    warmup = config.warmup_steps
    if warmup is None:
        warmup = 0
        if config.model == "conv" and config.lr_schedule != "constant":
            warmup = CONV_WARMUP_STEPS if total_steps > CONV_WARMUP_STEPS \
                else total_steps // 10
    elif warmup >= total_steps:
        raise checks.ArgumentError(f"--warmup_steps must be smaller than the run's "
                                   f"{total_steps} steps, got {warmup}")
    if config.lr_schedule == "constant" and not warmup:
        return None, 0
    return lr_schedule.make_learning_rate_fn(
        config.lr_schedule, config.learning_rate, total_steps, warmup_steps=warmup,
        decay_fraction=config.decay_fraction), warmup


def build(config: Config, strategy, total_steps: int):
    """(model, optimizer, step_fn, warmup_steps) of a resolved `config`: the built
    autoencoder, its optimizer and `models.autoencoder.make_train_step` with the
    learning-rate schedule over `total_steps` (`schedule`)."""
    with distribute.scope(strategy):
        model = ae.make_model(config.model, hidden=config.hidden,
                              hidden_activation=config.hidden_activation,
                              tied=config.tied, decoder=config.decoder or "transpose")
        opt = optimizers.get(config.optimizer, learning_rate=config.learning_rate)
        opt.build(model.trainable_variables)
    lr_fn, warmup = schedule(config, total_steps)
    step_fn = ae.make_train_step(model, opt, noise_factor=config.noise_factor,
                                 learning_rate_fn=lr_fn)
    return model, opt, step_fn, warmup


def _evaluations(config: Config, model, x_val, x_test, jit: bool):
    """(eval_fn, test_fn, eval_set, test_inputs): the per-epoch evaluation (the
    validation split, else the test set: then test_fn is the same function) and the
    final test, on noisy inputs and clean targets when denoising.

    The step, the schedule and the metrics have no Python control flow on tensors:
    they are traced without AutoGraph's conversion (docs/decisions.md, "AutoGraph
    off"), here and in `run.fit`."""
    metric_fn = ae.make_metrics_fn(model)
    nf = config.noise_factor

    def make(inputs, clean):
        return loop.make_eval_fn(metric_fn, (inputs, clean) if nf else clean,
                                 batch_size=min(config.eval_batch_size, len(clean)),
                                 jit=jit, autograph=False)

    test_inputs = noisy(x_test, nf, config.seed)
    test_fn = make(test_inputs, x_test)
    if x_val is None:
        return test_fn, test_fn, "test", test_inputs
    return make(noisy(x_val, nf, config.seed + 1), x_val), test_fn, "validation", \
        test_inputs


def reconstructions_picture(model, clean: np.ndarray, inputs: np.ndarray,
                            noise_factor: float) -> np.ndarray:
    """The grid: one column per image; rows: `clean`, the noisy `inputs` (when
    denoising), the model's reconstructions of `inputs` (`tfcore.image_grid`)."""
    rows = [clean] + ([inputs] if noise_factor else [])
    rows.append(model(tf.convert_to_tensor(inputs), training=False).numpy())
    return image_grid.image_grid(np.concatenate(rows), rows=len(rows), cols=len(clean))


# -- the run --------------------------------------------------------------------------

def train_and_evaluate(config: Config, workdir: Optional[str], *, data=None,
                       callbacks: Sequence = ()) -> Dict[str, Any]:
    """Trains the configured autoencoder, evaluates it, writes the run's outputs.

    Args:
      config: a `Config` (None fields: the model's defaults, `Config.resolved`).
      workdir: the run directory (None: nothing written).
      data: optional MNIST arrays ((x_train, y_train), (x_test, y_test)) as
        `tfcore.data.load_mnist` returns them, instead of loading `config.data_dir`.
      callbacks: extra `tfcore.training.callbacks.Callback`s.

    Returns:
      The metrics dict written to <workdir>/metrics.json (see the module docstring).

    Raises:
      tfcore.checks.ArgumentError: a bad option or combination (the message names the
        flag), a workdir or resume the run layer refuses, or data that cannot provide
        the validation split or a batch; nothing is written then.
    """
    config = config.resolved()
    with Run(workdir, config, binary=BINARY) as run:
        x_train, x_val, x_test = load_data(config, data)
        # --jit=auto: XLA on a GPU; on CPU the model's measured choice.
        jit = resolve_jit(config.jit, cpu_xla=ae.prefers_xla_on_cpu(config.model))
        steps_per_epoch = len(x_train) // config.batch_size
        model, opt, step_fn, warmup = build(config, run.strategy,
                                            run.total_steps(steps_per_epoch))
        eval_fn, test_fn, eval_set, test_inputs = _evaluations(config, model, x_val,
                                                               x_test, jit)
        n = min(config.num_images, len(x_test))

        def picture() -> np.ndarray:
            return reconstructions_picture(model, x_test[:n], test_inputs[:n],
                                           config.noise_factor)

        run.fit(step_fn, x_train, objects={"model": model, "optimizer": opt},
                batch_size=config.batch_size, eval_fn=eval_fn, callbacks=list(callbacks),
                images=lambda: {"reconstructions": picture()[None]},
                learning_rates={"learning_rate": opt}, jit=jit,
                steps_per_call=config.steps_per_call, autograph=False)
        test = test_fn()  # eval_fn itself when the evaluation set is the test set
        png = None
        if workdir:
            png = os.path.basename(image_grid.save_png(
                os.path.join(workdir, "reconstructions.png"), picture()))
        return run.finish({
            "test_bce": test["bce"], "test_mse": test["mse"], "eval_set": eval_set,
            "seconds": run.train_seconds, "steps": int(run.loop.step.numpy()),
            "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup, "xla": jit,
            "num_params": model.count_params(),
            "num_variables": len(model.trainable_variables), "reconstructions": png},
            Export(model, IMAGE_SPEC,
                   lambda x: {"reconstructions": model(x, training=False)}))


def summary_line(metrics: Dict[str, Any]) -> str:
    """The binary's last line: `test_bce=... test_mse=... steps=... seconds=...`."""
    return (f"test_bce={metrics['test_bce']:.4f} test_mse={metrics['test_mse']:.4f} "
            f"steps={metrics['steps']} seconds={metrics['seconds']:.0f}")
