"""Learning-rate schedules `lr(t)` for compiled steps, and a step wrapper applying one.

`make_learning_rate_fn(schedule, learning_rate, total_steps, ...)` returns `lr(t)`, a
function of the number `t` of updates already applied (an int tensor, e.g.
`optimizer.iterations`) -> float32 scalar, built from TensorFlow ops so it runs inside
a `tf.function` / XLA step. Schedules: 'constant', 'cosine', 'step' and 'wsd'
(warm-up, stable, then a linear decay over the last `decay_fraction` of the run: the
VAT paper's schedule).

`scheduled_step(step_fn, optimizer, lr_fn)` wraps a train step `step_fn(batch, seed)
-> logs`: it assigns `optimizer.learning_rate = lr_fn(optimizer.iterations)` before the
step's update and adds `learning_rate` to the logs. The rate is a function of the
optimizer's own step counter, so a resumed run continues the schedule exactly.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import tensorflow as tf

from tfcore import checks

SCHEDULES = ("constant", "cosine", "step", "wsd")


def make_learning_rate_fn(schedule: str, learning_rate: float, total_steps: int,
                          warmup_steps: int = 0, final_fraction: float = 0.0,
                          boundaries: Sequence[float] = (0.5, 0.75),
                          factor: float = 0.1, decay_fraction: float = 0.2
                          ) -> Callable[[tf.Tensor], tf.Tensor]:
    """A learning-rate schedule `lr(t)` of the number `t` of steps already applied.

    All but 'constant' start with a linear warm-up, lr *= min((t + 1) / warmup, 1).

    * 'constant': lr(t) = learning_rate.
    * 'cosine': lr(t) = learning_rate * (f + (1 - f) * (1 + cos(pi * u)) / 2) with
      u = min((t - warmup) / (total_steps - warmup), 1) and f = `final_fraction`.
    * 'step': learning_rate * factor ** (number of boundaries passed), boundaries
      given as fractions of `total_steps` (default x0.1 at 50% and 75%).
    * 'wsd' (warm-up, stable, decay): the peak rate until the last
      `decay_fraction` of `total_steps`, then a linear decay to
      f * learning_rate at `total_steps` (decay_fraction=1: linear decay
      throughout).

    Args:
      schedule: one of SCHEDULES.
      learning_rate: the peak rate (> 0).
      total_steps: the run's length in steps (> 0).
      warmup_steps: linear warm-up steps (>= 0, < total_steps).
      final_fraction: cosine's final rate as a fraction of the peak, in [0, 1].
      boundaries: 'step': increasing fractions in (0, 1).
      factor: 'step': the multiplier at each boundary, in (0, 1].
      decay_fraction: 'wsd': the share of `total_steps` spent decaying, in (0, 1].

    Returns:
      `lr(t)`: int tensor -> float32 scalar; usable in compiled steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or \
            not 0 < learning_rate < math.inf:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    total_steps = checks.check_int(total_steps, "total_steps", low=1)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or \
            not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an integer in [0, total_steps="
                         f"{total_steps}), got {warmup_steps!r}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction!r}")
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction!r}")
    bounds = [float(b) for b in boundaries]
    if any(not 0.0 < b < 1.0 for b in bounds) or bounds != sorted(bounds):
        raise ValueError(f"boundaries must be increasing fractions in (0, 1), got "
                         f"{boundaries!r}")
    base, warm = float(learning_rate), int(warmup_steps)

    def lr(t):
        t = tf.cast(t, tf.float32)
        if schedule == "constant":
            return tf.constant(base, tf.float32)
        if schedule == "cosine":
            u = tf.minimum(tf.maximum(t - warm, 0.0) / float(total_steps - warm), 1.0)
            rate = base * (final_fraction + (1.0 - final_fraction) * 0.5 *
                           (1.0 + tf.cos(math.pi * u)))
        elif schedule == "wsd":
            decay_start = (1.0 - decay_fraction) * total_steps
            u = tf.clip_by_value((t - decay_start) / (decay_fraction * total_steps),
                                 0.0, 1.0)
            rate = base * (1.0 - (1.0 - final_fraction) * u)
        else:
            passed = tf.add_n([tf.cast(t >= b * total_steps, tf.float32) for b in bounds]) \
                if bounds else tf.constant(0.0)
            rate = base * tf.pow(tf.constant(factor, tf.float32), passed)
        if warm:
            rate = rate * tf.minimum((t + 1.0) / float(warm), 1.0)
        return rate

    return lr


def scheduled_step(step_fn: Callable, optimizer, lr_fn: Callable[[tf.Tensor], tf.Tensor]
                   ) -> Callable[..., Dict[str, tf.Tensor]]:
    """`step_fn` with the rate `lr_fn(optimizer.iterations)` assigned before each update.

    Args:
      step_fn: `step_fn(batch, seed) -> {name: scalar}` that applies one update with
        `optimizer`.
      optimizer: a `tfcore.optimizers` optimizer (its `learning_rate` is a variable).
      lr_fn: `lr(t)`, e.g. from `make_learning_rate_fn`.

    Returns:
      `step(batch, seed)`: the same logs plus `learning_rate` (the rate used).
    """
    if not isinstance(getattr(optimizer, "learning_rate", None), tf.Variable):
        raise ValueError(f"optimizer.learning_rate must be a tf.Variable to schedule it, "
                         f"got {getattr(optimizer, 'learning_rate', None)!r}")

    def step(batch, seed):
        rate = lr_fn(optimizer.iterations)
        optimizer.learning_rate.assign(rate)
        logs = dict(step_fn(batch, seed))
        logs["learning_rate"] = tf.identity(rate)
        return logs

    return tf.autograph.experimental.do_not_convert(step)
