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
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, IO, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfcore.training import checkpointing, distribute, metrics_io, summaries

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


# -- monitoring helpers ---------------------------------------------------------------

def _resolve_mode(mode: str, monitor: str) -> str:
    m = str(mode).lower()
    if m not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if m == "auto":  # Keras: accuracy-like metrics are maximised
        name = monitor[4:] if monitor.startswith("val_") else monitor
        m = "max" if ("acc" in name or name.startswith("fmeasure") or name == "auc") else "min"
    return m


def _check_monitor(monitor) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a metric name, got {monitor!r}")
    return monitor


def _check_nonneg_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _check_nonneg_float(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{what} must be a non-negative number, got {value!r}")
    return float(value)


def _snapshot(variables: Mapping[str, tf.Variable]) -> Dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in variables.items()}


class EarlyStopping(Callback):
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
        epoch (models = the loop's objects that are not optimizers).
      start_from_epoch: epochs to wait before monitoring.

    Attributes:
      stopped_epoch (0 if not stopped), best, best_epoch, wait.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0,
                 patience: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        self.monitor = _check_monitor(monitor)
        self.min_delta = abs(_check_nonneg_float(min_delta, "min_delta"))
        self.patience = _check_nonneg_int(patience, "patience")
        self.mode = _resolve_mode(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = _check_nonneg_int(start_from_epoch, "start_from_epoch")
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
        current = (logs or {}).get(self.monitor)
        if current is None:
            log.warning("EarlyStopping: metric %r not in logs (have %s)", self.monitor,
                        sorted(logs or {}))
            return
        if epoch < self.start_from_epoch:
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


class ModelCheckpoint(Callback):
    """Saves training checkpoints: periodic (default) or the best only.

    Periodic (`save_best_only=False`): saves `ckpt-<step>` through the loop's
    `checkpointer` (`workdir/checkpoints`, the one `resume` reads) every
    `every_epochs` epochs and/or every `every_steps` steps, and at the end of
    training; `max_to_keep` (if given) overrides the loop's.

    Best only: after each epoch, if `monitor` is better than the best so far (strictly,
    per `mode`), saves the whole training checkpoint into `directory` (default
    `workdir/best`, one kept) and `best.json` ({monitor, value, epoch, step, path}).
    The best value survives a resume (read back from best.json). Load the best
    weights with `tfcore.training.checkpointing.restore_objects(workdir + '/best', {...})`.

    Nothing is saved after a failed step: a NaN stop raises before any hook runs.
    """

    def __init__(self, save_best_only: bool = False, monitor: str = "val_loss",
                 mode: str = "auto", every_epochs: Optional[int] = 1,
                 every_steps: Optional[int] = None, max_to_keep: Optional[int] = None,
                 directory: Optional[str] = None):
        self.save_best_only = bool(save_best_only)
        self.monitor = _check_monitor(monitor)
        self.mode = _resolve_mode(mode, monitor)
        for name, v in (("every_epochs", every_epochs), ("every_steps", every_steps),
                        ("max_to_keep", max_to_keep)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.max_to_keep = max_to_keep
        self.directory = directory
        self.best = None
        self.saved_step = None
        self._saver = None

    def on_train_begin(self, logs=None):
        loop = self.loop
        if self.save_best_only:
            if not loop.workdir and not self.directory:
                raise ValueError("ModelCheckpoint(save_best_only=True) needs a workdir "
                                 "or a directory")
            directory = distribute.worker_dir(
                self.directory or os.path.join(loop.workdir, "best"), loop.strategy)
            self._saver = checkpointing.Checkpointer(directory, loop.checkpoint,
                                                     max_to_keep=1)
            info = os.path.join(directory, "best.json")
            if os.path.exists(info) and int(loop.step.numpy()) > 0:  # resumed run
                with open(info) as f:
                    self.best = json.load(f).get("value")
            else:
                self.best = None
        else:
            if self.directory:
                self._saver = checkpointing.Checkpointer(
                    self.directory, loop.checkpoint, max_to_keep=self.max_to_keep or 3)
            else:
                if loop.checkpointer is None:
                    raise ValueError("ModelCheckpoint needs the loop's workdir or a "
                                     "directory")
                self._saver = loop.checkpointer
                if self.max_to_keep is not None:
                    self._saver.max_to_keep = self.max_to_keep
            self.saved_step = int(loop.step.numpy())

    def _save(self) -> Optional[str]:
        step = int(self.loop.step.numpy())
        if step == self.saved_step:
            return None
        path = self._saver.save(step)
        self.saved_step = step
        return path

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
        current = (logs or {}).get(self.monitor)
        if current is None:
            log.warning("ModelCheckpoint: metric %r not in logs (have %s)", self.monitor,
                        sorted(logs or {}))
            return
        better = (self.best is None or
                  (current < self.best if self.mode == "min" else current > self.best))
        if better and np.isfinite(current):
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


class ReduceLROnPlateau(Callback):
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

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, optimizers: Optional[Sequence[Any]] = None):
        self.monitor = _check_monitor(monitor)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or \
                not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = _check_nonneg_int(patience, "patience")
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = _check_nonneg_float(min_delta, "min_delta")
        self.cooldown = _check_nonneg_int(cooldown, "cooldown")
        self.min_lr = _check_nonneg_float(min_lr, "min_lr")
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
            raise ValueError("ReduceLROnPlateau: no optimizer with a learning_rate "
                             "tf.Variable among the loop's objects")
        for opt in self.optimizers:
            if not isinstance(getattr(opt, "learning_rate", None), tf.Variable):
                raise ValueError(f"ReduceLROnPlateau: {opt!r} has no learning_rate "
                                 "tf.Variable to assign")

    def _lr(self) -> float:
        return float(self.optimizers[0].learning_rate.numpy())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self._lr()
        current = logs.get(self.monitor)
        if current is None:
            log.warning("ReduceLROnPlateau: metric %r not in logs (have %s)", self.monitor,
                        sorted(logs))
            return
        in_cooldown = self.cooldown_counter > 0
        if in_cooldown:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= self.patience:
                reduced = False
                for opt in self.optimizers:
                    old = float(opt.learning_rate.numpy())
                    if old > np.float32(self.min_lr):
                        new = max(old * self.factor, self.min_lr)
                        opt.learning_rate.assign(new)
                        reduced = True
                        log.info("ReduceLROnPlateau: epoch %d, learning rate %.4g -> %.4g",
                                 epoch, old, new)
                if reduced:
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


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
      graph: write the compiled step's graph (first call) via `tf.summary.trace_on`.
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
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every <= 0:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
        for name, fn in (("activations", activations), ("images", images)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable returning a dict, got {fn!r}")
        self.log_every = log_every
        self.histograms = bool(histograms)
        self.activations = activations
        self.images = images
        self.max_images = max_images
        self.graph = bool(graph)
        self.embeddings = embeddings
        self.directory = directory
        self.writers = None
        self._tracing = False
        self._last_logged = None

    def on_train_begin(self, logs=None):
        directory = self.directory or self.loop.workdir
        if not directory:
            raise ValueError("TensorBoard needs the loop's workdir or a directory")
        self.enabled = self.loop.is_chief
        self.writers = summaries.Writers(directory)
        self._last_logged = int(self.loop.step.numpy())
        if self.graph and self.enabled:
            summaries.trace_on()
            self._tracing = True

    def on_batch_end(self, step, logs=None):
        if not self.enabled:
            return
        if self._tracing:
            summaries.trace_export(self.writers.writer("train"), "train_step", step)
            self._tracing = False
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

    def on_train_end(self, logs=None):
        if self._tracing:  # no batch ran
            tf.summary.trace_off()
            self._tracing = False

    def close(self):
        if self._tracing:
            tf.summary.trace_off()
            self._tracing = False
        if self.writers is not None:
            self.writers.close()


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
            raise ValueError(f"fn must be callable, got {fn!r}")
        if isinstance(every_epochs, bool) or not isinstance(every_epochs, int) or \
                every_epochs <= 0:
            raise ValueError(f"every_epochs must be a positive integer, got {every_epochs!r}")
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
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every <= 0:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
        self.log_every = log_every
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
        epoch = min(max(step - 1, 0) // loop.steps_per_epoch, loop.epochs - 1)
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
            done = step - (max(step - 1, 0) // spe) * spe
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
            raise ValueError(f"clock must be callable, got {clock!r}")
        self.clock = clock
        self.seconds: List[float] = []
        self.steps: List[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self.clock()
        self._s0 = int(self.loop.step.numpy())
        self._t1, self._s1 = self._t0, self._s0

    def on_batch_end(self, step, logs=None):
        self._t1, self._s1 = self.clock(), int(step)

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._t1 - self._t0
        self.seconds.append(seconds)
        self.steps.append(self._s1 - self._s0)
        if logs is not None:
            logs["epoch_seconds"] = seconds

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
