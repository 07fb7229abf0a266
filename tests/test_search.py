"""train.search on Optuna: the space syntax, the options, and real studies end to end.

Most trials are a tiny absl binary written into tmp_path (no TensorFlow: ~0.3 s a
trial) that writes metrics.json after every epoch like the loop does; one test runs a
real train.autoencoder trial. Studies are real SQLite files, read back with Optuna.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import tensorflow as tf
from absl import flags
from optuna.trial import TrialState

from tfcore import hparams as hp
from tfcore.training import binary, options
from train import search_lib


def _main(argv):
    """The exit code of `python -m train.search` with `argv`, run in this process."""
    return binary.run_in_process(search_lib.BINARY, search_lib.SearchConfig,
                                 search_lib.search, argv, summary=search_lib.summary_line,
                                 extra_args=True)

# -- the space syntax ----------------------------------------------------------------


def test_parse_space_domains():
    space = hp.parse_space([
        "learning_rate=loguniform(0.01,1.0)", "dropout=choice(true, FALSE)",
        "eps=uniform(0.5, 3)", "batch_size=choice(64,128)", "units=int(1, 4)",
        "opt=choice(adam, 'sg,d')", "--epochs=3", "scale=1e-3"])
    assert list(space) == ["learning_rate", "dropout", "eps", "batch_size", "units", "opt",
                           "epochs", "scale"]
    assert space["learning_rate"] == hp.LogUniform(0.01, 1.0)
    assert space["dropout"] == hp.Choice((True, False))
    assert space["eps"] == hp.Uniform(0.5, 3.0)
    assert space["batch_size"] == hp.Choice((64, 128))
    assert all(type(v) is int for v in space["batch_size"].values)
    assert space["units"] == hp.IntUniform(1, 4)
    assert space["opt"] == hp.Choice(("adam", "sg,d"))
    assert space["epochs"] == hp.Choice((3,))
    assert space["scale"].values == (0.001,)


@pytest.mark.parametrize("entry, message", [
    ("lr", "expected name=domain"),
    ("lr=uniform(1, 0)", "needs low < high"),
    ("lr=loguniform(0, 1)", "needs low > 0"),
    ("lr=uniform(a, 1)", "must be a finite number"),
    ("lr=uniform(1)", "takes (low, high[, grid_points])"),
    ("x=choice(1, a)", "must all be bools, all numbers or all strings"),
    ("x=choice()", "at least one value"),
    ("x=choice(1, 1)", "duplicate choice value"),
    ("x=normal(0, 1)", "unknown domain 'normal'"),
    ("x=int(1.5, 3)", "bounds must be integers"),
    ("x=uniform(0, 1, 1)", "grid points must be an integer >= 2"),
    ("1x=3", "not a valid flag name"),
    ("x=choice('a, b)", "unterminated quote"),
    ("x=uniform(0,1", "cannot parse domain"),
])
def test_parse_space_errors_name_the_entry(entry, message):
    with pytest.raises(ValueError) as e:
        hp.parse_space([entry])
    assert f"--space entry {entry!r}" in str(e.value)
    assert message in str(e.value)


def test_space_file_json_and_lines(tmp_path):
    j = tmp_path / "space.json"
    j.write_text(json.dumps({"learning_rate": "loguniform(1e-3, 1)",
                             "dropout": [True, False], "epochs": 2}))
    space = hp.parse_space_file(str(j))
    assert space == {"learning_rate": hp.LogUniform(1e-3, 1.0),
                     "dropout": hp.Choice((True, False)), "epochs": hp.Choice((2,))}
    t = tmp_path / "space.txt"
    t.write_text("# a comment\nlearning_rate = loguniform(1e-3, 1)  # trailing\n\n"
                 "name=choice('a#b', c)\n")
    assert hp.parse_space_file(str(t)) == {"learning_rate": hp.LogUniform(1e-3, 1.0),
                                           "name": hp.Choice(("a#b", "c"))}
    bad = tmp_path / "bad.txt"
    bad.write_text("lr=uniform(0, 1)\neps=uniform(3, 1)\n")
    with pytest.raises(ValueError, match=r"line 2 \('eps=uniform\(3, 1\)'\).*low < high"):
        hp.parse_space_file(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        hp.parse_space_file(str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match="given more than once"):
        hp.merge_spaces(hp.parse_space(["learning_rate=uniform(0, 1)"]), space)


def test_domains_suggest_through_optuna_and_grid_values():
    space = hp.parse_space(["lr=loguniform(0.01, 1)", "eps=uniform(0, 3, 4)",
                            "units=int(1, 3)", "dropout=choice(true, false)"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(60):
        trial = study.ask()
        drawn.append({n: d.suggest(trial, n) for n, d in space.items()})
        study.tell(trial, 0.0)
    assert study.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(
        0.01, 1.0, log=True)
    lrs = [d["lr"] for d in drawn]
    assert all(0.01 <= v <= 1 for v in lrs) and 15 <= sum(v < 0.1 for v in lrs) <= 45
    assert {d["units"] for d in drawn} == {1, 2, 3}
    assert {d["dropout"] for d in drawn} == {True, False}
    grid = hp.grid_values(space, grid_points=3)
    assert grid["lr"] == pytest.approx([0.01, 0.1, 1.0])
    assert grid["eps"] == pytest.approx([0.0, 1.0, 2.0, 3.0])  # its own 4 points
    assert hp.grid_size(space, 3) == 3 * 4 * 3 * 2


def test_trial_seeds_differ_and_repeat():
    seeds = [hp.trial_seed(0, n) for n in range(50)]
    assert len(set(seeds)) == 50 and seeds == [hp.trial_seed(0, n) for n in range(50)]
    assert hp.trial_seed(1, 0) != seeds[0]


def test_options_are_checked_and_become_flags():
    base = dict(binary="b", space=("x=1",), trials=2, metric="val_loss")
    config = search_lib.SearchConfig(**base)
    assert config.validate() is config and config.selection_warnings() == []
    for bad, message in [(dict(trials=0), "--trials must be a positive integer"),
                         (dict(sampler="bayes"), "--sampler must be one of tpe"),
                         (dict(trials=None), "--sampler=tpe needs --trials"),
                         (dict(poll_interval=0.0), "--poll_interval must be a finite"),
                         (dict(binary="a b"), "--binary must be a Python module path"),
                         (dict(grace_period=40), "--grace_period=40 must exceed"),
                         (dict(metric="test_loss"), "selects on the TEST set")]:
        with pytest.raises(ValueError, match=message):
            search_lib.SearchConfig(**dict(base, **bad)).validate()
    fv = flags.FlagValues()
    binary.define_flags(search_lib.SearchConfig, fv)
    fv(["search", "--binary=b", "--space=x=1", "--space=y=choice(1, 2)", "--trials=3",
        "--noallow_non_validation_metric", "--stop_grace=2.5"])
    config = options.from_flags(search_lib.SearchConfig, fv)
    assert config == search_lib.SearchConfig(
        binary="b", space=("x=1", "y=choice(1, 2)"), trials=3, stop_grace=2.5)


# -- studies end to end ------------------------------------------------------------

FAKE_BINARY = '''
"""val_loss per epoch from --learning_rate (best at 0.1); a trial whose workdir name is
in --bad_trials does badly and slowly; writes metrics.json atomically per epoch."""
import json, math, os, signal, sys, time
from absl import app, flags
flags.DEFINE_string("workdir", None, "")
flags.DEFINE_float("learning_rate", 0.1, "")
flags.DEFINE_boolean("dropout", False, "")
flags.DEFINE_integer("val_size", 0, "")
flags.DEFINE_integer("epochs", 3, "")
flags.DEFINE_float("sleep", 0.0, "")
flags.DEFINE_float("fail_above", 1e9, "")
flags.DEFINE_list("bad_trials", [], "")
flags.DEFINE_float("bad_sleep", 0.0, "")
flags.DEFINE_boolean("ignore_sigterm", False, "")
FLAGS = flags.FLAGS

def main(argv):
    wd = FLAGS.workdir
    with open(os.path.join(wd, "pid"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join(wd, "..", "..", "calls.log"), "a") as f:
        f.write(os.path.basename(wd) + "\\n")
    if FLAGS.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if FLAGS.learning_rate > FLAGS.fail_above:
        sys.stderr.write("boom: learning rate %r too high\\n" % FLAGS.learning_rate)
        sys.exit(3)
    bad = os.path.basename(wd) in FLAGS.bad_trials
    base = abs(math.log10(FLAGS.learning_rate) + 1) + (0.01 if FLAGS.dropout else 0)
    history, epochs = {"val_loss": []}, []
    for e in range(FLAGS.epochs):
        time.sleep(FLAGS.bad_sleep if bad else FLAGS.sleep)
        v = (10.0 if bad else base) + 1.0 / (e + 1)
        history["val_loss"].append(v)
        epochs.append({"epoch": e, "step": e + 1, "val_loss": v})
        m = {"status": "done" if e == FLAGS.epochs - 1 else "running", "history": history,
             "epochs": epochs, "final": dict(epochs[-1]), "test_loss": v + 0.1,
             "config": {"val_size": FLAGS.val_size}}
        with open(os.path.join(wd, "m.tmp"), "w") as f:
            json.dump(m, f)
        os.replace(os.path.join(wd, "m.tmp"), os.path.join(wd, "metrics.json"))

if __name__ == "__main__":
    app.run(main)
'''


def _val(lr, dropout, epoch):
    import math  # pylint: disable=import-outside-toplevel
    return abs(math.log10(lr) + 1) + (0.01 if dropout else 0) + 1.0 / (epoch + 1)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake binary's module on PYTHONPATH (trials and subprocesses inherit it)."""
    pkg = tmp_path / "bin"
    pkg.mkdir()
    (pkg / "fake_trainer.py").write_text(textwrap.dedent(FAKE_BINARY))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pkg), os.getcwd()]))
    return tmp_path


FAST = dict(poll_interval=0.05, heartbeat_interval=1, grace_period=3, stop_grace=0.5)


def _config(**kw):
    d = dict(binary="fake_trainer", space=("learning_rate=loguniform(0.01, 1.0)",
                                           "dropout=choice(true, false)"),
             trials=4, metric="val_loss", mode="min", sampler="random", pruner="none",
             val_size=123, **FAST)
    d.update(kw)
    return search_lib.SearchConfig(**d)


def _study(workdir):
    return optuna.load_study(study_name="search", storage=f"sqlite:///{workdir}/study.db")


def _calls(workdir):
    with open(os.path.join(workdir, "calls.log")) as f:
        return f.read().split()


def _gone(pid, wait=5.0):
    """True when process `pid` has exited (a zombie counts as exited)."""
    end = time.time() + wait
    while time.time() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _events(logdir):
    from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=import-outside-toplevel
    out = {}
    for path in tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(path):
            for v in tf.compat.v1.Event.FromString(raw.numpy()).summary.value:
                data = v.metadata.plugin_data
                out[v.tag] = (plugin_data_pb2.HParamsPluginData.FromString(data.content)
                              if data.plugin_name == "hparams" else tf.make_ndarray(v.tensor))
    return out


def test_sqlite_study_read_back_with_optuna(fake):
    workdir = str(fake / "s")
    summary = search_lib.run_search(_config(), workdir, ["--fail_above=0.4"],
                                    log=lambda s: None)
    study = _study(workdir)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and _calls(workdir) == list("0123")
    assert study.user_attrs["sampler"] == "random" and study.user_attrs["extra_flags"] == [
        "--fail_above=0.4", "--val_size=123"]
    states = {t.state for t in trials}
    assert states == {TrialState.COMPLETE, TrialState.FAIL}  # seed 0 draws both kinds
    for t in trials:
        lr, dropout = t.params["learning_rate"], t.params["dropout"]
        cmd = t.user_attrs["command"]
        assert cmd[1:4] == ["-m", "fake_trainer", f"--workdir={workdir}/trials/{t.number}"]
        assert f"--learning_rate={lr!r}" in cmd and "--val_size=123" in cmd
        assert ("--dropout" if dropout else "--nodropout") in cmd
        if lr > 0.4:
            assert t.state == TrialState.FAIL and t.user_attrs["returncode"] == 3
            assert "boom: learning rate" in t.user_attrs["stderr_tail"]
        else:
            assert t.state == TrialState.COMPLETE
            assert t.value == pytest.approx(_val(lr, dropout, 2))
            assert t.intermediate_values == pytest.approx(
                {e: _val(lr, dropout, e) for e in range(3)})
            assert t.user_attrs["metrics"]["test_loss"] == pytest.approx(t.value + 0.1)
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert study.best_trial.number == best.number == summary["best"]["number"]
    md = (fake / "s" / "results.md").read_text()
    assert f"| {best.number} * | complete |" in md and "| failed |" in md
    assert len((fake / "s" / "results.csv").read_text().splitlines()) == 5
    for name in search_lib.search_report.PLOTS:
        assert os.path.getsize(os.path.join(workdir, name)) > 1000
    root = _events(os.path.join(workdir, "hparams"))["_hparams_/experiment"].experiment
    assert [h.name for h in root.hparam_infos] == ["learning_rate", "dropout"]
    assert root.hparam_infos[0].domain_interval.max_value == 1.0
    assert [m.name.tag for m in root.metric_infos][:2] == ["val_loss", "epochs"]
    run = _events(os.path.join(workdir, "hparams", str(best.number)))
    start = run["_hparams_/session_start_info"].session_start_info
    assert start.hparams["learning_rate"].number_value == best.params["learning_rate"]
    assert run["_hparams_/session_end_info"].session_end_info.status == 1  # SUCCESS
    assert float(run["val_loss"]) == pytest.approx(best.value, rel=1e-6)


def test_pruner_stops_a_clearly_bad_trial(fake):
    workdir = str(fake / "p")
    config = _config(pruner="median", prune_startup_trials=2, trials=4)
    search_lib.run_search(config, workdir, ["--bad_trials=2", "--bad_sleep=1", "--epochs=4",
                                            "--ignore_sigterm"], log=lambda s: None)
    trials = _study(workdir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] + [
        TrialState.COMPLETE]
    bad = trials[2]
    assert bad.last_step == 0 and bad.user_attrs["epochs"] == 1
    assert bad.value == pytest.approx(11.0)  # its epoch-0 value
    # It ignores SIGTERM: killed after --stop_grace, long before its 4 s of epochs.
    assert bad.user_attrs["seconds"] < 3.0
    assert _gone(int((fake / "p" / "trials" / "2" / "pid").read_text()), wait=0.5)
    history = json.loads((fake / "p" / "trials" / "2" / "metrics.json").read_text())
    assert len(history["history"]["val_loss"]) < 4


def test_grid_runs_every_point_once(fake):
    workdir = str(fake / "g")
    space = ("learning_rate=choice(0.1, 0.01)", "dropout=choice(true, false)")
    summary = search_lib.run_search(_config(space=space, sampler="grid", trials=None),
                                    workdir, log=lambda s: None)
    points = sorted((t["params"]["learning_rate"], t["params"]["dropout"])
                    for t in summary["trials"])
    assert points == [(0.01, False), (0.01, True), (0.1, False), (0.1, True)]
    assert summary["best"]["params"] == {"learning_rate": 0.1, "dropout": True} or \
        summary["best"]["params"] == {"learning_rate": 0.1, "dropout": False}


def _command(workdir, **kw):
    c = _config(**kw)
    args = [sys.executable, "-m", "train.search", "--binary=fake_trainer",
            f"--workdir={workdir}", f"--trials={c.trials}", "--metric=val_loss",
            "--mode=min", f"--sampler={c.sampler}", f"--pruner={c.pruner}",
            "--val_size=123", f"--workers={c.workers}"]
    args += [f"--space={s}" for s in c.space] + [f"--{k}={v}" for k, v in FAST.items()]
    return args


def _wait_for(path, timeout=90.0):
    end = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.1)


def test_two_processes_share_one_study(fake):
    """A search process with 2 workers and this one with 1 finish 6 trials together."""
    workdir = str(fake / "w")
    extra = ["--epochs=3", "--sleep=0.3"]
    proc = subprocess.Popen(_command(workdir, trials=6, workers=2) + ["--"] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(os.path.join(workdir, "trials", "0", "metrics.json"))
    search_lib.run_search(_config(trials=6), workdir, extra, log=lambda s: None)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    trials = _study(workdir).trials
    assert [t.number for t in trials] == list(range(6))  # exactly --trials, no duplicate
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(_calls(workdir)) == [str(n) for n in range(6)]  # each ran once
    assert len({t.params["learning_rate"] for t in trials}) == 6  # no shared random stream
    by_pid = {}
    for t in trials:
        by_pid.setdefault(t.user_attrs["search_pid"], []).append(t)
    assert set(by_pid) == {proc.pid, os.getpid()}
    ours, theirs = by_pid[os.getpid()], by_pid[proc.pid]
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start <
               a.datetime_complete for a in ours for b in theirs)  # overlapping trials


def test_killed_search_is_continued_and_its_trial_rerun(fake):
    workdir = str(fake / "k")
    extra = ["--epochs=3", "--sleep=0.2", "--bad_trials=1", "--bad_sleep=4"]  # 1: 12 s
    proc = subprocess.Popen(_command(workdir, trials=3) + ["--"] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(os.path.join(workdir, "trials", "1", "pid"))
    pid = int((fake / "k" / "trials" / "1" / "pid").read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _gone(pid, wait=3.0)  # it went with its search (PR_SET_PDEATHSIG), not at 12 s
    assert _study(workdir).trials[1].state == TrialState.RUNNING
    logs = []
    search_lib.run_search(_config(trials=3), workdir, extra, log=logs.append)
    trials = _study(workdir).trials
    assert trials[1].state == TrialState.FAIL
    rerun = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(rerun) == 1 and rerun[0].params == trials[1].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert trials[0].state == TrialState.COMPLETE and _calls(workdir).count("0") == 1
    assert any("(rerun of trial 1)" in line for line in logs)


def test_validation_only_guard(fake, capsys):
    base = ["search", "--binary=fake_trainer", "--space=learning_rate=uniform(0.05, 0.2)",
            "--trials=1", f"--workdir={fake / 'v'}"]
    for args, message in [(["--metric=test_loss"], "selects on the TEST set"),
                          (["--metric=test_loss", "--allow_non_validation_metric"],
                           "selects on the TEST set"),
                          (["--metric=loss"], "not a validation metric"),
                          (["--", "--val_size=0"], "disables the validation split"),
                          (["--val_size=0"], "--val_size=0 would train the trials"),
                          (["--space=val_size=int(0, 10)"], "can be 0")]:
        assert _main(base + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("train.search: error: ") and message in err
        assert err.count("\n") == 1  # one line, no traceback
    assert not os.path.exists(fake / "v")
    assert _main(base + ["--space=lr=uniform(0, 1)"]) == 2
    assert "fake_trainer has no flag --lr" in capsys.readouterr().err


def test_rerun_with_other_settings_is_refused(fake, capsys):
    base = ["search", "--binary=fake_trainer", "--space=learning_rate=uniform(0.05, 0.2)",
            f"--workdir={fake / 'r'}", "--metric=val_loss", "--mode=min", "--sampler=random"]
    assert _main(base + ["--trials=1", "--", "--epochs=1"]) == 0
    capsys.readouterr()
    assert _main(base + ["--trials=2", "--sampler=tpe", "--", "--epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "sampler: stored 'random', given 'tpe'" in err
    assert "extra_flags: stored ['--epochs=1', '--val_size=5000'], given ['--epochs=2'," in err
    assert len(_study(fake / "r").trials) == 1
    assert _main(base + ["--trials=2", "--", "--epochs=1"]) == 0  # more trials: on
    assert len(_study(fake / "r").trials) == 2 and _calls(fake / "r") == ["0", "1"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("cmaes") is not None,
                    reason="the cmaes package is installed")
def test_cmaes_without_its_package_is_one_line(fake, capsys):
    assert _main(["search", "--binary=fake_trainer", "--space=learning_rate=uniform"
                        "(0.05, 0.2)", "--trials=1", "--metric=val_loss", "--sampler=cmaes",
                        f"--workdir={fake / 'c'}"]) == 2
    assert "--sampler=cmaes needs the cmaes package" in capsys.readouterr().err


def test_one_real_autoencoder_trial(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("TFCORE_DATA_DIR", mnist_dir)
    workdir = str(tmp_path / "ae")
    config = search_lib.SearchConfig(
        binary="train.autoencoder", space=("learning_rate=loguniform(0.005, 0.05)",),
        trials=1, metric="val_bce", mode="min", sampler="tpe", pruner="median",
        val_size=200, **FAST)
    summary = search_lib.run_search(config, workdir, [
        "--model=conv", "--train_subset=1200", "--epochs=2", "--batch_size=100",
        "--num_images=2"], log=lambda s: None)
    (t,) = _study(workdir).trials
    assert t.state == TrialState.COMPLETE, t.user_attrs.get("stderr_tail")
    assert "--val_size=200" in t.user_attrs["command"]
    metrics = json.loads((tmp_path / "ae" / "trials" / "0" / "metrics.json").read_text())
    assert [t.intermediate_values[e] for e in (0, 1)] == pytest.approx(
        metrics["history"]["val_bce"])
    assert t.value == pytest.approx(metrics["history"]["val_bce"][-1])
    assert 0.0 < t.value < 0.7 and summary["best"]["number"] == 0
