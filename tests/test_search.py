"""train.search and tfcore.hparams: space parsing, sampling, the search end to end.

The end-to-end tests run a tiny absl binary written into tmp_path (no TensorFlow, so
each trial takes ~0.1 s) through `train.search.run_search` / `main`: results table,
resume, a failing trial, the test-set guard, the HParams event files.
"""
import json
import math
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfcore import hparams as hp
from tfcore import summaries
from train import search


# -- parsing ------------------------------------------------------------------------

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


def test_parse_space_duplicate_flag():
    with pytest.raises(ValueError, match="'lr' is given more than once"):
        hp.parse_space(["lr=uniform(0, 1)", "lr=choice(1, 2)"])


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
    badj = tmp_path / "bad.json"
    badj.write_text('{"lr": {"low": 1}}')
    with pytest.raises(ValueError, match="entry 'lr': expected a domain string"):
        hp.parse_space_file(str(badj))
    with pytest.raises(ValueError, match="does not exist"):
        hp.parse_space_file(str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match="given more than once"):
        hp.merge_spaces(hp.parse_space(["learning_rate=uniform(0, 1)"]), space)


# -- sampling -----------------------------------------------------------------------

SPACE = ["learning_rate=loguniform(0.01, 1.0)", "dropout=choice(true, false)",
         "eps=uniform(0.5, 3)", "units=int(1, 4)"]


def test_random_configs_reproducible_and_in_range():
    space = hp.parse_space(SPACE)
    a = hp.random_configs(space, 40, seed=0)
    assert a == hp.random_configs(space, 40, seed=0)
    assert a != hp.random_configs(space, 40, seed=1)
    # Trial i does not depend on the number of trials or on the entry order.
    assert hp.random_configs(space, 5, seed=0) == a[:5]
    reordered = hp.parse_space(SPACE[::-1])
    assert [dict(sorted(c.items())) for c in hp.random_configs(reordered, 5, 0)] == \
        [dict(sorted(c.items())) for c in a[:5]]
    lrs = np.array([c["learning_rate"] for c in a])
    assert np.all((lrs >= 0.01) & (lrs <= 1.0))
    # log-uniform: about as many below 0.1 (the log midpoint) as above.
    assert 10 <= np.sum(lrs < 0.1) <= 30
    assert all(0.5 <= c["eps"] <= 3 for c in a)
    assert {c["dropout"] for c in a} == {True, False}
    assert {c["units"] for c in a} == {1, 2, 3, 4}
    assert all(type(c["units"]) is int for c in a)
    with pytest.raises(ValueError, match="--trials must be a positive integer"):
        hp.random_configs(space, 0, 0)


def test_grid_configs_enumerate_the_product():
    space = hp.parse_space(["lr=loguniform(0.01, 1)", "dropout=choice(true, false)",
                            "eps=uniform(0, 3, 4)", "units=int(1, 3)"])
    grid = hp.grid_configs(space, grid_points=3)
    assert len(grid) == 3 * 2 * 4 * 3 == hp.grid_size(space, 3)
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == len(grid)
    # last entry fastest
    assert [c["units"] for c in grid[:3]] == [1, 2, 3]
    assert grid[0] == {"lr": pytest.approx(0.01), "dropout": True, "eps": 0.0, "units": 1}
    assert sorted({c["lr"] for c in grid}) == pytest.approx([0.01, 0.1, 1.0])
    assert sorted({c["eps"] for c in grid}) == pytest.approx([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="--grid_points must be an integer >= 2"):
        hp.grid_configs(space, grid_points=1)


def test_config_to_flags_and_check_against_flags():
    assert hp.config_to_flags({"lr": 0.1, "dropout": False, "vat": True, "opt": "adam",
                               "units": 3}) == \
        ["--lr=0.1", "--nodropout", "--vat", "--opt=adam", "--units=3"]
    known = {"lr": "float", "dropout": "bool", "units": "int"}
    hp.check_against_flags(hp.parse_space(["lr=uniform(0, 1)", "units=int(1, 3)"]),
                           known, "b")
    for entry, msg in [("nope=choice(1)", "b has no flag --nope"),
                       ("dropout=choice(0, 1)", "boolean flag"),
                       ("units=uniform(0, 2)", "int flag"),
                       ("lr=choice(a, b)", "float flag")]:
        with pytest.raises(ValueError, match=msg):
            hp.check_against_flags(hp.parse_space([entry]), known, "b")


def test_selection_metric_guard():
    assert hp.check_selection_metric("val_accuracy") == []
    for m in ("test_accuracy", "test_loss", "TEST_error"):
        with pytest.raises(ValueError, match="selects on the TEST set"):
            hp.check_selection_metric(m, allow_non_validation=True)
    with pytest.raises(ValueError, match="not a validation metric"):
        hp.check_selection_metric("loss")
    (warning,) = hp.check_selection_metric("loss", allow_non_validation=True)
    assert "WARNING" in warning and "NOT a validation metric" in warning


def test_best_trial_and_metrics():
    trials = [{"name": "a", "status": "ok", "metrics": {"final": {"val_loss": 0.5}}},
              {"name": "b", "status": "failed", "metrics": {"val_loss": 0.1}},
              {"name": "c", "status": "ok", "metrics": {"val_loss": 0.3}},
              {"name": "d", "status": "ok", "metrics": {"val_loss": 0.3}},
              {"name": "e", "status": "ok", "metrics": {"val_loss": float("nan")}}]
    assert hp.best_trial(trials, "val_loss", "min")["name"] == "c"
    assert hp.best_trial(trials, "val_loss", "max")["name"] == "a"
    assert hp.best_trial(trials[1:2], "val_loss", "min") is None
    assert hp.metrics_complete({"status": "done", "final": {"val_accuracy": 1}},
                               "val_accuracy")
    assert not hp.metrics_complete({"status": "running", "val_accuracy": 1},
                                   "val_accuracy")
    assert not hp.metrics_complete({"status": "done"}, "val_accuracy")


# -- the search end to end ------------------------------------------------------------

FAKE_BINARY = '''
"""A tiny absl binary: val_accuracy peaks at learning_rate 0.1; fails above
--fail_above; writes metrics.json (and its call to ../calls.log)."""
import json, math, os, sys
from absl import app, flags
flags.DEFINE_string("workdir", None, "")
flags.DEFINE_float("learning_rate", 0.1, "")
flags.DEFINE_boolean("dropout", False, "")
flags.DEFINE_integer("val_size", 0, "")
flags.DEFINE_float("fail_above", 1e9, "")
flags.DEFINE_boolean("no_val_metric", False, "")
FLAGS = flags.FLAGS

def main(argv):
    with open(os.path.join(os.path.dirname(FLAGS.workdir), "calls.log"), "a") as f:
        f.write(os.path.basename(FLAGS.workdir) + "\\n")
    if FLAGS.learning_rate > FLAGS.fail_above:
        sys.stderr.write("boom: learning rate %r too high\\n" % FLAGS.learning_rate)
        sys.exit(3)
    v = 1 - abs(math.log10(FLAGS.learning_rate) + 1) / 3 + (0.01 if FLAGS.dropout else 0)
    final = {"val_loss": 1 - v, "train_loss": 0.5 - v / 2}
    if not FLAGS.no_val_metric:
        final["val_accuracy"] = v
    metrics = {"status": "done", "final": final, "test_accuracy": v - 0.02,
               "config": {"val_size": FLAGS.val_size}}
    with open(os.path.join(FLAGS.workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f)

if __name__ == "__main__":
    app.run(main)
'''


def _expected_val(cfg):
    return 1 - abs(math.log10(cfg["learning_rate"]) + 1) / 3 + (0.01 if cfg["dropout"]
                                                                  else 0)


@pytest.fixture
def fake(tmp_path):
    pkg = tmp_path / "bin"
    pkg.mkdir()
    (pkg / "fake_trainer.py").write_text(textwrap.dedent(FAKE_BINARY))
    env = dict(os.environ, PYTHONPATH=str(pkg) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    return env


def _config(**kw):
    d = dict(binary="fake_trainer",
             space=hp.parse_space(["learning_rate=loguniform(0.01, 1.0)",
                                   "dropout=choice(true, false)"]),
             method="random", trials=4, metric="val_accuracy", mode="max", seed=0,
             extra_flags=["--fail_above=0.4"], val_size=123)
    d.update(kw)
    return search.SearchConfig(**d)


def _calls(workdir):
    with open(os.path.join(workdir, "calls.log")) as f:
        return f.read().split()


def _events_by_tag(logdir):
    out = {}
    for event in summaries.iter_events(logdir):
        for v in event.summary.value:
            out[v.tag] = v
    return out


def test_search_end_to_end_resume_and_failures(fake, tmp_path):
    workdir = str(tmp_path / "search")
    config = _config()
    configs = hp.random_configs(config.space, 4, 0)
    should_fail = [c["learning_rate"] > 0.4 for c in configs]
    assert any(should_fail) and not all(should_fail)  # the seed gives both kinds

    logs = []
    summary = search.run_search(config, workdir, log=logs.append, env=fake)
    assert _calls(workdir) == [hp.trial_name(i) for i in range(4)]
    trials = summary["trials"]
    assert [t["config"] for t in trials] == configs
    for t, fails, cfg in zip(trials, should_fail, configs):
        if fails:
            assert t["status"] == "failed"
            assert t["returncode"] == 3 and t["error"] == "exit code 3"
            assert "boom: learning rate" in t["stderr_tail"]
        else:
            assert t["status"] == "ok"
            assert t["metrics"]["val_accuracy"] == pytest.approx(_expected_val(cfg))
        # every trial got its own workdir, the sampled flags and the validation split
        cmd = t["command"]
        assert f"--workdir={os.path.join(workdir, t['name'])}" in cmd
        assert f"--learning_rate={cfg['learning_rate']!r}" in cmd
        assert ("--dropout" if cfg["dropout"] else "--nodropout") in cmd
        assert "--val_size=123" in cmd and "--fail_above=0.4" in cmd
    ok = [(i, _expected_val(c)) for i, (c, f) in enumerate(zip(configs, should_fail))
          if not f]
    best_index = max(ok, key=lambda p: p[1])[0]
    assert summary["best"]["name"] == hp.trial_name(best_index)
    assert summary["best"]["val_accuracy"] == pytest.approx(max(v for _, v in ok))
    assert any(line.startswith(f"best: {hp.trial_name(best_index)}") for line in logs)

    # One table: markdown with the best marked, CSV with one row per trial.
    md = (tmp_path / "search" / "results.md").read_text()
    assert f"| {hp.trial_name(best_index)} * | ok |" in md
    assert "test_accuracy" in md.splitlines()[0]
    csv_lines = (tmp_path / "search" / "results.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("trial,status,learning_rate,dropout,val_accuracy")
    assert len(csv_lines) == 5

    # HParams: the experiment in the root run, one session per trial.
    hp_dir = os.path.join(workdir, "hparams")
    root = _events_by_tag(hp_dir)
    exp_value = root[hp.EXPERIMENT_TAG]
    assert exp_value.metadata.plugin_data.plugin_name == "hparams"
    exp = hp.parse_plugin_data(exp_value.metadata.plugin_data.content).experiment
    assert [h.name for h in exp.hparam_infos] == ["learning_rate", "dropout"]
    assert exp.hparam_infos[0].domain_interval.min_value == pytest.approx(0.01)
    assert [v.bool_value for v in exp.hparam_infos[1].domain_discrete.values] == \
        [False, True]  # sorted, as tensorboard's hp.Discrete
    assert exp.hparam_infos[1].type == hp.DATA_TYPE_BOOL
    tags = [m.name.tag for m in exp.metric_infos]
    assert tags[0] == "val_accuracy" and "test_accuracy" in tags
    try:  # where TensorBoard is installed, its own proto reads the same bytes
        from tensorboard.plugins.hparams import plugin_data_pb2
    except ImportError:
        plugin_data_pb2 = None
    if plugin_data_pb2 is not None:
        tb_exp = plugin_data_pb2.HParamsPluginData.FromString(
            exp_value.metadata.plugin_data.content).experiment
        assert [h.name for h in tb_exp.hparam_infos] == ["learning_rate", "dropout"]
        assert tb_exp.metric_infos[0].name.tag == "val_accuracy"
    for i, cfg in enumerate(configs):
        run = _events_by_tag(os.path.join(hp_dir, hp.trial_name(i)))
        start = hp.parse_plugin_data(
            run[hp.SESSION_START_INFO_TAG].metadata.plugin_data.content).session_start_info
        assert start.hparams["learning_rate"].number_value == cfg["learning_rate"]
        assert start.hparams["dropout"].bool_value == cfg["dropout"]
        end = hp.parse_plugin_data(
            run[hp.SESSION_END_INFO_TAG].metadata.plugin_data.content).session_end_info
        assert end.status == (hp.STATUS_FAILURE if should_fail[i] else hp.STATUS_SUCCESS)
        if not should_fail[i]:
            value = run["val_accuracy"]
            assert value.metadata.plugin_data.plugin_name == "scalars"
            assert float(tf.make_ndarray(value.tensor)) == pytest.approx(
                _expected_val(cfg), rel=1e-6)

    # Resume: completed trials are skipped, failed and incomplete ones rerun, and more
    # --trials extend the same sequence.
    incomplete = next(i for i, f in enumerate(should_fail) if not f and i != best_index)
    m_path = os.path.join(workdir, hp.trial_name(incomplete), "metrics.json")
    with open(m_path) as f:
        m = json.load(f)
    m["status"] = "running"
    with open(m_path, "w") as f:
        json.dump(m, f)
    os.remove(os.path.join(workdir, "calls.log"))
    summary2 = search.run_search(_config(trials=5), workdir, log=logs.append, env=fake)
    rerun = sorted({incomplete, 4} | {i for i, f in enumerate(should_fail) if f})
    assert _calls(workdir) == [hp.trial_name(i) for i in rerun]
    assert [t["config"] for t in summary2["trials"]] == hp.random_configs(
        config.space, 5, 0)
    assert summary2["trials"][incomplete]["status"] == "ok"

    # --norerun_failed keeps failed trials as they are.
    os.remove(os.path.join(workdir, "calls.log"))
    search.run_search(_config(trials=5, rerun_failed=False), workdir, log=logs.append,
                      env=fake)
    assert not os.path.exists(os.path.join(workdir, "calls.log"))

    # Other settings in the same workdir are refused.
    with pytest.raises(ValueError, match="holds a search with other settings"):
        search.run_search(_config(seed=1), workdir, log=logs.append, env=fake)


def test_search_grid_and_missing_metric(fake, tmp_path):
    space = hp.parse_space(["learning_rate=choice(0.1, 0.01)", "dropout=choice(true, false)"])
    summary = search.run_search(
        _config(space=space, method="grid", trials=None,
                extra_flags=["--no_val_metric", "--val_size=50"]),
        str(tmp_path / "grid"), log=lambda s: None, env=fake)
    assert [t["config"] for t in summary["trials"]] == [
        {"learning_rate": 0.1, "dropout": True}, {"learning_rate": 0.1, "dropout": False},
        {"learning_rate": 0.01, "dropout": True}, {"learning_rate": 0.01, "dropout": False}]
    for t in summary["trials"]:
        assert t["status"] == "failed"
        assert "metric 'val_accuracy' missing from metrics.json" in t["error"]
        assert "--val_size=50" in t["command"] and "--val_size=123" not in t["command"]
    assert summary["best"] is None


def test_search_main_guards(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", fake["PYTHONPATH"])
    base = ["search", "--binary=fake_trainer", "--space=learning_rate=uniform(0.05, 0.2)",
            "--trials=2", f"--workdir={tmp_path / 's'}"]
    assert search.main(base + ["--metric=test_accuracy"]) == 2
    err = capsys.readouterr().err
    assert "selects on the TEST set" in err
    assert not os.path.exists(tmp_path / "s")
    assert search.main(base + ["--metric=loss"]) == 2
    assert "not a validation metric" in capsys.readouterr().err
    assert search.main(base + ["--", "--val_size=0"]) == 2
    assert "disables the validation split" in capsys.readouterr().err
    assert search.main(base + ["--space=lr=uniform(0, 1)"]) == 2
    assert "fake_trainer has no flag --lr" in capsys.readouterr().err
    assert search.main(base + ["--", "--nope=1"]) == 2
    assert "--nope: not flags of fake_trainer" in capsys.readouterr().err
    assert search.main(base + ["--", "--workdir=x"]) == 2
    assert "sets each trial's --workdir" in capsys.readouterr().err
    assert search.main(base + ["--method=random", "--trials=0"]) == 2
    assert search.main(base + ["--metric=test_accuracy",
                               "--allow_non_validation_metric"]) == 2
    assert "selects on the TEST set" in capsys.readouterr().err
    # With the override a non-validation metric runs, after a loud warning.
    assert search.main(base + ["--metric=train_loss", "--mode=min",
                               "--allow_non_validation_metric"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: selecting trials on 'train_loss'" in out
    assert "best: trial_" in out
    assert search.main(["search", "--binary=no_such_module_xyz", "--space=a=1",
                        "--trials=1", f"--workdir={tmp_path / 'n'}"]) == 2
    assert "cannot be run" in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("TFCORE_SLOW_TESTS") != "1",
                    reason="real train.vat trials: ~1 min each on 2 CPU cores; set "
                           "TFCORE_SLOW_TESTS=1 to run")
def test_search_then_ensemble_over_train_vat(tmp_path, mnist_dir):
    """2 trials of the real VAT binary (300 images, 2 steps, exported), then a
    weighted ensemble of the two trials on their shared validation split."""
    from train import ensemble  # pylint: disable=import-outside-toplevel
    workdir = str(tmp_path / "vat_search")
    config = search.SearchConfig(
        binary="train.vat", space=hp.parse_space(["eps=uniform(0.5, 3)"]), trials=2,
        val_size=100, extra_flags=["--train_limit=300", "--test_limit=100", "--steps=2",
                                   "--batch_size=32", "--eval_batch_size=100",
                                   "--export", f"--data_dir={mnist_dir}"])
    summary = search.run_search(config, workdir, log=lambda s: None)
    assert [t["status"] for t in summary["trials"]] == ["ok", "ok"], summary["trials"]
    for t in summary["trials"]:
        assert "--val_size=100" in t["command"]
        assert 0.0 <= t["metrics"]["val_accuracy"] <= 1.0
    assert summary["best"] is not None
    result = ensemble.run_ensemble(ensemble.EnsembleConfig(
        members=[os.path.join(workdir, "trial_*")], method="weighted",
        data_dir=mnist_dir, test_limit=100), str(tmp_path / "ens"), log=lambda s: None)
    assert (result["val_size"], result["split_seed"], result["num_val"]) == (100, 0, 100)
    for row, t in zip(result["members"], summary["trials"]):
        # the ensemble recomputes each member's validation accuracy from its SavedModel
        assert row["val_accuracy"] == pytest.approx(t["metrics"]["val_accuracy"])
        assert row["test_accuracy"] == pytest.approx(t["metrics"]["test_accuracy"])
