"""Train the DCGAN (`models/dcgan.py`) on MNIST padded to 32x32, or on your own images.

    python -m train.dcgan --workdir=runs/dcgan_split_ema --epochs=25 --fd_patience=0 --export
    python -m train.dcgan --workdir=runs/dcgan_mixed --d_batch=mixed --epochs=10 --fd_patience=3
    python -m train.dcgan --workdir=runs/dcgan_writeup --preset=writeup
    python -m train.dcgan --workdir=runs/dcgan_t --generator=transpose --latent_dim=30
    python -m train.dcgan --workdir=runs/faces --image_dir=my_pngs --augment_factor=20
    python -m train.dcgan --workdir=runs/quick --max_steps=200 --eval_every=100

The flags are the fields of `train.dcgan_lib.DCGANConfig` (the step, the data, the
per-epoch measurements and what is written: that module's docstring); `--helpfull`
lists them.
"""
from tfcore.training import binary
from train import dcgan_lib

if __name__ == "__main__":
    binary.main(dcgan_lib.BINARY, dcgan_lib.DCGANConfig, dcgan_lib.train_and_evaluate,
                summary=dcgan_lib.summary_line)
