"""The training loop every tfcore binary uses: `fit` (and the `Loop` behind it).

What you give it:

* `step_fn(batch, seed) -> {name: scalar tensor}`: ONE train step (forward, loss,
  gradients, `optimizer.apply_gradients`). `batch` is what the data source yields
  (static shapes); `seed` is a stateless RNG seed (int64 [2]) derived from
  (seed, global step) with `alg='philox'`: pass it to stochastic layers
  (`model(x, training=True, seed=seed)`) so dropout & co. are reproducible and a
  resumed run replays the same randomness. The loop compiles it (`tf.function`, XLA
  per `jit`, see `tfcore.compile`); do not wrap it in a `tf.function` yourself.
* `data`: a `tfcore.data.DeviceDataset` (or any object with `steps_per_epoch` and
  `batch(epoch, step)` usable in a `tf.function`), or in-memory arrays (an array or
  a tuple/dict of arrays) plus `batch_size`, held on the device as a DeviceDataset
  shuffled per epoch with `seed`; `ZipData(labeled_ds, unlabeled_ds)` steps several
  sources together (one batch of each per step, e.g. VAT). Batch `j` of epoch `k` depends only on
  (seed, k, j), so resuming restores the data order exactly.
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
and writes `workdir/metrics.json` atomically (see `tfcore.metrics_io`). It returns a
`History` (per-epoch lists of named metrics, like Keras's).

Adding to metrics.json from a callback: the epoch record is the `logs` dict AFTER
every callback's `on_epoch_end` ran, so a callback that sets `logs['my_key']` there
gets it into that epoch's entry, `history` and (for the last epoch) `final`, and it
stays through later rewrites and resumes ('epoch' and 'step' are the loop's). Keys a
callback sets in `on_train_end(logs)` (`logs`: a copy of this process's last epoch
logs, {} if it ran none) go into `final` only (`History.update_final`). Do not
write metrics.json from a callback: the loop rewrites it from its `History` after
every epoch and at the end. Top-level keys (test scores, config) are for the caller
to merge after `fit` returns, as the binaries in `train/` do.

Defaults with a `workdir`: a periodic `ModelCheckpoint` (every epoch and at the end,
under `workdir/checkpoints`, 3 kept) unless you pass one, and a `ProgressLogger`
(a live line on a terminal, a plain log line every `log_every` steps otherwise)
unless `progress=False`.

Checkpoint / resume: the checkpoint holds `objects` + the global `step` + the `seed`
+ an `rng` (`tf.random.Generator`, philox, `loop.rng`). `resume=True` restores the
newest complete checkpoint (a partial one from a killed process is skipped) and
continues from its step: same weights, optimizer slots, step, RNG and data position.
With op determinism on (`train.flags.apply_determinism`), N steps in one run and the
same N split by a stop and a resume end bitwise-identical. Without `resume`, a
workdir that already holds checkpoints is refused (no silent mixing of runs). A
resumed epoch that had started before the stop averages only its resumed steps.

Compiled multi-step mode: `steps_per_call=N` (or 'epoch') runs N steps inside ONE
`tf.function` (a `tf.while_loop` over the step that gathers its batches in-graph),
returning the summed metrics, for when Python overhead matters (small models, GPUs).
Same updates as per-step mode; batch-level callbacks then run once per call (with the
call's mean metrics), so step-based logging/saving happens at call boundaries, which
never cross an epoch end.

AutoGraph: the step is traced with AutoGraph by default (`tf.function`'s default),
which rewrites Python `if`/`while`/`for` on tensors into `tf.cond`/`tf.while_loop`.
Converting the source of the step and of everything it calls dominates tracing.
`autograph=False` skips it, for steps with no Python control flow on tensors (Python
`if`s on Python values are fine): the same graph (tested bitwise), traced faster.
A step that does need it then fails at its first trace with a ValueError naming
`autograph`. Time to trace the loop's compiled step (`get_concrete_function`, graph
mode, batch 32, the project's 2-core CPU, TF 2.21; each in a fresh process):

    step (train binary)                              autograph=True   False
    models/vat_cnn, writeup VAT (train.vat)                7.2 s      1.2 s
    models/vat_cnn, 20 labels + EntMin (train.vat)         7.5 s      1.6 s
    models/autoencoder conv, denoising (*)                 1.6 s      0.6 s
    models/dcgan (*)                                       3.1 s      2.3 s

(*) these steps already wrap themselves in `tf.autograph.experimental.
do_not_convert`; the rest is the loop's own code. Under heavy load from other jobs
the VAT step took 155 s vs 24 s. All four steps trained bitwise-identically both
ways (the DCGAN's with inter-op parallelism 1: its step is not run-to-run
reproducible on CPU otherwise, with AutoGraph on or off).

Distribution: `strategy` (see `tfcore.distribute`): the step runs per replica via
`strategy.run` on its slice of the global batch, and its logs are averaged over
replicas. Build model and optimizer in `tfcore.training.distribute.scope(strategy)`, scale
the loss with `tfcore.training.distribute.average_loss` and sum gradients with
`tfcore.training.distribute.all_reduce_gradients` (identities on one device). XLA is not used
with more than one replica.

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
import logging
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfcore.training import callbacks as cbs
from tfcore.training import checkpointing, distribute, metrics_io
from tfcore.training.compile import compile_step, resolve_jit

log = logging.getLogger("tfcore.loop")

_STEP_STREAM = -1  # seeds [seed, k >= 0] are the data order's (tfcore.data)
_RESERVED_KEYS = ("epoch", "step")  # set by the loop in every History record


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


def _check_pos_int(value, what: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class History:
    """Per-epoch metrics: `epochs` (a list of dicts with 'epoch', 'step' and the
    metrics), `history` (name -> list over epochs, None where missing, like Keras's
    `History.history`), `final` (the last epoch's dict) and `status`."""

    def __init__(self):
        self.epochs: List[Dict[str, Any]] = []
        self.final_extra: Dict[str, Any] = {}
        self.status = "running"
        self.error: Optional[str] = None

    def append(self, epoch: int, step: int, logs: Mapping[str, Any]) -> None:
        """Records epoch `epoch`'s logs (replacing an earlier record of that epoch);
        'epoch' and 'step' are the loop's, whatever `logs` holds under those names."""
        entry = {k: _to_float(v) for k, v in logs.items() if k not in _RESERVED_KEYS}
        entry = {"epoch": int(epoch), "step": int(step), **entry}
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [entry]

    def update_final(self, logs: Mapping[str, Any]) -> None:
        """Adds `logs` (e.g. what callbacks added in `on_train_end`) to the `final`
        record only; the per-epoch records are unchanged. 'epoch' and 'step' are
        ignored."""
        self.final_extra.update({k: _to_float(v) for k, v in logs.items()
                                 if k not in _RESERVED_KEYS})

    @property
    def epoch(self) -> List[int]:
        return [e["epoch"] for e in self.epochs]

    @property
    def history(self) -> Dict[str, List[Optional[float]]]:
        names: List[str] = []
        for e in self.epochs:
            names += [k for k in e if k not in ("epoch", "step") and k not in names]
        return {k: [e.get(k) for e in self.epochs] for k in names}

    @property
    def final(self) -> Dict[str, Any]:
        """The last epoch's record, updated with `final_extra` (see `update_final`)."""
        return {**self.epochs[-1], **self.final_extra} if self.epochs else {}

    def to_json(self) -> dict:
        out = {"status": self.status, "step": self.final.get("step", 0),
               "final": self.final, "history": self.history, "epochs": self.epochs}
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_json(cls, metrics: Optional[dict], before_epoch: int) -> "History":
        h = cls()
        for e in (metrics or {}).get("epochs", []):
            if e.get("epoch", before_epoch) < before_epoch:
                h.epochs.append(dict(e))
        return h


def _to_float(v) -> Any:
    if hasattr(v, "numpy"):
        v = v.numpy()
    if isinstance(v, (np.ndarray, np.generic)) and np.size(v) == 1:
        v = v.reshape(()).item()
    return v


class _Accumulator:
    """Running sums of the step logs (float64) over an epoch."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.count = 0

    def add(self, sums: Mapping[str, float], count: int) -> None:
        for k, v in sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += count

    def means(self) -> Dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}


def _first_non_finite(logs: Mapping[str, Any]):
    for k, v in logs.items():
        if isinstance(v, float) and not math.isfinite(v):
            return k, v
    return None


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
        (default True, `tf.function`'s default). False skips the conversion, for
        steps with no `if`/`while`/`for` on tensors: much faster tracing (module
        docstring); a step that needs it then fails at its first trace with a
        ValueError saying so.

    Attributes:
      step: int64 variable, global steps done. seed: int64 variable. rng: a
      `tf.random.Generator`. checkpoint / checkpointer: the training checkpoint and its
      manager under `workdir/checkpoints`. history: the `History`. stop_training:
      set True (e.g. by a callback) to stop after the current step / epoch end.
      train_function: the compiled per-step function (for tests: tracing count).
    """

    def __init__(self, step_fn: Callable, data: Any, *, objects: Mapping[str, Any],
                 batch_size: Optional[int] = None, eval_fn: Optional[Callable] = None,
                 callbacks: Sequence = (), workdir: Optional[str] = None, seed: int = 0,
                 jit: Union[str, bool] = "auto",
                 strategy: Optional[tf.distribute.Strategy] = None,
                 steps_per_call: Union[int, str] = 1, progress: bool = True,
                 log_every: int = 100, max_to_keep: Optional[int] = 3,
                 check_numerics: bool = True, autograph: bool = True):
        if not callable(step_fn):
            raise ValueError(f"step_fn must be callable, got {step_fn!r}")
        if eval_fn is not None and not callable(eval_fn):
            raise ValueError(f"eval_fn must be callable or None, got {eval_fn!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if not (steps_per_call == "epoch" or (not isinstance(steps_per_call, bool) and
                                               isinstance(steps_per_call, int)
                                               and steps_per_call > 0)):
            raise ValueError(f"steps_per_call must be a positive integer or 'epoch', "
                             f"got {steps_per_call!r}")
        _check_pos_int(log_every, "log_every")
        if not isinstance(autograph, bool):
            raise ValueError(f"autograph must be a bool, got {autograph!r}")
        self.autograph = autograph
        self.step_fn = step_fn
        self.strategy = strategy or tf.distribute.get_strategy()
        self.data = self._make_data(data, batch_size, int(seed))
        self.steps_per_epoch = _check_pos_int(int(self.data.steps_per_epoch),
                                              "data.steps_per_epoch")
        self.eval_fn = eval_fn
        self.workdir = workdir
        self.steps_per_call = steps_per_call
        self.check_numerics = bool(check_numerics)
        self.objects = dict(objects)
        replicas = distribute.num_replicas(self.strategy)
        self.jit = resolve_jit(jit)
        if self.jit and replicas > 1:
            log.warning("jit: XLA is not used with %d replicas; running in graph mode",
                        replicas)
            self.jit = False
        with tf.init_scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="seed")
            self.rng = tf.random.Generator.from_seed(int(seed), alg="philox")
            self._perm = None
            if all(hasattr(self.data, a) for a in ("permutation", "gather", "num_examples")):
                n = int(self.data.num_examples)
                self._perm = tf.Variable(tf.zeros([n], tf.int32), trainable=False,
                                         name="epoch_permutation")
        self._perm_epoch = None
        self.checkpoint = checkpointing.make_checkpoint(self.objects, step=self.step,
                                                        seed=self.seed, rng=self.rng)
        self.is_chief = distribute.is_chief(self.strategy)
        self.checkpointer = None
        if workdir:
            ckpt_dir = distribute.worker_dir(os.path.join(workdir, "checkpoints"),
                                             self.strategy)
            self.checkpointer = checkpointing.Checkpointer(ckpt_dir, self.checkpoint,
                                                           max_to_keep=max_to_keep)
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, cbs.Callback):
                raise ValueError(f"callbacks must be tfcore.training.callbacks.Callback instances, "
                                 f"got {cb!r}")
        if workdir and not any(isinstance(c, cbs.ModelCheckpoint) and not c.save_best_only
                               for c in callbacks):
            callbacks.append(cbs.ModelCheckpoint())
        if progress and not any(isinstance(c, cbs.ProgressLogger) for c in callbacks):
            callbacks.append(cbs.ProgressLogger(log_every=log_every))
        self.callbacks = callbacks
        self.history = History()
        self.stop_training = False
        self.total_steps = 0
        self.epochs = 0
        self.train_function = None
        self._concrete: Dict[str, Any] = {}  # see _call_compiled
        self.multi_step_function = None
        self._metric_names: Optional[List[str]] = None

    # -- data ----------------------------------------------------------------------
    def _make_data(self, data, batch_size, seed):
        if hasattr(data, "batch") and hasattr(data, "steps_per_epoch"):
            if batch_size is not None:
                raise ValueError(f"batch_size is given by the data source; got "
                                 f"batch_size={batch_size!r} too")
            return data
        from tfcore.data import DeviceDataset  # pylint: disable=import-outside-toplevel
        _check_pos_int(batch_size, "batch_size")
        return DeviceDataset(data, batch_size, seed=seed, shuffle=True)

    def _set_epoch(self, epoch: int) -> None:
        """Computes the epoch's permutation once (eagerly) for the compiled steps."""
        if self._perm is not None and self._perm_epoch != epoch:
            self._perm.assign(tf.cast(self.data.permutation(int(epoch)), tf.int32))
            self._perm_epoch = epoch

    def _batch(self, step):
        spe = self.steps_per_epoch
        if self._perm is not None:
            return self.data.gather(self._perm, step % spe)
        return self.data.batch(step // spe, step % spe)

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
        'multi_step_function') through its traced concrete function: the
        `tf.function`'s per-call dispatch (signature binding, cache lookup) cost
        0.1-0.3 ms a call on the 2-core CPU, which small models feel. Both have a fixed
        signature, so one concrete function each is cached. Under
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
            logs = {k: _to_float(v) for k, v in out.items()}
            bad = _first_non_finite(logs) if self.check_numerics else None
            if bad:
                self._non_finite(start + 1, epoch, *bad)
            self._acc.add(logs, 1)
            return logs
        with self._autograph_hint():
            i, ok, sums, last = self._call_compiled("multi_step_function",
                                                     tf.constant(n, tf.int32))
        i = int(i)
        if not bool(ok):
            last = {k: _to_float(v) for k, v in last.items()}
            bad = _first_non_finite(last) or ("?", float("nan"))
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
          ValueError: neither `epochs` nor `steps`, a non-positive one, resume without a
            workdir, checkpoints in `workdir` without `resume`, or a seed that differs
            from the resumed checkpoint's.
          NonFiniteError: a step returned NaN/Inf.
        """
        epochs = _check_pos_int(epochs, "epochs", allow_none=True)
        steps = _check_pos_int(steps, "steps", allow_none=True)
        if epochs is None and steps is None:
            raise ValueError("give epochs or steps (a positive integer), got neither")
        spe = self.steps_per_epoch
        total = total_steps(epochs, steps, spe)
        self.total_steps = total
        self.epochs = -(-total // spe)
        given_seed = int(self.seed.numpy())
        if resume and self.checkpointer is None:
            raise ValueError("resume=True needs a workdir")
        if self.checkpointer is not None:
            if resume:
                path = self.checkpointer.restore_latest()
                if path:
                    log.info("resumed from %s (step %d)", path, int(self.step.numpy()))
                    if int(self.seed.numpy()) != given_seed:
                        raise ValueError(f"seed {given_seed} differs from the seed "
                                         f"{int(self.seed.numpy())} of the checkpoint "
                                         f"{path}; resume with the same --seed")
            elif int(self.step.numpy()) == 0 and self.checkpointer.latest:
                raise ValueError(f"workdir {self.workdir!r} already holds checkpoints "
                                 f"({self.checkpointer.latest}); pass resume=True "
                                 "(--resume) to continue, or use a new workdir")
        start = int(self.step.numpy())
        if self.workdir and resume:
            self.history = History.from_json(metrics_io.read_metrics(self.workdir),
                                             before_epoch=start // spe)
        self._build_functions()
        self.stop_training = False
        cbs = _CallbackList(self.callbacks, self)
        logs: Dict[str, Any] = {}
        try:
            cbs.call("on_train_begin", {})
            step = start
            while step < total and not self.stop_training:
                epoch = step // spe
                epoch_end = min((epoch + 1) * spe, total)
                self._set_epoch(epoch)
                self._acc = _Accumulator()
                cbs.call("on_epoch_begin", epoch, {})
                while step < epoch_end and not self.stop_training:
                    n = self._chunk(step, epoch_end)
                    cbs.call("on_batch_begin", step, {})
                    batch_logs = self._run_steps(n, epoch, step)
                    step += n
                    cbs.call("on_batch_end", step, batch_logs)
                logs = self._acc.means()
                if self.eval_fn is not None:
                    val = self.eval_fn()
                    if not isinstance(val, Mapping):
                        raise ValueError(f"eval_fn must return a dict of scalars, "
                                         f"got {type(val).__name__}")
                    logs.update({"val_" + k: _to_float(v) for k, v in val.items()})
                cbs.call("on_epoch_end", epoch, logs)
                self.history.append(epoch, step, logs)
                self._write_metrics()
            end_logs = dict(logs)
            cbs.call("on_train_end", end_logs)
            self.history.update_final({k: v for k, v in end_logs.items()
                                       if k not in logs or v is not logs[k]})
            self.history.status = "stopped_early" if self.stop_training else "done"
            self._write_metrics()
        except BaseException as e:  # NonFiniteError, KeyboardInterrupt, ...
            self.history.status = "failed"
            self.history.error = f"{type(e).__name__}: {e}"
            self._write_metrics()
            raise
        finally:
            cbs.close()
        return self.history

    def _write_metrics(self) -> None:
        if self.workdir and self.is_chief:
            metrics_io.write_metrics(self.workdir, self.history.to_json())

    # -- helpers for callbacks ---------------------------------------------------------
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
    """`tfcore.training.compile.compile_step`, or with `autograph=False` the same `tf.function`
    without AutoGraph's conversion."""
    if autograph:
        return compile_step(fn, jit, input_signature=input_signature)
    return tf.function(fn, input_signature=input_signature,
                       jit_compile=resolve_jit(jit), autograph=False)


def _check_logs(logs) -> None:
    if not isinstance(logs, Mapping) or not logs:
        raise ValueError(f"step_fn must return a non-empty dict of named scalar tensors, "
                         f"got {logs!r}")
    for k, v in logs.items():
        shape = getattr(v, "shape", None)
        if shape is None or tf.TensorShape(shape).rank != 0:
            raise ValueError(f"step_fn must return scalars; {k!r} has shape {shape}")


class _CallbackList:
    def __init__(self, callbacks, loop):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_loop(loop)

    def call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

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
            raise ValueError("ZipData needs at least one source, got none")
        for i, src in enumerate(sources):
            if not (hasattr(src, "batch") and hasattr(src, "steps_per_epoch")):
                raise ValueError(f"source {i} must have batch(epoch, step) and "
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
    _check_pos_int(batch_size, "batch_size")
    if not isinstance(autograph, bool):
        raise ValueError(f"autograph must be a bool, got {autograph!r}")
    flat = [tf.convert_to_tensor(a) for a in tf.nest.flatten(data)]
    n = int(flat[0].shape[0])
    if any(int(t.shape[0]) != n for t in flat):
        raise ValueError(f"all arrays in data must have the same first dimension, got "
                         f"{[t.shape[0] for t in flat]}")
    num_batches = -(-n // batch_size)

    def one_batch(i):
        idx = i * batch_size + tf.range(batch_size, dtype=tf.int64)
        mask = tf.cast(idx < n, tf.float64)
        idx = tf.minimum(idx, n - 1)
        batch = tf.nest.pack_sequence_as(data, [tf.gather(t, idx) for t in flat])
        out = metric_fn(batch)
        if not isinstance(out, Mapping):
            raise ValueError(f"metric_fn must return a dict of per-example tensors, got "
                             f"{type(out).__name__}")
        sums = {}
        for k, v in out.items():
            if v.shape.rank != 1 or v.shape[0] != batch_size:
                raise ValueError(f"metric_fn must return per-example values of shape "
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
