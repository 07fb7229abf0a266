"""Hyperparameter search over another binary's flags, on Optuna.

    python -m train.search --binary=train.autoencoder --workdir=runs/search_ae \\
        --space='learning_rate=loguniform(1e-3, 1e-1)' --space='warmup_steps=int(0, 60)' \\
        --space='decay_fraction=uniform(0.1, 1.0)' --trials=20 --metric=val_bce \\
        --mode=min --sampler=tpe --pruner=median --seed=0 --workers=1 \\
        -- --model=conv --epochs=4 --train_subset=10000

Every trial runs `python -m <binary> --workdir=<workdir>/trials/<number> <sampled
flags> <flags after -->` and reports its `--metric` after every epoch (from the
metrics.json it writes); `--pruner` stops the bad ones early. The space syntax is in
`tfcore/hparams.py` (`--space` entries and/or `--space_file`). `--val_size` is passed
to binaries that have the flag (`--val_flag`), and `--metric` must be a validation
metric: a `test*` metric is always refused.

The study is kept in `--storage` (default `sqlite:///<workdir>/study.db`, study
`--study_name`): rerunning the command continues it (finished trials kept, trials of a
killed search failed and rerun), with other settings it is refused; `--workers=N` runs
N trials at once, and the same command with a shared database URL on several machines
works on one study. Written into --workdir: results.md / .csv / .json (best trial
marked), optimization_history.png, param_importances.png, parallel_coordinate.png,
hparams/ (TensorBoard HParams). See docs/search.md.

Exit status: 0 with a complete trial, 1 without, 2 for a usage error (one line on
stderr), 130 / 143 when interrupted by SIGINT / SIGTERM.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import typing
from typing import Optional, Sequence

from absl import flags

from train.search_lib import SearchConfig, run_search


def define_flags(fv: flags.FlagValues) -> None:
    """One absl flag per `SearchConfig` field (type from the annotation, default and
    help from the field), plus --workdir, on `fv`."""
    hints = typing.get_type_hints(SearchConfig)
    for f in dataclasses.fields(SearchConfig):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        typ = args[0] if args and typing.get_origin(hints[f.name]) is typing.Union \
            else hints[f.name]
        text = f.metadata["help"]
        if f.metadata.get("choices"):
            text += f" One of: {', '.join(f.metadata['choices'])}."
        if f.metadata.get("multi"):
            flags.DEFINE_multi_string(f.name, list(f.default), text, flag_values=fv)
        else:
            define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
                      float: flags.DEFINE_float}.get(typ, flags.DEFINE_string)
            define(f.name, f.default, text, flag_values=fv)
    flags.DEFINE_string("workdir", None, "Search directory: trials/, study.db, results, "
                        "plots, hparams/.", flag_values=fv)


def config_from_flags(fv: flags.FlagValues) -> SearchConfig:
    values = {f.name: fv[f.name].value for f in dataclasses.fields(SearchConfig)}
    values["space"] = tuple(values["space"] or ())
    return SearchConfig(**values)


def _interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt(signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses `argv` (default sys.argv) and runs the search; returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    fv = flags.FlagValues()
    define_flags(fv)
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in ("-h", "--help", "--helpfull", "-?") for a in own):
        print(__doc__)
        print(fv.get_help())
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        rest = fv(argv)
        summary = run_search(config_from_flags(fv), fv.workdir, extra_flags=rest[1:])
    except (flags.Error, ValueError) as e:
        print(f"train.search: error: {' '.join(str(e).split(chr(10)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return 143 if e.args == (signal.SIGTERM,) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if summary.get("best") else 1


if __name__ == "__main__":
    sys.exit(main())
