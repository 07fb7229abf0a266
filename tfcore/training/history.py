"""A run's per-epoch record (`History`) and the running means of an epoch.

`History.epochs` is a list of dicts, one per finished epoch: 'epoch' (0-based), 'step'
(global steps done at its end) and the named metrics (train means, `val_*`, whatever
callbacks added). `history` is the same by name (Keras's `History.history`), `final`
the last record. The loop keeps this record inside every checkpoint (its run state),
so metrics.json, which publishes it, can always be rebuilt from the newest checkpoint.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

RESERVED_KEYS = ("epoch", "step")  # set by the loop in every record
STATUSES = ("running", "done", "stopped_early", "interrupted", "failed")


def to_float(v) -> Any:
    """A scalar tensor / NumPy scalar as a Python number; anything else as it is."""
    if hasattr(v, "numpy"):
        v = v.numpy()
    if isinstance(v, (np.ndarray, np.generic)) and np.size(v) == 1:
        v = v.reshape(()).item()
    return v


def first_non_finite(logs: Mapping[str, Any]):
    """(name, value) of the first NaN / Inf float in `logs`, or None."""
    for k, v in logs.items():
        if isinstance(v, float) and not math.isfinite(v):
            return k, v
    return None


class History:
    """Per-epoch metrics: `epochs`, `history` (name -> list over epochs, None where
    missing), `final` (the last epoch's dict, plus `update_final`'s keys), `status`
    (one of STATUSES) and `error`."""

    def __init__(self, epochs: Optional[List[Dict[str, Any]]] = None):
        self.epochs: List[Dict[str, Any]] = [dict(e) for e in (epochs or [])]
        self.final_extra: Dict[str, Any] = {}
        self.status = "running"
        self.error: Optional[str] = None

    def append(self, epoch: int, step: int, logs: Mapping[str, Any]) -> None:
        """Records epoch `epoch`'s logs (replacing an earlier record of that epoch);
        'epoch' and 'step' are the loop's, whatever `logs` holds under those names."""
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [
            self.record(epoch, step, logs)]

    @staticmethod
    def record(epoch: int, step: int, logs: Mapping[str, Any]) -> Dict[str, Any]:
        """The record `append` stores: {'epoch', 'step', **logs as Python numbers}."""
        entry = {k: to_float(v) for k, v in logs.items() if k not in RESERVED_KEYS}
        return {"epoch": int(epoch), "step": int(step), **entry}

    def update_final(self, logs: Mapping[str, Any]) -> None:
        """Adds `logs` (e.g. what callbacks added in `on_train_end`) to the `final`
        record only; the per-epoch records are unchanged. 'epoch' and 'step' are
        ignored."""
        self.final_extra.update({k: to_float(v) for k, v in logs.items()
                                 if k not in RESERVED_KEYS})

    @property
    def epoch(self) -> List[int]:
        return [e["epoch"] for e in self.epochs]

    @property
    def history(self) -> Dict[str, List[Optional[float]]]:
        names: List[str] = []
        for e in self.epochs:
            names += [k for k in e if k not in RESERVED_KEYS and k not in names]
        return {k: [e.get(k) for e in self.epochs] for k in names}

    @property
    def final(self) -> Dict[str, Any]:
        """The last epoch's record, updated with `final_extra` (see `update_final`)."""
        return {**self.epochs[-1], **self.final_extra} if self.epochs else {}

    def to_json(self) -> dict:
        """{'status', 'step', 'final', 'history', 'epochs'[, 'error']}."""
        out = {"status": self.status, "step": self.final.get("step", 0),
               "final": self.final, "history": self.history, "epochs": self.epochs}
        if self.error:
            out["error"] = self.error
        return out


class Accumulator:
    """Running float64 sums of the step logs over (part of) an epoch."""

    def __init__(self, sums: Optional[Mapping[str, float]] = None, count: int = 0):
        self.sums: Dict[str, float] = dict(sums or {})
        self.count = int(count)

    def add(self, sums: Mapping[str, float], count: int) -> None:
        for k, v in sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += count

    def means(self) -> Dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def to_json(self) -> Dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}
