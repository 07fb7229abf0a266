"""The 100-label table of `bench/vat100_table.sh` (docs/vat_direction.md), in markdown.

    python -m bench.vat100_report [RUNS_DIR]    (default runs/vat100_table)

Reads every finished run (<RUNS_DIR>/<direction>_s<seed>p<subset>/metrics.json, status
"done"): one row per run (test error, the labeled subset's digest, minutes and steps
per second), then per direction the mean test error, its standard deviation (n - 1)
and range. Unfinished runs are listed as such.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from typing import Dict, List

NAME = re.compile(r"^(?P<direction>[a-z_]+)_s(?P<seed>\d+)p(?P<subset>\d+)$")
DIRECTIONS = {"recipe": "the recipe (official xi = 1e-6 finite difference, eps 1.5)",
              "random": "random direction (`--power_iterations=0`)",
              "exact": "accurate direction (`--hvp=exact`, eps 0.5)",
              "secant": "accurate finite difference (`--hvp=secant`, eps 0.5)"}


def load_runs(runs_dir: str) -> List[Dict]:
    """One dict per run directory named like NAME: direction, seed, subset, metrics
    (None while unfinished)."""
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        match = NAME.match(name)
        if not match:
            continue
        path = os.path.join(runs_dir, name, "metrics.json")
        metrics = None
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
            if metrics.get("status") != "done":
                metrics = None
        runs.append({"direction": match["direction"], "seed": int(match["seed"]),
                     "subset": int(match["subset"]), "metrics": metrics})
    return runs


def report(runs: List[Dict]) -> str:
    """The two markdown tables (per run, per direction)."""
    lines = ["| direction | --seed | --split_seed (labeled images) | test error | "
             "minutes (steps/s) |", "| --- | ---: | ---: | ---: | ---: |"]
    errors: Dict[str, List[float]] = {}
    for run in sorted(runs, key=lambda r: (list(DIRECTIONS).index(r["direction"])
                                           if r["direction"] in DIRECTIONS else 99,
                                           r["seed"], r["subset"])):
        m = run["metrics"]
        head = f"| {run['direction']} | {run['seed']} | {run['subset']}"
        if m is None:
            lines.append(head + " | (not finished) | |")
            continue
        error = 100 * m["test_error"]
        errors.setdefault(run["direction"], []).append(error)
        lines.append(f"{head} (`{m['split_digest']}`) | {error:.2f} % | "
                     f"{m['train_seconds'] / 60:.1f} ({m['steps_per_second']:.1f}) |")
    lines += ["", "| direction | runs | mean test error | sd | range |",
              "| --- | ---: | ---: | ---: | --- |"]
    for direction, errs in errors.items():
        sd = f"{statistics.stdev(errs):.2f}" if len(errs) > 1 else "-"
        lines.append(f"| {DIRECTIONS.get(direction, direction)} | {len(errs)} | "
                     f"{statistics.mean(errs):.2f} % | {sd} | "
                     f"{min(errs):.2f}-{max(errs):.2f} % |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", nargs="?", default="runs/vat100_table")
    args = parser.parse_args(argv)
    text = report(load_runs(args.runs_dir))
    print(text)
    return text


if __name__ == "__main__":
    main()
