"""tf.distribute for tfcore steps: a strategy from a name, and per-replica helpers.

`--strategy=default|mirrored|multi_worker`:

* `default`: no distribution (`tf.distribute.get_strategy()`, one device).
* `mirrored`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over the
  local GPUs (or, without a GPU, over the logical CPU devices, for tests).
* `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`, the same over many
  hosts; the cluster comes from the `TF_CONFIG` environment variable (one local
  worker when unset). Create it at program start, before other TF work.

How a step runs under a strategy (`tfcore.loop` does the first three for you):

1. Build the model and optimizer inside `tfcore.training.distribute.scope(strategy)` (not
   just `strategy.scope()`): variables are mirrored on every replica with aggregation
   `ONLY_FIRST_REPLICA`, so the replica-context `assign`s that a tfcore optimizer
   makes are legal and keep the copies identical.
2. The loop gathers the GLOBAL batch, and each replica takes its slice
   (`replica_batch`), with its own stateless seed (`replica_seed`).
3. `strategy.run(step_fn, ...)` inside one `tf.function` (never a nested
   `tf.function` around `step_fn`: its synchronisation points would fail); the logs
   are averaged over replicas (`ReduceOp.MEAN`), so return replica-local means.
4. In `step_fn`: scale the loss to differentiate by the GLOBAL batch,
   `average_loss(per_example)` (= `tf.nn.compute_average_loss`), and sum the
   gradients over replicas with `all_reduce_gradients(grads)` before
   `optimizer.apply_gradients` (tfcore optimizers do not all-reduce). Then every
   replica applies the same update, and the run matches a single device on the same
   global batch (up to float summation order).
5. BatchNorm can sync its batch statistics across replicas with `sync_moments`
   (a global mean / variance over the whole global batch); unsynced, each replica
   normalises with its local statistics and the moving averages of replica 0 are kept.

With one replica (the default strategy) every helper is the identity, so the same
`step_fn` runs everywhere.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Optional, Sequence

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def use_logical_cpus(n: int) -> None:
    """Splits the first physical CPU into `n` logical devices (for tests of strategies).

    Must run before TensorFlow initialises its devices (before any op or device
    query), so run it first thing in a fresh process.

    Raises:
      ValueError: `n` is not a positive int.
      RuntimeError: the devices were already initialised.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        raise RuntimeError("use_logical_cpus must run before TensorFlow initialises its "
                           f"devices (run it first in a fresh process): {e}") from e


def get_strategy(name: str = "default",
                 devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` for `--strategy`.

    Args:
      name: 'default', 'mirrored' or 'multi_worker'.
      devices: for 'mirrored', the devices (default: all GPUs, else all logical CPUs).

    Raises:
      ValueError: unknown `name`.
    """
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = ([d.name for d in gpus] if gpus
                       else [d.name for d in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.MultiWorkerMirroredStrategy()


def num_replicas(strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Number of replicas in sync (1 for the default strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


def _first_replica_creator(next_creator, **kwargs):
    if kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE):
        kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)


@contextlib.contextmanager
def scope(strategy: Optional[tf.distribute.Strategy] = None):
    """`strategy.scope()` where new variables default to ONLY_FIRST_REPLICA aggregation.

    Create the model, the optimizer (call its `build(variables)` here so the slots
    exist) and anything else the step updates inside this scope.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope(), tf.variable_creator_scope(_first_replica_creator):
        yield strategy


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def average_loss(per_example_loss: tf.Tensor,
                 global_batch_size: Optional[int] = None) -> tf.Tensor:
    """sum(per_example_loss) / global_batch_size (`tf.nn.compute_average_loss`).

    Args:
      per_example_loss: [local_batch] (extra axes are averaged first).
      global_batch_size: default local batch * replicas in sync.

    Returns:
      A scalar; summed over replicas it is the mean over the global batch.
    """
    x = tf.convert_to_tensor(per_example_loss)
    if x.shape.rank is not None and x.shape.rank > 1:
        x = tf.reduce_mean(x, axis=list(range(1, x.shape.rank)))
    return tf.nn.compute_average_loss(x, global_batch_size=global_batch_size)


def all_reduce_gradients(grads: Sequence[Optional[tf.Tensor]]) -> list:
    """Sums gradients over replicas (identity with one replica); None entries pass."""
    grads = list(grads)
    ctx = _replica_context()
    if ctx is None:
        return grads
    idx = [i for i, g in enumerate(grads) if g is not None]
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in idx])
    for i, g in zip(idx, reduced):
        grads[i] = g
    return grads


def gradients(tape: tf.GradientTape, loss: tf.Tensor, variables) -> list:
    """`tape.gradient(loss, variables)` summed over replicas (see module docstring)."""
    return all_reduce_gradients(tape.gradient(loss, variables))


def replica_batch(batch):
    """This replica's slice of a global batch (every tensor split on axis 0).

    In replica context with n replicas, a tensor of static shape [B, ...] becomes
    [B // n, ...] (replica r gets rows r*B/n ... (r+1)*B/n - 1). Identity otherwise.

    Raises:
      ValueError: a batch dimension is unknown or not divisible by n.
    """
    ctx = _replica_context()
    if ctx is None:
        return batch
    n = ctx.num_replicas_in_sync
    rid = ctx.replica_id_in_sync_group

    def split(t):
        t = tf.convert_to_tensor(t)
        b = t.shape[0]
        if b is None or b % n:
            raise ValueError(f"the global batch size must be static and divisible by the "
                             f"{n} replicas, got shape {t.shape}")
        return tf.reshape(t, [n, b // n] + t.shape.as_list()[1:])[rid]

    return tf.nest.map_structure(split, batch)


def replica_seed(seed):
    """A per-replica stateless seed: `seed` folded with the replica id (identity for 1)."""
    ctx = _replica_context()
    if ctx is None or seed is None:
        return seed
    return tf.random.experimental.stateless_fold_in(
        tf.cast(seed, tf.int64), tf.cast(ctx.replica_id_in_sync_group, tf.int64), alg="philox")


def sync_moments(x: tf.Tensor, axes: Sequence[int]):
    """Mean and variance of `x` over `axes` and over ALL replicas (synced BatchNorm).

    Args:
      x: the replica-local activations, e.g. [b, h, w, c].
      axes: the axes to reduce, e.g. [0, 1, 2].

    Returns:
      (mean, variance) with the reduced axes removed, equal to
      `tf.nn.moments` of the concatenated global batch (identity with one replica).
    """
    ctx = _replica_context()
    if ctx is None:
        return tf.nn.moments(x, axes=list(axes))
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), list(axes))), x.dtype)
    s = tf.reduce_sum(x, axis=list(axes))
    s2 = tf.reduce_sum(tf.square(x), axis=list(axes))
    s, s2, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [s, s2, count])
    mean = s / count
    return mean, tf.maximum(s2 / count - tf.square(mean), 0.0)


def run_step(strategy: tf.distribute.Strategy, step_fn: Callable, batch, seed) -> dict:
    """Runs `step_fn(local_batch, local_seed)` on every replica; MEAN-reduces its logs.

    Call inside a `tf.function`. With the default strategy it is `step_fn(batch, seed)`.
    """
    def replica_fn(b, s):
        return step_fn(replica_batch(b), replica_seed(s))

    out = strategy.run(replica_fn, args=(batch, seed))
    if strategy.num_replicas_in_sync == 1:
        return out
    return tf.nest.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), out)


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """True on the worker that writes checkpoints, summaries and metrics."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_dir(directory: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """`directory` on the chief; a per-worker temporary sibling on other workers.

    Multi-worker saves are collective (every worker must write), but only the chief's
    copy is kept; the others write to `<directory>/.worker_<id>` (delete afterwards).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return directory
    task_id = strategy.cluster_resolver.task_id
    return os.path.join(directory, f".worker_{task_id}")
