"""The run layer under every training binary: what a run checks, writes and keeps.

A binary's library function (`train_and_evaluate(config, workdir)`) is three calls
around its own model code:

    with Run(workdir, config, binary="train.vat") as run:   # checks; writes nothing
        ...  # load the data, build model, optimizer and step (their code checks
        ...  # its arguments, before anything is written)
        history = run.fit(step_fn, data, objects={"model": model, "optimizer": opt},
                          eval_fn=..., images=..., learning_rates={"learning_rate": opt})
        metrics = run.finish({"test_accuracy": ...},
                             Export(model, spec, fn))  # metrics.json, SavedModel

`Run(...)` checks before any work, writing nothing: the configuration's cross-option
rules (`config.validate()`), that `--workdir` is a directory it can write (or create:
a probe file, written and removed), that a used workdir is only continued with
`--resume`, of the same binary, and that the resumed run's options match (the resume
contract below). `run.fit` then creates the workdir and takes its lock (another
process working in it is refused), the run's first writes. It seeds Python, NumPy and TF and
turns on op determinism with `--deterministic`, and picks the `--strategy`.

`run.fit(...)` loads `--init_from` (Keras weights, `tfcore.keras_io`) into a fresh
model, writes `config.json`, then trains with `tfcore.training.loop` and the same
callbacks for every binary: an `EpochTimer`, TensorBoard (`train/`: step and epoch
scalars, the train step's graph, weight histograms, the binary's images; `eval/`:
the validation scalars), the progress display and the periodic checkpoints.
`run.finish(results)` merges the binary's results into `metrics.json` (written first,
so a failing export loses nothing) and exports the SavedModel with `--export`.

The resume contract (Keras's BackupAndRestore and Orbit keep the same promise): the
resolved configuration is saved in every checkpoint (the loop's run state).
`--resume` compares it with the new options before anything is written. A change of
an option declared `resume='same'` (what shapes the model, optimizer, data, loss or
schedule) is refused, listing every differing option with both values; 'free'
options (more epochs or steps, logging, export, jit) may change; 'opt_in' ones (the
learning rate, the batch size) only when named in `--change_on_resume`, and then the
change is honoured (the optimizer's rate is assigned after the restore; the loop
starts a new epoch at the restored step when the batch size changes the epoch
length) and recorded in `metrics.json` `changes` ({step, option, old, new}).

metrics.json holds the loop's record (`status`, `step`, `final`, `history`,
`epochs`, `error`), the binary's results of the last finished attempt
(`results_step` says at which step they were computed), `config`, `binary`,
`changes`, `attempts` ([{started, from_step, status, to_step}]) and the timing
(`epoch_seconds`, `steps_per_second`, `train_seconds`). A failed or interrupted
attempt keeps the results of an earlier one. Files honour the umask.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import logging
import os
import random
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfcore import checks
from tfcore.training import callbacks as tfcallbacks
from tfcore.training import checkpointing, distribute, export, metrics_io, options
from tfcore.training.compile import JIT_MODES
from tfcore.training.loop import Loop, read_run_state
from tfcore.training.options import Options, option

log = logging.getLogger("tfcore.run")

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
OPTIMIZERS = ("sgd", "adam", "adadelta", "rmsprop")  # tfcore.optimizers.get's names
STRATEGIES = ("default", "mirrored", "multi_worker")
LOOP_KEYS = ("status", "step", "final", "history", "epochs", "error")
RUN_KEYS = ("config", "binary", "changes", "attempts", "epoch_seconds",
            "steps_per_second", "train_seconds", "results_step")


class WorkdirError(checks.ArgumentError):
    """`--workdir` cannot be used: a file, not writable, in use, or holding a run
    that this invocation may not touch."""


class ResumeError(checks.ArgumentError):
    """`--resume` refused: the new options differ from the run's in ways the resume
    contract does not allow (the message lists every difference)."""


@dataclasses.dataclass
class RunOptions(Options):
    """The options of every training binary (their flags are generated from these
    fields; see `tfcore.training.options`)."""

    seed: int = option(0, "Base seed of the run: initialisation, data order, dropout, "
                       "noise.")
    deterministic: bool = option(False, "Op determinism + seeds: bitwise-reproducible "
                                 "runs (also across --resume).", resume="free")
    resume: bool = option(False, "Continue the run in --workdir from its newest complete "
                          "checkpoint.", resume="free")
    change_on_resume: Tuple[str, ...] = option(
        (), "With --resume: options allowed to change (only 'opt_in' ones: "
        "learning rates, batch size); the change is recorded in metrics.json.",
        resume="free")
    epochs: Optional[int] = option(None, "Total epochs, counting earlier attempts (the "
                                   "first of --epochs / --steps ends the run).", low=1,
                                   resume="free")
    steps: Optional[int] = option(None, "Total global steps, counting earlier "
                                  "attempts.", low=1, resume="free")
    jit: str = option("auto", "XLA: on, off, or auto (XLA on a GPU, on CPU the model's "
                      "measured choice).", choices=JIT_MODES, resume="free")
    export: bool = option(False, "Export a SavedModel to <workdir>/saved_model at the "
                          "end.", resume="free")
    data_dir: Optional[str] = option(None, "Directory holding the data (mnist.npz); "
                                     "default $TFCORE_DATA_DIR, then ~/.keras/datasets.",
                                     is_dir=True, resume="free")
    init_from: Optional[str] = option(None, "Start from a Keras model's weights (.keras, "
                                      ".weights.h5, or a Keras 2 .h5), matched by layer "
                                      "name; ignored by --resume.", resume="free")
    tensorboard: bool = option(True, "Write TensorBoard summaries to <workdir>/train "
                               "and <workdir>/eval.", resume="free")
    progress: bool = option(True, "Show progress: a live line on a terminal, log "
                            "lines otherwise.", resume="free")
    log_every: int = option(100, "Steps between progress lines and TensorBoard step "
                            "scalars.", low=1, resume="free")

    def validate(self):
        if self.epochs is None and self.steps is None:
            raise checks.ArgumentError("give --epochs or --steps, got neither")
        opt_in = sorted(k for k, r in options.resume_rules(type(self)).items()
                        if r == "opt_in")
        for name in self.change_on_resume:
            if name not in opt_in:
                raise checks.ArgumentError(
                    f"--change_on_resume: {name!r} may not change on resume (those that "
                    f"may: {', '.join(opt_in) or 'none'})")
        return self


@dataclasses.dataclass
class TrainOptions(RunOptions):
    """RunOptions plus one optimizer, the global batch and a tf.distribute strategy."""

    batch_size: int = option(128, "Global batch size.", low=1, resume="opt_in")
    optimizer: Optional[str] = option(None, "The optimizer (default: the binary's).",
                                      choices=OPTIMIZERS)
    learning_rate: Optional[float] = option(None, "The optimizer's learning rate "
                                            "(default: the binary's).", low=0,
                                            low_open=True, resume="opt_in")
    strategy: str = option("default", "tf.distribute strategy.", choices=STRATEGIES,
                           resume="free")


@dataclasses.dataclass
class Export:
    """What `Run.finish` exports with `--export`: `fn(x) -> {name: tensor}` of
    `module` with one input of `spec` (see `tfcore.training.export`)."""

    module: tf.Module
    spec: tf.TensorSpec
    fn: Optional[Callable] = None


def apply_determinism(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TF with `seed`; with `deterministic`, turns on
    `tf.config.experimental.enable_op_determinism()` (process-wide, irreversible)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def config_differences(saved: Mapping[str, Any], config: Options,
                       allowed: Sequence[str] = ()) -> Tuple[List[dict], List[dict]]:
    """(refused, accepted) differences between a run's saved options and `config`.

    Each is {'option', 'old', 'new', 'rule'}. 'free' options are ignored; 'opt_in'
    ones are accepted when named in `allowed`; everything else is refused. An option
    the saved run did not have yet is compared with its default.
    """
    rules = options.resume_rules(type(config))
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    refused, accepted = [], []
    for name, new in config.to_dict().items():
        rule = rules[name]
        old = saved.get(name, defaults[name])
        old = list(old) if isinstance(old, tuple) else old
        if rule == "free" or old == new:
            continue
        diff = {"option": name, "old": old, "new": new, "rule": rule}
        (accepted if rule == "opt_in" and name in allowed else refused).append(diff)
    return refused, accepted


def _describe(diffs: Sequence[dict]) -> str:
    parts = []
    for d in diffs:
        hint = " (allowed with --change_on_resume)" if d["rule"] == "opt_in" else ""
        parts.append(f"--{d['option']}={d['old']!r} -> {d['new']!r}{hint}")
    return "; ".join(parts)


class Run:
    """One training run in `workdir` (see the module docstring).

    Args:
      workdir: the run directory, or None to save nothing (then --resume and
        --export are refused).
      config: the binary's resolved configuration (a `RunOptions`).
      binary: the binary's name ('train.vat'), saved with the run: a workdir of
        another binary is refused.

    Raises:
      WorkdirError, ResumeError, ArgumentError: see the module docstring; nothing has
        been written when they are raised.
    """

    def __init__(self, workdir: Optional[str], config: RunOptions, *, binary: str):
        self.config = config.validate()
        self.binary = binary
        self.workdir = workdir
        self.latest: Optional[str] = None
        self.saved_state: Dict[str, Any] = {}
        self.accepted: List[dict] = []
        self.previous: Dict[str, Any] = {}
        self.loop: Optional[Loop] = None
        self.timer = tfcallbacks.EpochTimer()
        self._lock = None
        if not workdir and (config.resume or config.export):
            raise checks.ArgumentError("--resume and --export need --workdir")
        if workdir:
            check_writable(workdir)
            self._check_resume()
        apply_determinism(config.seed, config.deterministic)
        self.strategy = distribute.get_strategy(getattr(config, "strategy", "default"))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the workdir's lock (`with Run(...) as run:` does it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- checks (nothing written) ----------------------------------------------------
    def _check_resume(self) -> None:
        ckpt_dir = os.path.join(self.workdir, "checkpoints")
        complete = checkpointing.list_complete(ckpt_dir)
        saved_config = metrics_io.read_json(os.path.join(self.workdir, CONFIG_FILE))
        if complete:
            self.latest = complete[0]
            self.saved_state = read_run_state(self.latest) or {}
        binary = self.saved_state.get("binary") or (saved_config or {}).get("binary")
        if binary and binary != self.binary:
            raise WorkdirError(f"--workdir {self.workdir!r} holds a {binary} run, not a "
                               f"{self.binary} one; use another --workdir")
        if not complete:
            return
        if not self.config.resume:
            raise WorkdirError(
                f"--workdir {self.workdir!r} already holds a run (checkpoint "
                f"{os.path.basename(self.latest)}); pass --resume to continue it, or use "
                "another --workdir")
        saved = self.saved_state.get("config") or _saved_config(saved_config) or (
            metrics_io.read_metrics(self.workdir) or {}).get("config") or {}
        refused, self.accepted = config_differences(saved, self.config,
                                                    self.config.change_on_resume)
        if refused:
            raise ResumeError(f"--resume: the run in {self.workdir!r} was made with other "
                              f"options: {_describe(refused)}; resume with the same ones, "
                              "or start a new --workdir")
        self.previous = metrics_io.read_metrics(self.workdir) or {}

    # -- the run ---------------------------------------------------------------------
    def total_steps(self, steps_per_epoch: int) -> int:
        """The global steps this run ends at with `steps_per_epoch` (for learning-rate
        schedules), also after a batch-size change on resume."""
        c, state = self.config, self.saved_state
        epoch_base, step_base = 0, 0
        old = state.get("steps_per_epoch")
        if old and old != steps_per_epoch:  # the loop's rebase, see Loop._rebase
            step_base = int(read_step(self.latest))
            done = step_base - int(state.get("step_base", 0))
            epoch_base = int(state.get("epoch_base", 0)) + -(-done // old)
        elif old:
            epoch_base, step_base = int(state.get("epoch_base", 0)), int(
                state.get("step_base", 0))
        by_epochs = c.epochs and step_base + (c.epochs - epoch_base) * steps_per_epoch
        return min(x for x in (by_epochs, c.steps) if x)

    def fit(self, step_fn: Callable, data: Any, *, objects: Mapping[str, Any],
            eval_fn: Optional[Callable] = None, callbacks: Sequence = (),
            images: Optional[Callable[[], Mapping]] = None, histograms: bool = True,
            learning_rates: Optional[Mapping[str, Any]] = None,
            init_model: Optional[tf.Module] = None,
            after_init: Optional[Callable[[], None]] = None, batch_size: Optional[int] = None,
            jit=None, steps_per_call=1, autograph: bool = True):
        """Trains `step_fn` on `data` with the run's outputs; returns the `History`.

        Args:
          step_fn, data, objects, eval_fn, batch_size, steps_per_call, autograph: as
            `tfcore.training.loop.Loop` takes them.
          callbacks: the binary's own callbacks (after the run's `EpochTimer`).
          images: `() -> {tag: images [k, h, w, c] in [0, 1]}` for TensorBoard.
          histograms: weight histograms in TensorBoard every epoch.
          learning_rates: option name -> the optimizer whose `learning_rate` variable
            it sets ({'learning_rate': opt}), for a change allowed on resume.
          init_model: the module `--init_from` loads into (default objects['model']).
          after_init: called once `--init_from` has been loaded (e.g. to copy the
            loaded weights into a weight average).
          jit: the compile mode (default the configuration's `jit`).

        Raises:
          tfcore.training.loop.Interrupted, NonFiniteError: from the loop (the run
            was saved; metrics.json says why it ended).
        """
        c = self.config
        if c.init_from and self.latest is None:
            self._init_from(init_model if init_model is not None else objects.get("model"))
            if after_init is not None:
                after_init()
        cbs = [self.timer, *callbacks, _AttemptStart(self, dict(learning_rates or {}))]
        if self.workdir and c.tensorboard:
            cbs.append(tfcallbacks.TensorBoard(log_every=c.log_every, images=images,
                                               histograms=histograms, max_images=1))
        self.loop = Loop(step_fn, data, objects=objects, batch_size=batch_size,
                         eval_fn=eval_fn, callbacks=cbs, workdir=self.workdir,
                         seed=c.seed, jit=c.jit if jit is None else jit,
                         strategy=self.strategy, steps_per_call=steps_per_call,
                         progress=c.progress, log_every=c.log_every, autograph=autograph)
        self.loop.state_extra = {"binary": self.binary, "config": c.to_dict(),
                                 "changes": []}
        self.loop.metrics_base = self._metrics_base()
        if self.workdir:
            self._lock_workdir()
            metrics_io.atomic_write_json(os.path.join(self.workdir, CONFIG_FILE),
                                         {"binary": self.binary, "config": c.to_dict()})
        start = time.perf_counter()
        try:
            return self.loop.fit(epochs=c.epochs, steps=c.steps, resume=c.resume)
        finally:
            self.train_seconds = time.perf_counter() - start

    def _lock_workdir(self) -> None:
        """Creates the workdir and takes its lock (held until `close`): the first
        write of the run, after every check."""
        os.makedirs(self.workdir, exist_ok=True)
        lock = open(os.path.join(self.workdir, LOCK_FILE), "a+")  # pylint: disable=consider-using-with
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            lock.close()
            raise WorkdirError(f"--workdir {self.workdir!r} is in use by another "
                               "process") from e
        self._lock = lock

    def _init_from(self, module) -> None:
        from tfcore import keras_io  # pylint: disable=import-outside-toplevel
        if module is None:
            raise checks.ArgumentError("--init_from: this binary names no model to load "
                                       "into")
        keras_io.load_weights(module, self.config.init_from)
        log.info("initialised %s from %s", getattr(module, "name", "the model"),
                 self.config.init_from)

    def _metrics_base(self) -> Dict[str, Any]:
        base = {k: v for k, v in self.previous.items() if k not in LOOP_KEYS}
        attempts = [dict(a) for a in self.previous.get("attempts", [])]
        if attempts and "status" not in attempts[-1]:
            attempts[-1].update(status=self.previous.get("status"),
                                to_step=self.previous.get("step"))
        attempts.append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                         "from_step": 0})
        base.update(binary=self.binary, config=self.config.to_dict(), attempts=attempts,
                    changes=[])
        return base

    def finish(self, results: Mapping[str, Any],
               export_spec: Optional[Export] = None) -> Dict[str, Any]:
        """Merges `results` (the binary's test scores, sizes, ...) and the timing into
        metrics.json, then with `--export` saves the SavedModel (after the results, so
        a failing export loses nothing); returns the metrics dict."""
        loop = self.loop
        metrics = {**loop.metrics_base, **loop.history.to_json(), **results}
        metrics.update(
            epoch_seconds=[e.get("epoch_seconds") for e in loop.history.epochs],
            steps_per_second=self.timer.steady_steps_per_second(),
            train_seconds=self.train_seconds, results_step=int(loop.step.numpy()),
            device="GPU" if tf.config.list_physical_devices("GPU") else "CPU")
        if self.workdir:
            metrics_io.write_metrics(self.workdir, metrics)
        if export_spec is not None and self.config.export:
            metrics["saved_model"] = export.export_saved_model(
                export_spec.module, os.path.join(self.workdir, "saved_model"),
                export_spec.spec, fn=export_spec.fn)
            metrics_io.write_metrics(self.workdir, metrics)
        return metrics


class _AttemptStart(tfcallbacks.Callback):
    """After the restore (`on_train_begin`): records this attempt's first step and the
    options changed on resume, and assigns a changed learning rate."""

    def __init__(self, run: Run, learning_rates: Mapping[str, Any]):
        self.run, self.learning_rates = run, learning_rates

    def on_train_begin(self, logs=None):
        loop = self.loop
        step = int(loop.step.numpy())
        restored = loop.restored_state or {}
        changes = list(restored.get("changes") or [])
        if restored:
            for d in self.run.accepted:
                changes.append({"step": step, "option": d["option"], "old": d["old"],
                                "new": d["new"]})
                if d["option"] in self.learning_rates:
                    self.learning_rates[d["option"]].learning_rate.assign(d["new"])
                log.warning("--%s changed on resume at step %d: %r -> %r", d["option"],
                            step, d["old"], d["new"])
        loop.state_extra["changes"] = changes
        loop.metrics_base["changes"] = changes
        loop.metrics_base["attempts"][-1]["from_step"] = step


def _saved_config(config_json: Optional[dict]) -> Optional[dict]:
    """The options in a config.json: {'binary', 'config'}, or the flat dict of the
    options that train.dcgan wrote before the run layer."""
    if not config_json:
        return None
    return config_json.get("config") if "binary" in config_json else config_json


def read_step(path: str) -> int:
    """The global step saved in checkpoint prefix `path`."""
    return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def check_writable(directory: str, what: str = "--workdir") -> None:
    """Raises WorkdirError unless `directory` is a writable directory or can be created
    as one. Nothing is left behind: a probe file is written, synced and removed in the
    directory, or, when it does not exist yet, in its deepest existing ancestor."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise WorkdirError(f"{what} {directory!r} is a file, not a directory")
    probe_dir = os.path.abspath(directory)
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise WorkdirError(f"{what} {directory!r} cannot be created: {probe_dir!r} is a "
                           "file")
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".probe") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WorkdirError(f"{what} {directory!r} is not writable: {e.strerror or e}") \
            from e
