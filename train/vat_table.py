"""Reproduce the VAT write-up's table: the four configurations dropout x VAT.

    python -m train.vat_table --workdir=runs/vat_table            # make vat-table

The flags are the fields of `train.vat_table_lib.VatTableConfig`; what it trains and
writes: that module's docstring. `--helpfull` lists the flags.
"""
from tfcore.training import binary
from train import vat_table_lib

if __name__ == "__main__":
    binary.main("train.vat_table", vat_table_lib.VatTableConfig, vat_table_lib.run_table,
                summary=vat_table_lib.summary)
