# Two commands do everything on a fresh machine: `make run` and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(wildcard $(SHARED_DATA)/mnist.npz),)
else
export TFCORE_DATA_DIR ?= $(SHARED_DATA)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
WORKDIR ?= runs/vat

.PHONY: venv run test bench vat-table vat100 vat100-search vat100-table ae-table clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The headline job: the VAT classifier on MNIST (see README). --resume: a second
# `make run` continues an interrupted run, or finds it done and tests it again.
run: $(STAMP)
	$(PY) -m train.vat --workdir=$(WORKDIR) --resume --vat --dropout=false --epochs=12

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m bench.run --out=runs/bench.json

vat-table: $(STAMP)
	$(PY) -m train.vat_table --workdir=runs/vat_table

# 100 labels (semi-supervised): VAT + EntMin, eps 1.5, 2-pixel shifts, 15 epochs (README).
vat100: $(STAMP)
	$(PY) -m train.vat --workdir=runs/vat100_entmin --num_labeled=100 --preset=official --vat \
	    --dropout=false --entmin --translate=2 --eps=1.5 --epochs=15

# The recipe search of docs/vat_direction.md: the recipe on the validation split with one
# direction, eps, iteration count, VAT weight or decay changed per row (~15 minutes a row).
vat100-search: $(STAMP)
	PY=$(PY) sh bench/vat100_search.sh runs/vat100_search
	$(PY) -m bench.vat100_report --val runs/vat100_search

# The 100-label table of docs/vat_direction.md: the recipe on 5 (seed, labeled subset)
# pairs, a random, the exact and the secant direction on 3 each, one after another
# (~3.5 hours on CPU).
vat100-table: $(STAMP)
	PY=$(PY) sh bench/vat100_table.sh runs/vat100_table
	$(PY) -m bench.vat100_report runs/vat100_table

ae-table: $(STAMP)
	$(PY) -m train.ae_table --workdir=runs/ae_table

clean:
	rm -rf runs .pytest_cache
