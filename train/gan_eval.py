"""Measure a generator's samples with the project's MNIST classifier.

    python -m train.gan_eval --generator=runs/dcgan [--classifier=runs/plain] \\
        [--num_samples=10000] [--workdir=DIR]

Classifier score, Frechet distance and class coverage of the samples, beside the same
numbers for real images; the flags are the fields of `train.gan_eval_lib.GanEvalConfig`
plus --workdir (default: the generator's directory), and what is measured and written
is in that module's docstring. A --generator or --classifier of the wrong kind is
refused in one line (exit 2) before any work.
"""
from tfcore.training import binary
from train import gan_eval_lib

if __name__ == "__main__":
    binary.main(gan_eval_lib.BINARY, gan_eval_lib.GanEvalConfig, gan_eval_lib.evaluate,
                summary=gan_eval_lib.format_result, workdir_required=False)
