"""Cost of VAT's power-iteration products: the semi-supervised VAT train step with
hvp='finite_difference' and hvp='exact' (and the plain CE + entropy step), timed in
interleaved rounds in one run (`bench.harness.interleave`), as ratios.

    python -m bench.vat_hvp [--rounds=15] [--modes=graph,xla] [--power_iterations=1]

The step is `models.vat_cnn.make_train_step` as `train.vat --num_labeled=100 --entmin
--vat` runs it: 32 labeled + 128 unlabeled 28x28 images, VatCNN without dropout, Adam.
Prints one table row per (mode, step): ms per step (median over rounds) and the paired
ratio to the finite-difference step of the same mode. The "one-hot pool" steps use
`VatCNN(pool_gradient='one_hot')`, which `train.vat` takes under XLA.
"""
from __future__ import annotations

import argparse
from typing import Dict

import numpy as np
import tensorflow as tf

from bench import harness
from models import vat_cnn
from tfcore import optimizers

STEPS = {"plain (CE + entropy)": dict(vat=False),
         "finite_difference": dict(vat=True, hvp="finite_difference", xi=1e-6),
         "exact": dict(vat=True, hvp="exact", xi=1e-6),
         "secant": dict(vat=True, hvp="secant", xi=1e-6),
         # The max pool's one-hot gradient (train.vat's choice under XLA).
         "finite_difference, one-hot pool": dict(vat=True, hvp="finite_difference", xi=1e-6),
         "exact, one-hot pool": dict(vat=True, hvp="exact", xi=1e-6)}


def _runner(kind: str, mode: str, power_iterations: int, data) -> harness.Runner:
    tf.random.set_seed(0)
    model = vat_cnn.VatCNN(dropout=False,
                           pool_gradient="one_hot" if "one-hot" in kind else "kernel")
    model(data["labeled"][0][:1])
    opt = optimizers.Adam(learning_rate=1e-3)
    opt.build(model.trainable_variables)
    step_fn = vat_cnn.make_train_step(model, opt, entmin=True, eps=1.5,
                                      power_iterations=power_iterations, **STEPS[kind])
    step = tf.function(step_fn, jit_compile=mode == "xla", autograph=False)
    seed = tf.Variable([0, 0], dtype=tf.int64)

    def run(n: int):
        for _ in range(n):
            seed.assign_add([0, 1])
            out = step(data, seed)
        return out["loss"].numpy()
    return run


def main(argv=None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", default="graph")
    parser.add_argument("--power_iterations", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(0)
    data = {"labeled": (tf.constant(rng.uniform(0, 1, (32, 28, 28, 1)), tf.float32),
                        tf.constant(rng.randint(0, 10, 32), tf.int32)),
            "unlabeled": tf.constant(rng.uniform(0, 1, (128, 28, 28, 1)), tf.float32)}
    runners = {(mode, kind): _runner(kind, mode, args.power_iterations, data)
               for mode in args.modes.split(",") for kind in STEPS}
    timings = harness.interleave({f"{m}/{k}": r for (m, k), r in runners.items()},
                                 steps=args.steps, rounds=args.rounds, warmup=3)
    print(f"power_iterations={args.power_iterations}, {args.rounds} rounds x "
          f"{args.steps} steps, batch 32 labeled + 128 unlabeled")
    print("| mode | step | ms/step | / finite_difference (paired) |")
    print("| --- | --- | ---: | ---: |")
    ratios = {}
    for mode, kind in runners:
        t, ref = timings[f"{mode}/{kind}"], timings[f"{mode}/finite_difference"]
        ratios[f"{mode}/{kind}"] = harness.paired_ratio(t, ref)
        print(f"| {mode} | {kind} | {t.median_ms:.1f} | {ratios[f'{mode}/{kind}']:.3f} |")
    return ratios


if __name__ == "__main__":
    main()
