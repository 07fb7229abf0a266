"""The autoencoder results table (README) and the reconstruction picture, one command.

    python -m train.ae_table --workdir=runs/ae_table            # make ae-table

The flags are the fields of `train.ae_table_lib.AeTableConfig`; what it trains and
writes: that module's docstring. `--helpfull` lists the flags.
"""
from tfcore.training import binary
from train import ae_table_lib

if __name__ == "__main__":
    binary.main(ae_table_lib.BINARY, ae_table_lib.AeTableConfig, ae_table_lib.run,
                summary=ae_table_lib.summary)
