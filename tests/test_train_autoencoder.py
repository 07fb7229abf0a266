"""train.autoencoder_lib end to end (a few steps on a small real-MNIST subset, in a
temp workdir: metrics.json, picture, TensorBoard, SavedModel, a resume with a changed
learning rate), the configuration's checks (in process, from flags, and through the
binary in a subprocess), the binaries' flags (exactly their configurations' fields),
the README's commands, and train.ae_table's helpers and search."""
import dataclasses
import json
import os
import re
import runpy
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfcore import activations, image_grid
from tfcore.data import load_mnist
from tfcore.training import binary, callbacks as tfcallbacks, options, summaries
from train import ae_table_lib as ae_table
from train import autoencoder_lib as lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    (x_tr, y_tr), (x_te, y_te) = load_mnist(mnist_dir)
    return (x_tr[:128], y_tr[:128]), (x_te[:40], y_te[:40])


def _config(**kw):
    base = dict(steps=6, batch_size=16, train_subset=64, num_images=4,
                eval_batch_size=20, progress=False)
    return lib.Config(**{**base, **kw})


def test_end_to_end_conv_denoising(tmp_path, small_mnist):
    workdir = str(tmp_path / "run")
    metrics = lib.train_and_evaluate(
        _config(model="conv", decoder="upsample", noise_factor=0.3), workdir,
        data=small_mnist)
    with open(os.path.join(workdir, "metrics.json")) as f:
        on_disk = json.load(f)
    assert on_disk["test_bce"] == pytest.approx(metrics["test_bce"])
    for key in ("test_bce", "test_mse", "history", "epochs", "seconds", "train_seconds",
                "config", "num_params", "num_variables"):
        assert key in on_disk, key
    assert on_disk["status"] == "done" and on_disk["steps"] == 6
    assert on_disk["binary"] == "train.autoencoder"
    assert on_disk["seconds"] == on_disk["train_seconds"] > 0
    # Timing: two epochs (4 steps, then 2); the rate is the second one's (the first
    # traces the step).
    assert on_disk["steps_per_epoch"] == 4
    assert len(on_disk["epoch_seconds"]) == 2
    assert all(isinstance(s, float) and s > 0 for s in on_disk["epoch_seconds"])
    assert isinstance(on_disk["steps_per_second"], float)
    assert on_disk["steps_per_second"] == pytest.approx(2 / on_disk["epoch_seconds"][1])
    assert on_disk["eval_set"] == "test"
    assert on_disk["xla"] is bool(tf.config.list_physical_devices("GPU"))  # conv: graph
    cfg = on_disk["config"]
    assert (cfg["optimizer"], cfg["learning_rate"], cfg["lr_schedule"]) == (
        "adam", lib.CONV_LEARNING_RATE["upsample"], "wsd")
    # The conv default's 200 warm-up steps shrink to a tenth of this 6-step run.
    assert cfg["warmup_steps"] is None and on_disk["warmup_steps"] == 0
    hist = on_disk["history"]
    assert len(hist["loss"]) == len(hist["val_bce"]) == len(hist["val_mse"]) == 2
    assert len(hist["learning_rate"]) == 2  # conv's default schedule is logged
    # The last epoch evaluated the same (noisy) test inputs with the final weights.
    assert on_disk["test_bce"] == pytest.approx(hist["val_bce"][-1], rel=1e-6)
    assert 0 < on_disk["test_mse"] < on_disk["test_bce"] < 1
    # Picture: clean, noisy and reconstructed rows of 4 digits.
    assert on_disk["reconstructions"] == "reconstructions.png"
    png = image_grid.load_png(os.path.join(workdir, "reconstructions.png"))
    assert png.shape == (3 * 28 + 4, 4 * 28 + 5, 1)
    cells = image_grid.split_grid(png, 3, 4)
    np.testing.assert_array_equal(cells[:4, ..., 0], small_mnist[1][0][:4])
    assert not np.array_equal(cells[4:8], cells[:4])  # the noisy row differs
    events = summaries.read_events(os.path.join(workdir, "train"))
    tb = [v for tag, _, v in events if tag == "reconstructions"]
    assert len(tb) == 2  # once per epoch
    assert tf.io.decode_png(tb[-1][2]).shape == png.shape
    assert any(tag == "epoch_bce" for tag, _, _ in
               summaries.read_events(os.path.join(workdir, "eval")))


class _LearningRate(tfcallbacks.Callback):
    """Keeps the optimizer's learning rate at the end of training."""

    def on_train_end(self, logs=None):
        self.value = float(self.loop.objects["optimizer"].learning_rate.numpy())


def test_dense_tied_export_and_resume_with_a_new_learning_rate(tmp_path, small_mnist):
    workdir = str(tmp_path / "tied")
    cfg = _config(model="dense", tied=True, hidden=16, steps=3, tensorboard=False)
    metrics = lib.train_and_evaluate(cfg, workdir, data=small_mnist)
    assert metrics["num_variables"] == 3
    assert metrics["num_params"] == 784 * 16 + 16 + 784
    assert metrics["xla"] is True  # --jit=auto: the dense model's choice, CPU or GPU
    assert metrics["config"]["lr_schedule"] == "constant"
    assert metrics["config"]["learning_rate"] == lib.DENSE_LEARNING_RATE
    # Another learning rate is refused on resume unless named in --change_on_resume,
    # then honoured (the optimizer's rate after the restore) and recorded.
    more = dataclasses.replace(cfg, steps=5, resume=True, export=True, jit="off",
                               learning_rate=5e-4)
    with pytest.raises(ValueError, match=r"--learning_rate=0.001 -> 0.0005"):
        lib.train_and_evaluate(more, workdir, data=small_mnist)
    probe = _LearningRate()
    resumed = lib.train_and_evaluate(
        dataclasses.replace(more, change_on_resume=("learning_rate",)), workdir,
        data=small_mnist, callbacks=[probe])
    assert resumed["steps"] == 5 and probe.value == pytest.approx(5e-4)
    assert resumed["changes"] == [{"step": 3, "option": "learning_rate", "old": 1e-3,
                                   "new": 5e-4}]
    loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    x = small_mnist[1][0][..., None].astype(np.float32) / 255
    out = loaded.signatures["serving_default"](images=tf.constant(x))["reconstructions"]
    assert out.shape == (40, 28, 28, 1)
    np.testing.assert_allclose(float(np.mean((out.numpy() - x) ** 2)),
                               resumed["test_mse"], rtol=1e-5)


def test_config_resolves_defaults_and_rejects_bad_combinations():
    with pytest.raises(ValueError, match="--tied needs --model=dense"):
        lib.Config(model="conv", tied=True).resolved()
    with pytest.raises(ValueError, match="--decoder=upsample needs --model=conv"):
        lib.Config(model="dense", decoder="upsample").resolved()
    with pytest.raises(ValueError, match="--warmup_steps must be smaller than --steps"):
        lib.Config(steps=5, warmup_steps=5).resolved()
    c = lib.Config(model="conv").resolved()
    assert (c.decoder, c.lr_schedule, c.learning_rate, c.optimizer, c.steps) == (
        "transpose", lib.CONV_SCHEDULE, 2e-2, "adam", 10000)
    assert lib.Config(model="conv", decoder="upsample").resolved().learning_rate == 1e-2
    assert lib.Config(model="conv", learning_rate=3e-3).resolved().learning_rate == 3e-3
    # --epochs alone: no step limit (the 10,000 only when neither is given).
    assert lib.Config(epochs=3).resolved().steps is None
    d = lib.Config().resolved()
    assert (d.decoder, d.lr_schedule, d.learning_rate) == (None, "constant", 1e-3)


def test_schedule_warmup_rule():
    conv = lib.Config(model="conv").resolved()
    assert lib.schedule(conv, 10000)[1] == lib.CONV_WARMUP_STEPS
    assert lib.schedule(conv, 200)[1] == 20  # a run not longer than the warm-up
    assert lib.schedule(dataclasses.replace(conv, warmup_steps=7), 100)[1] == 7
    with pytest.raises(ValueError, match="--warmup_steps must be smaller than the run's "
                                         "40 steps, got 50"):
        lib.schedule(dataclasses.replace(conv, warmup_steps=50), 40)
    assert lib.schedule(lib.Config().resolved(), 100) == (None, 0)  # dense: constant
    lr_fn, warmup = lib.schedule(lib.Config(lr_schedule="cosine").resolved(), 100)
    assert warmup == 0 and float(lr_fn(tf.constant(100))) == pytest.approx(0.0, abs=1e-9)


def _flag_config(cls, argv):
    fv = flags.FlagValues()
    binary.define_flags(cls, fv)
    fv(["binary"] + list(argv))
    return options.from_flags(cls, fv)


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
    (["--decay_fraction=0"], "--decay_fraction"),
    (["--num_images=101"], "--num_images"),
    (["--val_size=-1"], "--val_size"),
    (["--train_subset=0"], "--train_subset"),
    (["--optimizer=lbfgs"], "--optimizer"),
    (["--learning_rate=0"], "--learning_rate"),
])
def test_bad_flags_are_rejected_naming_the_flag(args, flag):
    with pytest.raises(ValueError, match=flag):
        _flag_config(lib.Config, ["--workdir=/tmp/x"] + args).resolved()


def test_good_flags_map_to_config():
    c = _flag_config(lib.Config, [
        "--workdir=/tmp/x", "--model=conv", "--decoder=upsample", "--noise_factor=0.5",
        "--lr_schedule=step", "--learning_rate=0.002"]).resolved()
    assert (c.model, c.decoder, c.noise_factor, c.lr_schedule, c.learning_rate,
            c.steps) == ("conv", "upsample", 0.5, "step", 0.002, 10000)


def test_data_that_cannot_provide_the_split_or_a_batch_is_refused(small_mnist):
    with pytest.raises(ValueError, match=r"--val_size \(with the training images\) must "
                                         r"be an integer in \[0, 63\], got 64"):
        lib.load_data(_config(val_size=64), small_mnist)
    with pytest.raises(ValueError, match=r"--batch_size \(with the training images\)"):
        lib.load_data(_config(batch_size=65), small_mnist)


def test_activation_choices_are_the_library_names():
    for name in lib.ACTIVATIONS:
        assert callable(activations.get(name))


def _run_main(module, monkeypatch):
    """Runs binary `module` as __main__ with `binary.main` recorded instead of run;
    returns its arguments and the names it added to absl's global FLAGS."""
    calls = []
    monkeypatch.setattr(binary, "main", lambda *a, **k: calls.append((a, k)))
    before = set(flags.FLAGS)
    runpy.run_module(module, run_name="__main__")
    assert len(calls) == 1
    return calls[0], set(flags.FLAGS) - before


@pytest.mark.filterwarnings("ignore:'train.ae_table' found in sys.modules")
@pytest.mark.parametrize("module,cls", [("train.autoencoder", lib.Config),
                                        ("train.ae_table", ae_table.AeTableConfig)])
def test_binary_flags_are_exactly_its_config_fields(module, cls, monkeypatch):
    """The binary defines no flag of its own: it hands its configuration class to
    binary.main, whose flags are that class's fields plus --workdir."""
    (args, _), added = _run_main(module, monkeypatch)
    assert not added
    assert args[0] == module and args[1].__name__ == cls.__name__
    assert args[2].__name__ in ("train_and_evaluate", "run")
    names = [f.name for f in dataclasses.fields(cls)]
    assert [f.name for f in dataclasses.fields(args[1])] == names
    fv = flags.FlagValues()
    binary.define_flags(cls, fv)
    assert set(fv) == set(names) | {"workdir"}


def test_binary_rejects_bad_flag(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "train.autoencoder",
                           f"--workdir={tmp_path}", "--model=conv", "--tied"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    ours = [l for l in proc.stderr.splitlines() if l.startswith("train.autoencoder:")]
    assert ours == ["train.autoencoder: error: --tied needs --model=dense, got "
                    "--model=conv"]
    assert proc.stderr.strip().splitlines()[-1] == ours[0]
    assert not os.listdir(tmp_path)  # nothing written


def _commands(text, module):
    """The argument lists of every `python -m <module>` command in `text` (code
    blocks and inline code; `a|b` alternatives and `[--optional]` parts expanded)."""
    text = re.sub(r"\\+\n", " ", text)
    out = []
    for match in re.finditer(rf"python -m {re.escape(module)}((?: +[^ `#\n]+)*)", text):
        variants = [[]]
        for token in shlex.split(match.group(1).replace("\\|", "|")):
            token = token.strip("[]")
            name, _, values = token.partition("=")
            alternatives = [f"{name}={v}" for v in values.split("|")] if values else [token]
            variants = [v + [a] for v in variants for a in alternatives]
        out += variants
    return out


@pytest.mark.parametrize("module,cls", [("train.autoencoder", lib.Config),
                                        ("train.ae_table", ae_table.AeTableConfig)])
def test_readme_and_docstring_commands_parse(module, cls):
    sources = [open(os.path.join(ROOT, name)).read() for name in
               ("README.md", "Makefile", module.replace(".", "/") + ".py")]
    commands = [c for s in sources for c in _commands(s, module)]
    assert len(commands) >= (6 if module == "train.autoencoder" else 4)
    for argv in commands:
        config = _flag_config(cls, argv).resolved()
        assert config.steps == 10000 or "--steps=10000" in argv, argv


def test_ae_table_helpers():
    assert ae_table.parse_candidate("cosine:0.01:200") == {
        "lr_schedule": "cosine", "learning_rate": 0.01, "warmup_steps": 200}
    for bad in ("cosine:0.01", "linear:0.01:0", "cosine:-1:0", "cosine:x:0"):
        assert ae_table.parse_candidate(bad) is None
    cfg = lib.Config(model="dense").resolved().to_dict()
    table = ae_table.format_table({"dense": {
        "config": cfg, "num_params": 981409, "steps": 10000, "test_bce": 0.0651,
        "test_mse": 0.0071, "seconds": 321.0, "warmup_steps": 0}})
    row = table.splitlines()[2]
    assert "0.0651" in row and "<= 0.066 ✓" in row and "10,000" in row
    assert "adam 0.001 constant |" in row
    conv = {"config": lib.Config(model="conv").resolved().to_dict(), "num_params": 4385,
            "steps": 10000, "test_bce": 0.1, "test_mse": 0.01, "seconds": 1.0,
            "warmup_steps": 200}
    assert "adam 0.02 wsd (decay over the last 30%) (warm-up 200)" in \
        ae_table.format_table({"conv_transpose": conv})
    with pytest.raises(ValueError, match="--configs"):
        _flag_config(ae_table.AeTableConfig, ["--configs=dense,bogus"])
    with pytest.raises(ValueError, match="--search_candidates"):
        _flag_config(ae_table.AeTableConfig, ["--search_candidates=cosine:0.01"]
                     ).resolved()
    with pytest.raises(ValueError, match="--search needs a validation split"):
        ae_table.AeTableConfig(search=True, val_size=0).resolved()
    t = ae_table.AeTableConfig(learning_rate=3e-3, seed=4).resolved()
    assert (t.steps, t.val_size) == (10000, 0)
    assert ae_table.AeTableConfig(search=True).resolved().val_size == 5000
    row_cfg = t.row_config(**ae_table.CONFIGS["dense_blog"]).resolved()
    assert (row_cfg.hidden, row_cfg.hidden_activation, row_cfg.learning_rate,
            row_cfg.seed, row_cfg.steps) == (32, "relu", 3e-3, 4, 10000)


def test_ae_table_never_deletes_a_finished_run_with_other_settings(tmp_path):
    """A finished run whose settings differ is refused (not wiped) unless --rerun."""
    workdir = tmp_path / "conv_transpose"
    (workdir / "checkpoints").mkdir(parents=True)
    record = {"status": "done", "test_bce": 0.1, "config": {"steps": 5}}
    (workdir / "metrics.json").write_text(json.dumps(record))
    config = ae_table.AeTableConfig(steps=7, batch_size=8).resolved().row_config(
        **ae_table.CONFIGS["conv_transpose"])
    with pytest.raises(ValueError, match="finished run with other settings.*--rerun"):
        ae_table.run_config("conv_transpose", config, str(workdir))
    assert json.loads((workdir / "metrics.json").read_text()) == record
    assert (workdir / "checkpoints").is_dir()


def test_ae_table_search_ranks_on_validation(tmp_path, small_mnist):
    """Two tiny conv candidates on a held-out split: ranked by val BCE, the table names
    each wsd candidate's decay share (two rates 0.01 runs differ only by it); a second
    call reuses both finished runs."""
    (x_tr, y_tr), test = small_mnist
    data = ((x_tr[:96], y_tr[:96]), (test[0][:20], test[1][:20]))
    config = ae_table.AeTableConfig(
        search=True, steps=4, batch_size=16, val_size=32, tensorboard=False,
        progress=False, search_candidates=("wsd:0.01:0", "wsd:0.01:0:0.5"))
    rows = ae_table.run(config, str(tmp_path), data=data)["rows"]
    assert len(rows) == 2 and rows[0]["val_bce"] <= rows[1]["val_bce"]
    assert {r["name"] for r in rows} == {"transpose_wsd_0.01_w0_4",
                                         "transpose_wsd_0.01_w0_d0.5_4"}
    md = (tmp_path / "search.md").read_text()
    assert "| last 30% |" in md and "| last 50% |" in md
    assert json.loads((tmp_path / "search.json").read_text())[0]["val_bce"] == \
        pytest.approx(rows[0]["val_bce"])
    # Each row evaluated on its 32 held-out images per epoch, then on the test images.
    m = json.loads((tmp_path / rows[0]["name"] / "metrics.json").read_text())
    assert m["eval_set"] == "validation" and m["steps_per_epoch"] == 4
    assert m["config"]["val_size"] == 32 and m["test_bce"] != pytest.approx(
        m["history"]["val_bce"][-1])
    again = ae_table.run(dataclasses.replace(config, progress=True), str(tmp_path),
                         data=data)["rows"]
    assert again == rows


def test_ae_table_checks_every_row_before_training_any(tmp_path):
    """The second candidate's warm-up does not fit --steps: refused before the first
    candidate is trained, nothing written."""
    config = ae_table.AeTableConfig(search=True, steps=50, search_candidates=(
        "wsd:0.01:10", "wsd:0.01:200"))
    with pytest.raises(ValueError, match="--warmup_steps must be smaller than --steps, "
                                         "got --warmup_steps=200 --steps=50"):
        ae_table.run(config, str(tmp_path / "search"))
    assert not (tmp_path / "search").exists()


def test_init_from_a_keras_autoencoder(tmp_path, small_mnist):
    """--init_from: a Keras 3 twin's .weights.h5 (encoder / decoder names, as Keras
    writes them) is what the run starts from."""
    from bench import keras_models
    from tfcore.training import callbacks as tfcallbacks
    net = keras_models.autoencoder_net("dense", hidden=16)
    net.build((None, 28, 28, 1))
    rs = np.random.RandomState(2)
    for w in net.weights:
        w.assign(rs.normal(0, 0.05, w.shape).astype("float32"))
    path = str(tmp_path / "ae.weights.h5")
    net.save_weights(path)

    class Start(tfcallbacks.Callback):
        def on_train_begin(self, logs=None):
            self.values = sorted(float(np.sum(v.numpy())) for v in
                                 self.loop.objects["model"].trainable_variables)

    start = Start()
    lib.train_and_evaluate(_config(model="dense", hidden=16, steps=1, init_from=path,
                                   tensorboard=False), str(tmp_path / "run"),
                           data=small_mnist, callbacks=[start])
    assert start.values == pytest.approx(sorted(float(np.sum(w.numpy()))
                                                for w in net.weights), rel=1e-6)
