"""Tests for bench/: the interleaved timing harness, the FLOP counter against hand
counts (the VAT CNN's train step, a padded strided conv), a smoke run of the
whole bench (two models, two modes, a few steps) checking the JSON records and the
markdown report, and a smoke run of bench.epoch_check (bench vs train.autoencoder)."""
import json
import math
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from bench import epoch_check, flops, harness, run
from models import (autoencoder, dcgan, multi_output, qa, registry, residual,
                    separable_convnet, siamese, vat_cnn)


# -- harness ---------------------------------------------------------------------------
def test_interleave_alternates_runners_and_reports_per_step_stats():
    calls = []
    now = [0.0]

    def clock():
        return now[0]

    def runner(name, ms_per_step):
        def run_n(n):
            calls.append((name, n))
            now[0] += n * ms_per_step / 1000.0
        return run_n

    t = harness.interleave({"a": runner("a", 2.0), "b": runner("b", 5.0)}, steps=3,
                           rounds=4, warmup=1, steps_for={"b": 2}, warmup_for={"a": 0},
                           clock=clock)
    # warm-up (b only), then a b a b a b a b
    assert calls == [("b", 1)] + [("a", 3), ("b", 2)] * 4
    assert t["a"].median_ms == pytest.approx(2.0) and t["a"].steps == 3
    assert t["b"].min_ms == pytest.approx(5.0) and t["b"].max_ms == pytest.approx(5.0)
    assert len(t["a"].samples_ms) == 4


def test_interleave_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one runner"):
        harness.interleave({})
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        harness.interleave({"a": lambda n: None}, steps=0)
    with pytest.raises(ValueError, match="runner 'a' must be callable"):
        harness.interleave({"a": 3})


# -- FLOPs -----------------------------------------------------------------------------
def test_vat_cnn_step_flops_match_hand_count():
    """The plain VAT-CNN train step: forward, input- and weight-gradients, counted by
    hand from the layer shapes (batch 4)."""
    b = 4
    setup = run.MODELS["vat_cnn"].build(b, np.random.default_rng(0))
    x, y = (tf.constant(a) for a in setup.arrays)
    seed = tf.constant([0, 1], tf.int64)
    conv1 = 2 * b * 26 * 26 * 32 * (3 * 3 * 1)      # x [b,28,28,1] -> [b,26,26,32]
    conv2 = 2 * b * 24 * 24 * 32 * (3 * 3 * 32)     # -> [b,24,24,32]
    dense = 2 * b * 4608 * 128
    dense_1 = 2 * b * 128 * 10
    # The two convs' bias gradients are matmuls on CPU (tfcore.conv2d_bias_relu:
    # ones[1, b*H*W] @ dz[b*H*W, 32]), counted like any matmul (0.2 % of the step).
    fused = setup.objects["model"].layers[0].uses_fused_gradient()
    bias_grads = (2 * b * 26 * 26 * 32 + 2 * b * 24 * 24 * 32) if fused else 0
    # conv1: forward + filter gradient (no input gradient: x needs none);
    # conv2, dense, dense_1: forward + input gradient + weight gradient.
    expected = 2 * conv1 + 3 * conv2 + 3 * dense + 3 * dense_1 + bias_grads
    count = flops.count_flops(setup.step_fn, (x, y), seed)
    assert count.source == "xla_hlo"
    assert count.flops == expected
    assert expected == pytest.approx(4.63e9 * b / 128, rel=0.01)  # issue 8's ~4.6 GFLOP @128
    graph = flops.count_flops(setup.step_fn, (x, y), seed, prefer="tf_graph")
    assert graph.source == "tf_graph" and graph.flops == expected


def test_hlo_count_skips_padding_taps_of_a_strided_same_conv():
    x = tf.zeros([2, 5, 5, 3])
    w = tf.zeros([3, 3, 3, 4])
    text = flops.xla_hlo_text(lambda x: tf.nn.conv2d(x, w, 2, "SAME"), x)
    # out 3x3, pad 1 each side: taps per spatial dim = 2 + 3 + 2 = 7 (of 9)
    assert flops.hlo_flops(text).flops == 2 * 2 * 4 * 3 * 7 * 7
    with pytest.raises(ValueError, match="prefer must be"):
        flops.count_flops(lambda x: x, x, prefer="nope")


# -- the whole bench -------------------------------------------------------------------
def test_bench_smoke_writes_records_and_report(tmp_path):
    records = run.run_bench(models=["dense_ae_small", "dense_ae_tied"],
                            modes=["graph", "keras_graph"], batch_size=8, steps=2,
                            rounds=2, warmup=1, kernels=False, log=lambda s: None)
    out = tmp_path / "bench.json"
    report = run.publish(records, "test", os.getloadavg(), time.time(), run.markdown,
                         str(out))
    md = tmp_path / "bench.md"
    assert md.read_text() == report and "Load average (1 min) at start / end" in report
    loaded = json.loads(out.read_text())
    assert [(r["model"], r["mode"]) for r in loaded] == [
        ("dense_ae_small", "graph"), ("dense_ae_small", "keras_graph"),
        ("dense_ae_tied", "graph"), ("dense_ae_tied", "keras_graph")]
    required = {"model", "mode", "median_ms", "min_ms", "max_ms", "gflops",
                "ratio_to_best_keras", "flops", "flop_source", "batch_size", "steps",
                "device", "tf_version", "keras_version", "pct_of_peak", "peak_gflops"}
    for r in loaded:
        assert required <= set(r), required - set(r)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["min_ms"] > 0
        assert r["batch_size"] == 8 and r["steps"] == 2 and len(r["samples_ms"]) == 2
        assert r["flop_source"] == "xla_hlo" and r["flops"] > 0
        assert math.isclose(r["gflops"], r["flops"] / r["median_ms"] / 1e6, rel_tol=1e-9)
        assert r["best_keras_mode"] == "keras_graph"
        assert r["peak_size"] == harness.PEAK_SIZE and r["peak_gflops"] > 0
    keras_row = loaded[1]
    assert keras_row["ratio_to_best_keras"] == pytest.approx(1.0)
    # dense AE, hidden 32: 3 matmuls per layer (fwd, dx, dW) minus the encoder's dx.
    small = 2 * 8 * 784 * 32
    assert loaded[0]["flops"] == 5 * small
    text = open(md).read()
    assert "| dense_ae_tied | graph |" in text and "x best Keras" in text
    assert f"{harness.PEAK_SIZE}^3 matmul (graph) interleaved" in text
    assert "above 100 % of the peak" not in text  # tiny models, far below it


def test_kernels_time_the_peak_matmul_beside_each_kernel():
    from bench import kernels
    records = kernels.run_kernels(steps=1, rounds=2, warmup=0, modes=["graph"],
                                  names=["matmul_dense"], peak_sizes=(64, 128),
                                  peak_size=96, log=lambda s: None)
    assert [(r["kind"], r["model"]) for r in records] == [
        ("peak", "matmul_64"), ("peak", "matmul_128"), ("kernel", "matmul_dense")]
    kernel = records[-1]
    assert kernel["flops"] == 2 * 128 * 4608 * 128 and kernel["peak_gflops"] > 0
    assert kernel["peak_size"] == 96
    assert kernel["pct_of_peak"] == pytest.approx(
        100 * kernel["gflops"] / kernel["peak_gflops"])
    with pytest.raises(ValueError, match="peak_size must be an integer >= 1, got 0"):
        kernels.run_kernels(names=["matmul_dense"], peak_size=0)


def test_report_flags_rows_above_the_peak():
    """A row faster than the matmul timed as the peak means that matmul was not the
    machine's peak (1024^3 on this project's CPUs): the report says so."""
    rows = [dict(_record("vat_cnn", "graph", [10.0]), peak_gflops=100.0, peak_size=1024,
                 gflops=120.0, pct_of_peak=120.0, min_ms=10.0, max_ms=10.0,
                 gflop_per_step=1.2, flop_source="xla_hlo"),
            dict(_record("dense_ae", "graph", [10.0]), peak_gflops=100.0, peak_size=1024,
                 gflops=60.0, pct_of_peak=60.0, min_ms=10.0, max_ms=10.0,
                 gflop_per_step=0.6, flop_source="xla_hlo")]
    text = run.markdown(rows)
    assert "1024^3 matmul (graph) interleaved" in text
    (line,) = [ln for ln in text.splitlines() if "above 100 % of the peak" in ln]
    assert "vat_cnn (graph)" in line and "dense_ae" not in line


def test_loop_mode_runs_a_round_in_one_call_and_reports_its_speed_up():
    records = run.run_bench(models=["dense_ae_small"], modes=["xla", "loop"], batch_size=8,
                            steps=6, rounds=2, warmup=1, kernels=False, log=lambda s: None)
    by_mode = {r["mode"]: r for r in records}
    assert by_mode["xla"]["steps"] == 6 and by_mode["loop"]["steps"] == 6
    speedup = run.summarize(records)["loop_speedup"]
    assert [(v["model"], v["per_step_mode"], v["loop_steps"]) for v in speedup] == [
        ("dense_ae_small", "xla", 6)]
    assert speedup[0]["speedup"] > 0
    assert "| 6 |" in run.markdown(records, "test").split("multi-step loop")[1]


def test_bench_rejects_unknown_names_and_skips_missing_gpu():
    with pytest.raises(ValueError, match=r"unknown models \['nope'\]"):
        run.run_bench(models=["nope"], kernels=False)
    with pytest.raises(ValueError, match=r"unknown modes \['fast'\]"):
        run.run_bench(models=["vat_cnn"], modes=["fast"], kernels=False)
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    messages = []
    assert run.run_bench(models=["vat_cnn"], device="gpu", log=messages.append) is None
    assert "no GPU" in messages[0]


# -- bench vs the binaries' epoch times ------------------------------------------------
def test_epoch_check_smoke_dense_ae(tmp_path, mnist_dir):
    """Bench, train.autoencoder (2 epochs of 5 steps on real MNIST), bench again: the
    record's fields and arithmetic, the JSON and the table."""
    out = str(tmp_path / "epoch_check.json")
    records = epoch_check.run_check(["dense_ae"], steps_per_epoch=5, epochs=2,
                                    data_dir=mnist_dir, partial_out=out, bench_steps=2,
                                    bench_rounds=2, model_budget_s=None,
                                    log=lambda s: None)
    md = run.write(records, out, epoch_check.markdown(records, "test"))
    (r,) = json.loads(open(out).read())
    assert {"model", "mode", "bench_ms", "binary_ms", "ratio", "within_15pct"} <= set(r)
    assert (r["model"], r["binary"], r["batch_size"]) == ("dense_ae", "train.autoencoder",
                                                          run.MODELS["dense_ae"].batch_size)
    # The dense autoencoder's --jit=auto is XLA on CPU too (its measured choice).
    assert r["mode"] == "xla"
    assert r["bench_ms_before"] > 0 and r["bench_ms_after"] > 0 and r["binary_ms"] > 0
    assert r["bench_ms"] == pytest.approx((r["bench_ms_before"] + r["bench_ms_after"]) / 2)
    assert r["binary_ms"] == pytest.approx(1000.0 / r["steps_per_second"])
    assert r["ratio"] == pytest.approx(r["binary_ms"] / r["bench_ms"], rel=1e-12)
    assert r["within_15pct"] == (abs(r["ratio"] - 1.0) <= 0.15)
    # The binary ran 2 epochs of 5 steps; its rate is the second epoch's.
    assert len(r["epoch_seconds"]) == 2 and r["steps_per_epoch"] == 5
    assert r["steps_per_second"] == pytest.approx(5 / r["epoch_seconds"][1])
    assert r["config_matches"] is True and r["notes"] == []
    row = [line for line in open(md).read().splitlines() if line.startswith("| dense_ae")]
    assert row and f"{r['ratio']:.3f}" in row[0]
    assert row[0].split("|")[6].strip() == ("yes" if r["within_15pct"] else "NO")
    with pytest.raises(ValueError, match="epochs must be an integer >= 2"):
        epoch_check.check_model("dense_ae", 5, 1)
    with pytest.raises(ValueError, match=r"unknown models \['vat'\]"):
        epoch_check.run_check(["vat"])


def test_epoch_check_reports_a_config_that_differs_from_the_bench():
    """The binary configured like the bench's conv AE (the binary's defaults: Adam 2e-2,
    wsd schedule) matches it; set away from it (Adam 1e-2, constant), the check says
    how, and a parameter count that differs too."""
    r = epoch_check.binary_run("conv_ae", 5, 2, 128)
    params = registry.modules("conv_ae")["conv_ae"][0].count_params()
    assert epoch_check.config_differences("conv_ae", r, {"num_params": params}) == []
    other = epoch_check.binary_run("conv_ae", 5, 2, 128, learning_rate=1e-2,
                                   lr_schedule="constant")
    diffs = epoch_check.config_differences("conv_ae", other, {"num_params": params + 1})
    assert len(diffs) == 4, diffs
    assert diffs[0].startswith("optimizer.learning_rate 0.0099") and "vs bench 0.0199" in \
        diffs[0]
    assert diffs[1] == f"{params + 1} parameters vs bench {params}"
    assert diffs[2:] == ["learning_rate 0.01 vs bench 0.02",
                         "lr_schedule 'constant' vs bench 'wsd'"]


def _record(model, mode, samples, jit=False, auto_xla=False, flops_=1e9, rel=1.0):
    return {"kind": "train_step", "model": model, "mode": mode, "samples_ms": samples,
            "steps": 1, "median_ms": float(np.median(samples)), "jit": jit,
            "auto_xla": auto_xla, "flops": flops_, "peak_relative": rel,
            "ratio_to_best_keras": None, "pct_of_peak": 50.0}


def test_paired_ratios_and_jit_tie_in_summary():
    """Ratios are medians of per-round pairs (a slow round slows both sides alike);
    --jit=auto agrees when it picks the faster mode or the two are within 5 %."""
    slow = harness.Timing([10.0, 10.0, 30.0], 1)
    fast = harness.Timing([5.0, 5.0, 15.0], 1)
    assert harness.paired_ratio(slow, fast) == 2.0
    with pytest.raises(ValueError, match="at least one round"):
        harness.paired_ratio(harness.Timing([], 1), fast)
    records = [
        _record("a", "graph", [10.0, 10.0, 40.0]), _record("a", "xla", [5.0, 6.0, 20.0]),
        _record("b", "graph", [10.0, 10.0, 10.0]), _record("b", "xla", [10.3, 10.2, 10.4]),
        _record("c", "graph", [4.0, 4.0, 4.0], auto_xla=True),
        _record("c", "xla", [8.0, 8.0, 8.0], jit=True, auto_xla=True),
        _record("c", "loop", [2.0, 2.0, 5.0], jit=True, auto_xla=True),
    ]
    s = run.summarize(records)
    jit = {j["model"]: j for j in s["jit_auto"]}
    assert jit["a"]["xla_over_graph"] == 0.5 and not jit["a"]["agrees"]  # auto: graph
    assert jit["b"]["tie"] and jit["b"]["agrees"]                          # 2-4 % apart
    assert jit["c"]["xla_over_graph"] == 2.0 and not jit["c"]["agrees"]   # auto: xla
    (loop,) = s["loop_speedup"]
    assert loop["per_step_mode"] == "xla" and loop["speedup"] == 4.0
    vat = run.summarize([_record("vat_cnn_vat", "graph", [30.0], flops_=2.67e9, rel=3.0),
                         _record("vat_cnn", "graph", [20.0], rel=1.0)])["vat_ratios"]
    assert vat[0]["time_ratio"] == 3.0  # peak-relative times, not the raw 30 / 20


def test_vat_pair_is_timed_in_one_session(tmp_path):
    records = run.run_bench(models=["vat_cnn_vat", "vat_cnn"], modes=["graph"],
                            batch_size=8, steps=1, rounds=2, warmup=1, kernels=False,
                            peak_size=64, log=lambda *_: None)
    (pair,) = [r for r in records if r["kind"] == "pair"]
    assert (pair["vat"], pair["plain"], pair["rounds"]) == ("vat_cnn_vat", "vat_cnn", 2)
    assert pair["time_ratio"] > 1.0 and 2.0 < pair["flop_ratio"] < 3.5
    steps = {r["model"]: r for r in records if r["kind"] == "train_step"}
    assert pair["flop_ratio"] == steps["vat_cnn_vat"]["flops"] / steps["vat_cnn"]["flops"]
    s = run.summarize(records)
    (target,) = [t for t in s["targets"] if "step-time ratio" in t["target"]]
    assert "paired" in target["target"] and target["value"] == pair["time_ratio"]
    assert "graph (paired)" in run.markdown(records)


# -- the bench's steps are the binaries' / the models' -------------------------------------
_STEP_MODULES = {"vat_cnn": vat_cnn, "dense_ae": autoencoder, "conv_ae": autoencoder,
                 "dcgan": dcgan, "separable_convnet": separable_convnet,
                 "residual": residual, "qa": qa, "siamese_lstm": siamese,
                 "multi_output": multi_output}


def _step_module(name):
    return next(m for prefix, m in _STEP_MODULES.items() if name.startswith(prefix))


def test_bench_steps_are_the_models_make_train_step(monkeypatch):
    """Every bench model's step is the one its model module's `make_train_step`
    returns, built by the binary's library where there is one (`models.registry`): a
    recorder around each `make_train_step` sees the setup's own model and optimizer,
    and the setup's step runs the returned step. The DCGAN's has the weight average
    of G at the binary's default decay."""
    assert set(run.MODELS) == set(registry.TRAINABLE)
    calls = []

    def recorder(module):
        real = module.make_train_step

        def make_train_step(*args, **kwargs):
            real(*args, **kwargs)  # the real one checks its arguments as usual
            calls.append((module, args, kwargs))
            return lambda batch, seed: {"loss": tf.constant(float(len(calls)))}
        return make_train_step

    for module in set(_STEP_MODULES.values()):
        monkeypatch.setattr(module, "make_train_step", recorder(module))
    seed = tf.constant([0, 1], tf.int64)
    for name, spec in run.MODELS.items():
        calls.clear()
        setup = spec.build(2, np.random.default_rng(0))
        assert [c[0] for c in calls] == [_step_module(name)], name
        _, args, kwargs = calls[0]
        model = setup.objects.get("model", setup.objects.get("generator"))
        assert args[0] is model and args[1] in setup.objects.values(), name
        batch = tf.nest.map_structure(tf.constant, setup.arrays)
        assert float(setup.step_fn(batch, seed)["loss"]) == 1.0, name  # the step it made
        if name.startswith("dcgan"):
            assert kwargs["ema_generator"] is setup.objects["generator_ema"]
            assert kwargs["ema_decay"] == dcgan.DEFAULT_G_EMA


def test_vat_hvp_bench_times_both_products(capsys):
    from bench import vat_hvp
    ratios = vat_hvp.main(["--rounds=1", "--steps=1"])
    assert set(ratios) == {f"graph/{kind}" for kind in (
        "plain (CE + entropy)", "finite_difference", "exact", "secant",
        "finite_difference, one-hot pool", "exact, one-hot pool")}
    assert ratios["graph/finite_difference"] == 1.0
    assert all(r > 0 for r in ratios.values())
    assert "| graph | exact |" in capsys.readouterr().out


def test_vat_direction_tables_compare_with_float64(mnist_dir, monkeypatch, capsys):
    from bench import vat_direction
    monkeypatch.setattr(vat_direction, "XIS", (1e-2,))
    vat_direction.main(["--steps=20", "--iterations=1", "--worst=1e-2"])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line
            for line in out.splitlines() if line.startswith("| ")}
    assert "xi=0.01 (graph): worst image" in out and "float64" in out
    # At xi = 1e-2 both of the products agree with float64.
    for method in ("official", "finite_difference", "exact", "exact, one-hot pool"):
        assert float(rows[method].split(" | ")[1].split()[0]) > 0.99, rows[method]


_VAT100_CONFIG = {"hvp": "finite_difference", "xi": 1e-6, "eps": 1.5,
                  "power_iterations": 1, "vat_weight": 1.0}


def _vat100_run(path, status, **metrics):
    path.mkdir()
    path.joinpath("metrics.json").write_text(json.dumps(
        {"status": status, "split_digest": "abc", "train_seconds": 600.0,
         "steps_per_second": 11.7, **metrics}))


def test_vat100_report_tables_finished_runs(tmp_path, capsys):
    from bench import vat100_report
    random = dict(_VAT100_CONFIG, power_iterations=0)
    runs = {"recipe_s0p0": (0.0125, "done", _VAT100_CONFIG),
            "recipe_s0p1": (0.0225, "done", _VAT100_CONFIG),
            "random_s0p0": (0.0658, "done", random),
            "exact_s1p0": (0.02, "running", None)}
    for name, (error, status, config) in runs.items():
        _vat100_run(tmp_path / name, status, test_error=error, config=config)
    (tmp_path / "not_a_run").mkdir()
    text = vat100_report.main([str(tmp_path)])
    assert "| recipe | 0 | 1 (`abc`) | 2.25 % | 10.0 (11.7) |" in text
    assert "| exact | 1 | 0 | (not finished) | |" in text
    # The labels come from each run's config.
    assert ("| recipe: finite difference at xi = 1e-06, eps 1.5 | 2 | 1.75 % | 0.71 | "
            "1.25-2.25 % |") in text
    assert ("| random: random direction (`--power_iterations=0`), eps 1.5 | 1 | 6.58 % | - | "
            "6.58-6.58 % |") in text
    assert "not_a_run" not in capsys.readouterr().out


def test_vat100_report_describes_each_direction_from_its_config():
    from bench.vat100_report import describe
    assert describe(None) is None
    assert describe(dict(_VAT100_CONFIG, hvp="exact", eps=0.5)) == (
        "accurate direction (`--hvp=exact`), eps 0.5")
    assert describe(dict(_VAT100_CONFIG, hvp="secant", eps=0.25, power_iterations=2,
                         vat_weight=2.0, lr_decay_fraction=0.33)) == (
        "accurate finite difference (`--hvp=secant`), eps 0.25, 2 power iterations, "
        "VAT weight 2, learning rate decayed over the last 0.33")


def test_vat100_report_val_table_ranks_by_last_validation_accuracy(tmp_path):
    from bench import vat100_report
    hist = {"a": [0.90, 0.97, 0.96], "b": [0.95, 0.96, 0.975]}
    for name, val in hist.items():
        _vat100_run(tmp_path / name, "done", config=dict(_VAT100_CONFIG, eps=len(name)),
                    history={"val_accuracy": val, "test_accuracy": [0.9, 0.95, 0.98]})
    _vat100_run(tmp_path / "c", "running")
    (tmp_path / "no_metrics").mkdir()
    lines = vat100_report.main(["--val", str(tmp_path)]).splitlines()
    rows = [line.split(" | ")[0] for line in lines[2:]]
    assert rows == ["| b", "| a", "| c"], lines   # b's last epoch is the higher one
    assert lines[3] == ("| a | finite difference at xi = 1e-06, eps 1 | 96.00 % / 97.00 %, 2 | "
                        "2.00 % | 10.0 (11.7) |")
    assert lines[4] == "| c | | (not finished) | | |"
    assert "WARNING" not in "\n".join(lines)


def test_vat_direction_official_port_is_the_float64_finite_difference():
    """In float64 takerum/vat_tf's direction (ported) and the reference finite difference
    agree but for the official code's 1e-12 / 1e-6 guards; in float32 at xi = 1e-2 too."""
    from bench import vat_direction
    from models import vat_cnn
    tf.random.set_seed(1)
    model = vat_cnn.VatCNN(dropout=False)
    x = np.random.RandomState(0).uniform(0, 1, (4, 28, 28, 1))
    model(tf.constant(x, tf.float32))
    weights = {v.name.split(":")[0]: v.numpy().astype(np.float64)
               for v in model.trainable_variables}
    d0 = np.random.RandomState(1).normal(size=x.shape)
    for k in (1, 2):
        ref = vat_direction.reference(weights, x, d0, 1e-2, k)
        official = vat_direction._official_direction(
            lambda z: vat_direction.logits64(weights, z), tf.constant(x), 1e-2, k,
            tf.constant(d0)).numpy()
        assert vat_direction.cosines(official, ref).min() > 1 - 1e-9, k
        float32 = vat_direction.direction(model, x.astype(np.float32), d0, 1e-2, k,
                                          "official", "graph")
        assert vat_direction.cosines(float32, ref).min() > 0.99, k
