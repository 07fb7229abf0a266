#!/bin/sh
# The 100-label table of docs/vat_direction.md: the recipe (`make vat100`, the official
# xi = 1e-6 finite difference) on 5 (seed, labeled subset) pairs, and with the same recipe
# a random direction (--power_iterations=0), the accurate one (--hvp=exact, eps 0.5, its
# best on the validation split) and the accurate finite difference (--hvp=secant, eps 0.5,
# its best there) on 3 pairs each. One run after another (the machine has 2
# cores); a finished run (metrics.json "status": "done") is skipped and an interrupted
# one continues from its checkpoint (--resume), so rerunning resumes.
# Usage: sh bench/vat100_table.sh [RUNS_DIR]   (default runs/vat100_table; ~3.5 hours on CPU)
set -eu
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/vat100_table}
RECIPE="--num_labeled=100 --preset=official --vat --dropout=false --entmin --translate=2 --epochs=15 --test_each_epoch"

run() {  # run NAME SEED SPLIT FLAGS...
    name=$1 seed=$2 split=$3; shift 3
    dir="$OUT/${name}_s${seed}p${split}"
    if grep -qs '"status": "done"' "$dir/metrics.json"; then echo "done: $dir"; return; fi
    echo "run: $dir"
    $PY -m train.vat --workdir="$dir" $RECIPE --seed="$seed" --split_seed="$split" --progress=false --resume "$@"
}

# Interleaved so that a partial table already compares the four directions.
for pair in "0 0" "0 1" "1 0"; do
    set -- $pair
    run recipe "$1" "$2" --eps=1.5
    run random "$1" "$2" --eps=1.5 --power_iterations=0
    run exact "$1" "$2" --eps=0.5 --hvp=exact
    run secant "$1" "$2" --eps=0.5 --hvp=secant
done
run recipe 0 2 --eps=1.5
run recipe 2 0 --eps=1.5
