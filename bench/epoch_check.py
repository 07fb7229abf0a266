"""`python -m bench.epoch_check`: the training binaries' epoch times against the bench.

    python -m bench.epoch_check --models=vat_cnn,vat_cnn_vat,dense_ae,conv_ae,dcgan \\
        --steps_per_epoch=40 --epochs=3 --out=runs/epoch_check.json

What is compared, and why
-------------------------
`bench.run` times a model's train step alone: the `step_fn` the binary runs by
default (`models.registry`: built by the binary's library), driven by
`tfcore.training.loop.Loop` with one compiled call per step, on synthetic data already on the
device, in interleaved rounds after an untimed warm-up (median ms per step). A
training binary (`train.vat`, `train.autoencoder`, `train.dcgan`) writes
`steps_per_second` into metrics.json: the steady state measured by
`tfcore.training.callbacks.EpochTimer`, the steps of this process's epochs after the first
divided by their training time, each epoch timed from its start to its last step.
That rate leaves out

* the first epoch, which traces (and with XLA compiles) the step: the bench's warm-up
  leaves it out too;
* the evaluation, checkpoint, pictures and summaries at each epoch's end, and the
  final test evaluation and export: they are not train steps, and they cost the same
  per epoch whatever the step time;

and it keeps what a real epoch pays per step besides the step itself: fetching the
step's metrics to the host (the bench's `Loop` does it too), and the binaries' batch
callbacks (progress line, TensorBoard scalars every N steps, the DCGAN's step records).
When the two agree within 15%, the bench's step times predict the binaries' seconds
per epoch (steps per epoch x ms per step), and the binaries' reported epoch times
can be trusted as measurements of the same thing.

What runs, per model, in one process
------------------------------------
1. the bench (`bench.run.bench_model`) in the compile mode the binary's `--jit=auto`
   picks (`tfcore.training.compile.resolve_jit('auto', cpu_xla=...)`: 'xla' on a GPU, on CPU the
   model's measured choice, XLA for the dense autoencoder), at
   the bench's batch size for the model (`bench.run.MODELS[name].batch_size`);
2. the binary's library call (`train.<binary>_lib.train_and_evaluate(config, workdir,
   ...)`) in a temporary workdir, on real MNIST limited with the binary's own options
   (`train_limit` / `train_subset`) to exactly `--steps_per_epoch` batches per epoch,
   for `--epochs` epochs, at the same batch size, with evaluation as small as the
   binary allows (no validation split; the per-epoch / final evaluation on one batch
   of test images: train.autoencoder's library option `test_subset`, which has no
   flag; the DCGAN's quality measurements and pinned-D stop off); everything else at
   the binary's defaults (`--jit=auto`, progress, TensorBoard, checkpoints);
3. the bench again: a change of the machine's load during the binary's run shows as
   a difference between the two bench medians (both reported); the comparison uses
   their mean.

`ratio = binary ms/step / bench ms/step` with binary ms/step = 1000 / steps_per_second.

| model | binary | its configuration (the bench model's: `models.registry`) |
| --- | --- | --- |
| vat_cnn | train.vat | --vat=false (writeup preset: Adadelta 1.0) |
| vat_cnn_vat | train.vat | the defaults (xi=10, eps=1, 1 power iteration) |
| dense_ae | train.autoencoder | the defaults (784-625 sigmoid, Adam 1e-3, constant) |
| conv_ae | train.autoencoder | --model=conv (Adam 2e-2, wsd schedule with warm-up) |
| dcgan | train.dcgan | the defaults (two Adams 2e-4, beta_1 0.5, split D batch, EMA of G) |

The binary's configuration is the registry's configuration of the bench's step with
only the run's length, data and evaluation sizes set (`_overrides`), and it is also
checked in code: the optimizers the binary's library builds from it against the
bench's (class, learning rate and every hyperparameter), the parameter count against
the bench model's, and every other option that shapes the model, optimizer or step
(resolved) against the bench's. A difference is reported in the table's notes
(`config_matches` false in the JSON).

Output: a JSON list of records (`--out`; fields `model`, `mode`, `binary`,
`bench_ms` (mean of the two bench medians), `bench_ms_before`, `bench_ms_after`,
`binary_ms`, `ratio`, `within_15pct`, `steps_per_second`, `epoch_seconds`,
`steps_per_epoch`, `epochs`, `batch_size`, `binary_flags`, `config_matches`, `notes`,
`device`, `tf_version`) and a markdown table, printed and written next to the JSON
as `.md`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import harness  # noqa: E402
from bench import run as bench_run  # noqa: E402
from models import registry  # noqa: E402

# The bench models checked, and the binary (with its library `<binary>_lib`) of each.
LIBRARIES = {"vat_cnn": "train.vat", "vat_cnn_vat": "train.vat",
             "dense_ae": "train.autoencoder", "conv_ae": "train.autoencoder",
             "dcgan": "train.dcgan"}
MODELS = tuple(LIBRARIES)
TOLERANCE = 0.15
MNIST_TRAIN = 60000


# -- the binaries, configured like the bench's models ------------------------------------
@dataclasses.dataclass
class BinaryRun:
    """One binary configured like a bench model.

    Attributes:
      binary: the module ('train.vat', ...).
      flags: the equivalent command-line flags (for the report).
      config: the binary's configuration: the bench model's (`models.registry`'s
        `config()`) with the run's length, data and evaluation sizes set.
      run: `run(workdir) -> metrics` (the binary library's `train_and_evaluate`).
      objects: `() -> {name: model or optimizer}` built by the binary's library from
        `config` (named as the bench's objects: 'model', 'optimizer', or 'generator',
        'discriminator', 'g_opt', 'd_opt', 'generator_ema').
      step_settings: option -> (the binary's resolved value, the bench's), for every
        option that shapes the model, optimizer or step (resume rule not 'free')
        and that the check does not set itself.
      notes: what had to be set away from the binary's defaults to match.
    """

    binary: str
    flags: str
    config: Any
    run: Callable[[str], Dict[str, Any]]
    objects: Callable[[], Dict[str, Any]]
    step_settings: Dict[str, Any]
    notes: List[str] = dataclasses.field(default_factory=list)


def _overrides(binary: str, steps_per_epoch: int, epochs: int, batch_size: int,
               seed: int) -> Dict[str, Any]:
    """The options the check sets: the run's length, the data and the evaluations as
    small as the binary allows; everything else stays the bench model's."""
    n = steps_per_epoch * batch_size
    common = dict(epochs=epochs, batch_size=batch_size, seed=seed, jit="auto")
    if binary == "train.vat":
        return dict(common, train_limit=n, val_size=0, test_limit=batch_size,
                    eval_batch_size=batch_size)
    if binary == "train.autoencoder":
        return dict(common, steps=None, train_subset=n, test_subset=batch_size,
                    eval_batch_size=batch_size, num_images=1, val_size=0)
    return dict(common, train_limit=n, val_examples=batch_size, eval_samples=0,
                final_eval_samples=0, pinned_patience=0, fd_patience=0, grid_size=1,
                interp_rows=1, interp_steps=2)


def _flags(config) -> str:
    """The command-line flags of `config`'s options that differ from the defaults."""
    default = type(config)().to_dict()
    return " ".join(f"--{k}={str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in config.to_dict().items() if v != default[k])


def binary_run(name: str, steps_per_epoch: int, epochs: int, batch_size: int, *,
               mnist=None, seed: int = 0, **changes) -> BinaryRun:
    """The binary of bench model `name` configured like it (see the module docstring):
    the registry's configuration of the bench's step with `_overrides`.

    `mnist` (as `tfcore.data.load_mnist` returns) is the data the binary trains on
    (None: it loads MNIST itself); `changes`: options set away from the bench model's
    (the config check then reports them).
    """
    import importlib  # pylint: disable=import-outside-toplevel
    from tfcore.training import options  # pylint: disable=import-outside-toplevel
    if name not in LIBRARIES:
        raise ValueError(f"no binary for model {name!r}; known: {', '.join(MODELS)}")
    entry, binary = registry.get(name), LIBRARIES[name]
    lib = importlib.import_module(f"{binary}_lib")
    overrides = _overrides(binary, steps_per_epoch, epochs, batch_size, seed)
    bench_config = entry.config()
    config = dataclasses.replace(bench_config, **overrides, **changes)
    mine, theirs = config.resolved(), bench_config.resolved()
    settings = {k: (getattr(mine, k), getattr(theirs, k))
                for k, rule in options.resume_rules(type(config)).items()
                if rule != "free" and k not in overrides}
    data = {"mnist" if binary == "train.dcgan" else "data": mnist}
    return BinaryRun(
        binary=binary, flags=_flags(config), config=config,
        run=lambda workdir: lib.train_and_evaluate(config, workdir, **data),
        objects=lambda: entry.train(config).objects, step_settings=settings)


# -- the config check -------------------------------------------------------------------
def optimizer_settings(opt) -> Dict[str, Any]:
    """An optimizer's class, learning rate and scalar hyperparameters (public attributes)."""
    out: Dict[str, Any] = {"class": type(opt).__name__,
                           "learning_rate": float(np.asarray(opt.learning_rate))}
    for k, v in sorted(vars(opt).items()):
        if not k.startswith("_") and k != "built" and (
                v is None or isinstance(v, (bool, int, float, str))):
            out[k] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and bool(np.isclose(a, b, rtol=1e-6))
    return a == b


def _split(objects: Dict[str, Any]):
    """(optimizers, models) of a setup's objects; the weight average of G
    ('generator_ema') is a copy of G, not parameters of its own."""
    opts = {k: o for k, o in objects.items()
            if isinstance(getattr(o, "learning_rate", None), tf.Variable)}
    models = {k: o for k, o in objects.items() if k not in opts and not k.endswith("_ema")}
    return opts, models


def config_differences(name: str, run: BinaryRun, metrics: Dict[str, Any],
                       seed: int = 0) -> List[str]:
    """How the binary's configuration differs from the bench's model (empty: none).

    Compares the optimizers (class and every setting, see `optimizer_settings`), the
    parameter count (the binary's `num_params` in `metrics`, else its models') and
    `run.step_settings`.
    """
    setup = bench_run.MODELS[name].build(8, np.random.default_rng(seed))
    bench_opts, bench_models = _split(setup.objects)
    binary_opts, binary_models = _split(run.objects())
    out: List[str] = []
    if sorted(bench_opts) != sorted(binary_opts):
        out.append(f"optimizers {sorted(binary_opts)} vs bench {sorted(bench_opts)}")
    for k in sorted(set(bench_opts) & set(binary_opts)):
        a, b = optimizer_settings(binary_opts[k]), optimizer_settings(bench_opts[k])
        for key in sorted(set(a) | set(b)):
            if not _same(a.get(key), b.get(key)):
                out.append(f"{k}.{key} {a.get(key)!r} vs bench {b.get(key)!r}")
    bench_params = sum(m.count_params() for m in bench_models.values())
    params = metrics.get("num_params") or sum(m.count_params()
                                              for m in binary_models.values())
    if params != bench_params:
        out.append(f"{params} parameters vs bench {bench_params}")
    for key, (mine, bench) in run.step_settings.items():
        if not _same(mine, bench):
            out.append(f"{key} {mine!r} vs bench {bench!r}")
    return out


# -- the check ---------------------------------------------------------------------------
def bench_mode(name: str) -> str:
    """The bench mode of the binaries' `--jit=auto` for bench model `name`: 'xla' on a
    GPU, else the model's measured CPU choice (`bench.run.MODELS[name].cpu_xla`)."""
    from tfcore.training.compile import resolve_jit
    return "xla" if resolve_jit("auto", cpu_xla=bench_run.MODELS[name].cpu_xla) else "graph"


def _bench_ms(name: str, mode: str, batch_size: int, steps: int, rounds: int,
              warmup: int, budget_s: Optional[float], peak_size: int, seed: int,
              log: Callable[[str], None]) -> float:
    records = bench_run.bench_model(name, [mode], batch_size, steps, rounds, warmup,
                                    eager_steps=1, loop_jit=mode == "xla",
                                    peak_size=peak_size, seed=seed, budget_s=budget_s,
                                    log=log)
    (record,) = [r for r in records if r["mode"] == mode]
    return float(record["median_ms"])


def check_model(name: str, steps_per_epoch: int = 40, epochs: int = 3, *,
                mnist=None, data_dir: Optional[str] = None, bench_steps: int = 10,
                bench_rounds: int = 5, bench_warmup: int = 1,
                model_budget_s: Optional[float] = 20.0, peak_size: int = 256,
                seed: int = 0, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Bench, binary, bench again for one model; returns its record (module docstring)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    steps_per_epoch = harness.check_count(steps_per_epoch, "steps_per_epoch", 1)
    epochs = harness.check_count(epochs, "epochs", 2)  # the first epoch traces: needs a second
    batch_size = bench_run.MODELS[name].batch_size
    if steps_per_epoch * batch_size > MNIST_TRAIN:
        raise ValueError(f"steps_per_epoch * batch size ({steps_per_epoch} * {batch_size})"
                         f" must be at most the {MNIST_TRAIN} MNIST training images")
    if mnist is None:
        from tfcore.data import load_mnist  # pylint: disable=import-outside-toplevel
        mnist = load_mnist(data_dir)
    mode = bench_mode(name)
    bench_kw = dict(steps=bench_steps, rounds=bench_rounds, warmup=bench_warmup,
                    budget_s=model_budget_s, peak_size=peak_size, seed=seed, log=log)
    before = _bench_ms(name, mode, batch_size, **bench_kw)
    run = binary_run(name, steps_per_epoch, epochs, batch_size, mnist=mnist, seed=seed)
    log(f"[{name}] {run.binary} {run.flags}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"epoch_check_{name}_") as workdir:
        metrics = run.run(workdir)
    log(f"[{name}] binary ran in {time.perf_counter() - t0:.1f}s: epoch seconds "
        f"{', '.join(f'{s:.2f}' for s in metrics['epoch_seconds'])}")
    after = _bench_ms(name, mode, batch_size, **bench_kw)
    notes = list(run.notes)
    differences = config_differences(name, run, metrics, seed=seed)
    if differences:
        notes.insert(0, "CONFIG DIFFERS from the bench's model: " + "; ".join(differences))
    if len(metrics["epoch_seconds"]) != epochs or \
            metrics.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        notes.insert(0, f"the binary ran {len(metrics['epoch_seconds'])} epochs of "
                        f"{metrics.get('steps_per_epoch')} steps")
    sps = metrics["steps_per_second"]
    bench_ms = (before + after) / 2.0
    binary_ms = 1000.0 / sps if sps else float("nan")
    ratio = binary_ms / bench_ms
    return {
        "model": name, "mode": mode, "binary": run.binary,
        "bench_ms": bench_ms, "bench_ms_before": before, "bench_ms_after": after,
        "binary_ms": binary_ms, "ratio": ratio,
        "within_15pct": bool(abs(ratio - 1.0) <= TOLERANCE),
        "steps_per_second": sps, "epoch_seconds": metrics["epoch_seconds"],
        "steps_per_epoch": steps_per_epoch, "epochs": epochs, "batch_size": batch_size,
        "binary_flags": run.flags, "config_matches": not differences, "notes": notes,
        "bench_steps": bench_steps, "bench_rounds": bench_rounds,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "tf_version": tf.__version__}


def run_check(models: Sequence[str] = MODELS, steps_per_epoch: int = 40, epochs: int = 3,
              *, data_dir: Optional[str] = None, partial_out: Optional[str] = None,
              log: Callable[[str], None] = print, **kwargs) -> List[Dict[str, Any]]:
    """`check_model` for every model in turn (MNIST loaded once); the records.

    `partial_out`: write the records so far there (JSON) after every model.
    """
    from tfcore.data import load_mnist
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    mnist = load_mnist(data_dir)
    records = []
    for name in models:
        records.append(check_model(name, steps_per_epoch, epochs, mnist=mnist,
                                   data_dir=data_dir, log=log, **kwargs))
        if partial_out:
            bench_run._write_json(records, partial_out)  # pylint: disable=protected-access
    return records


def markdown(records: List[Dict[str, Any]], command: str = "",
             context: Optional[Dict[str, Any]] = None) -> str:
    """The report: context lines, then the table."""
    lines = [f"Command: `{command}`" if command else ""]
    if records:
        r = records[0]
        lines.append(f"Device {r['device']}, TensorFlow {r['tf_version']}; "
                     f"{r['epochs']} epochs of {r['steps_per_epoch']} steps per binary run "
                     f"(steady state: the epochs after the first); bench: "
                     f"{r['bench_rounds']} rounds of {r['bench_steps']} steps, before and "
                     "after the binary.")
    for k, v in (context or {}).items():
        lines.append(f"{k}: {v}")
    lines += ["", "| model | mode | bench ms/step (before / after) | binary ms/step | "
              "ratio | within 15% | notes |",
              "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in records:
        notes = "; ".join(r["notes"]) or "-"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['bench_ms']:.2f} ({r['bench_ms_before']:.2f}"
            f" / {r['bench_ms_after']:.2f}) | {r['binary_ms']:.2f} | {r['ratio']:.3f} | "
            f"{'yes' if r['within_15pct'] else 'NO'} | {notes} |")
    lines += ["", "ratio = binary ms/step (1000 / the binary's steps_per_second) / bench "
              "ms/step (mean of the two medians)."]
    return "\n".join(lines).strip() + "\n"


# -- CLI ---------------------------------------------------------------------------------
def _define_flags():
    from absl import flags
    flags.DEFINE_list("models", list(MODELS), f"Models: {', '.join(MODELS)}.")
    flags.DEFINE_integer("epochs", 3, "Epochs of each binary run (the first traces; the "
                         "rate is the later ones').")
    flags.DEFINE_integer("seed", 0, "Seed of the bench's data and of the binaries' runs.")
    flags.DEFINE_string("data_dir", None, "Directory holding mnist.npz (default: "
                        "$TFCORE_DATA_DIR, then ~/.keras/datasets).")
    flags.DEFINE_integer("steps_per_epoch", 40, "Steps per binary epoch (the training "
                         "set is limited to this many batches).")
    flags.DEFINE_integer("bench_steps", 10, "Steps per timed bench round.")
    flags.DEFINE_integer("bench_rounds", 5, "Timed bench rounds (median), at most.")
    flags.DEFINE_integer("bench_warmup", 1, "Untimed bench warm-up steps.")
    flags.DEFINE_float("model_budget_s", 20.0, "Cap on one bench's timed rounds (s); "
                       "0: none.")
    flags.DEFINE_integer("peak_size", 256, "Matmul size timed with the bench rounds "
                         "(bench.run's peak; not used here, kept small).")
    flags.DEFINE_string("out", None, "Write the JSON records here (and the table next "
                        "to it as .md).")


def main(argv):
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    command = "python -m bench.epoch_check " + " ".join(sys.argv[1:])
    load0, t0 = os.getloadavg(), time.time()
    try:
        records = run_check(f.models, f.steps_per_epoch, f.epochs, data_dir=f.data_dir,
                            partial_out=f.out, bench_steps=f.bench_steps,
                            bench_rounds=f.bench_rounds, bench_warmup=f.bench_warmup,
                            model_budget_s=f.model_budget_s or None,
                            peak_size=f.peak_size, seed=f.seed)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    bench_run.publish(records, command, load0, t0, markdown, f.out)
    return 0


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
