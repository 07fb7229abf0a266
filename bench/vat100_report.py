"""The 100-label tables of docs/vat_direction.md, in markdown.

    python -m bench.vat100_report [RUNS_DIR]          (default runs/vat100_table)
    python -m bench.vat100_report --val [RUNS_DIR]    (default runs/vat100_search)

Test table (`bench/vat100_table.sh`): reads every finished run
(<RUNS_DIR>/<direction>_s<seed>p<subset>/metrics.json, status "done"): one row per run
(test error, the labeled subset's digest, minutes and steps per second), then per
direction the mean test error, its standard deviation (n - 1) and range. Unfinished runs
are listed as such.

Validation table (`--val`, `bench/vat100_search.sh`): one row per run directory, best
first: the validation accuracy at the last epoch (the choice) and its best epoch, the test
error logged at the last epoch (never used for choosing), minutes and steps per second.

Each row's direction, eps, power iterations, VAT weight and learning-rate decay are read
from the run's own config (metrics.json), so a label cannot disagree with the flags that
made the run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from typing import Dict, List, Optional

NAME = re.compile(r"^(?P<direction>[a-z_]+)_s(?P<seed>\d+)p(?P<subset>\d+)$")
ORDER = ("recipe", "random", "exact", "secant")   # the test table's row order


def describe(config: Optional[Dict]) -> Optional[str]:
    """What a run's power iteration was, from its (resolved) train.vat config: e.g.
    "accurate finite difference (`--hvp=secant`), eps 0.5"; None without a config."""
    if not config:
        return None
    if config["power_iterations"] == 0:
        text = "random direction (`--power_iterations=0`)"
    elif config["hvp"] == "finite_difference":
        text = f"finite difference at xi = {config['xi']:g}"
    elif config["hvp"] == "exact":
        text = "accurate direction (`--hvp=exact`)"
    else:
        text = f"accurate finite difference (`--hvp={config['hvp']}`)"
    text += f", eps {config['eps']:g}"
    if config["power_iterations"] > 1:
        text += f", {config['power_iterations']} power iterations"
    if config.get("vat_weight", 1.0) != 1.0:
        text += f", VAT weight {config['vat_weight']:g}"
    if config.get("lr_decay_fraction"):
        text += f", learning rate decayed over the last {config['lr_decay_fraction']:g}"
    return text


def _finished(path: str) -> Optional[Dict]:
    """The metrics.json at `path` if its run is done, else None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    return metrics if metrics.get("status") == "done" else None


def load_runs(runs_dir: str) -> List[Dict]:
    """One dict per run directory named like NAME: direction, seed, subset, metrics
    (None while unfinished)."""
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        match = NAME.match(name)
        if match:
            runs.append({"direction": match["direction"], "seed": int(match["seed"]),
                         "subset": int(match["subset"]),
                         "metrics": _finished(os.path.join(runs_dir, name, "metrics.json"))})
    return runs


def _minutes(m: Dict) -> str:
    return f"{m['train_seconds'] / 60:.1f} ({m['steps_per_second']:.1f})"


def report(runs: List[Dict]) -> str:
    """The two markdown tables of the test runs (per run, per direction)."""
    lines = ["| direction | --seed | --split_seed (labeled images) | test error | "
             "minutes (steps/s) |", "| --- | ---: | ---: | ---: | ---: |"]
    errors: Dict[str, List[float]] = {}
    labels: Dict[str, set] = {}
    for run in sorted(runs, key=lambda r: (ORDER.index(r["direction"])
                                           if r["direction"] in ORDER else 99,
                                           r["seed"], r["subset"])):
        m = run["metrics"]
        head = f"| {run['direction']} | {run['seed']} | {run['subset']}"
        if m is None:
            lines.append(head + " | (not finished) | |")
            continue
        errors.setdefault(run["direction"], []).append(100 * m["test_error"])
        labels.setdefault(run["direction"], set()).add(
            describe(m.get("config")) or run["direction"])
        lines.append(f"{head} (`{m['split_digest']}`) | {100 * m['test_error']:.2f} % | "
                     f"{_minutes(m)} |")
    lines += ["", "| direction | runs | mean test error | sd | range |",
              "| --- | ---: | ---: | ---: | --- |"]
    for direction, errs in errors.items():
        sd = f"{statistics.stdev(errs):.2f}" if len(errs) > 1 else "-"
        lines.append(f"| {direction}: {' / '.join(sorted(labels[direction]))} | "
                     f"{len(errs)} | {statistics.mean(errs):.2f} % | {sd} | "
                     f"{min(errs):.2f}-{max(errs):.2f} % |")
    return "\n".join(lines)


def load_val_runs(runs_dir: str) -> List[Dict]:
    """One dict per run directory with a metrics.json: name, metrics (None while
    unfinished)."""
    return [{"name": name, "metrics": _finished(os.path.join(runs_dir, name, "metrics.json"))}
            for name in sorted(os.listdir(runs_dir))
            if os.path.exists(os.path.join(runs_dir, name, "metrics.json"))]


def val_report(runs: List[Dict]) -> str:
    """The markdown table of the validation-split runs, the highest last-epoch
    validation accuracy first."""
    rows, digests = [], set()
    for run in runs:
        m = run["metrics"]
        if m is None:
            rows.append((-1.0, f"| {run['name']} | | (not finished) | | |"))
            continue
        val, test = m["history"]["val_accuracy"], m["history"].get("test_accuracy")
        best = max(range(len(val)), key=lambda i: val[i])
        logged = f"{100 * (1 - test[-1]):.2f} %" if test else "(not logged)"
        digests.add(m["split_digest"])
        rows.append((val[-1], f"| {run['name']} | {describe(m.get('config'))} | "
                              f"{100 * val[-1]:.2f} % / {100 * val[best]:.2f} %, {best + 1} | "
                              f"{logged} | {_minutes(m)} |"))
    lines = ["| run | direction | val. acc. (last / best, epoch) | test error (last, logged) "
             "| minutes (steps/s) |", "| --- | --- | --- | ---: | ---: |"]
    lines += [row for _, row in sorted(rows, key=lambda r: -r[0])]
    if len(digests) > 1:
        lines.append(f"\nWARNING: the runs hold out different splits: {sorted(digests)}")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", nargs="?", default=None)
    parser.add_argument("--val", action="store_true",
                        help="the validation-split search (bench/vat100_search.sh)")
    args = parser.parse_args(argv)
    if args.val:
        text = val_report(load_val_runs(args.runs_dir or "runs/vat100_search"))
    else:
        text = report(load_runs(args.runs_dir or "runs/vat100_table"))
    print(text)
    return text


if __name__ == "__main__":
    main()
