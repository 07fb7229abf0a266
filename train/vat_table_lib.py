"""Reproduce the VAT write-up's table: the four configurations dropout x VAT.

    python -m train.vat_table --workdir=runs/vat_table            # make vat-table
    python -m train.vat_table --workdir=runs/vat_table --resume   # finish a cut run
    python -m train.vat_table --workdir=runs/vat_exact --hvp=exact --configs=vat,vat_dropout

Trains, one after the other in this process, with the same seed, data and preset
(the write-up's: xi=10, eps=1, one power iteration, Adadelta 1.0, batch 128, 12
epochs; the train.vat flags of the same names override it: every flag of train.vat
is a flag of this binary, plus --configs and --overhead_steps):

    dropout  VAT   original accuracy
    yes      no    98.72 %      (the Keras example: "plain")
    no       no    98.45 %
    no       yes   98.94 %
    yes      yes   98.91 %

(The original gives the four accuracies in this order and 8 s vs 18 s per epoch
without/with VAT on its GPU, a 2.25x overhead.) Each run goes to
<workdir>/<name>/ (train.vat's metrics.json, checkpoints). Then it writes
<workdir>/vat_table.md (also printed) and <workdir>/vat_table.json: test accuracy,
test loss, seconds per epoch (mean of the epochs after the first, which includes
compilation) and VAT's time overhead, the ratio of a VAT run's seconds per epoch to
those of the run with the same dropout setting and no VAT. With
--overhead_steps=N (default 20) it also times N plain and N VAT train steps
alternately on one batch (no dropout) and reports the median ratio, a measure that
drifting load on a shared machine affects less than whole runs minutes apart.

--resume reuses every finished run (metrics.json with status 'done' and the same
epochs) and continues an unfinished one from its checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tfcore import checks
from tfcore.training import metrics_io
from tfcore.training.run import check_writable
from tfcore.training.options import option
from train import vat_lib
from train.vat_lib import VatConfig

# name, dropout, vat, original test accuracy (%).
CONFIGS = (
    ("dropout", True, False, 98.72),
    ("plain", False, False, 98.45),
    ("vat", False, True, 98.94),
    ("vat_dropout", True, True, 98.91),
)
ORIGINAL_SECONDS = {False: 8.0, True: 18.0}  # per epoch, without / with VAT
ORIGINAL_OVERHEAD = 2.25
FLOP_RATIO = 8.0 / 3.0  # VAT / plain step FLOPs with one power iteration


@dataclasses.dataclass
class VatTableConfig(VatConfig):
    """train.vat's options (shared by every row) plus the table's own."""

    configs: Tuple[str, ...] = option((), "Rows to run, in this order: a subset of "
                                      f"{', '.join(c[0] for c in CONFIGS)} (default all).",
                                      choices=[c[0] for c in CONFIGS], resume="free")
    overhead_steps: int = option(20, "Alternating plain/VAT step timings (0: skip).",
                                 low=0, resume="free")

    def validate(self) -> "VatTableConfig":
        super().validate()
        if self.export:
            raise checks.ArgumentError("--export is not supported by train.vat_table "
                                       "(use train.vat)")
        return self

    def row_config(self, dropout: bool, use_vat: bool) -> VatConfig:
        """The `VatConfig` of one row."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(VatConfig)}
        return VatConfig(**{**shared, "dropout": dropout, "vat": use_vat})


def _steady_seconds(metrics: Dict[str, Any]) -> Optional[float]:
    """Seconds per epoch at the binary's steady-state rate (`steps_per_second`:
    the epochs after the first of each process, so a resumed run's re-compiling
    epoch is left out too)."""
    rate, spe = metrics.get("steps_per_second"), metrics.get("steps_per_epoch")
    return spe / rate if rate and spe else None


def _finished(metrics: Optional[dict], epochs: Optional[int]) -> bool:
    return bool(metrics and metrics.get("status") == "done" and "test_accuracy" in metrics
                and (epochs is None or len(metrics.get("epochs", [])) == epochs))


def run_table(config: VatTableConfig, workdir: str, data=None) -> Dict[str, Any]:
    """Trains the configurations (all, or those in `config.configs`) and builds the
    table.

    Args:
      config: the shared options (each row sets dropout / vat), `configs` (a subset
        of 'dropout', 'plain', 'vat', 'vat_dropout', run in that order; default all;
        the table lists them in its order) and `overhead_steps` (alternating step
        timings for the overhead, 0: skip).
      workdir: runs go to <workdir>/<name>; the table to <workdir>/vat_table.md.
      data: optional injected MNIST arrays (see `train.vat_lib.train_and_evaluate`).

    Returns:
      {'rows': [...], 'overhead_steps': {...} or None, 'markdown': str}.
    """
    config.validate()
    check_writable(workdir)
    rows = []
    order = {c[0]: i for i, c in enumerate(CONFIGS)}
    todo = ([c for n in config.configs for c in CONFIGS if c[0] == n] if config.configs
            else list(CONFIGS))
    base = config.row_config(False, False)
    for name, dropout, use_vat, original in todo:
        run_dir = os.path.join(workdir, name)
        cfg = config.row_config(dropout, use_vat)
        previous = metrics_io.read_metrics(run_dir)
        if config.resume and _finished(previous, cfg.epochs if cfg.steps is None else None):
            metrics = previous
            print(f"[vat_table] {name}: reusing {run_dir}", flush=True)
        else:
            print(f"[vat_table] {name}: dropout={dropout} vat={use_vat} -> {run_dir}",
                  flush=True)
            metrics = vat_lib.train_and_evaluate(cfg, run_dir, data=data)
        rows.append({"name": name, "dropout": dropout, "vat": use_vat,
                     "test_accuracy": metrics["test_accuracy"],
                     "test_loss": metrics["test_loss"],
                     "seconds_per_epoch": _steady_seconds(metrics),
                     "epoch_seconds": metrics["epoch_seconds"],
                     "epochs": len(metrics.get("epochs", [])),
                     "num_train": metrics.get("num_train"),
                     "num_test": metrics.get("num_test"),
                     "original_accuracy": original})
        rows.sort(key=lambda r: order[r["name"]])
        _write(workdir, rows, None, base)
    by_key = {(r["dropout"], r["vat"]): r for r in rows}
    for r in rows:
        ref = by_key.get((r["dropout"], False))
        r["overhead"] = (r["seconds_per_epoch"] / ref["seconds_per_epoch"]
                         if r["vat"] and ref and ref["seconds_per_epoch"] else None)
    timing = (measure_overhead(base, config.overhead_steps) if config.overhead_steps
              else None)
    return _write(workdir, rows, timing, base)


def measure_overhead(base: VatConfig, steps: int, batch_size: Optional[int] = None
                     ) -> Dict[str, Any]:
    """Times `steps` plain and `steps` VAT train steps (no dropout), alternating.

    Both steps are `train.vat_lib.build`'s (the binary's), compiled per `base.jit`,
    warmed up, then run in turns on one fixed random batch of `base.batch_size`;
    returns the median seconds of each, their ratio and the median of the per-pair
    ratios.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfcore.training import compile as tfcompile  # pylint: disable=import-outside-toplevel
    cfg = base.resolved()
    b = batch_size or cfg.batch_size
    rng = np.random.RandomState(0)
    batch = (tf.constant(rng.uniform(0, 1, (b, 28, 28, 1)).astype(np.float32)),
             tf.constant(rng.randint(0, 10, b).astype(np.int32)))
    fns = {}
    for use_vat in (False, True):
        _, _, step_fn = vat_lib.build(dataclasses.replace(
            cfg, dropout=False, vat=use_vat, lr_decay_fraction=0.0))
        fns[use_vat] = tfcompile.compile_step(step_fn, jit=cfg.jit)
    seed = tf.constant([0, 1], tf.int64)
    for fn in fns.values():  # trace + warm up
        for _ in range(2):
            fn(batch, seed)["loss"].numpy()
    times = {False: [], True: []}
    for _ in range(steps):
        for use_vat, fn in fns.items():
            t = time.perf_counter()
            fn(batch, seed)["loss"].numpy()
            times[use_vat].append(time.perf_counter() - t)
    plain, with_vat = statistics.median(times[False]), statistics.median(times[True])
    pairs = [v / p for p, v in zip(times[False], times[True])]
    return {"steps": steps, "batch_size": b, "plain_step_s": plain, "vat_step_s": with_vat,
            "ratio_of_medians": with_vat / plain, "median_pair_ratio":
            statistics.median(pairs), "flop_ratio": FLOP_RATIO}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100.0 * x:.2f} %"


def _num(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_table(rows: List[Dict[str, Any]], timing: Optional[Dict[str, Any]],
                 base: Optional[VatConfig] = None) -> str:
    """The markdown table (measured beside the original figures) and its notes."""
    lines = ["| dropout | VAT | test accuracy | test loss | s / epoch | VAT overhead "
             "| original accuracy | original s / epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        overhead = "-" if r.get("overhead") is None else f"{r['overhead']:.2f}x"
        orig_s = f"{ORIGINAL_SECONDS[r['vat']]:.0f}" + (
            f" ({ORIGINAL_OVERHEAD:.2f}x)" if r["vat"] else "")
        lines.append(
            f"| {'yes' if r['dropout'] else 'no'} | {'yes' if r['vat'] else 'no'} "
            f"| {_pct(r['test_accuracy'])} | {_num(r['test_loss'], '.4f')} "
            f"| {_num(r['seconds_per_epoch'], '.1f')} | {overhead} "
            f"| {r['original_accuracy']:.2f} % | {orig_s} |")
    notes = []
    if base is not None:
        cfg = base.resolved()
        notes.append(f"Settings: {rows[0]['epochs'] if rows else '?'} epochs, batch "
                     f"{cfg.batch_size}, {cfg.optimizer} (learning rate "
                     f"{cfg.learning_rate:g}), xi={cfg.xi:g}, eps={cfg.eps:g}, "
                     f"{cfg.power_iterations} power iteration(s), seed {cfg.seed}, jit "
                     f"{cfg.jit}; {rows[0]['num_train'] if rows else '?'} training "
                     f"images; accuracy on {rows[0]['num_test'] if rows else '?'} test "
                     "images.")
    notes.append("s / epoch: mean training time of the epochs after the first (which "
                 "includes compilation); VAT overhead: s / epoch over that of the run "
                 "with the same dropout and no VAT.")
    if timing:
        notes.append(
            f"Alternating step timing ({timing['steps']} steps each, batch "
            f"{timing['batch_size']}, no dropout): plain {timing['plain_step_s'] * 1e3:.0f} "
            f"ms, VAT {timing['vat_step_s'] * 1e3:.0f} ms, ratio "
            f"{timing['ratio_of_medians']:.2f}x (median of pair ratios "
            f"{timing['median_pair_ratio']:.2f}x; FLOP ratio {FLOP_RATIO:.2f}x).")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _write(workdir: str, rows, timing, base) -> Dict[str, Any]:
    markdown = format_table(rows, timing, base)
    metrics_io.atomic_write_text(os.path.join(workdir, "vat_table.md"), markdown)
    out = {"rows": rows, "overhead_steps": timing, "markdown": markdown}
    metrics_io.atomic_write_json(os.path.join(workdir, "vat_table.json"), out)
    return out


def summary(out: Dict[str, Any]) -> str:
    """The table, then where it was written."""
    return out["markdown"]

