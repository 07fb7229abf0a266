"""Train an MNIST autoencoder: dense (optionally tied) or convolutional, denoising.

    python -m train.autoencoder --workdir=runs/ae_dense --model=dense --steps=10000
    python -m train.autoencoder --workdir=runs/ae_tied --model=dense --tied
    python -m train.autoencoder --workdir=runs/ae_blog --model=dense --hidden=32 \\
        --hidden_activation=relu
    python -m train.autoencoder --workdir=runs/ae_conv --model=conv \\
        [--decoder=transpose|upsample] [--noise_factor=0.5] [--export]

The flags are the fields of `train.autoencoder_lib.Config` (the models' defaults,
the evaluation and what is written: that module's docstring); `--helpfull` lists
them.
"""
from tfcore.training import binary
from train import autoencoder_lib

if __name__ == "__main__":
    binary.main(autoencoder_lib.BINARY, autoencoder_lib.Config,
                autoencoder_lib.train_and_evaluate, summary=autoencoder_lib.summary_line)
