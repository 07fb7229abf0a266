"""train/dcgan.py and train/gan_eval.py: a short end-to-end run in a temp workdir
(pictures, metrics.json keys, steps, TensorBoard, checkpoints, export), gan_eval on
that run with a tiny classifier (checkpoint and SavedModel give the same samples; the
numbers are reproducible), the measurement on inputs with known answers, and flag /
config validation (in process and through the binary).

D's hidden Dense layer is 32 wide here instead of 2048 (--d_dense_units), which makes
its checkpoints under 10 MB instead of 100 MB; the full networks are tested in
tests/test_dcgan_model.py. The classifier is an untrained VatCNN saved the way
`train.vat` saves one (checkpoints/ + metrics.json's config); the numbers are checked
for consistency and known answers, not quality (the quality runs, with the cached
classifier trained by `train.vat`: README).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from models import vat_cnn
from tfcore import gan_metrics
from tfcore.training import checkpointing, metrics_io, summaries
from tfcore.data import load_mnist, mnist_images
from train import dcgan, gan_eval

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KEYS = ("classifier_score", "frechet_distance", "classes_covered",
        "real_classifier_score", "real_frechet_distance")


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    (x_tr, y_tr), (x_te, y_te) = load_mnist(mnist_dir)
    return (x_tr[:96], y_tr[:96]), (x_te[:48], y_te[:48])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A train.vat-style workdir: checkpoints/ holding a VatCNN as 'model' (random
    weights: training one would cost a minute) and metrics.json's config."""
    workdir = str(tmp_path_factory.mktemp("clf"))
    model = vat_cnn.VatCNN(dropout=True)
    model(tf.zeros([1, 28, 28, 1]))
    ckpt = checkpointing.make_checkpoint({"model": model})
    checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), ckpt).save(1)
    metrics_io.write_metrics(workdir, {"config": {"dropout": True, "vat": False}})
    return workdir


@pytest.fixture(scope="module")
def run(small_mnist, classifier_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dcgan"))
    cfg = dcgan.DCGANConfig(
        epochs=None, max_steps=4, eval_every=2, batch_size=8, val_examples=12,
        eval_samples=20, final_eval_samples=24, grid_size=2, interp_rows=2,
        interp_steps=3, log_every=1, export=True, progress=False, jit="off",
        classifier=classifier_dir, latent_dim=5, d_dense_units=32)
    metrics = dcgan.train_and_evaluate(cfg, workdir, mnist=small_mnist)
    return workdir, metrics


def test_end_to_end_outputs(run):
    workdir, metrics = run
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    assert on_disk["status"] == "done" and on_disk["step"] == 4
    # Timing: two 2-step periods; the rate is the second one's (the first traces).
    assert len(on_disk["epoch_seconds"]) == 2
    assert all(isinstance(s, float) and s > 0 for s in on_disk["epoch_seconds"])
    assert isinstance(on_disk["steps_per_second"], float)
    assert on_disk["steps_per_second"] == pytest.approx(2 / on_disk["epoch_seconds"][1])
    for m in (metrics, on_disk):
        for key in KEYS:
            assert np.isfinite(m[key]), key
        assert m["frechet_distance"] >= 0 and 1.0 <= m["classifier_score"] <= 10.0
        assert m["classes_covered"] in range(11) and len(m["class_shares"]) == 10
        assert m["num_samples"] == 24
    # Two 2-step periods: per-period pictures and validation; per-step records.
    assert metrics["samples"] == ["samples_epoch_1.png", "samples_epoch_2.png"]
    for name in metrics["samples"]:
        assert Image.open(os.path.join(workdir, name)).size == (67, 67)  # 2*32 + 3
    assert Image.open(os.path.join(workdir, "interpolation.png")).size == (100, 67)
    history = on_disk["history"]
    for key in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "val_d_loss",
                "val_d_loss_real", "val_d_loss_fake", "val_d_acc_real", "val_d_acc_fake",
                "val_frechet_distance", "val_classifier_score", "val_classes_covered",
                "val_d_loss_batch_stats", "val_d_acc_real_batch_stats",
                "val_d_acc_fake_batch_stats", "val_d_acc_batch_stats"):
        assert len(history[key]) == 2 and all(v is not None for v in history[key]), key
    for key in ("val_d_acc_real", "val_d_acc_fake", "val_d_acc_real_batch_stats"):
        assert all(0.0 <= v <= 1.0 for v in history[key]), key
    steps = on_disk["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "d_acc_real", "d_acc_fake"} <= set(steps[0])
    lines = open(os.path.join(workdir, dcgan.STEPS_FILE)).read().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    tags = {t for t, _, _ in summaries.read_events(os.path.join(workdir, "train"))}
    assert {"g_loss", "d_acc_real", "samples", "interpolation"} <= tags
    eval_tags = {t for t, _, _ in summaries.read_events(os.path.join(workdir, "eval"))}
    assert {"epoch_d_acc_fake", "epoch_frechet_distance"} <= eval_tags
    for d in ("checkpoints", "best", "saved_model"):
        assert os.path.isdir(os.path.join(workdir, d)), d
    assert json.load(open(os.path.join(workdir, "config.json")))["latent_dim"] == 5


def test_gan_eval_on_the_run(run, small_mnist, classifier_dir, tmp_path):
    workdir, metrics = run
    fn_ckpt, latent, found = gan_eval.load_generator(workdir)
    fn_sm, latent_sm, _ = gan_eval.load_generator(os.path.join(workdir, "saved_model"))
    assert latent == latent_sm == (5,) and found == os.path.abspath(workdir)
    z = np.random.default_rng(0).uniform(-1, 1, size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(fn_ckpt(z), fn_sm(z), atol=1e-5)
    # The same seed and sample count as the run's final measurement: the same numbers
    # (the run ended at its last checkpoint, which load_generator restored).
    out = str(tmp_path)
    result = gan_eval.run(workdir, classifier_dir, num_samples=24, seed=0, workdir=out,
                          mnist=small_mnist)
    for key in KEYS:
        assert result[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    written = json.load(open(os.path.join(out, "metrics.json")))
    assert all(written[k] == pytest.approx(result[k]) for k in KEYS)
    text = gan_eval.format_result(result)
    assert "classifier score" in text and "test-train" in text
    with pytest.raises(FileNotFoundError, match="--generator"):
        gan_eval.load_generator(str(tmp_path))


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
    cfg = dcgan.DCGANConfig(image_dir=str(tmp_path), augment_factor=3).validate()
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


def test_pinned_stop():
    cb = dcgan.DiscriminatorPinnedStop("val_d_acc", patience=3, tol=0.01)
    cb.set_loop(_Loop())
    for epoch, acc in enumerate([1.0, 0.995, 0.5, 1.0, 0.999]):
        cb.on_epoch_end(epoch, {"val_d_acc": acc, "val_d_acc_batch_stats": 1.0})
        assert not cb.loop.stop_training
    cb.on_epoch_end(5, {"val_d_acc": 0.0})  # 0 counts as pinned too: 3 in a row
    assert cb.loop.stop_training and cb.stopped_epoch == 5
    with pytest.raises(ValueError, match="patience.*0"):
        dcgan.DiscriminatorPinnedStop(patience=0)


def test_period_data_and_interpolation_latents():
    from tfcore.data import DeviceDataset
    inner = DeviceDataset(np.arange(10, dtype=np.float32), 2, seed=1)  # 5 steps / pass
    periods = dcgan.PeriodData(inner, 3)
    # Period 2, step 1 = global step 7 = step 2 of pass 1.
    np.testing.assert_array_equal(periods.batch(2, 1), inner.batch(1, 2))
    z = dcgan.interpolation_latents((2, 3), rows=2, steps=5, seed=0).reshape(2, 5, 2, 3)
    np.testing.assert_allclose(z[:, 2], (z[:, 0] + z[:, 4]) / 2, atol=1e-6)
    np.testing.assert_allclose(z[:, 1], 0.75 * z[:, 0] + 0.25 * z[:, 4], atol=1e-6)
    assert np.all(np.abs(z) <= 1) and not np.allclose(z[0, 0], z[1, 0])


@pytest.mark.parametrize("field,value,flag", [
    ("d_steps", 0, "--d_steps"), ("preset", "fast", "--preset"),
    ("d_batch", "both", "--d_batch"), ("eval_samples", 1, "--eval_samples"),
    ("g_beta1", 1.0, "--g_beta1"), ("label_smoothing", -0.1, "--label_smoothing"),
    ("g_ema", 1.0, "--g_ema")])
def test_config_rejects_bad_values(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        dcgan.DCGANConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match="--fd_patience"):
        dcgan.DCGANConfig(fd_patience=2, eval_samples=0).validate()
    with pytest.raises(ValueError, match="--epochs, --steps or --max_steps"):
        dcgan.DCGANConfig(epochs=None).validate()


def _fresh(define):
    fv = flags.FlagValues()
    define(fv)
    return fv


@pytest.mark.parametrize("arg,flag", [
    ("--d_steps=0", "d_steps"), ("--d_batch=both", "d_batch"),
    ("--generator=deconv", "generator"), ("--optimizer=sgd", "optimizer"),
    ("--learning_rate=0.1", "learning_rate"), ("--augment_factor=3", "augment_factor"),
    ("--image_dir=/no/such/dir", "image_dir"), ("--eval_samples=1", "eval_samples"),
    ("--g_beta1=1.5", "g_beta1"), ("--strategy=mirrored", "strategy"),
    ("--fd_patience=2 --eval_samples=0", "fd_patience")])
def test_flags_rejected_naming_the_flag(arg, flag):
    fv = _fresh(dcgan.define_flags)
    with pytest.raises(flags.IllegalFlagValueError, match=flag):
        fv(["train.dcgan", "--workdir=/tmp/x"] + arg.split())


def test_flags_parse_into_config():
    fv = _fresh(dcgan.define_flags)
    fv(["train.dcgan", "--workdir=/tmp/x", "--d_batch=mixed", "--latent_dim=30",
        "--preset=writeup", "--max_steps=7", "--nod_batchnorm"])
    c = dcgan.config_from_flags(fv).validate()
    assert (c.d_batch, c.latent_dim, c.preset, c.max_steps, c.d_batchnorm) == (
        "mixed", 30, "writeup", 7, False)
    assert c.batch_size == 64 and c.epochs == 5 and c.total_steps_cap == 7
    ev = _fresh(gan_eval.define_flags)
    with pytest.raises(flags.IllegalFlagValueError, match="generator"):
        ev(["train.gan_eval"])
    with pytest.raises(flags.IllegalFlagValueError, match="num_samples"):
        ev(["train.gan_eval", f"--generator={ROOT}", "--num_samples=1"])


def test_binary_rejects_bad_flag(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "train.dcgan", f"--workdir={tmp_path}", "--d_steps=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode != 0 and "--d_steps" in proc.stderr
    assert not os.listdir(tmp_path)


def test_generator_ema_run(small_mnist, classifier_dir, tmp_path):
    """--g_ema: an averaged generator is trained along, checkpointed as
    'generator_ema', and is what the export and gan_eval's loader sample from."""
    workdir = str(tmp_path / "ema")
    cfg = dcgan.DCGANConfig(
        epochs=None, max_steps=3, batch_size=8, val_examples=12, eval_samples=0,
        final_eval_samples=0, grid_size=2, interp_rows=2, interp_steps=3, export=True,
        progress=False, jit="off", classifier=classifier_dir, latent_dim=5,
        d_dense_units=32, g_ema=0.5, tensorboard=False)
    dcgan.train_and_evaluate(cfg, workdir, mnist=small_mnist)
    from models import dcgan as dcgan_model
    last = dcgan_model.Generator(latent_dim=5)
    ema = dcgan_model.Generator(latent_dim=5)
    for g in (last, ema):
        g(tf.zeros([1, 5]))
    checkpointing.restore_objects(os.path.join(workdir, "checkpoints"),
                                  {"generator": last, "generator_ema": ema})
    z = np.random.default_rng(1).uniform(-1, 1, size=(4, 5)).astype(np.float32)
    want = ema(z, training=False).numpy()
    assert not np.allclose(want, last(z, training=False).numpy(), atol=1e-4)
    fn, _, _ = gan_eval.load_generator(workdir)
    np.testing.assert_allclose(fn(z), want, atol=1e-5)
    fn_sm, _, _ = gan_eval.load_generator(os.path.join(workdir, "saved_model"))
    np.testing.assert_allclose(fn_sm(z), want, atol=1e-5)
