"""Train an MNIST autoencoder: dense (optionally tied) or convolutional, denoising.

    python -m train.autoencoder --workdir=runs/ae_dense --model=dense --steps=10000
    python -m train.autoencoder --workdir=runs/ae_tied --model=dense --tied
    python -m train.autoencoder --workdir=runs/ae_blog --model=dense --hidden=32 \\
        --hidden_activation=relu
    python -m train.autoencoder --workdir=runs/ae_conv --model=conv \\
        [--decoder=transpose|upsample] [--noise_factor=0.5] [--export]

Writes into --workdir:
* `metrics.json`: the loop's per-epoch lists (`history`: train `loss` (BCE from
  logits), `mse`, and `val_bce` / `val_mse` on the per-epoch evaluation set: the
  test set, or with --val_size=N a validation split of N training images) plus
  `test_bce` and `test_mse` (per pixel, on the 10,000 test images, noisy inputs and
  clean targets when denoising), `eval_set`, `seconds`, `steps`, `config`,
  `epoch_seconds` (the training time of each epoch, the per-epoch evaluation and
  pictures excluded; the first epoch includes tracing), `steps_per_second` (the
  steady state: this process's epochs after the first, or all when there is one;
  `tfcore.training.callbacks.EpochTimer`), `steps_per_epoch`.
* `reconstructions.png`: a grid, one column per test digit: the digits, their noisy
  versions (when denoising), their reconstructions; the same picture is written to
  TensorBoard (`train/`, tag `reconstructions`) every epoch.
* checkpoints, TensorBoard logs (`train/`, `eval/`), with --export a SavedModel
  (`saved_model/`: `images` [N, 28, 28, 1] in -> `reconstructions`).

Defaults: Adam, batch 128, 10,000 steps; dense: learning rate 1e-3, constant;
conv: CONV_LEARNING_RATE[decoder] (2e-2 transpose, 1e-2 upsample) with the
CONV_SCHEDULE schedule (found on a validation split, see README / train/ae_table.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, Optional

from absl import app, flags

from train import flags as common

FLAGS = common.FLAGS

# The conv defaults, per decoder, chosen on a 5,000-image validation split of the
# training set (`python -m train.ae_table --search`; test set untouched): see README.
# transpose: peak 2e-2 (val BCE 0.0933) beat 1e-2 with the same wsd schedule (0.0945),
# with its decay over the last half (0.0950) and cosine to 0 (0.0968); upsample: 1e-2
# (0.0873) beat 2e-2 (0.0898).
CONV_LEARNING_RATE = {"transpose": 2e-2, "upsample": 1e-2}
CONV_SCHEDULE = "wsd"
CONV_WARMUP_STEPS = 200
DENSE_LEARNING_RATE = 1e-3
DENSE_SCHEDULE = "constant"

MODELS = ("dense", "conv")
DECODERS = ("transpose", "upsample")
SCHEDULES = ("constant", "cosine", "step", "wsd")
ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear", "elu", "selu", "softplus", "gelu",
               "swish")

def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the common flags (train/flags.py) and this binary's on `flag_values`
    (once). `__main__` calls it, so importing this module defines no flags."""
    common.define_flags(flag_values)
    if "noise_factor" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("model", "dense", list(MODELS), "Autoencoder: dense or conv.", **fv)
    flags.DEFINE_integer("hidden", 625, "Dense: code size (625: the original TF port; "
                         "32: the Keras blog).", **fv)
    flags.DEFINE_string("hidden_activation", "sigmoid", "Dense: the code's activation "
                        "(sigmoid: the original TF port; relu: the Keras blog).", **fv)
    flags.DEFINE_boolean("tied", False, "Dense: decoder kernel = transpose of the "
                         "encoder kernel (one shared variable).", **fv)
    flags.DEFINE_enum("decoder", None, list(DECODERS), "Conv: 'transpose' "
                      "(conv2d_transpose, default) or 'upsample' (Conv2D + "
                      "UpSampling2D).", **fv)
    flags.DEFINE_float("noise_factor", 0.0, "Denoising: Gaussian noise of this std "
                       "added to the inputs (clipped to [0, 1]); the target stays "
                       "clean.", **fv)
    flags.DEFINE_enum("lr_schedule", None, list(SCHEDULES), "Learning-rate schedule "
                      "over the run's steps (default: dense constant, conv "
                      f"{CONV_SCHEDULE}).", **fv)
    flags.DEFINE_float("decay_fraction", 0.3, "'wsd' schedule: the share of the "
                       "steps spent decaying the rate linearly to 0.", **fv)
    flags.DEFINE_integer("warmup_steps", None, "Linear warm-up steps of the schedule "
                         f"(default 0; conv {CONV_WARMUP_STEPS}).", **fv)
    flags.DEFINE_integer("val_size", 0, "Hold out this many training images as the "
                         "per-epoch evaluation set (0: the test set).", **fv)
    flags.DEFINE_integer("num_images", 10, "Test digits (columns) in "
                         "reconstructions.png.", **fv)
    flags.DEFINE_integer("train_subset", None, "Use only the first N training images "
                         "(smoke tests).", **fv)

    validators = [
        ("hidden", lambda v: v is not None and v > 0, "a positive integer"),
        ("hidden_activation", lambda v: v in ACTIVATIONS,
         f"one of {', '.join(ACTIVATIONS)}"),
        ("noise_factor", lambda v: v is not None and 0.0 <= v < 1e6, "a number >= 0"),
        ("warmup_steps", lambda v: v is None or v >= 0, "an integer >= 0"),
        ("decay_fraction", lambda v: v is not None and 0.0 < v <= 1.0, "in (0, 1]"),
        ("val_size", lambda v: v is not None and 0 <= v < 60000, "in [0, 60000)"),
        ("num_images", lambda v: v is not None and 0 < v <= 100, "in [1, 100]"),
        ("train_subset", lambda v: v is None or v > 0, "a positive integer"),
    ]
    for name, check, what in validators:
        flags.register_validator(name, check, message=f"--{name} must be {what}", **fv)
    flags.register_multi_flags_validator(
        ["model", "tied"], lambda d: not (d["tied"] and d["model"] != "dense"),
        message="--tied needs --model=dense", **fv)
    flags.register_multi_flags_validator(
        ["model", "decoder"], lambda d: d["decoder"] is None or d["model"] == "conv",
        message="--decoder needs --model=conv", **fv)
    flags.register_multi_flags_validator(
        ["steps", "warmup_steps"],
        lambda d: d["warmup_steps"] is None or d["steps"] is None or
        d["warmup_steps"] < d["steps"],
        message="--warmup_steps must be smaller than --steps", **fv)


log = logging.getLogger("train.autoencoder")


@dataclasses.dataclass
class Config:
    """Everything `train_and_evaluate` needs (plain values; flags map 1:1).

    None for `optimizer`, `learning_rate`, `lr_schedule`, `warmup_steps`, `decoder`:
    the model's default (see the module docstring).
    """
    model: str = "dense"
    hidden: int = 625
    hidden_activation: str = "sigmoid"
    tied: bool = False
    decoder: Optional[str] = None
    noise_factor: float = 0.0
    steps: Optional[int] = 10000
    epochs: Optional[int] = None
    batch_size: int = 128
    optimizer: Optional[str] = None
    learning_rate: Optional[float] = None
    lr_schedule: Optional[str] = None
    warmup_steps: Optional[int] = None
    decay_fraction: float = 0.3
    val_size: int = 0
    num_images: int = 10
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    jit: str = "auto"
    export: bool = False
    data_dir: Optional[str] = None
    eval_batch_size: int = 500
    tensorboard: bool = True
    steps_per_call: int = 1

    def resolved(self) -> "Config":
        """A copy with the model's defaults filled in; validates the combination."""
        c = dataclasses.replace(self)
        if c.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {c.model!r}")
        if c.tied and c.model != "dense":
            raise ValueError(f"tied=True needs model='dense', got model={c.model!r}")
        if c.decoder is not None and c.model != "conv":
            raise ValueError(f"decoder={c.decoder!r} needs model='conv', got "
                             f"model={c.model!r}")
        if c.steps is None and c.epochs is None:
            raise ValueError("give steps or epochs (a positive integer), got neither")
        conv = c.model == "conv"
        c.decoder = c.decoder or ("transpose" if conv else None)
        c.optimizer = c.optimizer or "adam"
        c.learning_rate = c.learning_rate or (CONV_LEARNING_RATE[c.decoder] if conv
                                              else DENSE_LEARNING_RATE)
        c.lr_schedule = c.lr_schedule or (CONV_SCHEDULE if conv else DENSE_SCHEDULE)
        if c.warmup_steps is None:
            c.warmup_steps = CONV_WARMUP_STEPS if (conv and c.lr_schedule != "constant") \
                else 0
        return c


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> Config:
    """The `Config` of the parsed flags (neither --steps nor --epochs: 10,000 steps)."""
    names = [f.name for f in dataclasses.fields(Config) if f.name in flag_values]
    config = Config(**{n: flag_values[n].value for n in names})
    if config.steps is None and config.epochs is None:
        config.steps = 10000  # the binary's default length
    return config


def _load(config: Config):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tfcore import data  # pylint: disable=import-outside-toplevel
    (x_train, y_train), (x_test, _) = data.load_mnist(config.data_dir)
    if config.train_subset:
        x_train, y_train = x_train[:config.train_subset], y_train[:config.train_subset]
    if config.test_subset:  # smoke tests only: test_* then cover the first N images
        x_test = x_test[:config.test_subset]
    x_val = None
    if config.val_size:
        (x_train, _), (x_val, _) = data.train_val_split(x_train, y_train, config.val_size,
                                                        seed=config.seed)
        x_val = data.mnist_images(x_val)
    return data.mnist_images(x_train), x_val, data.mnist_images(x_test)


def _noisy(images, noise_factor: float, seed: int):
    """Fixed noisy versions of evaluation images (stateless seed [seed, 7919])."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from models import autoencoder as ae  # pylint: disable=import-outside-toplevel
    if not noise_factor:
        return images
    x = tf.convert_to_tensor(images)
    return ae.add_noise(x, noise_factor, tf.constant([seed, 7919], tf.int64)).numpy()


def train_and_evaluate(config: Config, workdir: str, strategy=None) -> Dict[str, Any]:
    """Trains the configured autoencoder, evaluates it on the test set, writes
    `workdir/metrics.json`, `workdir/reconstructions.png` (and the export).

    Args:
      config: a `Config` (None fields: the model's defaults).
      workdir: the run directory.
      strategy: an optional `tf.distribute.Strategy`.

    Returns:
      The metrics dict written to metrics.json ('test_bce', 'test_mse', 'seconds',
      'steps', 'history', ...).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tfcore  # pylint: disable=import-outside-toplevel
    from models import autoencoder as ae  # pylint: disable=import-outside-toplevel
    from tfcore import image_grid
    from tfcore.training import callbacks, distribute, export, loop, lr_schedule, metrics_io
    from tfcore.training.compile import resolve_jit  # pylint: disable=import-outside-toplevel

    if not workdir:
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    c = config.resolved()
    common.apply_determinism(c.seed, c.deterministic)
    # --jit=auto: XLA on a GPU; on CPU the model's measured choice.
    jit = resolve_jit(c.jit, cpu_xla=ae.prefers_xla_on_cpu(c.model))
    x_train, x_val, x_test = _load(c)
    test_inputs = _noisy(x_test, c.noise_factor, c.seed)
    eval_set = "validation" if x_val is not None else "test"
    eval_clean = x_val if x_val is not None else x_test
    eval_inputs = _noisy(eval_clean, c.noise_factor, c.seed + 1) \
        if x_val is not None else test_inputs

    with distribute.scope(strategy):
        model = ae.make_model(c.model, hidden=c.hidden,
                              hidden_activation=c.hidden_activation, tied=c.tied,
                              decoder=c.decoder or "transpose")
        opt = tfcore.optimizers.get(c.optimizer, learning_rate=c.learning_rate)
        opt.build(model.trainable_variables)
    spe = len(x_train) // c.batch_size
    total = loop.total_steps(c.epochs, c.steps, spe)
    lr_fn = None
    # The conv default's 200 warm-up steps are meant for 10,000-step runs: a short run
    # warms up over its first tenth instead (an explicit --warmup_steps is validated
    # against --steps by the flags and used as given).
    warmup = c.warmup_steps
    if warmup >= total and warmup == CONV_WARMUP_STEPS and c.model == "conv":
        warmup = total // 10
    if c.lr_schedule != "constant" or warmup:
        lr_fn = lr_schedule.make_learning_rate_fn(c.lr_schedule, c.learning_rate, total,
                                         warmup_steps=warmup,
                                         decay_fraction=c.decay_fraction)
    step_fn = ae.make_train_step(model, opt, noise_factor=c.noise_factor,
                                 learning_rate_fn=lr_fn)
    metric_fn = ae.make_metrics_fn(model)
    pairs = lambda inputs, clean: (inputs, clean) if c.noise_factor else clean  # noqa
    eval_fn = loop.make_eval_fn(metric_fn, pairs(eval_inputs, eval_clean),
                                batch_size=min(c.eval_batch_size, len(eval_clean)),
                                jit=jit)

    n = min(c.num_images, len(x_test))
    show_clean, show_noisy = x_test[:n], test_inputs[:n]

    def picture() -> np.ndarray:
        rows = [show_clean] + ([show_noisy] if c.noise_factor else [])
        rows.append(model(tf.convert_to_tensor(show_noisy), training=False).numpy())
        return image_grid.image_grid(np.concatenate(rows), rows=len(rows), cols=n)

    timer = callbacks.EpochTimer()  # first, so its batch hook runs before the others'
    cbs = [timer]
    if c.tensorboard:
        cbs.append(callbacks.TensorBoard(
            log_every=100, images=lambda: {"reconstructions": picture()[None]},
            max_images=1))
    start = time.perf_counter()
    history = loop.fit(step_fn, x_train, batch_size=c.batch_size,
                       objects={"model": model, "optimizer": opt}, eval_fn=eval_fn,
                       steps=c.steps, epochs=c.epochs, workdir=workdir, seed=c.seed,
                       resume=c.resume, jit=jit, strategy=strategy, callbacks=cbs,
                       steps_per_call=c.steps_per_call)
    seconds = time.perf_counter() - start

    if eval_set == "test":  # the same set: reuse the compiled evaluation
        test = eval_fn()
    else:
        test = loop.make_eval_fn(metric_fn, pairs(test_inputs, x_test),
                                 batch_size=min(c.eval_batch_size, len(x_test)),
                                 jit=jit)()
    grid = picture()
    png = image_grid.save_png(os.path.join(workdir, "reconstructions.png"), grid)
    metrics = metrics_io.read_metrics(workdir) or history.to_json()
    metrics.update({
        "test_bce": test["bce"], "test_mse": test["mse"], "eval_set": eval_set,
        "seconds": seconds, "steps": int(history.loop.step.numpy()),
        "epoch_seconds": [e.get("epoch_seconds") for e in history.epochs],
        "steps_per_second": timer.steady_steps_per_second(),
        "steps_per_epoch": spe,
        "xla": jit,  # the compile mode --jit resolved to
        "num_params": model.count_params(),
        "num_variables": len(model.trainable_variables),
        "reconstructions": os.path.basename(png),
        "config": dataclasses.asdict(c)})
    if c.export:
        spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")
        metrics["saved_model"] = export.export_saved_model(
            model, os.path.join(workdir, "saved_model"), spec,
            fn=lambda x: {"reconstructions": model(x, training=False)})
    metrics_io.write_metrics(workdir, metrics)
    log.info("test_bce=%.4f test_mse=%.4f steps=%d seconds=%.0f", test["bce"],
             test["mse"], metrics["steps"], seconds)
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    strategy = common.setup()
    config = config_from_flags()
    metrics = train_and_evaluate(config, FLAGS.workdir, strategy=strategy)
    print(f"test_bce={metrics['test_bce']:.4f} test_mse={metrics['test_mse']:.4f} "
          f"steps={metrics['steps']} seconds={metrics['seconds']:.0f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    define_flags(FLAGS)
    app.run(main)
