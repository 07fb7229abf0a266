#!/bin/sh
# The 100-label recipe search of docs/vat_direction.md: `make vat100`'s recipe on the
# validation split (--val_size=5000, seed 0, labeled subset 0; the labeled images are
# drawn first, the test set is only logged), with the direction, eps, power-iteration
# count, VAT weight or learning-rate decay changed per row. One run after another (the
# machine has 2 cores); a finished run (metrics.json "status": "done") is skipped and an
# interrupted one continues from its checkpoint (--resume), so rerunning resumes.
# Usage: sh bench/vat100_search.sh [RUNS_DIR [NAME...]]   (default runs/vat100_search;
# NAMEs: only those rows; ~15 minutes a row on CPU)
set -eu
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/vat100_search}
[ $# -gt 0 ] && shift
ONLY="$*"
RECIPE="--num_labeled=100 --preset=official --vat --dropout=false --entmin --translate=2 --epochs=15 --test_each_epoch --val_size=5000 --seed=0 --split_seed=0"

row() {  # row NAME FLAGS...
    name=$1; shift
    if [ -n "$ONLY" ] && ! echo " $ONLY " | grep -q " $name "; then return; fi
    dir="$OUT/$name"
    if grep -qs '"status": "done"' "$dir/metrics.json"; then echo "done: $dir"; return; fi
    echo "run: $dir"
    $PY -m train.vat --workdir="$dir" $RECIPE --progress=false --resume "$@"
}

row recipe --eps=1.5
row random --eps=1.5 --power_iterations=0
row exact_eps0.5 --eps=0.5 --hvp=exact
row exact_eps1.0 --eps=1.0 --hvp=exact
row exact_eps1.5 --eps=1.5 --hvp=exact
row secant_eps0.25 --eps=0.25 --hvp=secant
row secant_eps0.5 --eps=0.5 --hvp=secant
row secant_eps1.0 --eps=1.0 --hvp=secant
row secant_eps1.5 --eps=1.5 --hvp=secant
row secant_eps0.5_k2 --eps=0.5 --hvp=secant --power_iterations=2
row secant_eps0.5_w2 --eps=0.5 --hvp=secant --vat_weight=2
row secant_eps0.5_decay --eps=0.5 --hvp=secant --lr_decay_fraction=0.33
row recipe_decay --eps=1.5 --lr_decay_fraction=0.33
