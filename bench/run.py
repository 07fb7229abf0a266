"""`python -m bench.run`: tfcore train steps side by side with Keras 3, one run.

    python -m bench.run --out=runs/bench.json                 # defaults: <= 15 min on 2 cores
    python -m bench.run --models=vat_cnn,vat_cnn_vat --modes=graph,xla,keras_graph \
        --steps=5 --rounds=5 --kernels=false --out=/tmp/b.json

For every model, the same tfcore `step_fn(batch, seed)` runs in each mode: the step
its training binary runs by default (`train.vat`, `train.autoencoder`, `train.dcgan`:
built by the binary's library; the functional-API models: their module's
`make_train_step`), as `models.registry` lists them, and the Keras 3 equivalent
(`bench.keras_models`) beside it:

| mode          | what runs                                                              |
| ------------- | ---------------------------------------------------------------------- |
| `eager`       | `tfcore.training.loop.Loop`, one step per call, functions run eagerly           |
| `graph`       | `Loop`, one `tf.function` call per step (jit off)                      |
| `xla`         | `Loop`, one `tf.function(jit_compile=True)` call per step              |
| `loop`        | `Loop(steps_per_call=steps)`: all of a round's steps in ONE compiled call (a `tf.while_loop` gathering its batches from the on-device `DeviceDataset`); jit per `--loop_jit` |
| `keras_graph` | the Keras 3 model, custom `train_step`, `train_on_batch`, `jit_compile=False` |
| `keras_xla`   | the same with `jit_compile=True`                                       |

The tfcore modes read their batches from a `tfcore.data.DeviceDataset` of synthetic
data with the real shapes (MNIST 28x28x1, DCGAN 32x32x1), as training does, one epoch
long enough for all rounds; the Keras modes call `train_on_batch` on one batch
already on the device. All modes of a
model (plus a matmul that measures the machine's peak under the same load) are timed
in interleaved rounds after a warm-up (`bench.harness`).

Output: a JSON list of records (`--out`), and a markdown report (printed and written
next to the JSON as `.md`). Train-step records have: `kind` ('train_step'), `model`,
`mode`, `median_ms`, `min_ms`, `max_ms` (per step), `samples_ms`, `steps`, `rounds`,
`batch_size`, `flops` (per step), `gflop_per_step`, `flop_source` ('xla_hlo' or
'tf_graph', see `bench.flops`), `gflops` (achieved GFLOP/s = flops / median time),
`peak_gflops` (the matmul peak timed interleaved with this model; `peak_size`: its
size, default 2048), `pct_of_peak`,
`ratio_to_best_keras` (median / the best Keras mode's median; None without Keras
modes), `best_keras_mode`, `jit` (whether XLA compiled it), `device`,
`tf_version`, `keras_version`, `intra_op_threads`, `inter_op_threads`. Kernel
records (`kind` 'kernel' or 'peak') come from `bench.kernels`. With a VAT model and its
plain counterpart both requested (and the graph mode), a `kind` 'pair' record times the
two in one interleaved session (`bench_pair`): `time_ratio` (median of per-round
ratios) beside `flop_ratio`; the VAT/plain target uses it.

`--device=gpu` places everything on '/GPU:0' (and prints a message and exits 0 when
no GPU is visible); `--device=cpu` on '/CPU:0'.

`python -m bench.epoch_check` compares these step times with the seconds per epoch
the training binaries report (their steady-state `steps_per_second`, evaluation and
the first, tracing epoch excluded): see its docstring.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import flops as flops_lib  # noqa: E402
from bench import harness  # noqa: E402
from models import registry  # noqa: E402

MODES = ("eager", "graph", "xla", "loop", "keras_graph", "keras_xla")
KERAS_MODES = ("keras_graph", "keras_xla")
DEVICES = ("cpu", "gpu")


# -- the tfcore models -------------------------------------------------------------------
@dataclasses.dataclass
class TfcoreSetup:
    """One tfcore model ready to train.

    Attributes:
      step_fn: the un-compiled `step_fn(batch, seed) -> {name: scalar}`: the step the
        model's training binary runs by default (`models.registry`'s `train`: the
        binary library's `build`, or the model module's `make_train_step`).
      objects: its trackables (model(s), optimizer(s)), for `tfcore.training.loop.Loop`.
      arrays: the in-memory training set (NumPy nest, first axis = examples).
    """

    step_fn: Callable
    objects: Dict[str, Any]
    arrays: Any


@dataclasses.dataclass
class ModelSpec:
    """A bench model: its tfcore builder `build(n, rng) -> TfcoreSetup` (n synthetic
    examples from `rng`), default batch size and description."""

    build: Callable[[int, Any], TfcoreSetup]
    batch_size: int
    description: str
    cpu_xla: bool = False  # the model's measured --jit=auto choice on CPU


def _builder(name: str) -> Callable[[int, Any], TfcoreSetup]:
    entry = registry.get(name)

    def build(n: int, rng) -> TfcoreSetup:
        training = entry.train()
        return TfcoreSetup(training.step_fn, training.objects, entry.data(n, rng))

    return build


# Every registry model with a train step (the VAT CNNs, autoencoders and DCGANs with
# their binaries' steps, the functional-API models with their modules').
MODELS: Dict[str, ModelSpec] = {
    name: ModelSpec(_builder(name), registry.get(name).batch_size,
                    registry.get(name).description, cpu_xla=registry.get(name).cpu_xla)
    for name in registry.TRAINABLE}
FUNCTIONAL_MODELS = ("separable_convnet", "residual", "qa", "siamese_lstm", "multi_output")
# residual (16 GFLOP/step even at batch 8) and multi_output run with --models=...
DEFAULT_MODELS = tuple(m for m in MODELS if m not in ("residual", "multi_output"))

# |xla / graph - 1| within this: an even match, where --jit=auto may pick either.
JIT_TIE = 0.05

# (VAT model, its plain counterpart) for the VAT/plain ratios.
VAT_PAIRS = (("vat_cnn_vat", "vat_cnn"), ("vat_cnn_vat_dropout", "vat_cnn_dropout"))


# -- runners ---------------------------------------------------------------------------
def _loop(setup: TfcoreSetup, data, jit: bool, steps_per_call: int = 1):
    from tfcore.training import loop as loop_lib
    # The steps branch on Python values only: tracing them without AutoGraph gives
    # the same graph, several times faster (AutoGraph's conversion of the whole
    # model code dominated the start-up of every mode).
    step_fn = tf.autograph.experimental.do_not_convert(setup.step_fn)
    return loop_lib.Loop(step_fn, data, objects=setup.objects, jit=jit,
                         steps_per_call=steps_per_call, progress=False,
                         check_numerics=False)


def _loop_runner(lp, eager: bool = False) -> harness.Runner:
    def run(n: int):
        done = int(lp.step.numpy())
        if eager:
            tf.config.run_functions_eagerly(True)
        try:
            lp.fit(steps=done + n)
        finally:
            if eager:
                tf.config.run_functions_eagerly(False)
        return None
    return run


def matmul_runner(size: int, jit: bool = False) -> Tuple[harness.Runner, int]:
    """A runner of one [size, size] @ [size, size] float32 matmul per step, and its FLOPs."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    b = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    fn = tf.function(tf.linalg.matmul, jit_compile=jit)
    return harness.repeat(lambda: fn(a, b)), 2 * size ** 3


# -- the bench -------------------------------------------------------------------------
def onednn_enabled() -> Optional[bool]:
    """Whether TensorFlow's oneDNN custom ops are on (TF_ENABLE_ONEDNN_OPTS; TF turns
    them on by default only on some CPUs: on this project's AMD EPYC they are off)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # pylint: disable=broad-except
        return None


def _versions() -> Dict[str, Any]:
    import keras
    return {"tf_version": tf.__version__, "keras_version": keras.__version__,
            "onednn": onednn_enabled(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def device_name(device: str) -> Optional[str]:
    """'/CPU:0' or '/GPU:0'; None for 'gpu' when no GPU is visible."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "gpu":
        return "/GPU:0" if tf.config.list_physical_devices("GPU") else None
    return "/CPU:0"


def bench_model(name: str, modes: Sequence[str], batch_size: int, steps: int,
                rounds: int, warmup: int, eager_steps: int,
                loop_jit: Union[str, bool], peak_size: int, seed: int = 0,
                budget_s: Optional[float] = None,
                log: Callable[[str], None] = print,
                keep: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Times one model in every mode (interleaved) and returns its records.

    `loop_jit`: the `loop` mode's compile mode, 'auto' | 'on' | 'off' or a bool;
    'auto' resolves per model (`tfcore.training.compile.resolve_jit` with its `cpu_xla`).
    `keep`: when given (and with the graph mode), receives `keep[name] = (the graph
    mode's runner, FLOPs per step, batch_size)` for `bench_pair` to time the same
    traced loop again; its data then spans twice the rounds.
    """
    from tfcore.training.compile import resolve_jit
    from tfcore.data import DeviceDataset
    spec = MODELS[name]
    auto_xla = resolve_jit("auto", cpu_xla=spec.cpu_xla)
    loop_jit = resolve_jit(loop_jit, cpu_xla=spec.cpu_xla)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    # Enough examples that one epoch spans the warm-up and every timed round: a
    # training epoch runs hundreds of steps, so the per-epoch work (the permutation)
    # must not land in every round as it would with a one-round epoch.
    spans = rounds + warmup + 2 if keep is None else 2 * (rounds + warmup) + 2
    setup = spec.build(batch_size * steps * spans, rng)
    data = DeviceDataset(setup.arrays, batch_size, seed=seed)
    example = data.batch(0, 0)
    count = flops_lib.count_flops(setup.step_fn, example, tf.constant([seed, 0], tf.int64))
    runners: Dict[str, harness.Runner] = {}
    steps_for: Dict[str, int] = {}
    jit_of: Dict[str, bool] = {}
    for mode in modes:
        if mode == "eager":
            runners[mode] = _loop_runner(_loop(setup, data, jit=False), eager=True)
            steps_for[mode] = eager_steps
            jit_of[mode] = False
        elif mode in ("graph", "xla"):
            runners[mode] = _loop_runner(_loop(setup, data, jit=mode == "xla"))
            jit_of[mode] = mode == "xla"
        elif mode == "loop":
            runners[mode] = _loop_runner(_loop(setup, data, jit=loop_jit,
                                               steps_per_call=steps))
            jit_of[mode] = loop_jit
        elif mode in KERAS_MODES:
            from bench import keras_models
            jit = mode == "keras_xla"
            runners[mode] = keras_models.build(name, example, jit_compile=jit, seed=seed).run
            jit_of[mode] = jit
        else:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if keep is not None and "graph" in runners:
        keep[name] = (runners["graph"], count.flops, batch_size)
    peak_run, peak_flops = matmul_runner(peak_size)
    runners["matmul_peak"] = peak_run
    steps_for["matmul_peak"] = max(1, min(steps, 3))
    # The loop mode runs a whole round per call: warm it up with one round (its trace),
    # so its calls stay aligned with the rounds.
    warmup_for = {"loop": steps} if "loop" in runners else {}
    log(f"[{name}] built in {time.perf_counter() - t0:.1f}s; "
        f"{count.flops / 1e9:.3f} GFLOP/step ({count.source}); timing "
        f"{', '.join(runners)} ...")
    t1 = time.perf_counter()
    timings = harness.interleave(runners, steps=steps, rounds=rounds, warmup=warmup,
                                 steps_for=steps_for, warmup_for=warmup_for,
                                 time_budget_s=budget_s, min_rounds=min(3, rounds))
    log(f"[{name}] timed in {time.perf_counter() - t1:.1f}s: " + ", ".join(
        f"{m} {t.median_ms:.2f}" for m, t in timings.items()) + " ms/step")
    peak = timings.pop("matmul_peak")
    peak_gflops = peak_flops / (peak.median_ms * 1e-3) / 1e9
    keras_best = [(timings[m].median_ms, m) for m in KERAS_MODES if m in timings]
    best_ms, best_mode = min(keras_best) if keras_best else (None, None)
    records = []
    for mode, t in timings.items():
        gflops = count.flops / (t.median_ms * 1e-3) / 1e9
        # Paired per-round statistics (harness.paired_ratio): robust to the machine
        # speeding up or slowing down between rounds.
        peak_relative = harness.paired_ratio(t, peak)
        records.append({
            "kind": "train_step", "model": name, "mode": mode,
            "median_ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms,
            "samples_ms": t.samples_ms, "cpu_median_ms": t.cpu_median_ms,
            "steps": t.steps, "rounds": len(t.samples_ms),
            "batch_size": batch_size, "flops": count.flops,
            "gflop_per_step": count.flops / 1e9, "flop_source": count.source,
            "gflops": gflops, "peak_gflops": peak_gflops, "peak_size": peak_size,
            "peak_relative": peak_relative,
            "pct_of_peak": 100.0 * count.flops / peak_flops / peak_relative,
            "ratio_to_best_keras": (harness.paired_ratio(t, timings[best_mode])
                                    if best_ms else None),
            "best_keras_mode": best_mode, "jit": jit_of[mode], "auto_xla": auto_xla})
    return records


def bench_pair(vat: str, plain: str, batch_size: int, steps: int, rounds: int,
               warmup: int, seed: int = 0, budget_s: Optional[float] = None,
               log: Callable[[str], None] = print,
               prepared: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The VAT/plain step-time ratio, both models timed in ONE interleaved session
    (graph mode, the CPU's mode for them), so every round pairs the two under the same
    machine state; the ratio is the median of the per-round ratios. `prepared`:
    `bench_model`'s `keep` (a model's traced graph-mode runner and FLOPs at this
    batch size, used instead of building it again)."""
    from tfcore.data import DeviceDataset
    runners, flops = {}, {}
    for name in (vat, plain):
        if name in (prepared or {}) and prepared[name][2] == batch_size:
            runners[name], flops[name], _ = prepared[name]
            continue
        rng = np.random.default_rng(seed)
        setup = MODELS[name].build(batch_size * steps * (rounds + warmup + 2), rng)
        data = DeviceDataset(setup.arrays, batch_size, seed=seed)
        flops[name] = flops_lib.count_flops(setup.step_fn, data.batch(0, 0),
                                            tf.constant([seed, 0], tf.int64)).flops
        runners[name] = _loop_runner(_loop(setup, data, jit=False))
    t = harness.interleave(runners, steps=steps, rounds=rounds, warmup=warmup,
                           time_budget_s=budget_s, min_rounds=min(3, rounds))
    ratio = harness.paired_ratio(t[vat], t[plain])
    log(f"[{vat} / {plain}] paired graph-mode ratio {ratio:.3f} "
        f"(FLOP ratio {flops[vat] / flops[plain]:.3f})")
    return {"kind": "pair", "model": f"{vat}/{plain}", "mode": "graph", "vat": vat,
            "plain": plain, "time_ratio": ratio, "flop_ratio": flops[vat] / flops[plain],
            "vat_ms": t[vat].median_ms, "plain_ms": t[plain].median_ms,
            "rounds": len(t[vat].samples_ms), "batch_size": batch_size}


def run_bench(models: Sequence[str] = DEFAULT_MODELS, modes: Sequence[str] = MODES,
              batch_size: int = 0, steps: int = 5, rounds: int = 7, warmup: int = 1,
              model_budget_s: Optional[float] = 20.0,
              eager_steps: int = 1, loop_jit: str = "auto", device: str = "cpu",
              kernels: bool = True, kernel_steps: int = 5, peak_size: int = harness.PEAK_SIZE,
              seed: int = 0, log: Callable[[str], None] = print,
              partial_out: Optional[str] = None) -> Optional[List[Dict[str, Any]]]:
    """Runs the bench; returns the records (None when `device='gpu'` and there is none).

    Args:
      models: bench model names (see `MODELS`).
      modes: subset of `MODES`.
      batch_size: 0 = each model's default (`MODELS[name].batch_size`: 128 for the
        VAT CNN and the autoencoders, 64 for DCGAN, qa and siamese_lstm, 32 for
        separable_convnet, 8 for residual and multi_output).
      steps: steps per timed round (and the `loop` mode's steps per compiled call).
      rounds: interleaved timed rounds (median over them), at most.
      model_budget_s: cap on one model's timed rounds (seconds): fewer rounds (but at
        least 3) when the machine is slow or loaded; None: always `rounds`.
      warmup: untimed steps per mode first (the loop mode: one round).
      eager_steps: steps per round of the (slow) eager mode.
      loop_jit: 'auto' | 'on' | 'off': compile mode of the `loop` mode
        (`tfcore.training.compile.resolve_jit`).
      device: 'cpu' or 'gpu'.
      kernels: also run `bench.kernels` (micro-benchmarks and matmul peaks).
      kernel_steps: calls per round for the kernels.
      peak_size: the square matmul (size^3) timed with every model for its % of peak
        (default `bench.harness.PEAK_SIZE`, 2048: a 1024^3 matmul runs ~20 % below
        the machine's matmul peak on this project's CPUs, inflating the % of peak).
      seed: data and initialisation seed.
      log: progress printer.
      partial_out: if given, the records so far are written there (JSON) after every
        model, so an interrupted run keeps what it measured.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown modes {bad}; known: {', '.join(MODES)}")
    for what, v, low in (("steps", steps, 1), ("rounds", rounds, 1), ("warmup", warmup, 0),
                         ("eager_steps", eager_steps, 1), ("batch_size", batch_size, 0),
                         ("kernel_steps", kernel_steps, 1), ("peak_size", peak_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {v!r}")
    dev = device_name(device)
    if dev is None:
        log("--device=gpu: no GPU is visible to TensorFlow; nothing to run (skipped).")
        return None
    common = {"device": dev, **_versions()}
    records: List[Dict[str, Any]] = []
    pairs = [p for p in VAT_PAIRS if "graph" in modes and set(p) <= set(models)]
    kept: Dict[str, Any] = {}  # the pairs' graph-mode loops, timed again in bench_pair
    with tf.device(dev):
        for name in models:
            bs = batch_size or MODELS[name].batch_size
            keep = kept if any(name in p for p in pairs) else None
            for r in bench_model(name, modes, bs, steps, rounds, warmup, eager_steps,
                                 loop_jit, peak_size, seed=seed, budget_s=model_budget_s,
                                 log=log, keep=keep):
                records.append({**r, **common})
            if partial_out:
                _write_json(records, partial_out)
        for vat, plain in pairs:
            records.append({**bench_pair(
                vat, plain, batch_size or MODELS[vat].batch_size, steps, rounds, warmup,
                seed=seed, budget_s=model_budget_s, log=log, prepared=kept), **common})
        kept.clear()
        if kernels:
            from bench import kernels as kernels_lib
            for r in kernels_lib.run_kernels(steps=kernel_steps, rounds=rounds,
                                             peak_size=peak_size,
                                             time_budget_s=model_budget_s, log=log):
                records.append({**r, **common})
    return records


# -- report ----------------------------------------------------------------------------
def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _by(records, kind="train_step"):
    return {(r["model"], r["mode"]): r for r in records if r.get("kind") == kind}


def _relative(record: Dict[str, Any]) -> float:
    """A record's step time relative to the matmul peak timed in the same rounds."""
    return record["peak_relative"]


def _paired(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    """Median of per-round time ratios of two records of the same model and run."""
    return harness.paired_ratio(harness.Timing(a["samples_ms"], a["steps"]),
                                harness.Timing(b["samples_ms"], b["steps"]))


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Derived figures: VAT/plain ratios, jit=auto choice vs best, loop speed-ups, targets."""
    from tfcore.training.compile import resolve_jit
    steps = _by(records)
    models = list(dict.fromkeys(m for m, _ in steps))
    out: Dict[str, Any] = {"vat_ratios": [], "jit_auto": [], "loop_speedup": [],
                           "targets": []}
    for vat, plain in VAT_PAIRS:
        for mode in MODES:
            a, b = steps.get((vat, mode)), steps.get((plain, mode))
            if a and b:
                # Timed in separate runs: compare their times relative to the matmul
                # peak timed in the same rounds (drift between the runs cancels).
                t_ratio = _relative(a) / _relative(b)
                f_ratio = a["flops"] / b["flops"]
                out["vat_ratios"].append({"vat": vat, "plain": plain, "mode": mode,
                                          "time_ratio": t_ratio, "flop_ratio": f_ratio,
                                          "deviation_pct": 100 * (t_ratio / f_ratio - 1)})
    for m in models:
        g, x = steps.get((m, "graph")), steps.get((m, "xla"))
        if g and x:
            auto = "xla" if g.get("auto_xla", resolve_jit("auto")) else "graph"
            xla_over_graph = _paired(x, g)  # per-round pairs, same run
            best = "graph" if xla_over_graph >= 1.0 else "xla"
            # Within JIT_TIE (5 %) the two are even on this machine (its rounds spread
            # by more than that): either choice agrees.
            tie = abs(xla_over_graph - 1.0) <= JIT_TIE
            out["jit_auto"].append({"model": m, "auto_picks": auto, "measured_best": best,
                                    "graph_ms": g["median_ms"], "xla_ms": x["median_ms"],
                                    "xla_over_graph": xla_over_graph, "tie": tie,
                                    "agrees": auto == best or tie})
        lp = steps.get((m, "loop"))
        per = steps.get((m, "xla" if lp and lp["jit"] else "graph"))
        if lp and per:
            out["loop_speedup"].append({"model": m, "per_step_mode": per["mode"],
                                        "per_step_ms": per["median_ms"],
                                        "loop_ms": lp["median_ms"],
                                        "loop_steps": lp["steps"],
                                        "speedup": _paired(per, lp)})
    # Targets of issue 8.
    tf_modes = ("graph", "xla", "loop")
    for m in models:
        rs = [steps[(m, md)] for md in tf_modes if (m, md) in steps
              and steps[(m, md)]["ratio_to_best_keras"] is not None]
        if rs:
            best = min(rs, key=lambda r: r["median_ms"])
            out["targets"].append({
                "target": f"{m}: best tfcore step <= best Keras 3 (ratio <= 1.0)",
                "value": best["ratio_to_best_keras"], "mode": best["mode"],
                "met": best["ratio_to_best_keras"] <= 1.0})
    for r in records:
        if r.get("kind") == "pair":
            out["vat_ratios"].append({
                "vat": r["vat"], "plain": r["plain"], "mode": "graph (paired)",
                "time_ratio": r["time_ratio"], "flop_ratio": r["flop_ratio"],
                "deviation_pct": 100 * (r["time_ratio"] / r["flop_ratio"] - 1)})
    paired = {(v["vat"], v["plain"]) for v in out["vat_ratios"]
              if v["mode"] == "graph (paired)"}
    for v in out["vat_ratios"]:
        # Issue 8's target is the no-dropout pair (the dropout pair's plain step also
        # pays for its random masks, which no FLOP count sees: reported, not held to
        # it); it uses the paired measurement where there is one.
        if v["vat"] != VAT_PAIRS[0][0]:
            continue
        if v["mode"] == "graph (paired)" or (
                v["mode"] == "graph" and (v["vat"], v["plain"]) not in paired):
            out["targets"].append({
                "target": f"{v['vat']}/{v['plain']} step-time ratio within 5% of the FLOP "
                          f"ratio {v['flop_ratio']:.2f} ({v['mode']})",
                "value": v["time_ratio"], "mode": "graph",
                "met": abs(v["deviation_pct"]) <= 5.0})
    plain = [steps[("vat_cnn", md)] for md in tf_modes if ("vat_cnn", md) in steps]
    if plain:
        best = max(plain, key=lambda r: r["pct_of_peak"])
        out["targets"].append({"target": "vat_cnn plain step >= 75% of the matmul peak",
                               "value": best["pct_of_peak"], "mode": best["mode"],
                               "met": best["pct_of_peak"] >= 75.0})
    for s in out["loop_speedup"]:
        if s["model"].startswith("dense_ae"):
            out["targets"].append({"target": f"{s['model']}: loop >= 1.3x per-step calls",
                                   "value": s["speedup"], "mode": "loop",
                                   "met": s["speedup"] >= 1.3})
    for j in out["jit_auto"]:
        out["targets"].append({"target": f"{j['model']}: --jit=auto picks the faster mode",
                               "value": j["xla_over_graph"], "mode": j["auto_picks"],
                               "met": j["agrees"]})
    return out


def markdown(records: List[Dict[str, Any]], command: str = "",
             context: Optional[Dict[str, Any]] = None) -> str:
    """The report: context, matmul peak, train steps, VAT ratios, jit=auto, loop, kernels, targets."""
    lines: List[str] = []
    any_r = records[0] if records else {}
    lines.append(f"Command: `{command}`" if command else "")
    lines.append(f"Device {any_r.get('device')}, TensorFlow {any_r.get('tf_version')}, "
                 f"Keras {any_r.get('keras_version')}, oneDNN custom ops "
                 f"{ {True: 'on', False: 'off'}.get(any_r.get('onednn'), '?')}, intra/inter-op "
                 f"threads {any_r.get('intra_op_threads')}/{any_r.get('inter_op_threads')} "
                 f"(0 = TF's default).")
    for k, v in (context or {}).items():
        lines.append(f"{k}: {v}")
    peaks = [r for r in records if r.get("kind") == "peak"]
    steps = [r for r in records if r.get("kind") == "train_step"]
    if peaks or steps:
        lines += ["", "### Matmul peak (measured in this run)", ""]
        for r in peaks:
            lines.append(f"- {r['model']} ({r['mode']}): {r['gflops']:.1f} GFLOP/s "
                         f"(median of {len(r['samples_ms'])} rounds)")
        model_peaks = [r["peak_gflops"] for r in steps if r["mode"] == steps[0]["mode"]]
        if model_peaks:
            size = steps[0].get("peak_size", "?")
            lines.append(f"- {size}^3 matmul (graph) interleaved with each model's rounds: "
                         f"median {statistics.median(model_peaks):.1f} GFLOP/s (range "
                         f"{min(model_peaks):.1f}-{max(model_peaks):.1f}); each row's % of "
                         f"peak uses the peak timed with it")
        above = sorted({f"{r['model']} ({r['mode']})" for r in records
                        if r.get("kind") in ("train_step", "kernel")
                        and (r.get("pct_of_peak") or 0.0) > 100.0})
        if above:
            lines.append(f"- **above 100 % of the peak**: {', '.join(above)}. The matmul "
                         f"timed as the peak is not this machine's peak for these rows "
                         f"(a larger `--peak_size`?); their % of peak is overstated")
    if steps:
        lines += ["", "### Train steps (ms per step; ratio = median / best Keras 3 mode's "
                  "median)", "",
                  "| model | mode | median ms | min | max | GFLOP/step | GFLOP/s | % peak | "
                  "x best Keras |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in steps:
            lines.append(
                f"| {r['model']} | {r['mode']}{' (xla)' if r['mode'] == 'loop' and r['jit'] else ''}"
                f" | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} | "
                f"{r['gflop_per_step']:.3f} | {r['gflops']:.1f} | {r['pct_of_peak']:.0f} | "
                f"{_f(r['ratio_to_best_keras'])} |")
        srcs = sorted({r["flop_source"] for r in steps})
        lines.append("")
        lines.append(f"FLOPs: 2 per multiply-add of the step's matmuls and convolutions, "
                     f"counted from {' / '.join(srcs)} (see bench/flops.py).")
    s = summarize(records)
    if s["vat_ratios"]:
        lines += ["", "### VAT / plain step-time ratio vs FLOP ratio", "",
                  "| pair | mode | time ratio | FLOP ratio | deviation |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for v in s["vat_ratios"]:
            lines.append(f"| {v['vat']} / {v['plain']} | {v['mode']} | {v['time_ratio']:.2f} "
                         f"| {v['flop_ratio']:.2f} | {v['deviation_pct']:+.0f}% |")
    if s["jit_auto"]:
        lines += ["", "### `--jit=auto` (tfcore.training.compile.resolve_jit) vs the measured best",
                  "", f"xla / graph: median of per-round ratios; within {JIT_TIE:.0%} "
                  "of 1 the two are even (either choice agrees).", "",
                  "| model | auto picks | graph ms | xla ms | xla / graph | measured best "
                  "| agrees |",
                  "| --- | --- | ---: | ---: | ---: | --- | --- |"]
        for j in s["jit_auto"]:
            best = "even" if j.get("tie") else j["measured_best"]
            lines.append(f"| {j['model']} | {j['auto_picks']} | {j['graph_ms']:.2f} | "
                         f"{j['xla_ms']:.2f} | {j['xla_over_graph']:.2f} | {best} | "
                         f"{'yes' if j['agrees'] else 'NO'} |")
    if s["loop_speedup"]:
        lines += ["", "### Compiled multi-step loop vs one call per step", "",
                  "| model | per-step mode | per-step ms | loop ms | loop steps per call | "
                  "speed-up |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        for v in s["loop_speedup"]:
            lines.append(f"| {v['model']} | {v['per_step_mode']} | {v['per_step_ms']:.2f} | "
                         f"{v['loop_ms']:.2f} | {v['loop_steps']} | "
                         f"{v['speedup']:.2f}x |")
    kern = [r for r in records if r.get("kind") == "kernel"]
    if kern:
        lines += ["", "### Kernels at the models' shapes", "",
                  "| kernel | shape | mode | median ms | GFLOP/s | % peak |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]
        for r in kern:
            lines.append(f"| {r['model']} | {r['shape']} | {r['mode']} | {r['median_ms']:.3f} "
                         f"| {_f(r['gflops'], '{:.1f}')} | {_f(r['pct_of_peak'], '{:.0f}')} |")
    if s["targets"]:
        lines += ["", "### Targets (issue 8)", "", "| target | value | mode | met |",
                  "| --- | ---: | --- | --- |"]
        for t in s["targets"]:
            lines.append(f"| {t['target']} | {t['value']:.2f} | {t['mode']} | "
                         f"{'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines).strip() + "\n"


def _write_json(records: List[Dict[str, Any]], out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, out)


def write(records: List[Dict[str, Any]], out: str, report: str) -> str:
    """Writes the JSON records to `out` and the report next to it (.md); returns its path."""
    _write_json(records, out)
    md = os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(report)
    return md


def publish(records: List[Dict[str, Any]], command: str, load0: Sequence[float],
            t0: float, markdown_fn: Callable[..., str], out: Optional[str]) -> str:
    """Prints the report `markdown_fn(records, command, context)` of a run that started
    at `t0` (time.time()) with load average `load0`; with `out`, writes the JSON there
    and the report next to it. Returns the report."""
    load1 = os.getloadavg()
    context = {
        "Date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "Machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "Load average (1 min) at start / end": f"{load0[0]:.1f} / {load1[0]:.1f}",
        "Wall time": f"{time.time() - t0:.0f} s"}
    report = markdown_fn(records, command, context)
    print(report)
    if out:
        md = write(records, out, report)
        print(f"wrote {out} and {md}")
    return report


# -- CLI -------------------------------------------------------------------------------
def _define_flags():
    from absl import flags
    flags.DEFINE_list("models", list(DEFAULT_MODELS), f"Models: {', '.join(MODELS)}.")
    flags.DEFINE_list("modes", list(MODES), f"Modes: {', '.join(MODES)}.")
    flags.DEFINE_integer("batch_size", 0, "Batch size (0: each model's default: 128 for "
                         "the VAT CNN and autoencoders, 64 DCGAN/qa/siamese_lstm, 32 "
                         "separable_convnet, 8 residual/multi_output).")
    flags.DEFINE_integer("steps", 5, "Steps per timed round in every mode (= the loop "
                         "mode's steps per compiled call; every mode runs the same "
                         "number, so fit's per-round cost weighs the same on all).")
    flags.DEFINE_integer("rounds", 7, "Interleaved timed rounds per model (median), at "
                         "most.")
    flags.DEFINE_float("model_budget_s", 20.0, "Cap on one model's (or kernel's) timed "
                       "rounds in seconds (fewer rounds, at least 3, on a slow or loaded "
                       "machine); 0: no cap.")
    flags.DEFINE_enum("onednn", "default", ["default", "on", "off"], "TensorFlow's oneDNN "
                      "custom ops (TF_ENABLE_ONEDNN_OPTS; read when TensorFlow starts, so "
                      "on/off re-runs the command with it set). default: TF's choice.")
    flags.DEFINE_integer("warmup", 1, "Untimed warm-up steps per mode (the loop mode: "
                         "one round).")
    flags.DEFINE_integer("eager_steps", 1, "Steps per round of the eager mode.")
    flags.DEFINE_enum("loop_jit", "auto", ["auto", "on", "off"], "Compile mode of the "
                      "multi-step loop (auto: tfcore.training.compile.resolve_jit).")
    flags.DEFINE_enum("device", "cpu", list(DEVICES), "cpu or gpu (gpu: skipped with a "
                      "message when none is visible).")
    flags.DEFINE_boolean("kernels", True, "Also run the kernel micro-benchmarks.")
    flags.DEFINE_integer("kernel_steps", 5, "Kernel calls per timed round.")
    flags.DEFINE_integer("peak_size", harness.PEAK_SIZE, "Size of the square matmul timed with each "
                         "model for its % of peak.")
    flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: default).")
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: default).")
    flags.DEFINE_integer("seed", 0, "Data and initialisation seed.")
    flags.DEFINE_string("out", None, "Write the JSON records here (and the report next "
                        "to it as .md).")


def main(argv):
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if f.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(f.intra_op_threads)
    if f.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(f.inter_op_threads)
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    load0 = os.getloadavg()
    t0 = time.time()
    try:
        records = run_bench(models=f.models, modes=f.modes, batch_size=f.batch_size,
                            steps=f.steps, rounds=f.rounds, warmup=f.warmup,
                            model_budget_s=f.model_budget_s or None,
                            eager_steps=f.eager_steps, loop_jit=f.loop_jit,
                            device=f.device, kernels=f.kernels, kernel_steps=f.kernel_steps,
                            peak_size=f.peak_size, seed=f.seed, partial_out=f.out)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if records is None:
        return 0
    publish(records, command, load0, t0, markdown, f.out)
    return 0


def _reexec_for_onednn(argv: Sequence[str]) -> None:
    """`--onednn=on|off`: TensorFlow reads TF_ENABLE_ONEDNN_OPTS when it starts, which
    this module's imports already did; re-run the command with it set (once)."""
    want = None
    for a in argv[1:]:
        if a.startswith("--onednn="):
            want = {"on": "1", "off": "0"}.get(a.split("=", 1)[1])
    if want is not None and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != want:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = want
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "bench.run", *argv[1:]])


if __name__ == "__main__":
    from absl import app
    _reexec_for_onednn(sys.argv)
    _define_flags()
    app.run(main)
