"""Atomic writes of `workdir/metrics.json` (and any small text/JSON file).

A file is written to a temporary sibling, flushed and fsync'ed, then moved over the
target with `os.replace` (atomic on POSIX), so a reader (or a process killed
mid-write) sees either the old or the new file, never a truncated one.

`metrics.json` layout (written by `tfcore.loop` after every epoch and at the end):

    {"status": "running" | "done" | "stopped_early" | "failed",
     "step": 1407,                       # global steps done
     "final": {"epoch": 2, "step": 1407, "loss": 0.05, "val_loss": 0.07, ...},
     "history": {"loss": [...], "val_loss": [...]},   # one value per epoch
     "epochs": [{"epoch": 0, "step": 469, "loss": ..., "val_loss": ...}, ...],
     "error": "..."}                     # only when status == "failed"

Epochs are 0-based (like Keras's `History.epoch`). Non-finite floats are written as
`null` so the file stays strict JSON.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Optional

import numpy as np

from tfcore.checks import ArgumentError

METRICS_FILE = "metrics.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (temp file in the same dir + os.replace),
    with the permissions an ordinary `open` would give it (0666 less the umask; the
    temporary file would be 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes a text file atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Converts tensors / NumPy scalars and arrays to JSON types; NaN/Inf -> None."""
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def atomic_write_json(path: str, obj: Any) -> None:
    """Writes `obj` (converted with `to_jsonable`) as indented, strict JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def write_metrics(workdir: str, metrics: dict) -> str:
    """Writes `workdir/metrics.json` atomically and returns its path."""
    path = os.path.join(workdir, METRICS_FILE)
    atomic_write_json(path, metrics)
    return path


def read_json(path: str) -> Optional[Any]:
    """The JSON value in `path`, or None when there is no such file. A file that is
    not JSON raises `tfcore.checks.ArgumentError` naming it."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArgumentError(f"{path} is not a JSON file: {e}") from e


def read_metrics(workdir: str) -> Optional[dict]:
    """Reads `workdir/metrics.json`, or None when there is none."""
    return read_json(os.path.join(workdir, METRICS_FILE))
