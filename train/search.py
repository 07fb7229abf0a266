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
stderr), 130 / 143 when interrupted by SIGINT / SIGTERM. The flags are the fields of
`train.search_lib.SearchConfig`.
"""
from tfcore.training import binary
from train import search_lib

if __name__ == "__main__":
    binary.main(search_lib.BINARY, search_lib.SearchConfig, search_lib.search,
                summary=search_lib.summary_line, extra_args=True)
