"""absl flags common to every binary in train/, their validation, and set-up helpers.

Importing this module defines, on `absl.flags.FLAGS`:

    --workdir        where checkpoints, metrics.json, TensorBoard logs and exports go
    --seed           base seed (steps, data order, initialisation)          [0]
    --resume         continue from the newest checkpoint in --workdir        [False]
    --deterministic  op determinism + seeds: bitwise-reproducible runs        [False]
    --steps          stop after this many global steps (counting resumed ones)
    --epochs         stop after this many epochs (the first of the two wins)
    --batch_size     global batch size                                       [128]
    --jit            auto | on | off (XLA; see tfcore.compile)                [auto]
    --strategy       default | mirrored | multi_worker (see tfcore.distribute)
    --export         save a SavedModel to <workdir>/saved_model at the end    [False]
    --data_dir       directory holding mnist.npz (default: $TFCORE_DATA_DIR, then
                     ~/.keras/datasets)
    --optimizer      sgd | adam | adadelta | rmsprop (default: the binary's)
    --learning_rate  the optimizer's learning rate (default: the binary's)

Bad values are rejected when the flags are parsed, i.e. by `absl.app.run` before
`main` runs, with a message naming the flag: `--batch_size`, `--epochs`, `--steps`
not positive, an unknown `--optimizer`, a `--data_dir` that is not an existing
directory, a non-positive `--learning_rate`, an unknown `--jit` / `--strategy`.

A binary (see tfcore/loop.py for the library call):

    from absl import app
    from train import flags as common
    FLAGS = common.FLAGS
    common.FLAGS.set_default("epochs", 12)              # the binary's defaults

    def main(argv):
        strategy = common.setup()                       # seeds, determinism, strategy
        with tfcore.training.distribute.scope(strategy):
            model = ...; opt = common.make_optimizer("adam", 1e-3)
        history = tfcore.training.loop.fit(step, data, objects={...}, strategy=strategy,
                                  **common.fit_kwargs())
        common.maybe_export(model, tf.TensorSpec([None, 28, 28, 1], tf.float32,
                                                 name="images"))

    if __name__ == "__main__":
        app.run(main)
"""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Dict, Optional

import numpy as np
from absl import flags

FLAGS = flags.FLAGS

OPTIMIZERS = ("sgd", "adam", "adadelta", "rmsprop")  # tfcore.optimizers.get's names
JIT_MODES = ("auto", "on", "off")
STRATEGIES = ("default", "mirrored", "multi_worker")


def _positive_or_none(value) -> bool:
    return value is None or value > 0


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the common flags and their validators on `flag_values` (once)."""
    if "workdir" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.json, "
                        "TensorBoard logs (train/, eval/), exports.", **fv)
    flags.DEFINE_integer("seed", 0, "Base seed of the run.", **fv)
    flags.DEFINE_boolean("resume", False, "Continue from the newest checkpoint in "
                         "--workdir.", **fv)
    flags.DEFINE_boolean("deterministic", False, "Turn on op determinism and seed "
                         "Python, NumPy and TF: bitwise-reproducible runs.", **fv)
    flags.DEFINE_integer("steps", None, "Total global steps (stop at the first of "
                         "--steps / --epochs).", **fv)
    flags.DEFINE_integer("epochs", None, "Total epochs.", **fv)
    flags.DEFINE_integer("batch_size", 128, "Global batch size.", **fv)
    flags.DEFINE_enum("jit", "auto", list(JIT_MODES), "XLA: on, off, or auto (XLA on "
                      "GPU, graph mode on CPU).", **fv)
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute "
                      "strategy.", **fv)
    flags.DEFINE_boolean("export", False, "Export a SavedModel to "
                         "<workdir>/saved_model at the end.", **fv)
    flags.DEFINE_string("data_dir", None, "Directory holding the data (mnist.npz); "
                        "default $TFCORE_DATA_DIR, then ~/.keras/datasets.", **fv)
    flags.DEFINE_string("optimizer", None, f"One of {', '.join(OPTIMIZERS)} "
                        "(default: the binary's).", **fv)
    flags.DEFINE_float("learning_rate", None, "Learning rate (default: the "
                       "binary's).", **fv)

    flags.register_validator("batch_size", lambda v: v is not None and v > 0,
                             message="--batch_size must be a positive integer", **fv)
    flags.register_validator("epochs", _positive_or_none,
                             message="--epochs must be a positive integer", **fv)
    flags.register_validator("steps", _positive_or_none,
                             message="--steps must be a positive integer", **fv)
    flags.register_validator("learning_rate", _positive_or_none,
                             message="--learning_rate must be a positive number", **fv)
    flags.register_validator(
        "optimizer", lambda v: v is None or v.lower() in OPTIMIZERS,
        message=f"--optimizer must be one of {', '.join(OPTIMIZERS)}", **fv)
    flags.register_validator(
        "data_dir", lambda v: v is None or os.path.isdir(v),
        message="--data_dir must be an existing directory", **fv)
    flags.register_validator(
        "workdir", lambda v: v is None or bool(v.strip()),
        message="--workdir must not be empty", **fv)


define_flags(FLAGS)


def apply_determinism(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TF with `seed`; with `deterministic`, turns on
    `tf.config.experimental.enable_op_determinism()` (process-wide, irreversible)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def setup(flag_values: flags.FlagValues = FLAGS):
    """Applies --seed / --deterministic and returns the --strategy's strategy."""
    from tfcore.training import distribute  # pylint: disable=import-outside-toplevel
    apply_determinism(flag_values.seed, flag_values.deterministic)
    return distribute.get_strategy(flag_values.strategy)


def fit_kwargs(flag_values: flags.FlagValues = FLAGS) -> Dict[str, Any]:
    """`tfcore.training.loop.fit` keyword arguments from the flags: workdir, seed, resume,
    epochs, steps, jit."""
    return {"workdir": flag_values.workdir, "seed": flag_values.seed,
            "resume": flag_values.resume, "epochs": flag_values.epochs,
            "steps": flag_values.steps, "jit": flag_values.jit}


def make_optimizer(default_name: str, default_learning_rate: Optional[float] = None,
                   flag_values: flags.FlagValues = FLAGS, **kwargs):
    """`tfcore.optimizers.get(--optimizer or default_name, learning_rate=...)`."""
    from tfcore import optimizers  # pylint: disable=import-outside-toplevel
    lr = flag_values.learning_rate or default_learning_rate
    if lr is not None:
        kwargs["learning_rate"] = lr
    return optimizers.get(flag_values.optimizer or default_name, **kwargs)


def maybe_export(model, input_spec, fn: Optional[Callable] = None,
                 flag_values: flags.FlagValues = FLAGS) -> Optional[str]:
    """With --export, saves a SavedModel to <workdir>/saved_model; returns its path."""
    if not flag_values.export:
        return None
    if not flag_values.workdir:
        raise ValueError("--export needs --workdir")
    from tfcore.training import export  # pylint: disable=import-outside-toplevel
    return export.export_saved_model(model, os.path.join(flag_values.workdir,
                                                         "saved_model"), input_spec, fn=fn)
