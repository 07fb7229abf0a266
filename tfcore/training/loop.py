"""The training loop every tfcore binary uses: `fit` (and the `Loop` behind it).

What you give it:

* `step_fn(batch, seed) -> {name: scalar tensor}`: ONE train step (forward, loss,
  gradients, `optimizer.apply_gradients`). `batch` is what the data source yields
  (static shapes); `seed` is a stateless RNG seed (int64 [2]) derived from
  (seed, global step) with `alg='philox'`: pass it to stochastic layers
  (`model(x, training=True, seed=seed)`) so dropout & co. are reproducible and a
  resumed run replays the same randomness. The loop compiles it (`tf.function`, XLA
  per `jit`, see `tfcore.training.compile`); do not wrap it in a `tf.function`.
* `data`: a `tfcore.data.DeviceDataset` (or any object with `steps_per_epoch` and
  `batch(epoch, step)` usable in a `tf.function`), or in-memory arrays (an array or
  a tuple/dict of arrays) plus `batch_size`, held on the device as a DeviceDataset
  shuffled per epoch with `seed`; `ZipData(labeled_ds, unlabeled_ds)` steps several
  sources together (one batch of each per step, e.g. VAT). Batch `j` of epoch `k`
  depends only on (seed, k, j), so resuming restores the data order exactly.
* `objects`: what to checkpoint, e.g. `{'model': m, 'optimizer': opt}` (a GAN:
  `{'generator': g, 'discriminator': d, 'g_opt': go, 'd_opt': do}`). Optimizers are
  recognised by their `learning_rate` `tf.Variable` (ReduceLROnPlateau assigns it).
* `eval_fn() -> {name: scalar}` (optional): run after every epoch; its results are
  logged as `val_<name>`. `make_eval_fn` builds one from per-example metrics.
* `epochs` and/or `steps` (stop at whichever comes first), `workdir`, `seed`,
  `resume`, `jit`, `strategy`, `callbacks`, `steps_per_call`, `autograph`.

What it does: for each epoch, runs the compiled step over the epoch's batches, checks
every float it returns for NaN/Inf (a `NonFiniteError` naming the step and the
metric stops training before anything is saved, so the last good checkpoint stays),
averages them into the epoch's train metrics, runs `eval_fn`, calls the callbacks,
records the epoch (`History`), saves the checkpoint, and writes `workdir/metrics.json`
atomically (see `tfcore.training.metrics_io`). It returns the `History`.

The checkpoint is the run's one source of truth: besides `objects` it holds the
global `step`, the `seed`, an `rng` (`tf.random.Generator`, philox) and the RUN
STATE, a JSON string: the finished epochs' records, the running sums of an epoch cut
short by a mid-epoch save, the callbacks' states (`Callback.get_state`), the epoch
numbering and whatever the caller puts in `loop.state_extra` (the run layer: the
run's configuration and the changes made on resume). A kill at any moment therefore
loses at most the steps since the newest complete checkpoint, and metrics.json, which
only publishes that state, is rewritten from it on resume: no epoch lost or shifted.

Adding to metrics.json from a callback: the epoch record is the `logs` dict AFTER
every callback's `on_epoch_end` ran, so a callback that sets `logs['my_key']` there
gets it into that epoch's entry, `history` and (for the last epoch) `final` ('epoch'
and 'step' are the loop's). Keys set in `on_train_end(logs)` (`logs`: a copy of this
process's last epoch logs, {} if it ran none) go into `final` only. Do not write
metrics.json from a callback; top-level keys go into `loop.metrics_base` (merged into
every write) or are merged by the caller after `fit`, as `tfcore.training.run` does.

Defaults with a `workdir`: a periodic `ModelCheckpoint` (every epoch and at the end,
under `workdir/checkpoints`, 3 kept) unless you pass one, and a `ProgressLogger`
(a live line on a terminal, a plain log line every `log_every` steps otherwise)
unless `progress=False`. Checkpoints are taken after the epoch's record is complete:
every `ModelCheckpoint`'s `on_epoch_end` runs after the other callbacks'.

Resume: `resume=True` restores the newest complete checkpoint (a partial one from a
killed process is skipped) and continues from its step: same weights, optimizer
slots, step, RNG, data position, epoch records and callback states. With op
determinism on (`tfcore.training.run.apply_determinism`), N steps in one run and the same N
split by stops and resumes end bitwise-identical, the metrics of a resumed epoch
included. Without `resume`, a workdir that already holds checkpoints is refused. A
data source whose `steps_per_epoch` differs from the checkpoint's (another batch
size) ends the epoch in progress at the restored step and starts the next one there.

Interrupts: during `fit`, SIGINT and SIGTERM (in the main thread) finish the current
step (or compiled call), save a checkpoint at that step, write metrics.json with
`status: interrupted` and raise `Interrupted` (the binaries exit with 128 + the
signal number: 130, 143); a second signal raises KeyboardInterrupt at once.

Compiled multi-step mode: `steps_per_call=N` (or 'epoch') runs N steps inside ONE
`tf.function` (a `tf.while_loop` over the step that gathers its batches in-graph),
returning the summed metrics, for when Python overhead matters (small models, GPUs).
Same updates as per-step mode; batch-level callbacks then run once per call (with the
call's mean metrics), so step-based logging/saving happens at call boundaries, which
never cross an epoch end.

AutoGraph: the step is traced with AutoGraph by default (`tf.function`'s default),
which rewrites Python `if`/`while`/`for` on tensors into `tf.cond`/`tf.while_loop`.
`autograph=False` skips the source conversion, for steps with no Python control flow
on tensors (Python `if`s on Python values are fine): the same graph, traced faster
(docs/decisions.md, "AutoGraph off"). A step that does need it then fails at its
first trace with a ValueError naming `autograph`.

Distribution: `strategy` (see `tfcore.training.distribute`): the step runs per
replica via `strategy.run` on its slice of the global batch, and its logs are
averaged over replicas. Build model and optimizer in `distribute.scope(strategy)`,
scale the loss with `distribute.average_loss` and sum gradients with
`distribute.all_reduce_gradients` (identities on one device). XLA is not used with
more than one replica.

Complete example (an MLP classifier on flat inputs x_train [N, D] float32 and labels
y_train [N] int32; tests/test_loop.py runs it):

    import tensorflow as tf
    import tfcore
    from tfcore.training import callbacks, distribute, loop

    model = tfcore.Sequential([tfcore.Dense(64, "relu"), tfcore.Dropout(0.2),
                               tfcore.Dense(10)])
    model(tf.zeros([1, x_train.shape[1]]))                 # build the variables
    opt = tfcore.optimizers.get("adam", learning_rate=1e-3)
    opt.build(model.trainable_variables)

    def train_step(batch, seed):
        x, y = batch
        with tf.GradientTape() as tape:
            logits = model(x, training=True, seed=seed)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            loss = distribute.average_loss(per_example)    # / global batch
        grads = distribute.gradients(tape, loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y),
                                     tf.float32))
        return {"loss": tf.reduce_mean(per_example), "accuracy": acc,
                "grad_norm": tf.linalg.global_norm(grads)}  # NaN gradients caught too

    def eval_metrics(batch):                               # per-example values
        x, y = batch
        logits = model(x)
        return {"loss": tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits),
                "accuracy": tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y),
                                    tf.float32)}

    history = loop.fit(
        train_step, (x_train, y_train), batch_size=128,
        objects={"model": model, "optimizer": opt},
        eval_fn=loop.make_eval_fn(eval_metrics, (x_val, y_val), batch_size=500),
        epochs=10, workdir="runs/mlp", seed=0, resume=False, jit="auto",
        callbacks=[callbacks.EarlyStopping("val_loss", patience=3,
                                           restore_best_weights=True),
                   callbacks.ModelCheckpoint(save_best_only=True, monitor="val_accuracy"),
                   callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2),
                   callbacks.TensorBoard(log_every=100)])
    print(history.final)        # {'epoch': 9, 'step': 4680, 'loss': ..., 'val_loss': ...}
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import tensorflow as tf

from tfcore import checks
from tfcore.training import callbacks as cbs
from tfcore.training import checkpointing, distribute, metrics_io
from tfcore.training.compile import compile_step, resolve_jit
from tfcore.training.history import (Accumulator, History, first_non_finite,
                                     to_float)

log = logging.getLogger("tfcore.loop")

_STEP_STREAM = -1  # seeds [seed, k >= 0] are the data order's (tfcore.data)
STATE_VERSION = 1

__all__ = ["Interrupted", "Loop", "NonFiniteError", "History", "ZipData", "fit",
           "make_eval_fn", "read_run_state", "step_seed", "total_steps"]


class NonFiniteError(FloatingPointError):
    """A train step returned NaN or Inf; training stopped before saving anything.

    Attributes:
      step: the 1-based global step that produced it (= the step count after it).
      metric: the name of the first non-finite value in the step's logs.
      value: that value.
    """

    def __init__(self, step: int, metric: str, value: float, epoch: Optional[int] = None,
                 last_checkpoint: Optional[str] = None):
        self.step, self.metric, self.value, self.epoch = step, metric, value, epoch
        self.last_checkpoint = last_checkpoint
        where = f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")
        kept = (f"; the last good checkpoint is kept: {last_checkpoint}"
                if last_checkpoint else "; no checkpoint was written")
        super().__init__(f"non-finite {metric!r} = {value} at {where}: training "
                         f"stopped{kept}")


class Interrupted(Exception):
    """SIGINT / SIGTERM stopped `fit` after a step; the run was saved at that step.

    Attributes:
      signum: the signal's number (exit code convention: 128 + signum).
      step: the global step saved.
      checkpoint: the checkpoint prefix saved (None without a workdir).
    """

    def __init__(self, signum: int, step: int, checkpoint: Optional[str]):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        saved = (f"checkpoint saved: {checkpoint}; continue with --resume" if checkpoint
                 else "nothing saved (no workdir)")
        super().__init__(f"interrupted by {name} at step {step}; {saved}")


def step_seed(seed, step) -> tf.Tensor:
    """The stateless seed (int64 [2]) of global step `step` under base `seed`.

    `stateless_fold_in([seed, -1], step, alg='philox')`: independent streams per
    step, disjoint from the data order's seeds `[seed, epoch]`.
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(_STEP_STREAM, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64),
                                                    alg="philox")


def total_steps(epochs: Optional[int], steps: Optional[int], steps_per_epoch: int) -> int:
    """The global steps a run of `epochs` epochs or `steps` steps (whichever comes
    first; either may be None) makes: what `Loop.fit` trains for, and the length a
    learning-rate schedule must span."""
    return min(x for x in (epochs and epochs * steps_per_epoch, steps) if x)


def read_run_state(path: str) -> Optional[Dict[str, Any]]:
    """The run state (a dict) stored in checkpoint prefix `path`, or None when the
    checkpoint has none (it was written by `tfcore.training.checkpointing` alone)."""
    reader = tf.train.load_checkpoint(path)
    key = checkpointing.RUN_STATE_KEY
    if not reader.has_tensor(key):
        return None
    text = reader.get_tensor(key)
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return json.loads(text) if text else None


class Loop:
    """The training loop (see the module docstring); `fit` is the one-call form.

    Args:
      step_fn: `step_fn(batch, seed) -> {name: scalar tensor}`.
      data: a DeviceDataset-like source, or arrays (with `batch_size`).
      objects: name -> trackable to checkpoint (model(s), optimizer(s), ...).
      batch_size: the global batch size when `data` are arrays.
      eval_fn: `() -> {name: scalar}`, run after each epoch (logged as `val_<name>`).
      callbacks: `tfcore.training.callbacks.Callback`s.
      workdir: where checkpoints, metrics.json and summaries go (None: nothing saved).
      seed: the base seed of the step seeds (and of the data order for arrays).
      jit: 'auto' | 'on' | 'off' (see `tfcore.training.compile.resolve_jit`).
      strategy: a `tf.distribute.Strategy` (None: the default, one device).
      steps_per_call: 1 (one compiled call per step), N, or 'epoch'.
      progress: add a `ProgressLogger` unless one is in `callbacks`.
      log_every: the progress logger's interval in steps (when not a terminal).
      max_to_keep: periodic checkpoints kept.
      check_numerics: stop with `NonFiniteError` on a NaN/Inf in the step's logs.
      autograph: convert the step's Python control flow on tensors with AutoGraph
        (default True, `tf.function`'s default); False traces faster (module
        docstring).
      handle_signals: during `fit`, turn SIGINT / SIGTERM into a save and
        `Interrupted` (main thread only; default True).

    Attributes:
      step: int64 variable, global steps done. seed: int64 variable. rng: a
      `tf.random.Generator`. checkpoint / checkpointer: the training checkpoint and its
      manager under `workdir/checkpoints`. history: the `History`. stop_training:
      set True (e.g. by a callback) to stop after the current step / epoch end.
      state_extra: a dict of JSON values saved in every checkpoint's run state.
      restored_state: the run state restored by `fit(resume=True)` (None otherwise).
      metrics_base: top-level keys merged into every metrics.json write.
      train_function: the compiled per-step function (for tests: tracing count).
    """

    def __init__(self, step_fn: Callable, data: Any, *, objects: Mapping[str, Any],
                 batch_size: Optional[int] = None, eval_fn: Optional[Callable] = None,
                 callbacks: Sequence = (), workdir: Optional[str] = None, seed: int = 0,
                 jit: Union[str, bool] = "auto",
                 strategy: Optional[tf.distribute.Strategy] = None,
                 steps_per_call: Union[int, str] = 1, progress: bool = True,
                 log_every: int = 100, max_to_keep: Optional[int] = 3,
                 check_numerics: bool = True, autograph: bool = True,
                 handle_signals: bool = True):
        if not callable(step_fn):
            raise checks.ArgumentError(f"step_fn must be callable, got {step_fn!r}")
        if eval_fn is not None and not callable(eval_fn):
            raise checks.ArgumentError(f"eval_fn must be callable or None, got {eval_fn!r}")
        seed = checks.check_int(seed, "seed")
        if steps_per_call != "epoch":
            checks.check_int(steps_per_call, "steps_per_call (or 'epoch')", low=1)
        checks.check_int(log_every, "log_every", low=1)
        self.autograph = checks.check_bool(autograph, "autograph")
        self.handle_signals = checks.check_bool(handle_signals, "handle_signals")
        self.step_fn = step_fn
        self.strategy = strategy or tf.distribute.get_strategy()
        self.data = self._make_data(data, batch_size, seed)
        self.steps_per_epoch = checks.check_int(int(self.data.steps_per_epoch),
                                                "data.steps_per_epoch", low=1)
        self.eval_fn = eval_fn
        self.workdir = workdir
        self.steps_per_call = steps_per_call
        self.check_numerics = bool(check_numerics)
        self.objects = dict(objects)
        self.jit = resolve_jit(jit)
        replicas = distribute.num_replicas(self.strategy)
        if self.jit and replicas > 1:
            log.warning("jit: XLA is not used with %d replicas; running in graph mode",
                        replicas)
            self.jit = False
        self._make_variables(seed)
        self.checkpoint = checkpointing.make_checkpoint(
            self.objects, step=self.step, seed=self.seed, rng=self.rng,
            run_state=self.state)
        self.is_chief = distribute.is_chief(self.strategy)
        self.checkpointer = None
        if workdir:
            self.checkpointer = self.make_checkpointer(
                os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep)
        self.callbacks = self._with_defaults(callbacks, progress, log_every)
        self.history = History()
        self.stop_training = False
        self.state_extra: Dict[str, Any] = {}
        self.restored_state: Optional[Dict[str, Any]] = None
        self.metrics_base: Dict[str, Any] = {}
        self.total_steps = 0
        self.epochs = 0
        self.train_function = None
        self.multi_step_function = None
        self._concrete: Dict[str, Any] = {}  # see _call_compiled
        self._acc, self._acc_epoch = Accumulator(), None
        self._callback_states: Dict[str, Any] = {}
        self._saved = (None, None)  # (step, path) of the newest periodic checkpoint
        self._interrupt: Optional[int] = None

    def _make_variables(self, seed: int) -> None:
        with tf.init_scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.seed = tf.Variable(seed, dtype=tf.int64, trainable=False, name="seed")
            self.rng = tf.random.Generator.from_seed(seed, alg="philox")
            self.state = tf.Variable("", dtype=tf.string, trainable=False,
                                     name="run_state")
            # Epoch numbering: epoch(step) = epoch_base + (step - step_base) // spe.
            self._epoch_base = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._step_base = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._perm = None
            if all(hasattr(self.data, a) for a in ("permutation", "gather", "num_examples")):
                n = int(self.data.num_examples)
                self._perm = tf.Variable(tf.zeros([n], tf.int32), trainable=False,
                                         name="epoch_permutation")
        self._perm_epoch = None

    def _with_defaults(self, callbacks, progress: bool, log_every: int) -> list:
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, cbs.Callback):
                raise checks.ArgumentError(f"callbacks must be tfcore.training.callbacks."
                                           f"Callback instances, got {cb!r}")
        if self.workdir and not any(isinstance(c, cbs.ModelCheckpoint)
                                    and not c.save_best_only for c in callbacks):
            callbacks.append(cbs.ModelCheckpoint())
        if progress and not any(isinstance(c, cbs.ProgressLogger) for c in callbacks):
            callbacks.append(cbs.ProgressLogger(log_every=log_every))
        return callbacks

    def make_checkpointer(self, directory: str, max_to_keep: Optional[int] = 3
                          ) -> checkpointing.Checkpointer:
        """A `Checkpointer` of this loop's checkpoint in `directory` (per worker) that
        stores the run state before every save."""
        return checkpointing.Checkpointer(
            distribute.worker_dir(directory, self.strategy), self.checkpoint,
            max_to_keep=max_to_keep, before_save=self._store_state)

    # -- data ----------------------------------------------------------------------
    def _make_data(self, data, batch_size, seed):
        if hasattr(data, "batch") and hasattr(data, "steps_per_epoch"):
            if batch_size is not None:
                raise checks.ArgumentError(f"batch_size is given by the data source; got "
                                           f"batch_size={batch_size!r} too")
            return data
        from tfcore.data import DeviceDataset  # pylint: disable=import-outside-toplevel
        checks.check_int(batch_size, "batch_size", low=1)
        return DeviceDataset(data, batch_size, seed=seed, shuffle=True)

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch that global step `step` (steps done) falls in."""
        base, first = int(self._epoch_base.numpy()), int(self._step_base.numpy())
        return base + (step - first) // self.steps_per_epoch

    def epoch_start(self, epoch: int) -> int:
        """The global step at which epoch `epoch` starts."""
        base, first = int(self._epoch_base.numpy()), int(self._step_base.numpy())
        return first + (epoch - base) * self.steps_per_epoch

    def _set_epoch(self, epoch: int) -> None:
        """Computes the epoch's permutation once (eagerly) for the compiled steps."""
        if self._perm is not None and self._perm_epoch != epoch:
            self._perm.assign(tf.cast(self.data.permutation(int(epoch)), tf.int32))
            self._perm_epoch = epoch

    def _batch(self, step):
        spe = self.steps_per_epoch
        offset = step - self._step_base
        if self._perm is not None:
            return self.data.gather(self._perm, offset % spe)
        return self.data.batch(self._epoch_base + offset // spe, offset % spe)

    # -- compiled functions ----------------------------------------------------------
    def _one_step(self):
        s = self.step.read_value()
        batch = self._batch(s)
        logs = distribute.run_step(self.strategy, self.step_fn, batch,
                                   step_seed(self.seed, s))
        _check_logs(logs)
        with tf.control_dependencies(tf.nest.flatten(logs)):
            self.step.assign_add(1)
        return {k: tf.identity(v) for k, v in logs.items()}

    def _probe_names(self) -> List[str]:
        """The step's metric names and dtypes, from a trace that is never run."""
        with self._autograph_hint():
            spec = tf.function(self._probe, autograph=self.autograph
                               ).get_concrete_function().structured_outputs
        _check_logs(spec)
        return spec

    def _probe(self):
        s = self.step.read_value()
        return distribute.run_step(self.strategy, self.step_fn, self._batch(s),
                                   step_seed(self.seed, s))

    def _many_steps(self, n):
        spec = self._spec
        names = sorted(spec)

        def finite(logs):
            oks = [tf.reduce_all(tf.math.is_finite(logs[k])) for k in names
                   if logs[k].dtype.is_floating]
            return tf.reduce_all(tf.stack(oks)) if oks else tf.constant(True)

        def cond(i, ok, sums, last):
            return tf.logical_and(i < n, ok)

        def body(i, ok, sums, last):
            logs = self._one_step()
            new_sums = {k: sums[k] + tf.cast(logs[k], tf.float64) for k in names}
            new_last = {k: tf.cast(logs[k], spec[k].dtype) for k in names}
            ok = finite(logs) if self.check_numerics else tf.constant(True)
            return i + 1, ok, new_sums, new_last

        zeros = {k: tf.zeros([], tf.float64) for k in names}
        last0 = {k: tf.zeros([], spec[k].dtype) for k in names}
        i, ok, sums, last = tf.while_loop(
            cond, body, (tf.constant(0, tf.int32), tf.constant(True), zeros, last0),
            maximum_iterations=n)
        return i, ok, sums, last

    def _build_functions(self):
        if self.train_function is None:
            self.train_function = _compile(self._one_step, self.jit, self.autograph)
        if self.steps_per_call != 1 and self.multi_step_function is None:
            self._spec = self._probe_names()
            self.multi_step_function = _compile(
                self._many_steps, self.jit, self.autograph,
                input_signature=[tf.TensorSpec([], tf.int32)])

    @contextlib.contextmanager
    def _autograph_hint(self):
        """Turns the error of Python control flow on a tensor (traced without
        AutoGraph) into a ValueError that names the `autograph` option."""
        try:
            yield
        except tf.errors.OperatorNotAllowedInGraphError as e:
            if self.autograph:
                raise
            raise ValueError(
                "step_fn uses a tensor in Python control flow (if/while/for/bool on a "
                "tensor), which needs AutoGraph: pass autograph=True (the default) or "
                f"write it with tf.cond / tf.while_loop. TensorFlow said: {e}") from e

    # -- running -------------------------------------------------------------------
    def _call_compiled(self, name: str, *args):
        """Calls the compiled function `self.<name>` ('train_function' or
        'multi_step_function') through its traced concrete function, skipping the
        `tf.function`'s per-call dispatch (signature binding, cache lookup), which
        small models feel (docs/decisions.md). Both have a fixed signature, so one
        concrete function each is cached. Under
        `tf.config.run_functions_eagerly(True)` the `tf.function` runs eagerly."""
        fn = getattr(self, name)
        if tf.config.functions_run_eagerly():
            return fn(*args)
        if name not in self._concrete:
            self._concrete[name] = fn.get_concrete_function()
        return self._concrete[name](*args)

    def _run_steps(self, n: int, epoch: int, start: int) -> Dict[str, float]:
        """Runs n steps from global step `start` (the value of `self.step`); returns
        their mean logs (floats). Raises NonFiniteError."""
        if n == 1 and self.steps_per_call == 1:
            with self._autograph_hint():
                out = self._call_compiled("train_function")
            logs = {k: to_float(v) for k, v in out.items()}
            bad = first_non_finite(logs) if self.check_numerics else None
            if bad:
                self._non_finite(start + 1, epoch, *bad)
            self._acc.add(logs, 1)
            return logs
        with self._autograph_hint():
            i, ok, sums, last = self._call_compiled("multi_step_function",
                                                     tf.constant(n, tf.int32))
        i = int(i)
        if not bool(ok):
            last = {k: to_float(v) for k, v in last.items()}
            bad = first_non_finite(last) or ("?", float("nan"))
            self._non_finite(start + i, epoch, *bad)
        sums = {k: float(v) for k, v in sums.items()}
        self._acc.add(sums, i)
        return {k: v / max(i, 1) for k, v in sums.items()}

    def _non_finite(self, step, epoch, metric, value):
        last = self.checkpointer.latest if self.checkpointer else None
        raise NonFiniteError(step, metric, value, epoch=epoch, last_checkpoint=last)

    def _chunk(self, step: int, epoch_end: int) -> int:
        left = epoch_end - step
        if self.steps_per_call == "epoch":
            return left
        return min(int(self.steps_per_call), left)


    # -- fit ------------------------------------------------------------------------
    def fit(self, epochs: Optional[int] = None, steps: Optional[int] = None,
            resume: bool = False) -> History:
        """Trains until `epochs` epochs or `steps` global steps (whichever is first).

        Args:
          epochs: total epochs (counting those before a resume).
          steps: total global steps (counting those before a resume).
          resume: restore the newest checkpoint of `workdir` first.

        Returns:
          The `History` (also `self.history`).

        Raises:
          ArgumentError (a ValueError): neither `epochs` nor `steps`, a non-positive
            one, resume without a workdir, checkpoints in `workdir` without `resume`,
            or a seed that differs from the resumed checkpoint's.
          NonFiniteError: a step returned NaN/Inf.
          Interrupted: SIGINT / SIGTERM (the run was saved first).
        """
        epochs = checks.check_int(epochs, "epochs", low=1, allow_none=True)
        steps = checks.check_int(steps, "steps", low=1, allow_none=True)
        if epochs is None and steps is None:
            raise checks.ArgumentError("give epochs or steps (a positive integer), got "
                                       "neither")
        if resume and self.checkpointer is None:
            raise checks.ArgumentError("resume=True needs a workdir")
        self._restore(resume)
        total = min(x for x in (epochs and self.epoch_start(epochs), steps) if x)
        self.total_steps = total
        self.epochs = self.epoch_of(max(total - 1, 0)) + 1
        self._build_functions()
        self.stop_training = False
        self._interrupt = None
        callbacks = _CallbackList(self.callbacks, self)
        try:
            with self._signals():
                self._train(callbacks, total)
        except Interrupted as e:
            self._end_attempt("interrupted", str(e))
            raise
        except BaseException as e:  # NonFiniteError, KeyboardInterrupt, ...
            self._end_attempt("failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            callbacks.close()
        return self.history

    def _train(self, callbacks: "_CallbackList", total: int) -> None:
        step = int(self.step.numpy())
        callbacks.call("on_train_begin", {})
        for key, cb in callbacks.keyed():
            if key in self._callback_states:
                cb.set_state(self._callback_states[key])
        self._write_metrics()  # republish the restored record at once
        logs: Dict[str, Any] = {}
        while step < total and not self.stop_training:
            self._check_interrupt(step)
            epoch = self.epoch_of(step)
            step, logs = self._run_epoch(callbacks, epoch, step,
                                         min(self.epoch_start(epoch + 1), total))
        end_logs = dict(logs)
        callbacks.call("on_train_end", end_logs)
        self.history.update_final({k: v for k, v in end_logs.items()
                                   if k not in logs or v is not logs[k]})
        self.history.status = "stopped_early" if self.stop_training else "done"
        self._write_metrics()

    def _run_epoch(self, callbacks: "_CallbackList", epoch: int, step: int,
                   epoch_end: int):
        """Runs epoch `epoch` from `step` to `epoch_end`; returns (step, its logs)."""
        self._set_epoch(epoch)
        if self._acc_epoch != epoch:  # a resumed epoch keeps its restored sums
            self._acc, self._acc_epoch = Accumulator(), epoch
        callbacks.call("on_epoch_begin", epoch, {})
        while step < epoch_end and not self.stop_training:
            self._check_interrupt(step)
            n = self._chunk(step, epoch_end)
            callbacks.call("on_batch_begin", step, {})
            batch_logs = self._run_steps(n, epoch, step)
            step += n
            callbacks.call("on_batch_end", step, batch_logs)
        logs = self._acc.means()
        if self.eval_fn is not None:
            val = self.eval_fn()
            if not isinstance(val, Mapping):
                raise checks.ArgumentError(f"eval_fn must return a dict of scalars, "
                                           f"got {type(val).__name__}")
            logs.update({"val_" + k: to_float(v) for k, v in val.items()})
        # The record is complete (every callback added its keys) before any
        # checkpoint callback saves it.
        callbacks.call("on_epoch_end", epoch, logs, checkpoints=False)
        self.history.append(epoch, step, logs)
        self._acc, self._acc_epoch = Accumulator(), None
        callbacks.call("on_epoch_end", epoch, logs, checkpoints=True)
        self._write_metrics()
        return step, logs

    def _end_attempt(self, status: str, message: str) -> None:
        self.history.status = status
        self.history.error = message
        self._write_metrics()

    def _write_metrics(self) -> None:
        if self.workdir and self.is_chief:
            metrics_io.write_metrics(self.workdir,
                                     {**self.metrics_base, **self.history.to_json()})

    # -- checkpoints and the run state ---------------------------------------------
    def save_checkpoint(self) -> Optional[str]:
        """Saves `ckpt-<step>` in `workdir/checkpoints` (once per step: a second call
        at the same step returns the first's path). None without a workdir."""
        if self.checkpointer is None:
            return None
        step = int(self.step.numpy())
        if self._saved[0] != step:
            self._saved = (step, self.checkpointer.save(step))
        return self._saved[1]

    def _store_state(self) -> None:
        """Writes the run state (JSON) into the checkpoint's `run_state` variable."""
        partial = None
        if self._acc_epoch is not None and self._acc.count:
            partial = {"epoch": self._acc_epoch, **self._acc.to_json()}
        state = {"version": STATE_VERSION, "steps_per_epoch": self.steps_per_epoch,
                 "epoch_base": int(self._epoch_base.numpy()),
                 "step_base": int(self._step_base.numpy()),
                 "epochs": self.history.epochs, "partial": partial,
                 "callbacks": {k: cb.get_state()
                               for k, cb in _CallbackList.keyed_of(self.callbacks)},
                 **self.state_extra}
        self.state.assign(json.dumps(metrics_io.to_jsonable(state), allow_nan=False))

    def _restore(self, resume: bool) -> None:
        if self.checkpointer is None or int(self.step.numpy()) != 0:
            return  # nothing to restore, or a second fit() on this loop
        if not resume:
            if self.checkpointer.latest:
                raise checks.ArgumentError(
                    f"workdir {self.workdir!r} already holds checkpoints "
                    f"({self.checkpointer.latest}); pass resume=True (--resume) to "
                    "continue, or use a new workdir")
            return
        given_seed = int(self.seed.numpy())
        path = self.checkpointer.restore_latest()
        if not path:
            return
        log.info("resumed from %s (step %d)", path, int(self.step.numpy()))
        self._saved = (int(self.step.numpy()), path)
        if int(self.seed.numpy()) != given_seed:
            raise checks.ArgumentError(
                f"seed {given_seed} differs from the seed {int(self.seed.numpy())} of "
                f"the checkpoint {path}; resume with the same --seed")
        text = self.state.numpy().decode("utf-8")
        if text:
            self._load_state(json.loads(text))
        elif self.workdir:  # a checkpoint without a run state: the epochs it finished
            done = self.epoch_of(int(self.step.numpy()))
            old = (metrics_io.read_metrics(self.workdir) or {}).get("epochs", [])
            self.history = History([e for e in old if e.get("epoch", done) < done])

    def _load_state(self, state: Dict[str, Any]) -> None:
        self.restored_state = state
        self.history = History(state.get("epochs"))
        self._epoch_base.assign(int(state.get("epoch_base", 0)))
        self._step_base.assign(int(state.get("step_base", 0)))
        partial = state.get("partial")
        if partial:
            self._acc = Accumulator(partial["sums"], partial["count"])
            self._acc_epoch = int(partial["epoch"])
        self._callback_states = dict(state.get("callbacks") or {})
        old_spe = int(state.get("steps_per_epoch", self.steps_per_epoch))
        if old_spe != self.steps_per_epoch:
            self._rebase(old_spe)

    def _rebase(self, old_spe: int) -> None:
        """The data's steps per epoch changed (another batch size): the epoch in
        progress ends at the restored step, the next one starts there."""
        step = int(self.step.numpy())
        done = step - int(self._step_base.numpy())
        epoch = int(self._epoch_base.numpy()) + done // old_spe
        if done % old_spe:
            self.history.append(epoch, step, self._acc.means())
            epoch += 1
        self._epoch_base.assign(epoch)
        self._step_base.assign(step)
        self._acc, self._acc_epoch = Accumulator(), None
        log.warning("steps per epoch changed from %d to %d: epoch %d starts at step %d",
                    old_spe, self.steps_per_epoch, epoch, step)

    # -- interrupts -----------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self):
        """SIGINT / SIGTERM -> stop after the current step (see `_check_interrupt`)."""
        if not self.handle_signals or threading.current_thread() is not \
                threading.main_thread():
            yield
            return

        def handler(signum, frame):  # pylint: disable=unused-argument
            if self._interrupt is not None:
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
            self._interrupt = signum
            log.warning("%s: stopping after the current step and saving (send it again "
                        "to stop at once)", signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _check_interrupt(self, step: int) -> None:
        """After a signal: save the run at `step` and raise `Interrupted`."""
        if self._interrupt is None:
            return
        path = self.save_checkpoint()
        raise Interrupted(self._interrupt, step, path)

    # -- helpers for callbacks ---------------------------------------------------------
    def step_graph(self) -> Optional[tf.Graph]:
        """The graph of the compiled train function that ran (the multi-step one in
        multi-step mode; the traced graph also when XLA compiles it), or None before
        its first call or when functions run eagerly."""
        name = "train_function" if self.steps_per_call == 1 else "multi_step_function"
        concrete = self._concrete.get(name)
        return concrete.graph if concrete is not None else None

    def optimizers(self) -> List[Any]:
        """The objects that hold a `learning_rate` tf.Variable."""
        return [o for o in self.objects.values()
                if isinstance(getattr(o, "learning_rate", None), tf.Variable)]

    def model_variables(self) -> Dict[str, tf.Variable]:
        """'name/path' -> variable of every checkpointed object except optimizers."""
        opt_ids = {id(o) for o in self.optimizers()}
        models = {k: o for k, o in self.objects.items()
                  if id(o) not in opt_ids and not hasattr(o, "apply_gradients")}
        return checkpointing.variables_by_path(models)




def _compile(fn: Callable, jit: Union[str, bool], autograph: bool,
             input_signature=None):
    """`tfcore.training.compile.compile_step`, or with `autograph=False` the same
    `tf.function` without AutoGraph's conversion."""
    if autograph:
        return compile_step(fn, jit, input_signature=input_signature)
    return tf.function(fn, input_signature=input_signature,
                       jit_compile=resolve_jit(jit), autograph=False)


def _check_logs(logs) -> None:
    # A plain ValueError (a programming error, raised while tracing: AutoGraph
    # re-raises only built-in exception types as they are).
    if not isinstance(logs, Mapping) or not logs:
        raise ValueError(f"step_fn must return a non-empty dict of named scalar tensors, "
                         f"got {logs!r}")
    for k, v in logs.items():
        shape = getattr(v, "shape", None)
        if shape is None or tf.TensorShape(shape).rank != 0:
            raise ValueError(f"step_fn must return scalars; {k!r} has shape {shape}")


class _CallbackList:
    """The loop's callbacks, called in order; `checkpoints=False/True` calls only
    those that are not / are `ModelCheckpoint`s (the loop saves after the record)."""

    def __init__(self, callbacks, loop):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_loop(loop)

    def call(self, hook: str, *args, checkpoints: Optional[bool] = None) -> None:
        for cb in self.callbacks:
            if checkpoints is None or isinstance(cb, cbs.ModelCheckpoint) == checkpoints:
                getattr(cb, hook)(*args)

    @staticmethod
    def keyed_of(callbacks) -> List[tuple]:
        """('<ClassName>/<n>', callback) for the callbacks that keep a state."""
        out, counts = [], {}
        for cb in callbacks:
            name = type(cb).__name__
            key = f"{name}/{counts.get(name, 0)}"
            counts[name] = counts.get(name, 0) + 1
            if cb.get_state() is not None:
                out.append((key, cb))
        return out

    def keyed(self) -> List[tuple]:
        return self.keyed_of(self.callbacks)

    def close(self) -> None:
        for cb in self.callbacks:
            try:
                cb.close()
            except Exception:  # pylint: disable=broad-except
                log.exception("closing callback %r failed", cb)


def fit(step_fn: Callable, data: Any, *, objects: Mapping[str, Any],
        epochs: Optional[int] = None, steps: Optional[int] = None,
        resume: bool = False, **kwargs) -> History:
    """`Loop(step_fn, data, objects=..., **kwargs).fit(epochs, steps, resume)`.

    See the module docstring and `Loop` for the arguments. Returns the `History`;
    the `Loop` is at `history.loop`.
    """
    loop = Loop(step_fn, data, objects=objects, **kwargs)
    history = loop.fit(epochs=epochs, steps=steps, resume=resume)
    history.loop = loop
    return history

class ZipData:
    """Several data sources stepped together, e.g. labeled + unlabeled batches (VAT).

    `batch(epoch, step)` returns a tuple with one batch per source. The first source
    sets the epoch (`steps_per_epoch`) and is read at (epoch, step); every other source
    i runs through its own epochs: at global position p = epoch * steps_per_epoch +
    step it is read at (p // spe_i, p % spe_i), so a small labeled set is reshuffled
    (by its own seed) each time it is exhausted. Everything depends only on
    (epoch, step), so resume stays exact. For sources with `permutation` / `gather`
    (DeviceDataset) the current permutation is cached in a variable and recomputed
    in-graph only when that source's epoch changes; usable inside compiled
    (also XLA) multi-step loops.

    Args:
      *sources: DeviceDataset-like sources (`steps_per_epoch`, `batch(epoch, step)`).
    """

    def __init__(self, *sources):
        if not sources:
            raise checks.ArgumentError("ZipData needs at least one source, got none")
        for i, src in enumerate(sources):
            if not (hasattr(src, "batch") and hasattr(src, "steps_per_epoch")):
                raise checks.ArgumentError(f"source {i} must have batch(epoch, step) and "
                                 f"steps_per_epoch, got {type(src).__name__}")
        self.sources = tuple(sources)
        self.steps_per_epoch = int(sources[0].steps_per_epoch)
        self._caches = []
        with tf.init_scope():
            for src in sources:
                if all(hasattr(src, a) for a in ("permutation", "gather", "num_examples")):
                    self._caches.append((
                        tf.Variable(tf.zeros([int(src.num_examples)], tf.int32),
                                    trainable=False, name="zip_permutation"),
                        tf.Variable(-1, dtype=tf.int64, trainable=False, name="zip_epoch")))
                else:
                    self._caches.append(None)

    def _permutation(self, src, cache, epoch):
        perm, cached = cache

        def refresh():
            p = tf.cast(src.permutation(epoch), tf.int32)
            with tf.control_dependencies([perm.assign(p), cached.assign(epoch)]):
                return tf.identity(p)

        return tf.cond(tf.equal(cached, epoch), perm.read_value, refresh)

    def batch(self, epoch, step):
        pos = tf.cast(epoch, tf.int64) * self.steps_per_epoch + tf.cast(step, tf.int64)
        out = []
        for src, cache in zip(self.sources, self._caches):
            spe = int(src.steps_per_epoch)
            e, j = pos // spe, pos % spe
            if cache is None:
                out.append(src.batch(e, j))
            else:
                out.append(src.gather(self._permutation(src, cache, e), j))
        return tuple(out)


def make_eval_fn(metric_fn: Callable, data: Any, batch_size: int,
                 jit: Union[str, bool] = "auto",
                 autograph: bool = True) -> Callable[[], Dict[str, float]]:
    """An `eval_fn` computing exact means of per-example metrics over a whole set.

    Args:
      metric_fn: `metric_fn(batch) -> {name: per-example tensor [batch]}` (inference
        mode is up to you: call the model with `training=False`).
      data: an array or a tuple/dict of arrays with the same first dimension N.
      batch_size: examples per compiled call; the last batch is padded to this static
        size and the padding masked out, so every example counts exactly once.
      jit: compile mode for the per-batch function.
      autograph: convert Python control flow on tensors (default True); False traces
        faster (see `Loop`'s `autograph`).

    Returns:
      `eval_fn() -> {name: float}`: the means over the N examples.
    """
    checks.check_int(batch_size, "batch_size", low=1)
    checks.check_bool(autograph, "autograph")
    flat = [tf.convert_to_tensor(a) for a in tf.nest.flatten(data)]
    n = int(flat[0].shape[0])
    if any(int(t.shape[0]) != n for t in flat):
        raise checks.ArgumentError(f"all arrays in data must have the same first dimension, got "
                         f"{[t.shape[0] for t in flat]}")
    num_batches = -(-n // batch_size)

    def one_batch(i):
        idx = i * batch_size + tf.range(batch_size, dtype=tf.int64)
        mask = tf.cast(idx < n, tf.float64)
        idx = tf.minimum(idx, n - 1)
        batch = tf.nest.pack_sequence_as(data, [tf.gather(t, idx) for t in flat])
        out = metric_fn(batch)
        if not isinstance(out, Mapping):
            raise checks.ArgumentError(f"metric_fn must return a dict of per-example tensors, got "
                             f"{type(out).__name__}")
        sums = {}
        for k, v in out.items():
            if v.shape.rank != 1 or v.shape[0] != batch_size:
                raise checks.ArgumentError(f"metric_fn must return per-example values of shape "
                                 f"[{batch_size}]; {k!r} has shape {v.shape}")
            sums[k] = tf.reduce_sum(tf.cast(v, tf.float64) * mask)
        return sums

    compiled = _compile(one_batch, jit, autograph,
                        input_signature=[tf.TensorSpec([], tf.int64)])

    def eval_fn() -> Dict[str, float]:
        totals: Dict[str, float] = {}
        for i in range(num_batches):
            for k, v in compiled(tf.constant(i, tf.int64)).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return {k: v / n for k, v in totals.items()}

    eval_fn.function = compiled
    return eval_fn
