"""train.dcgan (train/dcgan_lib.py, dcgan_callbacks.py) and train.gan_eval
(gan_eval_lib.py, gan_eval_models.py): a short run in two attempts (the second a
--resume with a learning-rate change: pictures, metrics.json keys, steps, TensorBoard,
checkpoints, export, the weight average), gan_eval on that run with a tiny classifier
(checkpoint and SavedModel give the same samples, the averaged generator's; the
numbers equal the run's final measurement), the corrupt-newest-checkpoint fallback,
every wrong kind of model refused in one line with nothing written, the resume
contract, the measurement on inputs with known answers, the callbacks' state across a
resume, and the flags (exactly the configs' fields, checked, through the binaries).

D's hidden Dense layer is 32 wide here instead of 2048 (--d_dense_units), which makes
its checkpoints under 10 MB instead of 100 MB; the full networks are tested in
tests/test_dcgan_model.py. The classifier is an untrained VatCNN saved the way
`train.vat` saved one before the run layer (checkpoints/ + metrics.json's config);
the numbers are checked for consistency and known answers, not quality (the quality
runs, with the cached classifier trained by `train.vat`: README).
"""
import dataclasses
import hashlib
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from models import dcgan as dcgan_model
from models import vat_cnn
from tfcore import gan_metrics
from tfcore.data import DeviceDataset, load_mnist, mnist_images
from tfcore.training import binary, checkpointing, export, metrics_io, options, summaries
from tfcore.training import callbacks as tfcb
from tfcore.training.run import ResumeError, WorkdirError
from train import dcgan_callbacks as dcb
from train import dcgan_lib as dcgan
from train import gan_eval_lib as gan_eval

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KEYS = ("classifier_score", "frechet_distance", "classes_covered",
        "real_classifier_score", "real_frechet_distance")


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    (x_tr, y_tr), (x_te, y_te) = load_mnist(mnist_dir)
    return (x_tr[:96], y_tr[:96]), (x_te[:48], y_te[:48])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """An older train.vat workdir: checkpoints/ holding a VatCNN as 'model' (random
    weights: training one would cost a minute) and metrics.json's config."""
    workdir = str(tmp_path_factory.mktemp("clf"))
    model = vat_cnn.VatCNN(dropout=True)
    model(tf.zeros([1, 28, 28, 1]))
    ckpt = checkpointing.make_checkpoint({"model": model})
    checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), ckpt).save(1)
    metrics_io.write_metrics(workdir, {"config": {"dropout": True, "vat": False}})
    return workdir


def _config(classifier_dir, **kw):
    base = dict(epochs=None, eval_every=2, batch_size=8, val_examples=12, eval_samples=20,
                final_eval_samples=24, grid_size=2, interp_rows=2, interp_steps=3,
                log_every=1, progress=False, jit="off", classifier=classifier_dir,
                latent_dim=5, d_dense_units=32, g_ema=0.5)
    return dcgan.DCGANConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(small_mnist, classifier_dir, tmp_path_factory):
    """Steps 1-2, then --resume to step 4 with --export and G's learning rate changed
    (allowed by --change_on_resume). --g_ema=0.5 makes the average differ visibly."""
    workdir = str(tmp_path_factory.mktemp("dcgan"))
    dcgan.train_and_evaluate(_config(classifier_dir, max_steps=2), workdir,
                             mnist=small_mnist)
    cfg = _config(classifier_dir, max_steps=4, resume=True, export=True,
                  g_learning_rate=1e-4, change_on_resume=("g_learning_rate",))
    metrics = dcgan.train_and_evaluate(cfg, workdir, mnist=small_mnist)
    return workdir, metrics


def test_end_to_end_outputs(run):
    workdir, metrics = run
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    assert on_disk["status"] == "done" and on_disk["step"] == 4
    assert [a["from_step"] for a in on_disk["attempts"]] == [0, 2]
    assert on_disk["changes"] == [{"step": 2, "option": "g_learning_rate", "old": 2e-4,
                                   "new": 1e-4}]
    # Timing: two 2-step periods; the rate is the resumed process's one period.
    assert len(on_disk["epoch_seconds"]) == 2
    assert all(isinstance(s, float) and s > 0 for s in on_disk["epoch_seconds"])
    assert on_disk["steps_per_second"] == pytest.approx(2 / on_disk["epoch_seconds"][1])
    for m in (metrics, on_disk):
        for key in KEYS:
            assert np.isfinite(m[key]), key
        assert m["frechet_distance"] >= 0 and 1.0 <= m["classifier_score"] <= 10.0
        assert m["classes_covered"] in range(11) and len(m["class_shares"]) == 10
        assert m["num_samples"] == 24 and m["global_step"] == 4
        assert m["steps_per_epoch"] == 2 and m["num_train"] == 96
    # Two 2-step periods: per-period pictures (the first from the first attempt) and
    # validation; per-step records across both attempts.
    assert metrics["samples"] == ["samples_epoch_1.png", "samples_epoch_2.png"]
    for name in metrics["samples"]:
        assert Image.open(os.path.join(workdir, name)).size == (67, 67)  # 2*32 + 3
    assert Image.open(os.path.join(workdir, "interpolation.png")).size == (100, 67)
    history = on_disk["history"]
    for key in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_acc", "val_d_loss",
                "val_d_loss_real", "val_d_loss_fake", "val_d_acc_real", "val_d_acc_fake",
                "val_frechet_distance", "val_classifier_score", "val_classes_covered",
                "val_d_loss_batch_stats", "val_d_acc_real_batch_stats",
                "val_d_acc_fake_batch_stats", "val_d_acc_batch_stats"):
        assert len(history[key]) == 2 and all(v is not None for v in history[key]), key
    for key in ("val_d_acc_real", "val_d_acc_fake", "val_d_acc_real_batch_stats"):
        assert all(0.0 <= v <= 1.0 for v in history[key]), key
    steps = on_disk["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_acc"} <= set(steps[0])
    lines = open(os.path.join(workdir, dcgan.STEPS_FILE)).read().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    tags = {t for t, _, _ in summaries.read_events(os.path.join(workdir, "train"))}
    assert {"g_loss", "d_acc_real", "samples", "interpolation"} <= tags
    eval_tags = {t for t, _, _ in summaries.read_events(os.path.join(workdir, "eval"))}
    assert {"epoch_d_acc_fake", "epoch_frechet_distance"} <= eval_tags
    for d in ("checkpoints", "best", "saved_model"):
        assert os.path.isdir(os.path.join(workdir, d)), d
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["binary"] == "train.dcgan" and saved["config"]["latent_dim"] == 5
    assert saved["config"]["g_learning_rate"] == 1e-4  # resolved, as changed
    assert saved["config"]["d_learning_rate"] == 2e-4  # the preset's, filled in


def _restore_pair(workdir, prefix=None):
    last, ema = dcgan_model.Generator(latent_dim=5), dcgan_model.Generator(latent_dim=5)
    for g in (last, ema):
        g(tf.zeros([1, 5]))
    checkpointing.restore_objects(prefix or os.path.join(workdir, "checkpoints"),
                                  {"generator": last, "generator_ema": ema})
    return last, ema


Z = np.random.default_rng(1).uniform(-1, 1, size=(4, 5)).astype(np.float32)


def test_gan_eval_on_the_run_samples_the_average(run, small_mnist, classifier_dir,
                                                 tmp_path):
    """The averaged generator (checkpointed as 'generator_ema', moved by the step) is
    what gan_eval's loader and the export sample; the numbers are the run's final
    measurement again (same seed and sample count, the last checkpoint)."""
    workdir, metrics = run
    last, ema = _restore_pair(workdir)
    reader = tf.train.load_checkpoint(checkpointing.list_complete(
        os.path.join(workdir, "checkpoints"))[0])
    (lr_key,) = [k for k in reader.get_variable_to_shape_map()
                 if k.startswith("g_opt/") and "learning_rate" in k]
    assert float(reader.get_tensor(lr_key)) == pytest.approx(1e-4)  # honoured
    want = ema(Z, training=False).numpy()
    assert not np.allclose(want, last(Z, training=False).numpy(), atol=1e-4)
    fn_ckpt, latent, found = gan_eval.load_generator(workdir)
    fn_sm, latent_sm, _ = gan_eval.load_generator(os.path.join(workdir, "saved_model"))
    assert latent == latent_sm == (5,) and found == os.path.abspath(workdir)
    np.testing.assert_allclose(fn_ckpt(Z), want, atol=1e-5)
    np.testing.assert_allclose(fn_sm(Z), want, atol=1e-5)
    out = str(tmp_path / "out")
    cfg = gan_eval.GanEvalConfig(generator=workdir, classifier=classifier_dir,
                                 num_samples=24, seed=0)
    result = gan_eval.evaluate(cfg, out, mnist=small_mnist)
    for key in KEYS:
        assert result[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    written = json.load(open(os.path.join(out, "metrics.json")))
    assert all(written[k] == pytest.approx(result[k]) for k in KEYS)
    text = gan_eval.format_result(result)
    assert "classifier score" in text and "test-train" in text


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(run, tmp_path, caplog):
    """An older workdir (flat config.json) whose newest checkpoint's data file is
    truncated: the generator comes from the newest complete one before it, and the
    warning names the file skipped."""
    workdir, _ = run
    copy = str(tmp_path / "old")
    shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(copy, "checkpoints"))
    with open(os.path.join(copy, "config.json"), "w") as f:  # before the run layer
        json.dump({"generator": "upsample", "latent_dim": 5, "g_ema": 0.5}, f)
    paths = checkpointing.list_complete(os.path.join(copy, "checkpoints"))
    assert [os.path.basename(p) for p in paths] == ["ckpt-4", "ckpt-2"]
    (data,) = [f for f in os.listdir(os.path.join(copy, "checkpoints"))
               if f.startswith("ckpt-4.data")]
    data = os.path.join(copy, "checkpoints", data)
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    want = _restore_pair(workdir, paths[1].replace(copy, workdir))[1](Z, training=False)
    with caplog.at_level(logging.WARNING):
        fn, _, _ = gan_eval.load_generator(copy)
    np.testing.assert_allclose(fn(Z), want, atol=1e-6)
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in
               r.getMessage()]
    assert len(skipped) == 1 and "ckpt-4" in skipped[0], skipped
    with pytest.raises(gan_eval.ModelKindError, match="--generator .*ckpt-4.*IndexError"):
        gan_eval.load_generator(paths[0])  # a named prefix: no fallback, one line


def _digest(*dirs):
    h = hashlib.sha256()
    for d in dirs:
        for base, _, files in sorted(os.walk(d)):
            for name in sorted(files):
                path = os.path.join(base, name)
                h.update(path.encode() + open(path, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def wrong_kinds(run, classifier_dir, tmp_path_factory):
    """Inputs of the wrong kind: a classifier's SavedModel, an autoencoder workdir
    (the run layer's config.json) and an older one (metrics.json only)."""
    root = str(tmp_path_factory.mktemp("kinds"))
    model = vat_cnn.VatCNN(dropout=True)
    model(tf.zeros([1, 28, 28, 1]))
    export.export_saved_model(model, os.path.join(root, "classifier_sm"),
                              tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images"),
                              fn=vat_cnn.probabilities(model))
    for name, meta in (("ae", {"binary": "train.autoencoder", "config": {"tied": True}}),
                       ("ae_old", None)):
        ae = os.path.join(root, name)
        dense = tf.Module()
        dense.kernel = tf.Variable(tf.ones([784, 32]))
        checkpointing.Checkpointer(os.path.join(ae, "checkpoints"),
                                   {"model": dense}).save(3)
        if meta:
            metrics_io.atomic_write_json(os.path.join(ae, "config.json"), meta)
        else:
            metrics_io.write_metrics(ae, {"config": {"model": "dense", "tied": False}})
    os.makedirs(os.path.join(root, "empty"))
    return {"dcgan": run[0], "vat": classifier_dir, "root": root,
            "empty": os.path.join(root, "empty"),
            "classifier_sm": os.path.join(root, "classifier_sm"),
            "ae": os.path.join(root, "ae"), "ae_old": os.path.join(root, "ae_old")}


@pytest.mark.parametrize("generator,classifier,flag,says", [
    ("classifier_sm", "vat", "--generator", "a SavedModel of images -> probabilities, "
     "not a train.dcgan --export (z -> images)"),
    ("vat", "vat", "--generator", "a train.vat run, not a train.dcgan one"),
    ("dcgan", "ae", "--classifier", "a train.autoencoder run, not a train.vat one"),
    ("dcgan", "ae_old", "--classifier", "a train.autoencoder run, not a train.vat one"),
    ("dcgan", "ae_old/checkpoints", "--classifier", "a train.autoencoder run"),
    ("dcgan", "dcgan", "--classifier", "a train.dcgan run, not a train.vat one"),
    ("dcgan", "classifier_sm", "--classifier", "a SavedModel; give a train.vat workdir"),
    ("empty", "vat", "--generator", "neither a SavedModel nor a train.dcgan workdir"),
    (None, "vat", "--generator", "is required")])
def test_gan_eval_refuses_wrong_kinds_in_one_line(wrong_kinds, tmp_path, capsys,
                                                  generator, classifier, flag, says):
    def where(name):
        head, _, tail = name.partition("/")
        return os.path.join(wrong_kinds[head], tail) if tail else wrong_kinds[head]

    before = _digest(wrong_kinds["root"], wrong_kinds["dcgan"], wrong_kinds["vat"])
    out = str(tmp_path / "out")
    argv = ["train.gan_eval", f"--workdir={out}", f"--classifier={where(classifier)}"]
    argv += [f"--generator={where(generator)}"] if generator else []
    fv = flags.FlagValues()
    binary.define_flags(gan_eval.GanEvalConfig, fv)
    fv(argv)
    with pytest.raises(SystemExit) as e:
        binary.run_main(gan_eval.BINARY, gan_eval.GanEvalConfig, gan_eval.evaluate,
                        gan_eval.format_result, fv, ["train.gan_eval"],
                        workdir_required=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"train.gan_eval: error: {flag}") and says in err[0], err
    assert not os.path.exists(out)  # nothing written, nothing changed
    assert _digest(wrong_kinds["root"], wrong_kinds["dcgan"], wrong_kinds["vat"]) == before


def test_classifier_of_the_run_layer_loads(classifier_dir, tmp_path):
    """A train.vat workdir of the run layer (config.json {"binary", "config"}) loads as
    its configuration says (here batch_norm=True, which the older format lacked)."""
    model = vat_cnn.VatCNN(dropout=False, batch_norm=True)
    model(tf.zeros([1, 28, 28, 1]))
    checkpointing.Checkpointer(str(tmp_path / "checkpoints"), {"model": model}).save(5)
    metrics_io.atomic_write_json(str(tmp_path / "config.json"), {
        "binary": "train.vat", "config": {"dropout": False, "batch_norm": True}})
    loaded = gan_eval.load_classifier(str(tmp_path))
    x = tf.constant(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), tf.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_resume_contract_refuses_before_writing(run, small_mnist, classifier_dir):
    """Another --latent_dim on --resume is refused (listing the option) and a used
    workdir without --resume too, before anything in it changes (issue 16, item 2)."""
    workdir, _ = run
    before = _digest(workdir)
    resumed = _config(classifier_dir, max_steps=6, resume=True, latent_dim=6)
    with pytest.raises(ResumeError, match=r"--latent_dim=5 -> 6"):
        dcgan.train_and_evaluate(resumed, workdir, mnist=small_mnist)
    with pytest.raises(WorkdirError, match="--resume"):
        dcgan.train_and_evaluate(_config(classifier_dir, max_steps=6), workdir,
                                 mnist=small_mnist)
    assert _digest(workdir) == before


def test_measurement_known_answers(small_mnist):
    clf = vat_cnn.VatCNN(dropout=True)
    clf(tf.zeros([1, 28, 28, 1]))
    # Cropping undoes MNIST's padding to 32x32 and the [-1, 1] scaling exactly.
    x = small_mnist[0][0][:5]
    padded = mnist_images(x, scale="tanh", pad_to=32)
    np.testing.assert_allclose(gan_eval.to_classifier_images(padded), mnist_images(x),
                               atol=1e-6)
    # Outputs: probabilities are softmax(model(x)); features the Dense(128) relu.
    probs, feats = gan_eval.classifier_outputs(clf, mnist_images(x), batch_size=2)
    np.testing.assert_allclose(probs, tf.nn.softmax(clf(mnist_images(x))), atol=1e-6)
    assert feats.shape == (5, 128) and feats.min() >= 0
    # A generator that always draws the same digit: score 1, one class covered.
    one = tf.constant(padded[:1])
    result = gan_eval.evaluate_generator(
        lambda z: tf.repeat(one, tf.shape(z)[0], axis=0), clf, (4, 4, 4),
        small_mnist[0][0], small_mnist[1][0], num_samples=10, batch_size=4)
    assert result["classifier_score"] == pytest.approx(1.0, abs=1e-9)
    assert result["classes_covered"] == 1 and sorted(result["class_shares"])[-1] == 1.0
    # Real-vs-real numbers: the metrics on the same seeded subsets, recomputed here.
    ref = gan_eval.real_reference(clf, small_mnist[0][0], small_mnist[1][0], 10, seed=3)
    rng = np.random.default_rng(3)
    tr = mnist_images(small_mnist[0][0])[np.sort(rng.permutation(96)[:10])]
    te = mnist_images(small_mnist[1][0])[np.sort(rng.permutation(48)[:10])]
    p_te, f_te = gan_eval.classifier_outputs(clf, te)
    _, f_tr = gan_eval.classifier_outputs(clf, tr)
    assert ref.real_frechet_distance == pytest.approx(
        gan_metrics.frechet_distance(f_te, f_tr), rel=1e-9)
    assert ref.real_classifier_score == pytest.approx(gan_metrics.classifier_score(p_te))
    with pytest.raises(ValueError, match="num_samples.*1"):
        gan_eval.evaluate_generator(lambda z: z, clf, (4, 4, 4), reference=ref,
                                    num_samples=1)


@pytest.mark.parametrize("num_images,num_val", [(4, 4), (12, 1)])
def test_image_folder_data(tmp_path, num_images, num_val):
    """--image_dir: grayscale 32x32 in [-1, 1], grown --augment_factor times; a tenth
    held out (all images when fewer than 10). The training itself is the MNIST path."""
    rng = np.random.default_rng(0)
    for i in range(num_images):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    cfg = dcgan.DCGANConfig(image_dir=str(tmp_path), augment_factor=3).resolved()
    train, val, mnist = dcgan.load_data(cfg)
    n_train = num_images if num_images < 10 else num_images - num_val
    assert mnist is None and train.shape == (3 * n_train, 32, 32, 1)
    assert val.shape == (num_val, 32, 32, 1) and train.dtype == np.float32
    assert -1.0 <= train.min() and train.max() <= 1.0 and train.std() > 0.1
    # The first n_train rows are the originals, then the augmented copies differ.
    assert not np.allclose(train[:n_train], train[n_train:2 * n_train])


# --- small pieces ------------------------------------------------------------------------

class _Loop:
    stop_training = False


def test_pinned_stop_and_its_state_across_a_resume():
    cb = dcb.DiscriminatorPinnedStop("val_d_acc", patience=3, tol=0.01)
    cb.set_loop(_Loop())
    cb.on_train_begin()
    for epoch, acc in enumerate([1.0, 0.995, 0.5, 1.0, 0.999]):
        cb.on_epoch_end(epoch, {"val_d_acc": acc, "val_d_acc_batch_stats": 1.0})
        assert not cb.loop.stop_training
    state = cb.get_state()
    assert state == {"pinned": 2, "stopped_epoch": None}
    # A resumed run: a new callback, reset by on_train_begin, then given the state
    # back (the loop's order); 0 counts as pinned too: 3 in a row.
    resumed = dcb.DiscriminatorPinnedStop("val_d_acc", patience=3, tol=0.01)
    resumed.set_loop(_Loop())
    resumed.on_train_begin()
    resumed.set_state(json.loads(json.dumps(state)))
    resumed.on_epoch_end(5, {"val_d_acc": 0.0})
    assert resumed.loop.stop_training and resumed.stopped_epoch == 5
    assert resumed.get_state() == {"pinned": 3, "stopped_epoch": 5}
    with pytest.raises(ValueError, match="patience.*0"):
        dcb.DiscriminatorPinnedStop(patience=0)
    with pytest.raises(ValueError, match="tol.*0.5"):
        dcb.DiscriminatorPinnedStop(tol=0.5)


def test_period_data_and_interpolation_latents():
    inner = DeviceDataset(np.arange(10, dtype=np.float32), 2, seed=1)  # 5 steps / pass
    periods = dcb.PeriodData(inner, 3)
    # Period 2, step 1 = global step 7 = step 2 of pass 1.
    np.testing.assert_array_equal(periods.batch(2, 1), inner.batch(1, 2))
    z = dcb.interpolation_latents((2, 3), rows=2, steps=5, seed=0).reshape(2, 5, 2, 3)
    np.testing.assert_allclose(z[:, 2], (z[:, 0] + z[:, 4]) / 2, atol=1e-6)
    np.testing.assert_allclose(z[:, 1], 0.75 * z[:, 0] + 0.25 * z[:, 4], atol=1e-6)
    assert np.all(np.abs(z) <= 1) and not np.allclose(z[0, 0], z[1, 0])


class _StartNets(tfcb.Callback):
    """Each network's weights (Keras order) when training begins."""

    def on_train_begin(self, logs=None):
        self.weights = {name: [v.numpy().copy() for v in net.variables_in_keras_order()]
                        for name, net in self.loop.objects.items()
                        if hasattr(net, "variables_in_keras_order")}


def test_init_from_a_keras_gan(small_mnist, classifier_dir, tmp_path):
    """--init_from: a Keras combined model's .weights.h5 (nested 'generator' and
    'discriminator') starts G, D and G's weight average; a lone generator's file is
    refused before anything is written."""
    import keras
    from bench import keras_models as km
    g = km.dcgan_generator(5, name="generator")
    d = km.dcgan_discriminator(dense_units=32, name="discriminator")
    gan = keras.Sequential([keras.Input((5,)), g, d], name="gan")
    rng = np.random.RandomState(0)
    for w in gan.weights:
        w.assign(rng.uniform(0.01, 0.1, w.shape).astype("float32"))
    path = str(tmp_path / "gan.weights.h5")
    gan.save_weights(path)
    probe = _StartNets()
    dcgan.train_and_evaluate(_config(classifier_dir, max_steps=1, init_from=path),
                             str(tmp_path / "run"), mnist=small_mnist, callbacks=[probe])
    for name, net in (("generator", g), ("generator_ema", g), ("discriminator", d)):
        got = probe.weights[name]
        assert len(got) == len(net.weights)
        for a, b in zip(got, net.weights):
            np.testing.assert_array_equal(a, b.numpy())
    g_only = str(tmp_path / "g.weights.h5")
    g.save_weights(g_only)
    with pytest.raises(ValueError, match="does not fit module 'gan'.*missing: .*discriminator__"):
        dcgan.train_and_evaluate(_config(classifier_dir, max_steps=1, init_from=g_only),
                                 str(tmp_path / "fresh"), mnist=small_mnist)
    assert not os.path.exists(tmp_path / "fresh")


@pytest.mark.parametrize("field,value,flag", [
    ("d_steps", 0, "--d_steps"), ("preset", "fast", "--preset"),
    ("d_batch", "both", "--d_batch"), ("eval_samples", 1, "--eval_samples"),
    ("g_beta1", 1.0, "--g_beta1"), ("label_smoothing", -0.1, "--label_smoothing"),
    ("g_ema", 1.0, "--g_ema"), ("g_learning_rate", 0.0, "--g_learning_rate"),
    ("pinned_monitor", " ", "--pinned_monitor"),
    ("change_on_resume", ("latent_dim",), "--change_on_resume")])
def test_config_rejects_bad_values(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        dcgan.DCGANConfig(**{field: value}).resolved()


def test_config_cross_option_rules_and_defaults():
    with pytest.raises(ValueError, match="--fd_patience=2 needs --eval_samples > 0"):
        dcgan.DCGANConfig(fd_patience=2, eval_samples=0).resolved()
    with pytest.raises(ValueError, match="--epochs, --steps or --max_steps"):
        dcgan.DCGANConfig(epochs=None).resolved()
    with pytest.raises(ValueError, match="--augment_factor=3 needs --image_dir"):
        dcgan.DCGANConfig(augment_factor=3).resolved()
    c = dcgan.DCGANConfig(epochs=None, max_steps=7, preset="writeup").resolved()
    assert (c.steps, c.g_learning_rate, c.d_learning_rate, c.d_beta1) == (7, 2e-4, 1e-5, 0.1)
    assert dcgan.DCGANConfig(steps=9, max_steps=7).resolved().steps == 7
    # The weight average's default decay is declared once, in models.dcgan.
    assert dcgan.DCGANConfig().g_ema == dcgan_model.DEFAULT_G_EMA


def _parse(define_cls, argv):
    fv = flags.FlagValues()
    binary.define_flags(define_cls, fv)
    fv(argv)
    return options.from_flags(define_cls, fv)


@pytest.mark.parametrize("arg,flag", [
    ("--d_steps=0", "d_steps"), ("--d_batch=both", "d_batch"),
    ("--generator=deconv", "generator"), ("--optimizer=sgd", "optimizer"),
    ("--learning_rate=0.1", "learning_rate"), ("--augment_factor=3", "augment_factor"),
    ("--image_dir=/no/such/dir", "image_dir"), ("--eval_samples=1", "eval_samples"),
    ("--g_beta1=1.5", "g_beta1"), ("--strategy=mirrored", "strategy"),
    ("--fd_patience=2 --eval_samples=0", "fd_patience"), ("--d_steps=x", "d_steps")])
def test_flags_rejected_naming_the_flag(arg, flag):
    """Unknown flags (the one-optimizer flags the DCGAN does not have) and unparsable
    values fail in absl's parser; bad values and combinations in the configuration."""
    with pytest.raises((flags.Error, ValueError), match=flag):
        _parse(dcgan.DCGANConfig, ["train.dcgan", "--workdir=/tmp/x"] + arg.split()
               ).resolved()


def test_readme_flags_parse_into_config():
    c = _parse(dcgan.DCGANConfig, ["train.dcgan", "--workdir=runs/dcgan_mixed",
                                   "--d_batch=mixed", "--epochs=10", "--fd_patience=3"]
               ).resolved()
    assert (c.d_batch, c.epochs, c.fd_patience, c.batch_size, c.g_ema) == (
        "mixed", 10, 3, 64, 0.999)
    c = _parse(dcgan.DCGANConfig, ["train.dcgan", "--workdir=runs/dcgan_split_ema",
                                   "--epochs=25", "--fd_patience=0", "--export",
                                   "--nod_batchnorm", "--max_steps=7"]).resolved()
    assert (c.epochs, c.export, c.d_batchnorm, c.steps, c.log_every) == (
        25, True, False, 7, 50)
    assert dcgan.DCGANConfig().epochs == 5
    g = _parse(gan_eval.GanEvalConfig, ["train.gan_eval", "--generator=runs/x",
                                        f"--classifier={ROOT}"])
    assert (g.generator, g.classifier, g.num_samples) == ("runs/x", ROOT, 10000)
    with pytest.raises(ValueError, match="--num_samples"):
        _parse(gan_eval.GanEvalConfig, ["train.gan_eval", "--num_samples=1"])


@pytest.mark.parametrize("module,cls,required", [
    ("train.dcgan", dcgan.DCGANConfig, True),
    ("train.gan_eval", gan_eval.GanEvalConfig, False)])
def test_binary_flags_are_exactly_its_configs_fields(monkeypatch, module, cls, required):
    """The binary is `binary.main` over its config (run here with `binary.main`
    replaced by a recorder) and defines no flag of its own; `binary.main` defines
    --workdir and one flag per field (`binary.define_flags`)."""
    calls = []
    monkeypatch.setattr(binary, "main", lambda *a, **k: calls.append((a, k)))
    before = set(flags.FLAGS)
    runpy.run_module(module, run_name="__main__")
    assert set(flags.FLAGS) == before  # nothing defined at import or in __main__
    ((args, kwargs),) = calls
    assert args[0] == module and args[1] is cls
    assert kwargs.get("workdir_required", True) is required
    fv = flags.FlagValues()
    binary.define_flags(args[1], fv)
    assert set(fv) == {f.name for f in dataclasses.fields(cls)} | {"workdir"}


def test_binary_reports_a_bad_flag_in_one_line(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "train.dcgan", f"--workdir={tmp_path}",
                           "--d_steps=0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "train.dcgan: error: --d_steps must be a positive integer, got 0"), proc.stderr
    assert not os.listdir(tmp_path)  # nothing written
