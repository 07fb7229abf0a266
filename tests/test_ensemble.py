"""train.ensemble: weight fitting, and a tiny ensemble of SavedModels end to end.

The members are tiny SavedModels (a tf.Module with a serving signature, no tfcore)
that read a label hidden in a pixel of synthetic 28x28 images: `good` reads the true
label (confidence 0.7), `bad` reads a corrupted copy (confidence 0.9, right on about
half the images). Expected accuracies and ensembles are recomputed here with NumPy
from the labels written into the images. The binary's checks (its flags, the kind of
every member, the workdir) run its `main` in-process, and once as `python -m`.
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfcore import data as tfdata
from tfcore.training import binary, export
from train import ensemble_lib as ensemble

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

NUM_CLASSES = 10
STEP = 20  # label k is written as the pixel value 20 * k


class _PixelReader(tf.Module):
    """probabilities: `conf` on the label written in pixel (0, col), the rest spread."""

    def __init__(self, col, conf, num_classes=NUM_CLASSES):
        super().__init__()
        self.col, self.conf, self.num_classes = col, conf, num_classes

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32,
                                                name="images")])
    def serve(self, images):
        label = tf.cast(tf.round(images[:, 0, self.col, 0] * 255.0 / STEP), tf.int32)
        label = tf.minimum(label, self.num_classes - 1)
        off = (1.0 - self.conf) / (self.num_classes - 1)
        return {"probabilities": tf.one_hot(label, self.num_classes, on_value=self.conf,
                                            off_value=off),
                "logits": tf.zeros([tf.shape(images)[0], 3])}


def _save(module, path):
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _probs(labels, conf, num_classes=NUM_CLASSES):
    p = np.full([len(labels), num_classes], (1.0 - conf) / (num_classes - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    rng = np.random.default_rng(0)
    arrays = {}
    corrupted = {}
    for split, n in (("train", 300), ("test", 200)):
        y = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
        wrong = np.where(rng.random(n) < 0.5, y, rng.integers(0, NUM_CLASSES, n))
        x = np.zeros([n, 28, 28], np.uint8)
        x[:, 0, 0] = y * STEP
        x[:, 0, 1] = wrong * STEP
        x[:, 5:20, 5:20] = rng.integers(0, 255, [n, 15, 15])  # some content
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        corrupted[split] = wrong.astype(np.int64)
    data_dir = root / "data"
    data_dir.mkdir()
    np.savez(data_dir / "mnist.npz", **arrays)

    run_config = {"val_size": 100, "seed": 3, "train_limit": 0}
    members = {}
    for name, col, conf in (("good", 0, 0.7), ("bad", 1, 0.9)):
        run = root / name
        _save(_PixelReader(col, conf), str(run / "saved_model"))
        (run / "metrics.json").write_text(json.dumps({"status": "done",
                                                      "config": run_config}))
        members[name] = str(run)
    members["five"] = _save(_PixelReader(0, 0.7, num_classes=5), str(root / "five"))
    members["bare"] = _save(_PixelReader(0, 0.6), str(root / "bare"))
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "notes.txt").write_text("hi")
    members["not_a_model"] = str(root / "not_a_model")
    return {"root": root, "data_dir": str(data_dir), "arrays": arrays,
            "corrupted": corrupted, "members": members, "run_config": run_config}


def _main(argv, capsys):
    """`python -m train.ensemble ARGV` in-process (the binary's `binary.main` after
    parsing): (exit code, stdout, stderr)."""
    fv = flags.FlagValues()
    binary.define_flags(ensemble.EnsembleConfig, fv)
    code = 0
    try:
        rest = fv(["train.ensemble", *argv])
        binary.run_main(ensemble.BINARY, ensemble.EnsembleConfig, ensemble.run_ensemble,
                        None, fv, rest)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# -- maths ----------------------------------------------------------------------------

def _loss(q, w):
    return -np.mean(np.log(w @ q))


def test_fit_weights_matches_a_brute_force_minimum():
    rng = np.random.default_rng(1)
    n, c = 200, 4
    labels = rng.integers(0, c, n)
    probs = rng.dirichlet(np.ones(c), size=(2, n))
    # member 0 is informative on the first half, member 1 on the second half
    probs[0, :100] = 0.6 * np.eye(c)[labels[:100]] + 0.4 * probs[0, :100]
    probs[1, 100:] = 0.6 * np.eye(c)[labels[100:]] + 0.4 * probs[1, 100:]
    w = ensemble.fit_weights(probs, labels)
    assert w.shape == (2,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    q = probs[:, np.arange(n), labels]
    grid = np.linspace(0, 1, 10001)
    losses = [_loss(q, np.array([a, 1 - a])) for a in grid]
    best = grid[int(np.argmin(losses))]
    assert w[0] == pytest.approx(best, abs=2e-4)
    assert 0.05 < w[0] < 0.95  # an interior optimum


def test_fit_weights_boundary_and_kkt():
    rng = np.random.default_rng(2)
    n, c = 300, 10
    labels = rng.integers(0, c, n)
    good = _probs(labels, 0.8)
    useless = rng.dirichlet(np.ones(c), size=n)
    medium = 0.5 * good + 0.5 * useless
    probs = np.stack([useless, good, medium])
    w = ensemble.fit_weights(probs, labels)
    q = probs[:, np.arange(n), labels]
    grad = np.mean(q / (w @ q), axis=1)  # d(-loss)/dw_k; KKT: = 1 if w_k > 0, <= 1 else
    for k in range(3):
        if w[k] > 1e-4:
            assert grad[k] == pytest.approx(1.0, abs=1e-4)
        else:
            assert grad[k] <= 1.0 + 1e-4
    assert np.argmax(w) == 1
    with pytest.raises(ValueError, match=r"probs must be \[K, N, C\]"):
        ensemble.fit_weights(probs[0], labels)


def test_combine_accuracy_log_loss():
    p = np.array([[[0.75, 0.25], [0.25, 0.75]], [[0.25, 0.75], [0.75, 0.25]]])
    y = np.array([0, 0])
    comb = ensemble.combine(p, np.array([0.75, 0.25]))
    np.testing.assert_allclose(comb, [[0.625, 0.375], [0.375, 0.625]])
    assert ensemble.accuracy(comb, y) == 0.5
    assert ensemble.log_loss(comb, y) == pytest.approx(-(np.log(0.625) + np.log(0.375)) / 2)
    tie = ensemble.combine(p, np.array([0.5, 0.5]))
    np.testing.assert_array_equal(tie, 0.5)
    assert ensemble.accuracy(tie, y) == 1.0  # a tie goes to the first class


# -- end to end -------------------------------------------------------------------------

def test_weighted_ensemble_end_to_end(setup, tmp_path):
    m, a = setup["members"], setup["arrays"]
    workdir = str(tmp_path / "ens")
    logs = []
    config = ensemble.EnsembleConfig(members=[m["good"], m["bad"]], method="weighted",
                                     data_dir=setup["data_dir"])
    result = ensemble.run_ensemble(config, workdir, log=logs.append)

    # The split comes from the members' run config (val_size 100, seed 3).
    assert (result["val_size"], result["split_seed"], result["num_val"]) == (100, 3, 100)
    _, (_, y_val) = tfdata.train_val_split(a["x_train"], a["y_train"], 100, 3)
    y_test, wrong_test = a["y_test"].astype(np.int64), setup["corrupted"]["test"]

    good_row, bad_row = result["members"]
    assert good_row["test_accuracy"] == 1.0
    assert bad_row["test_accuracy"] == pytest.approx(np.mean(wrong_test == y_test))
    assert bad_row["test_loss"] == pytest.approx(
        -np.mean(np.log(_probs(wrong_test, 0.9)[np.arange(len(y_test)), y_test])),
        rel=1e-5)

    w = np.array(result["weights"])
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1]
    # The ensemble's test accuracy, by hand from the labels and the fitted weights.
    p = w[0] * _probs(y_test, 0.7) + w[1] * _probs(wrong_test, 0.9)
    assert result["test_accuracy"] == pytest.approx(np.mean(np.argmax(p, 1) == y_test))
    # The plain average follows the more confident bad member where they disagree:
    # 0.45 + 0.3/18 on its label beats 0.35 + 0.1/18 on the good one's.
    avg_acc = np.mean(wrong_test == y_test)
    assert result["average"]["test_accuracy"] == pytest.approx(avg_acc)
    assert result["test_accuracy"] >= result["average"]["test_accuracy"]
    assert result["val_loss"] <= result["average"]["val_loss"] + 1e-12
    assert result["val_accuracy"] == pytest.approx(
        np.mean(np.argmax(w[0] * _probs(y_val.astype(np.int64), 0.7) + w[1] * _probs(
            tfdata.train_val_split(a["x_train"], setup["corrupted"]["train"], 100, 3)
            [1][1], 0.9), 1) == y_val))

    with open(os.path.join(workdir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert saved["weights"] == pytest.approx(list(w))
    table = (tmp_path / "ens" / "results.md").read_text()
    assert "ensemble (weighted)" in table and "ensemble (average)" in table
    assert m["good"] in table


def test_average_ensemble_cli(setup, tmp_path, capsys):
    m, a = setup["members"], setup["arrays"]
    workdir = tmp_path / "avg"
    rc, out, _ = _main([f"--members={m['good']},{m['bare']}", "--method=average",
                        "--val_size=100", "--split_seed=3", f"--data_dir={setup['data_dir']}",
                        f"--workdir={workdir}", "--test_limit=50"], capsys)
    assert rc == 0
    assert "WARNING: --val_size=100 but the members were trained with" in out
    result = json.loads((workdir / "metrics.json").read_text())
    assert result["weights"] == [0.5, 0.5] and result["num_test"] == 50
    y = a["y_test"][:50].astype(np.int64)
    p = 0.5 * _probs(y, 0.7) + 0.5 * _probs(y, 0.6)
    assert result["test_accuracy"] == 1.0
    assert result["test_loss"] == pytest.approx(-np.mean(np.log(p[np.arange(50), y])),
                                                rel=1e-5)


def test_member_errors(setup, tmp_path, capsys):
    m = setup["members"]
    d = setup["data_dir"]

    def run(members, **kw):
        kw.setdefault("method", "average")
        return ensemble.run_ensemble(ensemble.EnsembleConfig(members=members, data_dir=d,
                                                             **kw), None, log=print)

    with pytest.raises(ensemble.MemberError, match="is not a SavedModel: no saved_model.pb"):
        run([m["good"], m["not_a_model"]])
    with pytest.raises(ensemble.MemberError, match="does not exist"):
        run([m["good"], str(tmp_path / "missing")])
    with pytest.raises(ensemble.MemberError, match=r"outputs 5 classes but member .* "
                                                   r"outputs 10: members must predict"):
        run([m["good"], m["five"]])
    with pytest.raises(ensemble.MemberError, match="no output 'nope'"):
        run([m["good"]], output_key="nope")
    with pytest.raises(ensemble.MemberError, match="not a probability distribution"):
        run([m["good"]], output_key="logits")
    with pytest.raises(ensemble.MemberError, match="more than once"):
        run([m["good"], m["good"]])
    # Weighted needs a validation split; members with unknown / different splits too.
    with pytest.raises(ValueError, match="fitting on the test set is refused"):
        run([m["bare"]], method="weighted")
    with pytest.raises(ValueError, match="trained with different \\(or unrecorded\\) "
                                         "val_size"):
        run([m["good"], m["bare"]], method="weighted")
    code, _, err = _main([f"--members={m['not_a_model']}", f"--data_dir={d}",
                          f"--workdir={tmp_path / 'w'}"], capsys)
    assert code == 2 and "is not a SavedModel" in err


def test_split_seed_read_from_split_seed_then_seed():
    """Members trained with --seed=3 --split_seed=0 held out split 0; old runs without
    a recorded split_seed drew their split with --seed."""
    config = ensemble.EnsembleConfig(members=["a", "b"], method="weighted")
    new = {"val_size": 100, "seed": 3, "split_seed": 0, "train_limit": 0}
    mixed_seeds = {"a": new, "b": dict(new, seed=7)}
    assert ensemble.resolve_split(config, mixed_seeds, log=lambda m: None) == (100, 0, 0)
    old = {"val_size": 100, "seed": 3, "train_limit": 0}
    assert ensemble.resolve_split(config, {"a": old, "b": old},
                                  log=lambda m: None) == (100, 3, 0)
    with pytest.raises(ValueError, match="split_seed"):
        ensemble.resolve_split(config, {"a": new, "b": dict(new, split_seed=1)},
                               log=lambda m: None)


# -- the binary: flags, and the checks before any work ----------------------------------

def test_flags_are_the_config_fields_with_the_old_names_and_defaults():
    fv = flags.FlagValues()
    binary.define_flags(ensemble.EnsembleConfig, fv)
    fields = {f.name for f in dataclasses.fields(ensemble.EnsembleConfig)}
    assert set(fv) == fields | {"workdir"}
    assert {n: fv[n].default for n in fields} == {
        "members": [], "method": "average", "val_size": None, "split_seed": None,
        "train_limit": None, "test_limit": 0, "data_dir": None, "output_key": None,
        "batch_size": 1000}
    fv(["train.ensemble", "--members=a,b*", "--method=weighted", "--val_size=5",
        "--batch_size=7"])
    config = ensemble.EnsembleConfig(**{n: fv[n].value for n in fields})
    assert (config.members, config.method, config.val_size, config.batch_size) == (
        ("a", "b*"), "weighted", 5, 7)
    for bad, name in ((dict(method="median"), "--method"), (dict(val_size=-1), "--val_size"),
                      (dict(batch_size=0), "--batch_size"),
                      (dict(data_dir="/no/such/dir"), "--data_dir")):
        with pytest.raises(ValueError, match=name):
            ensemble.EnsembleConfig(**bad)


class _Passthrough(tf.Module):
    """x -> x: the shape of an autoencoder's or a generator's export."""

    def __call__(self, x, training=False):
        return x


@pytest.fixture(scope="module")
def bad_kinds(tmp_path_factory):
    """Members of every wrong kind, made as the binaries make them (the run layer's
    config.json, `tfcore.training.export` signatures), keyed by what the error says."""
    root = tmp_path_factory.mktemp("kinds")
    images = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")
    out = {}
    ae_run = root / "ae_run"
    export.export_saved_model(_Passthrough(), str(ae_run / "saved_model"), images,
                              fn=lambda x: {"reconstructions": x})
    (ae_run / "config.json").write_text(json.dumps({"binary": "train.autoencoder",
                                                    "config": {"model": "dense"}}))
    out["is a train.autoencoder run (an autoencoder), not a classifier"] = str(ae_run)
    ae_export = root / "ae_export"  # the same export on its own, no run beside it
    export.export_saved_model(_Passthrough(), str(ae_export), images,
                              fn=lambda x: {"reconstructions": x})
    out["is an autoencoder's SavedModel (it outputs 'reconstructions'), not a "
        "classifier"] = str(ae_export)
    gan_run = root / "gan_run"  # trained without --export: checkpoints only
    (gan_run / "checkpoints").mkdir(parents=True)
    (gan_run / "config.json").write_text(json.dumps({"binary": "train.dcgan",
                                                     "config": {"latent_dim": 30}}))
    out["is a train.dcgan run (a GAN), not a classifier"] = str(gan_run)
    legacy = root / "gan_legacy"  # a train.dcgan workdir from before the run layer
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"latent_dim": 30, "d_batch": "split"}))
    out["is a train.dcgan run (a GAN)"] = str(legacy)
    generator = root / "generator"
    export.export_saved_model(_Passthrough(), str(generator),
                              tf.TensorSpec([None, 30], tf.float32, name="z"),
                              fn=lambda z: {"images": tf.zeros([tf.shape(z)[0], 32, 32, 1])})
    out["is a generator's SavedModel (it outputs 'images'), not a classifier"] = str(
        generator)
    scores = root / "scores"  # one rank-2 output, but logits: not probabilities
    export.export_saved_model(_Passthrough(), str(scores), images,
                              fn=lambda x: tf.reshape(x, [-1, 784])[:, :10] - 1.0)
    out["output 'outputs' is not a probability distribution per row"] = str(scores)
    return out


def test_every_bad_member_kind_is_one_line_and_exit_2_before_any_work(
        setup, bad_kinds, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("data loaded before the members were checked")

    monkeypatch.setattr(tfdata, "load_mnist", no_work)
    good = setup["members"]["good"]
    for i, (what, path) in enumerate(bad_kinds.items()):
        workdir = tmp_path / f"w{i}"
        code, out, err = _main([f"--members={good},{path}", f"--workdir={workdir}"],
                               capsys)
        assert code == 2, (what, err)
        (line,) = err.splitlines()
        assert line.startswith(f"train.ensemble: error: member {path!r} {what}"), line
        assert out == ""
        assert not workdir.exists() or not any(workdir.iterdir())  # nothing written


def test_a_file_as_workdir_fails_before_any_work(setup, tmp_path, capsys, monkeypatch):
    """In-process with every member check disabled, then the real binary: the workdir
    is the first thing checked (a missing member is not even looked at)."""
    target = tmp_path / "results.txt"
    target.write_text("not a directory")
    monkeypatch.setattr(ensemble, "find_saved_model", lambda *a: pytest.fail("work"))
    code, _, err = _main([f"--members={setup['members']['good']}",
                          f"--workdir={target}"], capsys)
    assert code == 2
    assert err == f"train.ensemble: error: --workdir {str(target)!r} is a file, not a " \
                  "directory\n"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "train.ensemble", f"--workdir={target}",
                           f"--members={tmp_path / 'missing'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == err.strip()
    assert target.read_text() == "not a directory"
