"""Train the VAT classifier (the Keras MNIST CNN, `models/vat_cnn.py`) on MNIST.

    python -m train.vat --workdir=runs/vat --vat --dropout=false --epochs=12   # make run
    python -m train.vat --workdir=runs/plain --vat=false --dropout=true
    python -m train.vat --workdir=runs/vat100 --num_labeled=100 --preset=official
    python -m train.vat --workdir=runs/vat100_entmin --num_labeled=100 --preset=official \\
        --entmin --translate=2 --eps=1.5 --epochs=15   # make vat100

The flags are the fields of `train.vat_lib.VatConfig` (presets, the semi-supervised
protocol and what is written: that module's docstring); `--helpfull` lists them.
"""
from tfcore.training import binary
from train import vat_lib

if __name__ == "__main__":
    binary.main(vat_lib.BINARY, vat_lib.VatConfig, vat_lib.train_and_evaluate,
                summary=vat_lib.summary_line)
