"""Compiling steps: `--jit=auto|on|off` -> a `tf.function` (XLA or graph mode).

`on` compiles with `tf.function(jit_compile=True)` (XLA), `off` with a plain
`tf.function` (graph mode, TensorFlow's own kernels), `auto` picks XLA when a GPU is
visible, and on CPU graph mode unless the model says XLA wins there (`cpu_xla=True`):
each model module records its measured choice, e.g.
`models.autoencoder.prefers_xla_on_cpu`, and `bench.run` checks it (the numbers:
docs/decisions.md, "Compile mode per device"). Steps must have static shapes: XLA
specialises on them, and a changing shape retraces.

Example:
    step = tfcore.training.compile.compile_step(train_step, jit="auto")
    logs = step(batch)
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

JIT_MODES = ("auto", "on", "off")


def resolve_jit(jit: Union[str, bool] = "auto", cpu_xla: bool = False) -> bool:
    """Whether to compile with XLA.

    Args:
      jit: 'on' (XLA), 'off' (graph mode) or 'auto' (XLA when a GPU is visible, else
        `cpu_xla`). A bool is returned as is.
      cpu_xla: the model's measured preference on CPU (default False: graph mode).

    Returns:
      True for XLA (`jit_compile=True`), False for plain graph mode.

    Raises:
      ValueError: `jit` is not one of 'auto', 'on', 'off'.
    """
    if isinstance(jit, bool):
        return jit
    mode = str(jit).lower()
    if mode not in JIT_MODES:
        raise ValueError(f"jit must be one of 'auto', 'on', 'off', got {jit!r}")
    if mode == "auto":
        return bool(tf.config.list_physical_devices("GPU")) or bool(cpu_xla)
    return mode == "on"


def compile_step(fn: Callable, jit: Union[str, bool] = "auto",
                 input_signature: Optional[Sequence[tf.TensorSpec]] = None,
                 reduce_retracing: bool = False):
    """Wraps `fn` in a `tf.function`, with XLA per `jit` (see `resolve_jit`).

    Args:
      fn: the Python step function (its Python side effects run only when traced).
      jit: 'auto' | 'on' | 'off' (or a bool).
      input_signature: optional `tf.TensorSpec`s fixing the traced shapes (one trace).
      reduce_retracing: passed to `tf.function`.

    Returns:
      The `tf.function`; `.experimental_get_tracing_count()` tells how often it traced.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    return tf.function(fn, input_signature=input_signature, jit_compile=resolve_jit(jit),
                       reduce_retracing=reduce_retracing)
