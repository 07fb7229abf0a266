"""train.autoencoder end to end (a few steps on a small real-MNIST subset, in a temp
workdir), its flag validation, and train.ae_table's helpers."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfcore import image_grid
from tfcore.training import summaries
from train import ae_table
from train import autoencoder as binary


def _config(mnist_dir, **kw):
    base = dict(steps=6, batch_size=16, train_subset=64, test_subset=40, num_images=4,
                eval_batch_size=20, data_dir=mnist_dir)
    return binary.Config(**{**base, **kw})


def test_end_to_end_conv_denoising(tmp_path, mnist_dir):
    workdir = str(tmp_path / "run")
    metrics = binary.train_and_evaluate(
        _config(mnist_dir, model="conv", decoder="upsample", noise_factor=0.3), workdir)
    with open(os.path.join(workdir, "metrics.json")) as f:
        on_disk = json.load(f)
    assert on_disk["test_bce"] == pytest.approx(metrics["test_bce"])
    for key in ("test_bce", "test_mse", "history", "epochs", "seconds", "config"):
        assert key in on_disk, key
    assert on_disk["status"] == "done" and on_disk["steps"] == 6
    # Timing: two epochs (4 steps, then 2); the rate is the second one's (the first
    # traces the step).
    assert on_disk["steps_per_epoch"] == 4
    assert len(on_disk["epoch_seconds"]) == 2
    assert all(isinstance(s, float) and s > 0 for s in on_disk["epoch_seconds"])
    assert isinstance(on_disk["steps_per_second"], float)
    assert on_disk["steps_per_second"] == pytest.approx(2 / on_disk["epoch_seconds"][1])
    assert on_disk["eval_set"] == "test"
    assert on_disk["xla"] is bool(tf.config.list_physical_devices("GPU"))  # conv: graph
    hist = on_disk["history"]
    assert len(hist["loss"]) == len(hist["val_bce"]) == len(hist["val_mse"]) == 2
    assert len(hist["learning_rate"]) == 2  # conv's default schedule is logged
    # The last epoch evaluated the same (noisy) test inputs with the final weights.
    assert on_disk["test_bce"] == pytest.approx(hist["val_bce"][-1], rel=1e-6)
    assert 0 < on_disk["test_mse"] < on_disk["test_bce"] < 1
    # Picture: clean, noisy and reconstructed rows of 4 digits.
    png = image_grid.load_png(os.path.join(workdir, "reconstructions.png"))
    assert png.shape == (3 * 28 + 4, 4 * 28 + 5, 1)
    cells = image_grid.split_grid(png, 3, 4)
    _, (x_test, _) = __import__("tfcore").data.load_mnist(mnist_dir)
    np.testing.assert_array_equal(cells[:4, ..., 0], x_test[:4])
    assert not np.array_equal(cells[4:8], cells[:4])  # the noisy row differs
    events = summaries.read_events(os.path.join(workdir, "train"))
    tb = [v for tag, _, v in events if tag == "reconstructions"]
    assert len(tb) == 2  # once per epoch
    assert tf.io.decode_png(tb[-1][2]).shape == png.shape


def test_dense_tied_export(tmp_path, mnist_dir):
    workdir = str(tmp_path / "tied")
    metrics = binary.train_and_evaluate(
        _config(mnist_dir, model="dense", tied=True, hidden=16, steps=3, export=True,
                tensorboard=False), workdir)
    assert metrics["num_variables"] == 3
    assert metrics["num_params"] == 784 * 16 + 16 + 784
    assert metrics["xla"] is True  # --jit=auto: the dense model's choice, CPU or GPU
    assert metrics["config"]["lr_schedule"] == "constant"
    loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    _, (x_test, _) = __import__("tfcore").data.load_mnist(mnist_dir)
    x = x_test[:40, ..., None].astype(np.float32) / 255
    out = loaded.signatures["serving_default"](images=tf.constant(x))["reconstructions"]
    assert out.shape == (40, 28, 28, 1)
    np.testing.assert_allclose(float(np.mean((out.numpy() - x) ** 2)),
                               metrics["test_mse"], rtol=1e-5)


def test_config_rejects_bad_combinations():
    with pytest.raises(ValueError, match="tied=True needs model='dense'"):
        binary.Config(model="conv", tied=True).resolved()
    with pytest.raises(ValueError, match="decoder='upsample' needs model='conv'"):
        binary.Config(model="dense", decoder="upsample").resolved()
    c = binary.Config(model="conv").resolved()
    assert (c.decoder, c.lr_schedule, c.learning_rate) == (
        "transpose", binary.CONV_SCHEDULE, 2e-2)
    assert binary.Config(model="conv", decoder="upsample").resolved().learning_rate == 1e-2
    assert binary.Config(model="conv", learning_rate=3e-3).resolved().learning_rate == 3e-3


@pytest.mark.parametrize("args,flag", [
    (["--hidden=0"], "--hidden"),
    (["--noise_factor=-1"], "--noise_factor"),
    (["--model=rnn"], "--model"),
    (["--model=conv", "--decoder=bogus"], "--decoder"),
    (["--model=conv", "--tied"], "--tied"),
    (["--decoder=upsample"], "--decoder"),
    (["--lr_schedule=linear"], "--lr_schedule"),
    (["--steps=5", "--warmup_steps=10"], "--warmup_steps"),
    (["--hidden_activation=nope"], "--hidden_activation"),
    (["--batch_size=0"], "--batch_size"),
])
def test_bad_flags_are_rejected_naming_the_flag(args, flag):
    fv = flags.FlagValues()
    binary.define_flags(fv)
    with pytest.raises(flags.Error, match=flag):
        fv(["autoencoder", "--workdir=/tmp/x"] + args)


def test_good_flags_map_to_config():
    fv = flags.FlagValues()
    binary.define_flags(fv)
    fv(["autoencoder", "--workdir=/tmp/x", "--model=conv", "--decoder=upsample",
        "--noise_factor=0.5", "--lr_schedule=step", "--learning_rate=0.002"])
    c = binary.config_from_flags(fv).resolved()
    assert (c.model, c.decoder, c.noise_factor, c.lr_schedule, c.learning_rate) == (
        "conv", "upsample", 0.5, "step", 0.002)


def test_ae_table_helpers():
    assert ae_table._parse_candidate("cosine:0.01:200") == {
        "lr_schedule": "cosine", "learning_rate": 0.01, "warmup_steps": 200}
    for bad in ("cosine:0.01", "linear:0.01:0", "cosine:-1:0", "cosine:x:0"):
        assert ae_table._parse_candidate(bad) is None
    cfg = binary.Config(model="dense").resolved().__dict__
    table = ae_table.format_table({"dense": {
        "config": cfg, "num_params": 981409, "steps": 10000, "test_bce": 0.0651,
        "test_mse": 0.0071, "seconds": 321.0}})
    row = table.splitlines()[2]
    assert "0.0651" in row and "<= 0.066 ✓" in row and "10,000" in row
    fv = flags.FlagValues()
    ae_table.define_flags(fv)
    with pytest.raises(flags.Error, match="--configs"):
        fv(["ae_table", "--configs=dense,bogus"])
    with pytest.raises(flags.Error, match="--search_candidates"):
        fv(["ae_table", "--search_candidates=cosine:0.01"])


def test_ae_table_never_deletes_a_finished_run_with_other_settings(tmp_path):
    """A finished run whose settings differ is refused (not wiped) unless --rerun."""
    workdir = tmp_path / "conv_transpose"
    (workdir / "checkpoints").mkdir(parents=True)
    record = {"status": "done", "test_bce": 0.1, "config": {"steps": 5}}
    (workdir / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="finished run with other settings.*--rerun"):
        ae_table.run_config("conv_transpose", ae_table.CONFIGS["conv_transpose"],
                            str(workdir), dict(steps=7, batch_size=8))
    assert json.loads((workdir / "metrics.json").read_text()) == record
    assert (workdir / "checkpoints").is_dir()


def test_ae_table_search_ranks_on_validation(tmp_path, mnist_dir):
    """Two tiny conv candidates on a held-out split: ranked by val BCE, the table names
    each wsd candidate's decay share (two rates 0.01 runs differ only by it)."""
    base = dict(steps=4, batch_size=16, train_subset=96, test_subset=20, num_images=2,
                eval_batch_size=16, data_dir=mnist_dir, val_size=32, tensorboard=False)
    rows = ae_table.run_search(str(tmp_path), ["wsd:0.01:0", "wsd:0.01:0:0.5"],
                               ["transpose"], base)
    assert len(rows) == 2 and rows[0]["val_bce"] <= rows[1]["val_bce"]
    assert {r["name"] for r in rows} == {"transpose_wsd_0.01_w0_4",
                                         "transpose_wsd_0.01_w0_d0.5_4"}
    md = (tmp_path / "search.md").read_text()
    assert "| last 30% |" in md and "| last 50% |" in md
    assert json.loads((tmp_path / "search.json").read_text())[0]["val_bce"] == \
        pytest.approx(rows[0]["val_bce"])


def test_flag_choices_match_the_library():
    """train.autoencoder spells its enum choices out (parsing flags imports no
    TensorFlow); they must stay the library's."""
    from models import autoencoder as ae_model
    from tfcore.training import lr_schedule
    assert binary.SCHEDULES == lr_schedule.SCHEDULES
    assert binary.DECODERS == ae_model.DECODERS
