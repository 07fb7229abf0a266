"""Timing: warm-up, then interleaved rounds (A B C A B C ...), ms per step.

A *runner* is a callable `run(n) -> outputs` that performs `n` train steps (or `n`
kernel calls) and returns something whose tensors, once fetched, prove the work is
done (the last step's logs, a kernel's result). The harness fetches them
(`.numpy()`), which on a GPU also waits for the device.

`interleave(runners, steps=..., rounds=..., warmup=...)`:

1. warm-up: every runner runs `warmup` steps once (tracing, XLA compilation,
   oneDNN primitive caches and the allocator settle here; none of it is timed);
2. `rounds` rounds (fewer under a `time_budget_s`, at least `min_rounds`); in each,
   every runner in turn runs `steps` steps and the wall
   time of that call, divided by `steps`, is one sample (ms per step). Runners thus
   alternate (ABAB...), so slow drifts of the machine's load (other processes on a
   shared machine) hit all of them alike, and ratios measured in one call are
   meaningful even when absolute times are noisy;
3. per runner: the median, min and max of its samples (`Timing`), and the median
   CPU time of the process per step (`time.process_time`, all threads), a second view
   that other processes' load inflates less than wall time.

Shapes and defaults: `steps` >= 1 steps per sample (default 10), `rounds` >= 1
samples per runner (default 5), `warmup` >= 0 steps (default 2).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf

Runner = Callable[[int], Any]


# The square float32 matmul (size^3) timed beside every model and kernel as the
# machine's peak. 1024^3 ran ~20 % below the peak on both CPUs this project measured
# (AMD EPYC: 328 vs 403 GFLOP/s at 2048^3; Intel Xeon: 143-150 vs 178-191 at
# 2048-4096^3, where the larger sizes agree within noise), which inflated every
# "% of peak"; 2048^3 is within noise of the largest sizes on both.
PEAK_SIZE = 2048
# The sizes the kernel bench's peak section times (to show PEAK_SIZE is a peak).
PEAK_SIZES = (1024, 2048, 3072)


@dataclasses.dataclass
class Timing:
    """Per-step wall times of one runner (milliseconds).

    Attributes:
      samples_ms: one value per round: the round's wall time / steps.
      steps: steps per round.
      median_ms, min_ms, max_ms: statistics of `samples_ms`.
    """

    samples_ms: List[float]
    steps: int
    cpu_samples_ms: Optional[List[float]] = None

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return float(min(self.samples_ms))

    @property
    def max_ms(self) -> float:
        return float(max(self.samples_ms))

    @property
    def cpu_median_ms(self) -> Optional[float]:
        """Median process CPU time per step (all threads), None if not measured."""
        if not self.cpu_samples_ms:
            return None
        return float(statistics.median(self.cpu_samples_ms))

    def to_dict(self) -> Dict[str, Any]:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "samples_ms": [float(s) for s in self.samples_ms], "steps": self.steps,
                "cpu_median_ms": self.cpu_median_ms}


def paired_ratio(a: "Timing", b: "Timing") -> float:
    """Median over rounds of a's round time / b's round time (same round index).

    Runners timed in the same `interleave` call run one after the other in every
    round, so a round's pair saw the same machine state; the median of the paired
    ratios is robust to load or clock changes between rounds, which a ratio of the two
    medians is not (it can pair a fast round of one with a slow round of the other).
    """
    n = min(len(a.samples_ms), len(b.samples_ms))
    if n == 0:
        raise ValueError("paired_ratio needs at least one round of each")
    return float(statistics.median(a.samples_ms[i] / b.samples_ms[i] for i in range(n)))


def block(outputs: Any) -> None:
    """Fetches every tensor in `outputs` to the host (waits for the device)."""
    for t in tf.nest.flatten(outputs):
        if isinstance(t, (tf.Tensor, tf.Variable)):
            t.numpy()
        elif hasattr(t, "numpy"):
            t.numpy()


def check_count(value, what: str, low: int) -> int:
    """`value` as an int (Python or NumPy); ValueError naming `what` if it is not an
    integer >= `low` (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def interleave(runners: Mapping[str, Runner], steps: int = 10, rounds: int = 5,
               warmup: int = 2, steps_for: Optional[Mapping[str, int]] = None,
               warmup_for: Optional[Mapping[str, int]] = None,
               time_budget_s: Optional[float] = None, min_rounds: int = 3,
               clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """Times `runners` in interleaved rounds after a warm-up (see module docstring).

    Args:
      runners: name -> `run(n)`; run in this order within every round.
      steps: steps per timed call (per round), >= 1.
      rounds: timed rounds, >= 1 (the median is over rounds).
      warmup: untimed steps per runner before the first round, >= 0 (0: none;
        compilation then lands in the first sample).
      steps_for: optional per-runner override of `steps` (e.g. fewer steps for a
        slow eager mode so a round stays short).
      warmup_for: optional per-runner override of `warmup`.
      time_budget_s: optional cap on the timed rounds' total wall time: after each
        round, stop early when another round (as long as the slowest so far) would
        exceed it, but never before `min_rounds` rounds. None: exactly `rounds`.
      min_rounds: the fewest rounds run under a time budget (default 3).
      clock: the timer (seconds), `time.perf_counter` by default.

    Returns:
      name -> `Timing`, in the order of `runners`.

    Raises:
      ValueError: no runners, a runner that is not callable, or bad counts.
    """
    if not runners:
        raise ValueError("runners must name at least one runner, got none")
    for name, run in runners.items():
        if not callable(run):
            raise ValueError(f"runner {name!r} must be callable, got {run!r}")
    steps = check_count(steps, "steps", 1)
    rounds = check_count(rounds, "rounds", 1)
    warmup = check_count(warmup, "warmup", 0)
    per = {name: check_count((steps_for or {}).get(name, steps), f"steps for {name!r}", 1)
           for name in runners}
    warm = {name: check_count((warmup_for or {}).get(name, warmup), f"warmup for {name!r}", 0)
            for name in runners}
    for name, run in runners.items():
        if warm[name]:
            block(run(warm[name]))
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    cpu: Dict[str, List[float]] = {name: [] for name in runners}
    start, longest = clock(), 0.0
    for r in range(rounds):
        if time_budget_s is not None and r >= min_rounds and \
                clock() - start + longest > time_budget_s:
            break
        r0 = clock()
        for name, run in runners.items():
            c0, t0 = time.process_time(), clock()
            block(run(per[name]))
            t1, c1 = clock(), time.process_time()
            samples[name].append((t1 - t0) * 1000.0 / per[name])
            cpu[name].append((c1 - c0) * 1000.0 / per[name])
        longest = max(longest, clock() - r0)
    return {name: Timing(samples[name], per[name], cpu[name]) for name in runners}


def repeat(fn: Callable[[], Any]) -> Runner:
    """A runner that calls `fn()` n times and returns the last result."""

    def run(n: int):
        out = None
        for _ in range(n):
            out = fn()
        return out

    return run
