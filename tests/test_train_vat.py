"""Tests for train/vat_lib.py, train/vat.py and train/vat_table.py: the library call end to end on a small
MNIST subset (metrics.json, checkpoint, resume, SavedModel), the semi-supervised data
order and run, flag/config validation (in process and through the binary), and the
table's formatting."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfcore.training import callbacks as tfcallbacks
from tfcore.data import SemiSupervisedData, balanced_subset, load_mnist, mnist_images
from tfcore.training import binary, options
import tfcore
from train import vat_lib as vat
from train import vat_table_lib as vat_table

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    (x_tr, y_tr), (x_te, y_te) = load_mnist(mnist_dir)
    return (x_tr[:256], y_tr[:256]), (x_te[:128], y_te[:128])


def test_end_to_end_then_resume(tmp_path, small_mnist):
    workdir = str(tmp_path / "run")
    cfg = vat.VatConfig(dropout=True, vat=True, epochs=1, batch_size=32, train_limit=128,
                        progress=False, jit="off")
    m1 = vat.train_and_evaluate(cfg, workdir, data=small_mnist)
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    for m in (m1, on_disk):
        for key in ("test_accuracy", "test_loss", "epoch_seconds", "steps_per_second",
                    "history", "status"):
            assert key in m, key
    assert m1["status"] == "done" and m1["step"] == 4 and m1["steps_per_epoch"] == 4
    assert 0.0 <= m1["test_accuracy"] <= 1.0 and np.isfinite(m1["test_loss"])
    assert m1["test_loss"] > 0 and m1["steps_per_second"] > 0
    assert len(m1["epoch_seconds"]) == 1 and m1["epoch_seconds"][0] > 0
    assert on_disk["steps_per_second"] == pytest.approx(4 / on_disk["epoch_seconds"][0])
    assert m1["config"]["xi"] == 10.0 and m1["config"]["optimizer"] == "adadelta"
    assert m1["num_train"] == 128 and m1["num_test"] == 128
    assert "vat" in m1["history"] and "ce" in m1["history"]

    # Without --resume a used workdir is refused.
    with pytest.raises(ValueError, match="resume"):
        vat.train_and_evaluate(cfg, workdir, data=small_mnist)

    # --resume with more epochs continues from the checkpoint (step 4 -> 8), keeps the
    # first epoch's history and time, and --export writes a loadable SavedModel.
    cfg2 = vat.VatConfig(dropout=True, vat=True, epochs=2, batch_size=32,
                         train_limit=128, progress=False, jit="off", resume=True,
                         export=True)
    m2 = vat.train_and_evaluate(cfg2, workdir, data=small_mnist)
    assert m2["status"] == "done" and m2["step"] == 8
    assert [e["epoch"] for e in m2["epochs"]] == [0, 1]
    assert m2["history"]["loss"][0] == pytest.approx(m1["history"]["loss"][0])
    assert len(m2["epoch_seconds"]) == 2
    assert m2["epoch_seconds"][0] == pytest.approx(m1["epoch_seconds"][0])
    # This process timed one epoch (the resumed one): the rate is its 4 steps' rate.
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    for m in (m2, on_disk):
        assert all(isinstance(s, float) and s > 0 for s in m["epoch_seconds"])
        assert isinstance(m["steps_per_second"], float)
        assert m["steps_per_second"] == pytest.approx(4 / m["epoch_seconds"][1])
    loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    images = (small_mnist[1][0][:3, ..., None] / 255.0).astype(np.float32)
    probs = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.numpy().sum(1), 1.0, rtol=1e-5)


def test_semi_supervised_data_order():
    n_l, n_u = 20, 50
    x_l = np.arange(n_l, dtype=np.float32)[:, None]
    y_l = np.arange(n_l, dtype=np.int32)
    x_u = np.arange(n_u, dtype=np.float32)[:, None]
    data = SemiSupervisedData((x_l, y_l), x_u, 8, 16, seed=3)
    assert data.steps_per_epoch == 3
    labeled, unlabeled = [], []
    for epoch in range(2):
        seen = []
        for step in range(data.steps_per_epoch):
            b = data.batch(epoch, step)
            assert b["labeled"][0].shape == (8, 1) and b["unlabeled"].shape == (16, 1)
            np.testing.assert_array_equal(b["labeled"][0].numpy()[:, 0], b["labeled"][1])
            labeled += list(b["labeled"][1].numpy())
            seen += list(b["unlabeled"].numpy()[:, 0].astype(int))
        assert len(set(seen)) == 48  # one pass: no repeats, remainder of 2 dropped
        unlabeled.append(seen)
    assert unlabeled[0] != unlabeled[1]  # reshuffled per epoch
    # The labeled stream: consecutive passes over the 20, each a permutation.
    for p in range(len(labeled) // n_l):
        assert sorted(labeled[p * n_l:(p + 1) * n_l]) == list(range(n_l))
    assert labeled[:n_l] != labeled[n_l:2 * n_l]
    # Same batches inside a compiled function (the loop's path) and with B_l > N_l.
    fn = tf.function(lambda e, s: data.batch(e, s))
    b = fn(tf.constant(1, tf.int64), tf.constant(2, tf.int64))
    np.testing.assert_array_equal(b["labeled"][1].numpy(), labeled[-8:])
    big = SemiSupervisedData((x_l, y_l), x_u, 45, 16, seed=3)
    ids = np.concatenate([big.batch(0, s)["labeled"][1].numpy() for s in range(3)])
    for p in range(3):
        assert sorted(ids[p * n_l:(p + 1) * n_l]) == list(range(n_l))


def test_semi_supervised_run(tmp_path, small_mnist):
    cfg = vat.VatConfig(preset="official", num_labeled=20, labeled_batch_size=8,
                        unlabeled_batch_size=32, steps=2, train_limit=128, entmin=True,
                        progress=False, jit="off")
    m = vat.train_and_evaluate(cfg, str(tmp_path / "semi"), data=small_mnist)
    assert m["status"] == "done" and m["step"] == 2 and m["steps_per_epoch"] == 4
    assert m["config"]["eps"] == 0.3 and m["config"]["xi"] == 1e-6
    assert m["config"]["optimizer"] == "adam"
    assert "entropy" in m["history"] and np.isfinite(m["test_loss"])
    with pytest.raises(ValueError, match="--num_labeled"):
        vat.train_and_evaluate(vat.VatConfig(num_labeled=200, train_limit=128,
                                             progress=False), None, data=small_mnist)


def test_batch_norm_and_translate_reach_the_model_and_step(small_mnist):
    cfg = vat.VatConfig(preset="official", num_labeled=20, labeled_batch_size=8,
                        unlabeled_batch_size=32, steps=2, train_limit=128, val_size=20,
                        batch_norm=True, translate=2, progress=False, jit="off")
    m = vat.train_and_evaluate(cfg, None, data=small_mnist)
    assert m["config"]["batch_norm"] is True and m["config"]["translate"] == 2
    # Two BatchNorms of 32 channels: gamma, beta, moving mean and variance each.
    assert m["num_params"] == 600_810 + 2 * 4 * 32
    assert m["status"] == "done" and np.isfinite(m["history"]["val_loss"][-1])
    with pytest.raises(ValueError, match="--translate"):
        vat.VatConfig(translate=-2).resolved()
    with pytest.raises(ValueError, match="--batch_norm"):
        vat.VatConfig(batch_norm="yes").resolved()
    # 128 images, 20 labeled: at most 107 of the other 108 can be held out.
    with pytest.raises(ValueError, match=r"--val_size .*must be an integer in \[0, 107\]"):
        vat.train_and_evaluate(dataclasses.replace(cfg, val_size=108), None,
                               data=small_mnist)


def test_hvp_secant_trains(small_mnist):
    cfg = vat.VatConfig(preset="official", num_labeled=20, labeled_batch_size=8,
                        unlabeled_batch_size=32, steps=3, train_limit=128, hvp="secant",
                        entmin=True, progress=False, jit="off")
    m = vat.train_and_evaluate(cfg, None, data=small_mnist)
    assert m["status"] == "done" and m["config"]["hvp"] == "secant"
    assert np.all(np.isfinite(m["history"]["vat"])) and min(m["history"]["vat"]) > 0


@pytest.mark.parametrize("jit,gradient", [("on", "one_hot"), ("off", "kernel")])
def test_xla_takes_the_max_pools_one_hot_gradient(jit, gradient):
    # XLA's second derivative of max pooling is inexact (tfcore.max_pool2d); the
    # one-hot gradient's is exact, and --hvp=exact takes it.
    model, _, _ = vat.build(vat.VatConfig(jit=jit, hvp="exact").resolved())
    pools = [m for m in model.submodules if isinstance(m, tfcore.MaxPool2D)]
    assert [p.gradient for p in pools] == [gradient]


def test_lr_decay_fraction_decays_the_rate_linearly_at_the_end(tmp_path, small_mnist):
    """--lr_decay_fraction=0.5 over 4 steps: 1e-3 for t = 0, 1, 2, then 5e-4 at t = 3."""
    cfg = vat.VatConfig(preset="official", num_labeled=20, labeled_batch_size=8,
                        unlabeled_batch_size=32, steps=4, train_limit=128,
                        lr_decay_fraction=0.5, progress=False, jit="off")
    m = vat.train_and_evaluate(cfg, str(tmp_path / "decay"), data=small_mnist)
    assert m["steps_per_epoch"] == 4 and m["config"]["lr_decay_fraction"] == 0.5
    # One epoch: its logged rate is the mean of the four steps' rates.
    assert m["history"]["learning_rate"] == [pytest.approx((3 * 1e-3 + 5e-4) / 4)]
    # The schedule spans the run the loop makes: 1 epoch of 4 steps before --steps=50.
    m = vat.train_and_evaluate(dataclasses.replace(cfg, epochs=1, steps=50),
                               str(tmp_path / "decay_epochs"), data=small_mnist)
    assert m["step"] == 4
    assert m["history"]["learning_rate"] == [pytest.approx((3 * 1e-3 + 5e-4) / 4)]
    with pytest.raises(ValueError, match="--lr_decay_fraction must be a finite number in"):
        vat.VatConfig(lr_decay_fraction=-0.1).resolved()


def test_early_stopping_tests_the_best_epochs_weights(tmp_path, small_mnist):
    """--early_stopping_patience=1: epoch 1 starts from zeroed weights (a model that
    cannot learn: every ReLU is dead), so the validation accuracy drops, training stops
    after epoch 1, and the final test uses epoch 0's weights again."""
    class ZeroWeightsAtEpoch1(tfcallbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                for v in self.loop.model_variables().values():
                    v.assign(tf.zeros_like(v))

    cfg = vat.VatConfig(vat=False, batch_size=32, epochs=4, val_size=64,
                        early_stopping_patience=1, test_each_epoch=True, progress=False,
                        jit="off", preset="official")
    m = vat.train_and_evaluate(cfg, str(tmp_path / "es"), data=small_mnist,
                               callbacks=[ZeroWeightsAtEpoch1()])
    val, test = m["history"]["val_accuracy"], m["history"]["test_accuracy"]
    assert len(val) == 2 and val[1] < val[0]  # stopped after epoch 1 of 4
    assert m["early_stopping"] == {"best_epoch": 0, "best_val_accuracy": val[0],
                                   "stopped_epoch": 1}
    assert test[1] != test[0]
    assert m["test_accuracy"] == pytest.approx(test[0], abs=1e-7)
    with pytest.raises(ValueError, match="--early_stopping_patience=2 needs a validation"):
        vat.VatConfig(early_stopping_patience=2).resolved()


def _flag_values():
    fv = flags.FlagValues()
    binary.define_flags(vat.VatConfig, fv)
    return fv


def _config(argv):
    fv = _flag_values()
    fv(["train.vat"] + list(argv))
    return options.from_flags(vat.VatConfig, fv)


@pytest.mark.parametrize("arg,name", [
    ("--eps=-1", "--eps"), ("--xi=0", "--xi"), ("--num_labeled=15", "--num_labeled"),
    ("--power_iterations=-1", "--power_iterations"), ("--vat_weight=-0.5", "--vat_weight"),
    ("--labeled_batch_size=0", "--labeled_batch_size"), ("--batch_size=0", "--batch_size"),
    ("--optimizer=lbfgs", "--optimizer"), ("--val_size=-3", "--val_size"),
    ("--preset=paper", "preset"), ("--split_seed=-1", "--split_seed"),
    ("--lr_decay_fraction=1.5", "--lr_decay_fraction"),
    ("--early_stopping_patience=-1", "--early_stopping_patience"),
    ("--translate=-1", "--translate")])
def test_bad_flags_rejected(arg, name):
    with pytest.raises(ValueError, match=name):
        _config(["--workdir=/tmp/x", arg]).resolved()


def test_flags_to_config_and_presets():
    cfg = _config(["--workdir=/tmp/x", "--dropout=false", "--vat"]).resolved()
    assert (cfg.xi, cfg.eps, cfg.power_iterations, cfg.optimizer, cfg.learning_rate,
            cfg.batch_size, cfg.epochs) == (10.0, 1.0, 1, "adadelta", 1.0, 128, 12)
    cfg = _config(["--workdir=/tmp/x", "--preset=official", "--num_labeled=100"]
                  ).resolved()
    assert (cfg.xi, cfg.eps, cfg.optimizer) == (1e-6, 0.3, "adam")
    assert _config(["--workdir=/tmp/x", "--preset=official", "--eps=1.5"]
                   ).resolved().eps == 1.5  # explicit flags win
    for bad, name in ((dict(eps=-1.0), "--eps"), (dict(num_labeled=15), "--num_labeled"),
                      (dict(preset="x"), "--preset"), (dict(epochs=None), "--epochs"),
                      (dict(jit="xla"), "--jit")):
        with pytest.raises(ValueError, match=name):
            vat.VatConfig(**bad).resolved()


def test_binary_rejects_bad_flag(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "train.vat", f"--workdir={tmp_path}",
                           "--num_labeled=15"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.vat: error: --num_labeled must be 0 or a multiple of 10 (a class-balanced "
        "subset), got 15")
    assert not os.listdir(tmp_path)  # nothing written


def test_table_markdown():
    rows = [
        {"name": "dropout", "dropout": True, "vat": False, "test_accuracy": 0.9901,
         "test_loss": 0.031, "seconds_per_epoch": 40.0, "original_accuracy": 98.72,
         "epochs": 12, "num_train": 60000, "num_test": 10000},
        {"name": "vat", "dropout": False, "vat": True, "test_accuracy": 0.9912,
         "test_loss": 0.028, "seconds_per_epoch": 110.0, "original_accuracy": 98.94,
         "overhead": 2.75, "epochs": 12, "num_train": 60000, "num_test": 10000}]
    timing = {"steps": 5, "batch_size": 128, "plain_step_s": 0.1, "vat_step_s": 0.27,
              "ratio_of_medians": 2.7, "median_pair_ratio": 2.69, "flop_ratio": 8 / 3}
    md = vat_table.format_table(rows, timing, vat.VatConfig())
    lines = md.splitlines()
    assert lines[0].startswith("| dropout | VAT | test accuracy")
    assert "| yes | no | 99.01 % | 0.0310 | 40.0 | - | 98.72 % | 8 |" in lines
    assert "| no | yes | 99.12 % | 0.0280 | 110.0 | 2.75x | 98.94 % | 18 (2.25x) |" in lines
    assert "ratio 2.70x" in md and "60000 training images" in md
    # Seconds per epoch from the binary's steady rate (469 steps at 42.64 steps/s).
    assert vat_table._steady_seconds({"steps_per_epoch": 469, "steps_per_second": 42.64}
                                     ) == pytest.approx(11.0, rel=1e-3)
    assert vat_table._steady_seconds({"steps_per_epoch": 469}) is None


def test_split_seed_fixes_the_split_and_seed_does_not(small_mnist):
    y = np.asarray(small_mnist[0][1][:128])
    n, val_size, num_labeled = 128, 28, 20

    def split(seed, split_seed):
        cfg = vat.VatConfig(val_size=val_size, num_labeled=num_labeled, seed=seed,
                            split_seed=split_seed)
        return vat.split_indices(y, cfg)

    train, val, labeled = split(seed=0, split_seed=0)
    # The documented draws: a class-balanced subset of all n (2 per class) first, then
    # a PCG64(split_seed) permutation's first val_size of the other images.
    labeled_alone = balanced_subset(np.arange(n), y, num_labeled, 0, num_classes=10)
    np.testing.assert_array_equal(labeled, labeled_alone)
    rest = np.setdiff1d(np.arange(n), labeled)
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(rest))
    np.testing.assert_array_equal(val, np.sort(rest[perm[:val_size]]))
    np.testing.assert_array_equal(train, np.setdiff1d(np.arange(n), val))
    assert set(labeled) <= set(train) and len(labeled) == num_labeled
    assert np.bincount(y[labeled], minlength=10).tolist() == [2] * 10
    # --val_size never changes which images carry labels (nor does it with 0).
    for other_val in (0, 50):
        cfg = vat.VatConfig(val_size=other_val, num_labeled=num_labeled)
        np.testing.assert_array_equal(vat.split_indices(y, cfg)[2], labeled)
    # --seed changes nothing of it; --split_seed changes both parts.
    for other in (split(seed=7, split_seed=0), split(seed=-3, split_seed=0)):
        for a, b in zip((train, val, labeled), other):
            np.testing.assert_array_equal(a, b)
    _, val1, labeled1 = split(seed=0, split_seed=1)
    assert set(val1) != set(val) and set(labeled1) != set(labeled)
    with pytest.raises(ValueError, match="--split_seed"):
        vat.VatConfig(split_seed=-1).resolved()


class _DataProbe(tfcallbacks.Callback):
    """Keeps the images the run trains on (SemiSupervisedData's) at train begin."""

    def on_train_begin(self, logs=None):
        self.unlabeled = self.loop.data.x_u.numpy()
        self.labeled = self.loop.data.x_l.numpy()


def test_runs_with_other_seeds_hold_out_the_same_images(small_mnist):
    runs, probes = {}, {}
    for seed, split_seed in ((0, 0), (7, 0), (0, 1)):
        cfg = vat.VatConfig(num_labeled=20, labeled_batch_size=8,
                            unlabeled_batch_size=32, val_size=28, steps=1,
                            train_limit=128, test_limit=32, eval_batch_size=64,
                            seed=seed, split_seed=split_seed, progress=False, jit="off")
        probes[seed, split_seed] = probe = _DataProbe()
        runs[seed, split_seed] = vat.train_and_evaluate(cfg, None, data=small_mnist,
                                                        callbacks=[probe])
    x, y = small_mnist[0][0][:128], np.asarray(small_mnist[0][1][:128])
    train, val, labeled = vat.split_indices(y, vat.VatConfig(val_size=28,
                                                             num_labeled=20))
    images = mnist_images(x)
    for key in ((0, 0), (7, 0)):  # the images trained on: those of split_seed 0
        np.testing.assert_array_equal(probes[key].unlabeled, images[train])
        np.testing.assert_array_equal(probes[key].labeled, images[labeled])
    assert not np.array_equal(probes[0, 1].labeled, images[labeled])
    assert set(map(bytes, probes[0, 1].unlabeled)) != set(map(bytes, images[train]))
    assert runs[0, 0]["split_digest"] == vat.split_digest(val, labeled)
    assert runs[7, 0]["split_digest"] == runs[0, 0]["split_digest"]
    assert runs[0, 1]["split_digest"] != runs[0, 0]["split_digest"]
    assert runs[7, 0]["config"]["split_seed"] == 0 and runs[7, 0]["num_train"] == 100
    # --seed still drives training: another data order and other random directions.
    assert runs[7, 0]["history"]["loss"] != runs[0, 0]["history"]["loss"]


def test_make_vat100_recipe_parses_to_the_readme_configuration():
    """`make vat100`'s flags are valid train.vat flags and give the README's recipe."""
    text = open(os.path.join(ROOT, "Makefile")).read().replace("\\\n", " ")
    recipe = text.split("\nvat100:", 1)[1].split("\n")[1]
    args = [a for a in recipe.split() if a.startswith("--")]
    cfg = _config(args).resolved()
    assert (cfg.num_labeled, cfg.vat, cfg.dropout, cfg.entmin, cfg.translate, cfg.eps,
            cfg.xi, cfg.optimizer, cfg.epochs) == (100, True, False, True, 2, 1.5, 1e-6,
                                                   "adam", 15)


def test_vat100_table_script_runs_the_make_vat100_recipe():
    """bench/vat100_table.sh's recipe rows are `make vat100` (but the workdir and the
    per-epoch test log), its other rows the same recipe with one change each."""
    makefile = open(os.path.join(ROOT, "Makefile")).read().replace("\\\n", " ")
    make_args = {a for a in makefile.split("\nvat100:", 1)[1].split("\n")[1].split()
                 if a.startswith("--") and not a.startswith("--workdir")}
    script = open(os.path.join(ROOT, "bench", "vat100_table.sh")).read()
    recipe = set(script.split('RECIPE="', 1)[1].split('"', 1)[0].split())
    rows = {line.split()[1]: set(line.split()[4:]) for line in script.splitlines()
            if line.strip().startswith("run ") and "$" in line}
    assert set(rows) == {"recipe", "random", "exact", "secant"}, rows
    assert recipe | rows["recipe"] == make_args | {"--test_each_epoch"}
    assert rows["random"] - rows["recipe"] == {"--power_iterations=0"}
    assert rows["exact"] == {"--eps=0.5", "--hvp=exact"}
    assert rows["secant"] == {"--eps=0.5", "--hvp=secant"}
    for extra in rows.values():  # every flag is one train.vat takes
        _config(sorted(recipe | extra)).resolved()


def test_vat100_search_script_is_the_recipe_on_the_validation_split():
    """bench/vat100_search.sh: `make vat100`'s recipe on the validation split (seed 0,
    subset 0), each row changing only the direction, eps, iterations, VAT weight or
    learning-rate decay."""
    makefile = open(os.path.join(ROOT, "Makefile")).read().replace("\\\n", " ")
    make_args = {a for a in makefile.split("\nvat100:", 1)[1].split("\n")[1].split()
                 if a.startswith("--") and not a.startswith("--workdir")}
    script = open(os.path.join(ROOT, "bench", "vat100_search.sh")).read()
    recipe = set(script.split('RECIPE="', 1)[1].split('"', 1)[0].split())
    rows = {line.split()[1]: line.split()[2:] for line in script.splitlines()
            if line.startswith("row ")}
    assert recipe | set(rows["recipe"]) == make_args | {
        "--test_each_epoch", "--val_size=5000", "--seed=0", "--split_seed=0"}
    assert len(rows) >= 10 and {"random", "exact_eps0.5", "secant_eps0.5"} <= set(rows)
    base = _config(sorted(recipe | set(rows["recipe"]))).resolved()
    for name, extra in rows.items():
        cfg = _config(sorted(recipe) + extra).resolved()   # every flag is train.vat's
        changed = {f for f in ("hvp", "eps", "power_iterations", "vat_weight",
                               "lr_decay_fraction")
                   if getattr(cfg, f) != getattr(base, f)}
        assert all(getattr(cfg, f) == getattr(base, f) for f in vars(base)
                   if f not in changed), name
        if name != "recipe":
            assert changed, name
        if name.startswith(("exact", "secant")):   # the name says the direction and eps
            eps = float(re.search(r"_eps([0-9.]+)", name).group(1))
            assert (cfg.hvp, cfg.eps) == (name.split("_")[0], eps), name


@pytest.mark.parametrize("script, done, names", [
    ("vat100_table.sh", "recipe_s0p0", []),
    ("vat100_search.sh", "secant_eps0.5", ["secant_eps0.5", "random"])])
def test_vat100_scripts_skip_finished_runs_and_resume_the_others(tmp_path, script, done,
                                                                names):
    """Rerunning either script skips what is done and continues the rest with --resume
    (which starts a run afresh where it has no checkpoint); NAMEs pick the search's rows."""
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    out = tmp_path / "runs"
    (out / done).mkdir(parents=True)
    (out / done / "metrics.json").write_text('{"status": "done"}')
    result = subprocess.run(["sh", os.path.join(ROOT, "bench", script), str(out), *names],
                            env=dict(os.environ, PY=str(fake)), capture_output=True,
                            text=True, check=True)
    assert f"done: {out / done}" in result.stdout
    calls = log.read_text().splitlines()
    workdirs = [a.split("=", 1)[1] for c in calls for a in c.split()
                if a.startswith("--workdir=")]
    assert str(out / done) not in workdirs and len(workdirs) == len(calls) > 0
    assert all(c.startswith("-m train.vat ") and " --resume" in c for c in calls), calls
    if names:
        assert workdirs == [str(out / "random")]


class _StartWeights(tfcallbacks.Callback):
    """The model's weights when training begins (after any restore or init)."""

    def on_train_begin(self, logs=None):
        model = self.loop.objects["model"]
        self.weights = {f"{layer.name}/{attr}": getattr(layer, attr).numpy().copy()
                        for layer in model.layers for attr in ("kernel", "bias")
                        if hasattr(layer, attr)}


def test_init_from_starts_the_run_from_a_keras_models_weights(tmp_path, small_mnist):
    """--init_from: a Keras 3 twin's .weights.h5 is the start of the run; a resume
    ignores it; a file that does not fit is refused before anything is written."""
    import keras
    from bench import keras_models
    net = keras_models.vat_cnn_net(dropout=False, seed=3)
    net.build((None, 28, 28, 1))
    for w in net.weights:
        w.assign(np.random.RandomState(4).normal(0, 0.05, w.shape).astype("float32"))
    path = str(tmp_path / "cnn.weights.h5")
    net.save_weights(path)
    probe = _StartWeights()
    cfg = vat.VatConfig(vat=False, batch_size=32, steps=2, train_limit=128,
                        progress=False, jit="off", init_from=path, tensorboard=False)
    vat.train_and_evaluate(cfg, str(tmp_path / "run"), data=small_mnist, callbacks=[probe])
    # Keras numbers its layer names per process: take them by kind and position.
    convs = [l for l in net.layers if type(l).__name__ == "Conv2D"]
    denses = [l for l in net.layers if type(l).__name__ == "Dense"]
    kernel = convs[0].kernel.numpy()
    np.testing.assert_array_equal(probe.weights["conv2d/kernel"], kernel)
    np.testing.assert_array_equal(probe.weights["dense_1/bias"], denses[1].bias.numpy())
    # A resume starts from the checkpoint, not from the file.
    probe2 = _StartWeights()
    m = vat.train_and_evaluate(dataclasses.replace(cfg, steps=3, resume=True),
                               str(tmp_path / "run"), data=small_mnist, callbacks=[probe2])
    assert m["step"] == 3
    assert not np.array_equal(probe2.weights["conv2d/kernel"], kernel)
    # A model with 11 classes does not fit.
    wrong = keras_models.vat_cnn_net(dropout=False, num_classes=11)
    wrong.build((None, 28, 28, 1))
    bad = str(tmp_path / "wrong.weights.h5")
    wrong.save_weights(bad)
    with pytest.raises(ValueError, match="mis-shaped: dense_1/kernel"):
        vat.train_and_evaluate(dataclasses.replace(cfg, init_from=bad),
                               str(tmp_path / "fresh"), data=small_mnist)
    assert not os.path.exists(tmp_path / "fresh")
    del keras
