"""Combine saved MNIST classifiers by averaged or weighted predictions.

    python -m train.ensemble --workdir=runs/ensemble \\
        --members=runs/search_vat/trial_000,runs/search_vat/trial_003,runs/vat \\
        --method=weighted [--val_size=5000 --split_seed=0] [--data_dir=...]

The flags are the fields of `train.ensemble_lib.EnsembleConfig`; `--helpfull` lists
them. Before any work the binary checks that --workdir is a directory it can write
and the kind of every member (a classifier, not an autoencoder's or a GAN's run or
export); a bad flag, member or workdir is one line `train.ensemble: error: ...` on
stderr and exit code 2, with nothing written.

A member is a SavedModel directory, or a run directory holding one in `saved_model/`
(what `--export` writes), with a `serving_default` signature mapping one image input
([N, 28, 28, 1] float in [0, 1], or anything of 784 values per image) to class
probabilities [N, C] (the output `probabilities`, or the only output; --output_key
picks another). Members are run with `tf.saved_model.load` only: no tfcore code is
needed to evaluate them. Shell-style wildcards work in --members
(`runs/search/trial_*`).

Methods, on member probabilities p_k [N, C]:
* `average`: p = (1/K) sum_k p_k.
* `weighted`: p = sum_k w_k p_k with w on the probability simplex chosen to minimise
  the ensemble's validation log-loss  -1/N sum_i log(sum_k w_k p_k[i, y_i]).  The
  objective is convex in w; `fit_weights` finds its minimum with the EM iteration of a
  mixture's weights, w_k <- 1/N sum_i w_k p_k[i, y_i] / sum_j w_j p_j[i, y_i], which
  stays on the simplex and never increases the loss (deterministic, NumPy).

Validation split: the held-out part of the training set that the members did not
train on: `tfcore.data.train_val_split(x_train[:train_limit], y_train, val_size,
split_seed)`, as `train.vat --val_size=N --split_seed=S` draws it. --val_size,
--split_seed and --train_limit default to the values in the members' metrics.json
`config` (val_size, split_seed -- or seed for runs made before --split_seed existed --,
train_limit) when they all agree; members trained with
different splits (or without one) are refused unless the flags are given explicitly
(a warning then says the split may overlap their training data). The test set is
never used to fit anything.

Writes <workdir>/metrics.json: `members` (path, weight, val_accuracy, val_loss,
test_accuracy, test_loss each), `weights`, the ensemble's `val_accuracy`,
`val_loss`, `test_accuracy`, `test_loss`, with `weighted` also the plain average's
(`average`), and the split used; <workdir>/results.md holds the same table as
printed.
"""
from tfcore.training import binary
from train import ensemble_lib

if __name__ == "__main__":
    binary.main(ensemble_lib.BINARY, ensemble_lib.EnsembleConfig, ensemble_lib.run_ensemble)
