"""Callbacks for `tfcore.loop`: hooks at train / epoch / batch begin and end.

A callback subclasses `Callback` and overrides any of

    on_train_begin(logs)          on_train_end(logs)
    on_epoch_begin(epoch, logs)   on_epoch_end(epoch, logs)
    on_batch_begin(step, logs)    on_batch_end(step, logs)
    close()                       # always called last, also when training fails

`epoch` is 0-based. `step` is the GLOBAL step: in `on_batch_begin` the number of
steps done before the call, in `on_batch_end` the number done after it (so a
checkpoint saved there is `ckpt-<step>`). `logs` are dicts of Python floats: the
step's metrics in `on_batch_end` (the mean over the call in multi-step mode), the
epoch's train means plus `val_*` metrics in `on_epoch_end` (a callback may add keys,
e.g. `learning_rate` or a GAN's `classifier_score`: the loop records the dict after
all callbacks ran, in the History and metrics.json's epoch entries, `history` and
`final`), a copy of the last epoch's in `on_train_end` (keys added there go to
metrics.json's `final` only). 'epoch' and 'step' are the loop's. Never write
metrics.json from a callback: the loop rewrites it after every epoch. `self.loop` is the
running `tfcore.training.loop.Loop` (its `objects`, `step`, `workdir`, `checkpointer`,
`optimizers()`, `model_variables()`, `stop_training`, ...).

Built in:
* `EarlyStopping(monitor, mode, patience, min_delta, restore_best_weights, baseline)`
  (Keras 3's rules).
* `ModelCheckpoint`: periodic (`every_epochs` / `every_steps`, the loop's
  `workdir/checkpoints`, `max_to_keep` there) or `save_best_only` on `monitor`/`mode`
  (`workdir/best`, one kept, with `best.json` {monitor, value, epoch, step}).
* `ReduceLROnPlateau(monitor, factor, patience, min_lr, min_delta, cooldown)`
  (Keras 3's rules), assigning every optimizer's `learning_rate` variable: no retrace.
* `TensorBoard`: scalars every `log_every` steps and per epoch (`workdir/train`,
  `workdir/eval`), weight histograms and activation histograms per epoch, images,
  the step's graph, and embeddings for the Projector (see `tfcore.summaries`).
* `EvalMonitor(eval_fn, prefix)`: another set's metrics in every epoch's logs.
* `ActivationLogger`: the textbook's custom callback, saving a layer's activations
  for a fixed validation sample each epoch as `workdir/activations/epoch_NNNN.npz`.
* `ProgressLogger`: a live progress line on a terminal (epoch, step, steps/s, ETA,
  metrics), one plain log line every `log_every` steps otherwise.
* `EpochTimer`: `epoch_seconds` in each epoch's logs (training only: evaluation,
  checkpoints and pictures at the epoch end excluded) and `steady_steps_per_second()`,
  the rate the binaries write to metrics.json as `steps_per_second`.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, IO, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfcore import checks
from tfcore.training import metrics_io, summaries

log = logging.getLogger("tfcore.callbacks")


class Callback:
    """Base class: every hook is a no-op. `self.loop` is set before training."""

    loop = None

    def set_loop(self, loop) -> None:
        self.loop = loop

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        pass

    def on_batch_begin(self, step: int, logs: Optional[dict] = None) -> None:
        pass

    def on_batch_end(self, step: int, logs: Optional[dict] = None) -> None:
        pass

    def close(self) -> None:
        """Releases resources (files); called after training ends or fails."""

    def get_state(self) -> Optional[dict]:
        """What this callback must remember across a resume (JSON values), or None
        (the default: nothing). The loop saves it in every checkpoint's run state."""
        return None

    def set_state(self, state: dict) -> None:
        """Takes back `get_state()`'s dict after a resume (after `on_train_begin`)."""


# -- monitored-metric callbacks -------------------------------------------------------

def _resolve_mode(mode: str, monitor: str) -> str:
    m = checks.check_choice(str(mode).lower(), "mode", ("auto", "min", "max"))
    if m == "auto":  # Keras: accuracy-like metrics are maximised
        name = monitor[4:] if monitor.startswith("val_") else monitor
        m = "max" if ("acc" in name or name.startswith("fmeasure") or name == "auc") else "min"
    return m


class MonitoredCallback(Callback):
    """Base of the callbacks that watch one metric of the epoch logs (EarlyStopping,
    ReduceLROnPlateau, best-only ModelCheckpoint): `monitor`, `mode` ('min' / 'max',
    'auto' from the name as Keras does) and `current(logs)`, which warns once per call
    when the metric is missing. `state_keys` are saved across resumes."""

    state_keys: Sequence[str] = ()

    def __init__(self, monitor: str, mode: str = "auto"):
        self.monitor = checks.check_name(monitor, "monitor")
        self.mode = _resolve_mode(mode, monitor)

    def current(self, logs) -> Optional[float]:
        """The monitored value in `logs`, or None (with a warning) when absent."""
        value = (logs or {}).get(self.monitor)
        if value is None:
            log.warning("%s: metric %r not in logs (have %s)", type(self).__name__,
                        self.monitor, sorted(logs or {}))
        return value

    def get_state(self) -> Optional[dict]:
        if not self.state_keys:
            return None
        return {k: getattr(self, k) for k in self.state_keys}

    def set_state(self, state: dict) -> None:
        for k in self.state_keys:
            if k in state:
                setattr(self, k, state[k])


def _snapshot(variables: Mapping[str, tf.Variable]) -> Dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in variables.items()}


class EarlyStopping(MonitoredCallback):
    """Stops training when `monitor` has stopped improving (Keras 3's rules).

    At each epoch end: `wait += 1`; if the value improves on the best by more than
    `min_delta` (below it for 'min', above for 'max') it becomes the best and
    `wait = 0` (if it also beats `baseline`, when set); otherwise, once
    `wait >= patience` (and epoch > 0), training stops.

    Args:
      monitor: the metric name in the epoch logs (default 'val_loss').
      min_delta: the minimum change that counts as an improvement (>= 0).
      patience: epochs without improvement before stopping (>= 0).
      mode: 'min', 'max' or 'auto' (max for accuracy-like names).
      baseline: a value to beat; training stops if it is not beaten within patience.
      restore_best_weights: at the end, put back the model variables of the best
        epoch (models = the loop's objects that are not optimizers). Across a resume
        the counters and the best value carry on; the best weights do not (they are
        not in the checkpoint), so after a resume they are those of the best epoch
        since the resume.
      start_from_epoch: epochs to wait before monitoring.

    Attributes:
      stopped_epoch (0 if not stopped), best, best_epoch, wait.
    """

    state_keys = ("wait", "stopped_epoch", "best", "best_epoch")

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0,
                 patience: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        super().__init__(monitor, mode)
        self.min_delta = checks.check_real(min_delta, "min_delta", low=0)
        self.patience = checks.check_int(patience, "patience", low=0)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = checks.check_int(start_from_epoch, "start_from_epoch",
                                                 low=0)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None

    def _improves(self, value: float, reference: Optional[float]) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = self.current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        variables = self.loop.model_variables() if self.restore_best_weights else None
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(variables)
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(variables)
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.loop.stop_training = True
            log.info("EarlyStopping: stopping after epoch %d (best %s=%.6g at epoch %d)",
                     epoch, self.monitor, self.best, self.best_epoch)

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            for k, v in self.loop.model_variables().items():
                v.assign(self.best_weights[k])
            log.info("EarlyStopping: restored the weights of epoch %d", self.best_epoch)


class ModelCheckpoint(MonitoredCallback):
    """Saves training checkpoints: periodic (default) or the best only.

    Periodic (`save_best_only=False`): saves `ckpt-<step>` through the loop
    (`Loop.save_checkpoint`: `workdir/checkpoints`, the one `resume` reads) every
    `every_epochs` epochs and/or every `every_steps` steps, and at the end of
    training; `max_to_keep` (if given) overrides the loop's. With `directory`, into
    that directory instead.

    Best only: after each epoch, if `monitor` is better than the best so far (strictly,
    per `mode`), saves the whole training checkpoint into `directory` (default
    `workdir/best`, one kept) and `best.json` ({monitor, value, epoch, step, path}).
    The best value survives a resume (it is part of the run state). Load the best
    weights with `tfcore.training.checkpointing.restore_objects(workdir + '/best', ...)`.

    Nothing is saved after a failed step: a NaN stop raises before any hook runs. The
    loop calls every ModelCheckpoint's `on_epoch_end` after the other callbacks', so
    a checkpoint holds the epoch's complete record.
    """

    def __init__(self, save_best_only: bool = False, monitor: str = "val_loss",
                 mode: str = "auto", every_epochs: Optional[int] = 1,
                 every_steps: Optional[int] = None, max_to_keep: Optional[int] = None,
                 directory: Optional[str] = None):
        super().__init__(monitor, mode)
        self.save_best_only = checks.check_bool(save_best_only, "save_best_only")
        self.every_epochs = checks.check_int(every_epochs, "every_epochs", low=1,
                                             allow_none=True)
        self.every_steps = checks.check_int(every_steps, "every_steps", low=1,
                                            allow_none=True)
        self.max_to_keep = checks.check_int(max_to_keep, "max_to_keep", low=1,
                                            allow_none=True)
        self.directory = directory
        self.state_keys = ("best",) if self.save_best_only else ()
        self.best = None
        self.saved_step = None
        self._saver = None

    def on_train_begin(self, logs=None):
        loop = self.loop
        self.best = None
        if self.save_best_only or self.directory:
            if not loop.workdir and not self.directory:
                raise checks.ArgumentError("ModelCheckpoint needs the loop's workdir or a "
                                           "directory")
            directory = self.directory or os.path.join(loop.workdir, "best")
            keep = 1 if self.save_best_only else (self.max_to_keep or 3)
            self._saver = loop.make_checkpointer(directory, max_to_keep=keep)
        else:
            if loop.checkpointer is None:
                raise checks.ArgumentError("ModelCheckpoint needs the loop's workdir or a "
                                           "directory")
            if self.max_to_keep is not None:
                loop.checkpointer.max_to_keep = self.max_to_keep
        self.saved_step = int(loop.step.numpy())

    def _save(self) -> Optional[str]:
        step = int(self.loop.step.numpy())
        if step == self.saved_step:
            return None
        self.saved_step = step
        if self._saver is not None:
            return self._saver.save(step)
        return self.loop.save_checkpoint()

    def on_batch_end(self, step, logs=None):
        if self.save_best_only or not self.every_steps:
            return
        last = self.saved_step or 0
        if step // self.every_steps > last // self.every_steps:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        if not self.save_best_only:
            if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
                self._save()
            return
        current = self.current(logs)
        if current is None or not np.isfinite(current):
            return
        if self.best is None or (current < self.best if self.mode == "min"
                                 else current > self.best):
            self.best = current
            step = int(self.loop.step.numpy())
            path = self._saver.save(step)
            if self.loop.is_chief:
                metrics_io.atomic_write_json(
                    os.path.join(self._saver.directory, "best.json"),
                    {"monitor": self.monitor, "mode": self.mode, "value": current,
                     "epoch": epoch, "step": step, "path": os.path.basename(path)})

    def on_train_end(self, logs=None):
        if not self.save_best_only:
            self._save()


class ReduceLROnPlateau(MonitoredCallback):
    """Multiplies the learning rate by `factor` when `monitor` plateaus (Keras 3).

    At each epoch end (logging the current `learning_rate` in the logs): in cooldown,
    count it down and reset `wait`; an improvement (below best - min_delta for 'min',
    above best + min_delta for 'max') resets `wait`; otherwise, out of cooldown,
    `wait += 1`, and at `wait >= patience` the rate becomes
    `max(lr * factor, min_lr)` (if lr > min_lr), then cooldown starts.

    The rate is `assign`ed to each optimizer's `learning_rate` tf.Variable (the
    loop's `optimizers()`, or those given), so compiled steps are not retraced.

    Args:
      monitor: metric name (default 'val_loss').
      factor: in (0, 1).
      patience: epochs without improvement before reducing (>= 0).
      mode: 'min', 'max' or 'auto'.
      min_delta: threshold of a significant change (>= 0, default 1e-4).
      cooldown: epochs to wait after a reduction (>= 0).
      min_lr: lower bound on the rate (>= 0).
      optimizers: optimizers to act on (default: every loop object with a
        `learning_rate` variable).
    """

    state_keys = ("best", "wait", "cooldown_counter")

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, optimizers: Optional[Sequence[Any]] = None):
        super().__init__(monitor, mode)
        self.factor = checks.check_real(factor, "factor", low=0, high=1, low_open=True,
                                        high_open=True)
        self.patience = checks.check_int(patience, "patience", low=0)
        self.min_delta = checks.check_real(min_delta, "min_delta", low=0)
        self.cooldown = checks.check_int(cooldown, "cooldown", low=0)
        self.min_lr = checks.check_real(min_lr, "min_lr", low=0)
        self._given = list(optimizers) if optimizers is not None else None
        self._reset()

    def _reset(self):
        self.best = np.inf if self.mode == "min" else -np.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _improves(self, current, best) -> bool:
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()
        self.optimizers = self._given if self._given is not None else self.loop.optimizers()
        if not self.optimizers:
            raise checks.ArgumentError("ReduceLROnPlateau: no optimizer with a "
                                       "learning_rate tf.Variable among the loop's objects")
        for opt in self.optimizers:
            if not isinstance(getattr(opt, "learning_rate", None), tf.Variable):
                raise checks.ArgumentError(f"ReduceLROnPlateau: {opt!r} has no "
                                           "learning_rate tf.Variable to assign")

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if self.best is None:  # +-inf is saved as null (strict JSON)
            self.best = np.inf if self.mode == "min" else -np.inf

    def _lr(self) -> float:
        return float(self.optimizers[0].learning_rate.numpy())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self._lr()
        current = self.current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce(self, epoch: int) -> bool:
        reduced = False
        for opt in self.optimizers:
            old = float(opt.learning_rate.numpy())
            if old > np.float32(self.min_lr):
                new = max(old * self.factor, self.min_lr)
                opt.learning_rate.assign(new)
                reduced = True
                log.info("ReduceLROnPlateau: epoch %d, learning rate %.4g -> %.4g",
                         epoch, old, new)
        return reduced


class TensorBoard(Callback):
    """TensorBoard summaries under `workdir/train` and `workdir/eval`.

    Args:
      log_every: write the step's metrics every this many steps (train/, tag `<name>`).
        Epoch means always go to train/ as `epoch_<name>`, `val_*` metrics to eval/
        as `epoch_<name>`; all at the global step.
      histograms: weight histograms (`weights/<object>/<path>`) every epoch.
      activations: `() -> {name: tensor}`, histograms `activations/<name>` every epoch
        (e.g. `lambda: {'dense_1': model.layers[0](x_fixed)}`).
      images: `() -> {name: images [k, h, w, c] in [0, 1]}` (reconstructions,
        samples), written every epoch to train/.
      max_images: images per tag.
      graph: write the compiled train step's graph (after its first call), also when
        it is XLA-compiled (the traced function's graph, `Loop.step_graph`).
      embeddings: `() -> {name: (vectors [N, D], labels or None)}` (or that dict),
        written for the Projector into train/ every epoch (the newest is kept).
      directory: default the loop's workdir.
    """

    def __init__(self, log_every: int = 100, histograms: bool = True,
                 activations: Optional[Callable[[], Mapping]] = None,
                 images: Optional[Callable[[], Mapping]] = None, max_images: int = 16,
                 graph: bool = True,
                 embeddings: Union[None, Mapping, Callable[[], Mapping]] = None,
                 directory: Optional[str] = None):
        checks.check_int(log_every, "log_every", low=1)
        for name, fn in (("activations", activations), ("images", images)):
            if fn is not None and not callable(fn):
                raise checks.ArgumentError(f"{name} must be a callable returning a dict, "
                                           f"got {fn!r}")
        self.log_every = log_every
        self.histograms = bool(histograms)
        self.activations = activations
        self.images = images
        self.max_images = max_images
        self.graph = bool(graph)
        self.embeddings = embeddings
        self.directory = directory
        self.writers = None
        self._graph_pending = False
        self._last_logged = None

    def on_train_begin(self, logs=None):
        directory = self.directory or self.loop.workdir
        if not directory:
            raise checks.ArgumentError("TensorBoard needs the loop's workdir or a directory")
        self.enabled = self.loop.is_chief
        self.writers = summaries.Writers(directory)
        self._last_logged = int(self.loop.step.numpy())
        self._graph_pending = self.graph and self.enabled

    def on_batch_end(self, step, logs=None):
        if not self.enabled:
            return
        if self._graph_pending:
            graph = self.loop.step_graph()
            if graph is not None:
                self.writers.graph("train", graph, step)
            self._graph_pending = False
        if step // self.log_every > self._last_logged // self.log_every:
            self.writers.scalars("train", step, logs or {})
            self._last_logged = step

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        logs = logs or {}
        step = int(self.loop.step.numpy())
        self.writers.scalars("train", step, {k: v for k, v in logs.items()
                                             if not k.startswith("val_")}, prefix="epoch_")
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        if val:
            self.writers.scalars("eval", step, val, prefix="epoch_")
        if self.histograms:
            self.writers.histograms("train", step, self.loop.model_variables(),
                                    prefix="weights/")
        if self.activations is not None:
            self.writers.histograms("train", step, self.activations(), prefix="activations/")
        if self.images is not None:
            self.writers.images("train", step, self.images(), max_outputs=self.max_images)
        if self.embeddings is not None:
            emb = self.embeddings() if callable(self.embeddings) else self.embeddings
            summaries.write_projector(self.writers.logdir("train"), emb, step=step)
        self.writers.flush()

    def close(self):
        if self.writers is not None:
            self.writers.close()


class EvalMonitor(Callback):
    """Adds `prefix + name` for each value of `eval_fn()` to every epoch's logs: e.g.
    the test metrics of a learning curve (for reports, never for selection).

    Args:
      eval_fn: `() -> {name: scalar}` (`tfcore.training.loop.make_eval_fn`).
      prefix: prepended to the names (default 'test_').
    """

    def __init__(self, eval_fn: Callable[[], Mapping[str, Any]], prefix: str = "test_"):
        if not callable(eval_fn):
            raise checks.ArgumentError(f"eval_fn must be callable, got {eval_fn!r}")
        self.eval_fn, self.prefix = eval_fn, prefix

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({self.prefix + k: v for k, v in self.eval_fn().items()})


class ActivationLogger(Callback):
    """Saves activations for a fixed sample after every epoch (the textbook's example).

    Args:
      fn: `fn(sample) -> tensor or {name: tensor}`, e.g. a layer or a sub-model, or
        `lambda x: model.layers[0](x)`.
      sample: the fixed (validation) input, e.g. `x_val[:100]`.
      every_epochs: save every this many epochs.
      directory: default `workdir/activations`.

    Writes `<directory>/epoch_<NNNN>.npz` (atomic) with one array per name (key
    'activations' for a single tensor), plus 'epoch' and 'step'.
    """

    def __init__(self, fn: Callable, sample: Any, every_epochs: int = 1,
                 directory: Optional[str] = None):
        if not callable(fn):
            raise checks.ArgumentError(f"fn must be callable, got {fn!r}")
        checks.check_int(every_epochs, "every_epochs", low=1)
        self.fn = fn
        self.sample = tf.nest.map_structure(tf.convert_to_tensor, sample)
        self.every_epochs = every_epochs
        self.directory = directory
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs or not self.loop.is_chief:
            return
        directory = self.directory or os.path.join(self.loop.workdir, "activations")
        out = self.fn(self.sample)
        arrays = ({k: np.asarray(v) for k, v in out.items()} if isinstance(out, Mapping)
                  else {"activations": np.asarray(out)})
        arrays.update(epoch=np.int64(epoch), step=np.int64(self.loop.step.numpy()))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = os.path.join(directory, f"epoch_{epoch:04d}.npz")
        metrics_io.atomic_write_bytes(path, buf.getvalue())
        self.paths.append(path)


def _fmt_duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _fmt_metrics(logs: Mapping[str, Any]) -> str:
    parts = []
    for k, v in logs.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, np.integer)):
            parts.append(f"{k}={v}")
    return " ".join(parts)


class ProgressLogger(Callback):
    """Progress: a live line on a terminal, plain log lines otherwise.

    On a TTY, one line redrawn (at most every `refresh_s`) with the epoch, a bar,
    step/total, steps/s, ETA and the step's metrics, then an epoch summary line with
    the validation metrics. Otherwise, a line every `log_every` steps:
    `step 200/2345 epoch 1/5 | 35.2 steps/s | ETA 0:01:05 | loss=0.1234 accuracy=0.97`
    and one per epoch end. steps/s is measured over the last interval (the first
    interval includes compilation).

    Args:
      log_every: steps between lines when not a terminal.
      stream: where to write (default sys.stdout).
      tty: force terminal mode on/off (default: `stream.isatty()`).
      refresh_s: minimum seconds between redraws on a terminal.
    """

    def __init__(self, log_every: int = 100, stream: Optional[IO[str]] = None,
                 tty: Optional[bool] = None, refresh_s: float = 0.1):
        self.log_every = checks.check_int(log_every, "log_every", low=1)
        self.stream = stream
        self.tty = tty
        self.refresh_s = float(refresh_s)

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def on_train_begin(self, logs=None):
        out = self._out()
        self._tty = self.tty if self.tty is not None else bool(
            getattr(out, "isatty", lambda: False)())
        now = time.monotonic()
        self._t_mark, self._s_mark = now, int(self.loop.step.numpy())
        self._last_line_step = self._s_mark
        self._last_draw = 0.0
        self._rate = None
        self._width = 0

    def _update_rate(self, step: int) -> None:
        now = time.monotonic()
        if step > self._s_mark and now > self._t_mark:
            self._rate = (step - self._s_mark) / (now - self._t_mark)
            self._t_mark, self._s_mark = now, step

    def _line(self, step: int, logs) -> str:
        loop = self.loop
        total = loop.total_steps
        epoch = min(loop.epoch_of(max(step - 1, 0)), loop.epochs - 1)
        rate = self._rate
        eta = (total - step) / rate if rate else float("inf")
        rate_s = f"{rate:.1f} steps/s" if rate else "? steps/s"
        return (f"step {step}/{total} epoch {epoch + 1}/{loop.epochs} | {rate_s} | "
                f"ETA {_fmt_duration(eta)} | {_fmt_metrics(logs or {})}")

    def on_batch_end(self, step, logs=None):
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw < self.refresh_s and step < self.loop.total_steps:
                return
            self._last_draw = now
            self._update_rate(step)
            spe = self.loop.steps_per_epoch
            done = step - self.loop.epoch_start(self.loop.epoch_of(max(step - 1, 0)))
            n = 20
            fill = int(n * done / spe)
            bar = "[" + "=" * fill + (">" if fill < n else "") + "." * max(n - fill - 1, 0) + "]"
            text = bar + " " + self._line(step, logs)
            pad = max(self._width - len(text), 0)
            self._width = len(text)
            self._out().write("\r" + text + " " * pad)
            self._out().flush()
        elif step // self.log_every > self._last_line_step // self.log_every:
            self._update_rate(step)
            self._last_line_step = step
            print(self._line(step, logs), file=self._out(), flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        loop = self.loop
        took = time.monotonic() - getattr(self, "_epoch_t0", time.monotonic())
        text = (f"epoch {epoch + 1}/{loop.epochs} done, step {int(loop.step.numpy())} "
                f"({took:.1f} s) | {_fmt_metrics(logs or {})}")
        if self._tty:
            self._out().write("\n")
            self._width = 0
        print(text, file=self._out(), flush=True)


class EpochTimer(Callback):
    """Times the training part of every epoch.

    An epoch's time runs from `on_epoch_begin` to its last `on_batch_end`, so what
    the loop and the callbacks do at the epoch end (`eval_fn`, checkpoints, pictures,
    summaries) is excluded; what runs between steps (other callbacks' batch hooks,
    e.g. TensorBoard scalars every N steps) is included. Put the timer first in the
    callback list so its hooks run before the others'.

    Adds `epoch_seconds` to each epoch's logs (so it reaches the History and
    metrics.json, also across resumes). `seconds` / `steps` list this process's
    epochs (a resumed run's first epoch may be partial).

    Args:
      clock: the timer in seconds (default `time.perf_counter`; tests pass a fake).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        if not callable(clock):
            raise checks.ArgumentError(f"clock must be callable, got {clock!r}")
        self.clock = clock
        self.seconds: List[float] = []
        self.steps: List[int] = []
        self._epoch = None      # the epoch being timed, None between epochs
        self._carried = {}      # {'epoch', 'seconds'}: a resumed epoch's earlier part

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = self.clock()
        self._s0 = int(self.loop.step.numpy())
        self._t1, self._s1 = self._t0, self._s0

    def on_batch_end(self, step, logs=None):
        self._t1, self._s1 = self.clock(), int(step)

    def _earlier(self, epoch) -> float:
        return self._carried.get("seconds", 0.0) if self._carried.get("epoch") == epoch \
            else 0.0

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._t1 - self._t0
        self.seconds.append(seconds)
        self.steps.append(self._s1 - self._s0)
        self._epoch = None
        if logs is not None:
            logs["epoch_seconds"] = seconds + self._earlier(epoch)

    def get_state(self) -> Optional[dict]:
        """The seconds of the epoch in progress so far (saved by a mid-epoch
        checkpoint), so a resumed epoch's `epoch_seconds` covers both parts."""
        if self._epoch is None:
            return {}
        return {"epoch": self._epoch,
                "seconds": self._t1 - self._t0 + self._earlier(self._epoch)}

    def set_state(self, state: dict) -> None:
        self._carried = dict(state)

    def steady_steps_per_second(self) -> Optional[float]:
        """Steps per second over this process's epochs after the first (the first
        traces and compiles the step), or over the only epoch when there is one.
        None before any timed epoch (or when their time is 0)."""
        pairs = list(zip(self.seconds, self.steps))
        if len(pairs) > 1:
            pairs = pairs[1:]
        seconds = sum(s for s, _ in pairs)
        if seconds <= 0:
            return None
        return sum(n for _, n in pairs) / seconds
