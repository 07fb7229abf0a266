"""Runs that never lose or corrupt work: fault injection on a real binary.

`train.vat` on a small MNIST subset (4 epochs of 16 steps, op determinism) is run
straight once; then killed with SIGKILL at random points (drawn with
$TFCORE_FAULT_SEED, default 0) and resumed until done; then stopped with SIGINT and
SIGTERM mid-epoch and resumed. Each ends bitwise equal to the straight run (every
variable of the final checkpoint) and with metrics.json holding every epoch once, in
order, with the straight run's values. Bad inputs of every kind the reliability issue
lists each give exit code 2, one line `train.vat: error: ...` and leave the workdir as
it was (a digest of every file's name and bytes).
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfcore.training import binary, checkpointing, metrics_io
from train import vat_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SPE, EPOCHS = 16, 4  # (288 - 32) // 16 steps per epoch
ARGS = ["--train_limit=288", "--val_size=32", "--test_limit=64", "--batch_size=16",
        f"--epochs={EPOCHS}", "--deterministic", "--jit=off", "--eval_batch_size=64",
        "--log_every=1", "--tensorboard=false"]
TIMEOUT = 300


def _env(mnist_dir):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFCORE_DATA_DIR=mnist_dir,
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _start(workdir, mnist_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "train.vat", f"--workdir={workdir}",
                             *ARGS, *extra], cwd=ROOT, env=_env(mnist_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(workdir, mnist_dir, *extra):
    proc = _start(workdir, mnist_dir, *extra)
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def _wait_for_step(proc, step):
    """Reads the progress lines ('step 20/64 ...') until `step` is reported."""
    for line in proc.stdout:
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
            return
    raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()[-3000:]}")


def _variables(workdir):
    """Every variable of the newest checkpoint but the run state (it holds timings)
    and the count of saves: name -> array."""
    path = checkpointing.list_complete(os.path.join(workdir, "checkpoints"))[0]
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("run_state", "save_counter"))}


def _epochs(metrics):
    return [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in metrics["epochs"]]


def _assert_same_run(workdir, straight):
    metrics = metrics_io.read_metrics(workdir)
    assert metrics["status"] == "done" and metrics["step"] == SPE * EPOCHS
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(EPOCHS))
    assert _epochs(metrics) == _epochs(straight["metrics"])  # every value bitwise
    variables = _variables(workdir)
    assert sorted(variables) == sorted(straight["variables"])
    for k, v in straight["variables"].items():
        np.testing.assert_array_equal(variables[k], v, err_msg=k)
    assert metrics["test_accuracy"] == straight["metrics"]["test_accuracy"]
    kept = checkpointing.list_complete(os.path.join(workdir, "checkpoints"))
    assert len(kept) <= 3, kept  # max_to_keep, kills or not
    leftovers = [f for f in os.listdir(os.path.join(workdir, "checkpoints"))
                 if f != "checkpoint" and not any(f.startswith(os.path.basename(p) + ".")
                                                  for p in kept)]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    rc, _, err = _run(workdir, mnist_dir)
    assert rc == 0, err[-3000:]
    return {"workdir": workdir, "metrics": metrics_io.read_metrics(workdir),
            "variables": _variables(workdir)}


def test_kill9_at_random_points_then_resume_equals_a_straight_run(tmp_path, mnist_dir,
                                                                   straight):
    rng = random.Random(int(os.environ.get("TFCORE_FAULT_SEED", "0")))
    workdir = str(tmp_path / "run")
    points = sorted(rng.sample(range(2, SPE * EPOCHS - 2), 3))
    for i, point in enumerate(points):
        proc = _start(workdir, mnist_dir, *(["--resume"] if i else []))
        _wait_for_step(proc, point)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait(timeout=60)
        metrics = metrics_io.read_metrics(workdir)
        if metrics:  # never torn, never out of order, whatever the moment
            assert [e["epoch"] for e in metrics["epochs"]] == list(
                range(len(metrics["epochs"]))), (point, metrics["epochs"])
    rc, _, err = _run(workdir, mnist_dir, "--resume")
    assert rc == 0, err[-3000:]
    _assert_same_run(workdir, straight)
    attempts = metrics_io.read_metrics(workdir)["attempts"]
    assert len(attempts) == len(points) + 1, (points, attempts)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_sigterm_save_and_resume_bitwise(tmp_path, mnist_dir, straight, sig, code):
    workdir = str(tmp_path / "run")
    proc = _start(workdir, mnist_dir)
    _wait_for_step(proc, SPE + 4)  # mid-epoch 1
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    metrics = metrics_io.read_metrics(workdir)
    step = metrics["step"] if metrics["epochs"] else None
    saved = checkpointing.list_complete(os.path.join(workdir, "checkpoints"))[0]
    n = int(saved.rsplit("-", 1)[1])
    assert last == (f"train.vat: interrupted by {sig.name} at step {n}; checkpoint saved: "
                    f"{saved}; continue with --resume")
    assert metrics["status"] == "interrupted" and n > SPE and n % SPE, (n, step)
    assert [e["epoch"] for e in metrics["epochs"]] == [0]
    rc, _, err = _run(workdir, mnist_dir, "--resume")
    assert rc == 0, err[-3000:]
    _assert_same_run(workdir, straight)


def _digest(path):
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _main(argv, capsys):
    """(exit code, stderr) of train.vat's main (in process: parse, then run)."""
    code = binary.run_in_process("train.vat", vat_lib.VatConfig, vat_lib.train_and_evaluate,
                                 ["train.vat"] + argv, vat_lib.summary_line)
    return code, capsys.readouterr().err


@pytest.fixture
def used(tmp_path, straight):
    """A copy of the finished straight run."""
    workdir = str(tmp_path / "used")
    shutil.copytree(straight["workdir"], workdir)
    return workdir


SMALL = ["--train_limit=288", "--val_size=32", "--test_limit=64", "--batch_size=16",
         f"--epochs={EPOCHS}", "--jit=off", "--eval_batch_size=64", "--tensorboard=false",
         "--progress=false"]


def _bad_npz(tmp_path):
    d = tmp_path / "bad_data"
    d.mkdir()
    (d / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    return str(d)


@pytest.mark.parametrize("case", [
    "used_without_resume", "resume_other_optimizer", "resume_other_learning_rate",
    "resume_other_batch_size", "other_binary", "workdir_is_a_file",
    "workdir_under_a_file", "bad_data_file", "no_data_in_data_dir", "data_dir_missing",
    "data_smaller_than_a_batch", "learning_rate_inf", "eps_negative", "unknown_flag",
    "unparsable_value", "no_workdir", "init_from_missing"])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, used, tmp_path, capsys,
                                                          mnist_dir):
    fresh = str(tmp_path / "fresh")
    cases = {
        "used_without_resume": ([f"--workdir={used}"], used, "already holds a run"),
        "resume_other_optimizer": ([f"--workdir={used}", "--resume", "--optimizer=adam"],
                                   used, "--optimizer='adadelta' -> 'adam'"),
        "resume_other_learning_rate": (
            [f"--workdir={used}", "--resume", "--learning_rate=0.5"], used,
            "--learning_rate=1.0 -> 0.5 (allowed with --change_on_resume)"),
        "resume_other_batch_size": ([f"--workdir={used}", "--resume", "--batch_size=32",
                                     "--eps=2"], used,
                                    "--batch_size=16 -> 32 (allowed with --change_on_"
                                    "resume); --eps=1.0 -> 2.0"),
        "other_binary": ([f"--workdir={tmp_path / 'gan'}"], str(tmp_path / "gan"),
                         "holds a train.dcgan run, not a train.vat one"),
        "workdir_is_a_file": ([f"--workdir={tmp_path / 'file'}"], str(tmp_path),
                              "is a file, not a directory"),
        "workdir_under_a_file": ([f"--workdir={tmp_path / 'file' / 'run'}"],
                                 str(tmp_path), "cannot be created"),
        "bad_data_file": ([f"--workdir={fresh}", f"--data_dir={_bad_npz(tmp_path)}"],
                          str(tmp_path), "mnist.npz is truncated or corrupt"),
        "no_data_in_data_dir": ([f"--workdir={fresh}", f"--data_dir={tmp_path}"],
                                str(tmp_path), "no MNIST in data_dir"),
        "data_dir_missing": ([f"--workdir={fresh}", f"--data_dir={tmp_path / 'nope'}"],
                             str(tmp_path), "--data_dir must be an existing directory"),
        "data_smaller_than_a_batch": ([f"--workdir={fresh}", "--train_limit=8",
                                       "--val_size=0"], str(tmp_path),
                                      r"--batch_size (with the training images) must be "
                                      "an integer in [1, 8], got 16"),
        "learning_rate_inf": ([f"--workdir={fresh}", "--learning_rate=inf"],
                              str(tmp_path), "--learning_rate must be a finite number > 0,"
                              " got inf"),
        "eps_negative": ([f"--workdir={fresh}", "--eps=-1"], str(tmp_path),
                         "--eps must be a finite number >= 0, got -1.0"),
        "unknown_flag": ([f"--workdir={fresh}", "--epsilon=1"], str(tmp_path),
                         "Unknown command line flag 'epsilon'"),
        "unparsable_value": ([f"--workdir={fresh}", "--epochs=two"], str(tmp_path),
                             "--epochs"),
        "no_workdir": ([], str(tmp_path), "--workdir is required"),
        "init_from_missing": ([f"--workdir={fresh}", f"--init_from={tmp_path / 'w.h5'}"],
                              str(tmp_path), "w.h5"),
    }
    argv, watched, message = cases[case]
    (tmp_path / "file").write_text("not a directory")
    os.makedirs(tmp_path / "gan", exist_ok=True)
    (tmp_path / "gan" / "config.json").write_text(json.dumps({"binary": "train.dcgan",
                                                              "config": {}}))
    before = _digest(watched)
    extra = [a for a in SMALL if a.split("=")[0] not in {x.split("=")[0] for x in argv}]
    code, err = _main(argv + extra, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.vat: error: "), err
    assert message in lines[0], lines[0]
    assert _digest(watched) == before
    assert not os.path.exists(fresh)


def test_no_mnist_anywhere_lists_the_places_searched(tmp_path, capsys, monkeypatch):
    from tfcore.data import mnist
    monkeypatch.delenv("TFCORE_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(mnist, "MNIST_URL", (tmp_path / "nothing.npz").as_uri())
    code, err = _main([f"--workdir={tmp_path / 'run'}"] + SMALL, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"looked in {tmp_path / 'keras' / 'datasets'}" in err
    assert "--data_dir" in err and "$TFCORE_DATA_DIR" in err
    assert f"download of {(tmp_path / 'nothing.npz').as_uri()} failed" in err
    assert not os.path.exists(tmp_path / "run")


def test_a_failed_resume_keeps_the_finished_runs_results(used, mnist_dir, capsys):
    """A NaN stop on resume: status failed, exit 1, one line; the earlier attempt's
    test results, config and epochs stay in metrics.json."""
    before = metrics_io.read_metrics(used)
    code, err = _main([f"--workdir={used}", "--resume", "--epochs=5",
                       "--learning_rate=1e38", "--change_on_resume=learning_rate"] + [
                          a for a in SMALL if not a.startswith("--epochs")], capsys)
    assert code == 1, err
    assert err.strip().startswith("train.vat: error: non-finite"), err
    after = metrics_io.read_metrics(used)
    assert after["status"] == "failed" and "non-finite" in after["error"]
    for key in ("test_accuracy", "test_loss", "split_digest", "num_params"):
        assert after[key] == before[key], key
    assert after["epochs"] == before["epochs"] and after["results_step"] == SPE * EPOCHS
    assert after["changes"] == [{"step": SPE * EPOCHS, "option": "learning_rate",
                                 "old": 1.0, "new": 1e38}]


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        metrics_io.write_metrics(str(tmp_path), {"a": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == 0o640
