"""`python -m bench.epoch_check`: the training binaries' epoch times against the bench.

    python -m bench.epoch_check --models=vat_cnn,vat_cnn_vat,dense_ae,conv_ae,dcgan \\
        --steps_per_epoch=40 --epochs=3 --out=runs/epoch_check.json

What is compared, and why
-------------------------
`bench.run` times a model's train step alone: the `step_fn` from models/, driven by
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
2. the binary's library call `train_and_evaluate(config, workdir, ...)` in a
   temporary workdir, on real MNIST limited with the binary's own options
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

| model | binary | its configuration (to match the bench's model) |
| --- | --- | --- |
| vat_cnn | train.vat | --vat=false --dropout=false (writeup preset: Adadelta 1.0) |
| vat_cnn_vat | train.vat | --vat --dropout=false (xi=10, eps=1, 1 power iteration) |
| dense_ae | train.autoencoder | --model=dense (784-625 sigmoid, Adam 1e-3, constant) |
| conv_ae | train.autoencoder | --model=conv --decoder=transpose --learning_rate=1e-3 --lr_schedule=constant --warmup_steps=0 (its default is Adam 1e-2 with a wsd schedule; the bench's step has Adam 1e-3, no schedule) |
| dcgan | train.dcgan | --preset=default (two Adams 2e-4, beta_1 0.5), split D batch |

The configuration is also checked in code: the binary's optimizers, built by the
binary's own factory from its resolved config, against the bench's (class, learning
rate and every hyperparameter), the model's parameter count against the bench model's,
and the step options against those the bench's step uses (`make_train_step`'s
defaults plus the bench's arguments). A difference is reported in the table's notes
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
import inspect
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

MODELS = ("vat_cnn", "vat_cnn_vat", "dense_ae", "conv_ae", "dcgan")
TOLERANCE = 0.15
MNIST_TRAIN = 60000


# -- the binaries, configured like the bench's models ------------------------------------
@dataclasses.dataclass
class BinaryRun:
    """One binary configured like a bench model.

    Attributes:
      binary: the module ('train.vat', ...).
      flags: the equivalent command-line flags (for the report).
      run: `run(workdir) -> metrics` (the binary's `train_and_evaluate`).
      optimizers: `() -> {name: optimizer}` built by the binary's own factory from its
        resolved config (named as the bench's objects: 'optimizer' or 'g_opt'/'d_opt').
      num_params: `(metrics) -> int`, the binary's model parameters.
      step_settings: name -> (the binary's value, the bench step's value).
      notes: what had to be set away from the binary's defaults to match.
    """

    binary: str
    flags: str
    run: Callable[[str], Dict[str, Any]]
    optimizers: Callable[[], Dict[str, Any]]
    num_params: Callable[[Dict[str, Any]], int]
    step_settings: Dict[str, Any]
    notes: List[str] = dataclasses.field(default_factory=list)


def _defaults(fn: Callable) -> Dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _vat(name: str, steps_per_epoch: int, epochs: int, batch_size: int, mnist,
         seed: int) -> BinaryRun:
    from models import vat_cnn
    from tfcore import optimizers
    from train import vat
    use_vat = name == "vat_cnn_vat"
    config = vat.VatConfig(
        preset="writeup", dropout=False, vat=use_vat, epochs=epochs,
        batch_size=batch_size, train_limit=steps_per_epoch * batch_size, val_size=0,
        test_limit=batch_size, eval_batch_size=batch_size, seed=seed, jit="auto"
    ).resolved()
    bench_step = {**_defaults(vat_cnn.make_train_step), "vat": use_vat}  # bench: vat=
    settings = {k: (getattr(config, k), bench_step[k])
                for k in ("vat", "xi", "eps", "power_iterations", "vat_weight", "entmin",
                          "shared_dropout_mask")}
    settings["dropout"] = (config.dropout, False)  # bench.run: VatCNN(dropout=False)
    return BinaryRun(
        binary="train.vat",
        flags=f"--vat={str(use_vat).lower()} --dropout=false --epochs={epochs} "
              f"--batch_size={batch_size} --train_limit={config.train_limit} "
              f"--test_limit={config.test_limit} --eval_batch_size={batch_size}",
        run=lambda workdir: vat.train_and_evaluate(config, workdir, data=mnist),
        optimizers=lambda: {"optimizer": optimizers.get(
            config.optimizer, learning_rate=config.learning_rate)},
        num_params=lambda metrics: metrics["num_params"],
        step_settings=settings)


def _autoencoder(name: str, steps_per_epoch: int, epochs: int, batch_size: int,
                 data_dir: Optional[str], seed: int) -> BinaryRun:
    import tfcore
    from models import autoencoder as ae
    from train import autoencoder
    conv = name == "conv_ae"
    extra = dict(model="conv", decoder="transpose", learning_rate=1e-3,
                 lr_schedule="constant", warmup_steps=0) if conv else dict(model="dense")
    config = autoencoder.Config(
        steps=None, epochs=epochs, batch_size=batch_size,
        train_subset=steps_per_epoch * batch_size, test_subset=batch_size,
        eval_batch_size=batch_size, num_images=1, val_size=0, seed=seed, jit="auto",
        data_dir=data_dir, **extra)
    resolved = config.resolved()
    bench_step = _defaults(ae.make_train_step)  # bench: make_train_step(model, opt)
    lr_fn = None if (resolved.lr_schedule == "constant" and not resolved.warmup_steps) \
        else f"{resolved.lr_schedule} (warm-up {resolved.warmup_steps})"
    settings = {"noise_factor": (resolved.noise_factor, bench_step["noise_factor"]),
                "learning_rate_fn": (lr_fn, bench_step["learning_rate_fn"])}
    # bench.run: make_model('dense') / make_model('conv', decoder='transpose').
    model_defaults = _defaults(ae.make_model)
    if conv:
        settings["decoder"] = (resolved.decoder, "transpose")
    else:
        for k in ("hidden", "hidden_activation", "tied"):
            settings[k] = (getattr(resolved, k), model_defaults[k])
    flags = (f"--model={resolved.model}"
             + (" --decoder=transpose --learning_rate=0.001 --lr_schedule=constant "
                "--warmup_steps=0" if conv else "")
             + f" --epochs={epochs} --batch_size={batch_size} "
               f"--train_subset={config.train_subset} --num_images=1")
    notes = ([f"set --learning_rate=0.001 --lr_schedule=constant --warmup_steps=0 (the "
              f"binary's conv default: Adam {autoencoder.CONV_LEARNING_RATE['transpose']:g}, "
              f"{autoencoder.CONV_SCHEDULE} schedule)"] if conv else [])
    return BinaryRun(
        binary="train.autoencoder", flags=flags,
        run=lambda workdir: autoencoder.train_and_evaluate(config, workdir),
        optimizers=lambda: {"optimizer": tfcore.optimizers.get(
            resolved.optimizer, learning_rate=resolved.learning_rate)},
        num_params=lambda metrics: metrics["num_params"],
        step_settings=settings, notes=notes)


def _dcgan(name: str, steps_per_epoch: int, epochs: int, batch_size: int, mnist,
           seed: int) -> BinaryRun:
    from models import dcgan as dcgan_model
    from train import dcgan
    config = dcgan.DCGANConfig(
        preset="default", d_batch="split", epochs=epochs, batch_size=batch_size,
        train_limit=steps_per_epoch * batch_size, val_examples=batch_size,
        eval_samples=0, final_eval_samples=0, pinned_patience=0, fd_patience=0,
        grid_size=1, interp_rows=1, interp_steps=2, seed=seed, jit="auto").validate()
    bench_step = {**_defaults(dcgan_model.make_train_step), "d_batch": "split"}
    settings = {k: (getattr(config, k), bench_step[k])
                for k in ("order", "d_steps", "d_batch", "label_smoothing")}
    # bench.run: Generator(latent_dim=DEFAULT_LATENT_DIM), Discriminator(), else their
    # defaults.
    g_defaults = _defaults(dcgan_model.Generator.__init__)
    d_defaults = _defaults(dcgan_model.Discriminator.__init__)
    settings["generator"] = (config.generator, g_defaults["upsampling"])
    settings["latent_dim"] = (config.latent_dim or None,
                              dcgan_model.DEFAULT_LATENT_DIM)
    settings["d_batchnorm"] = (config.d_batchnorm, d_defaults["batchnorm"])

    def num_params(metrics) -> int:
        del metrics  # the binary does not report it: build its networks from its config
        g = dcgan_model.Generator(latent_dim=config.latent_dim or None,
                                  upsampling=config.generator)
        d = dcgan_model.Discriminator(batchnorm=config.d_batchnorm,
                                      dense_units=config.d_dense_units)
        dcgan_model.build(g, d)
        return g.count_params() + d.count_params()

    def optimizers():
        g_opt, d_opt = dcgan_model.make_optimizers(
            config.preset, config.g_learning_rate, config.g_beta1,
            config.d_learning_rate, config.d_beta1)
        return {"g_opt": g_opt, "d_opt": d_opt}

    return BinaryRun(
        binary="train.dcgan",
        flags=f"--preset=default --d_batch=split --epochs={epochs} "
              f"--batch_size={batch_size} --train_limit={config.train_limit} "
              f"--val_examples={batch_size} --eval_samples=0 --final_eval_samples=0 "
              f"--pinned_patience=0",
        run=lambda workdir: dcgan.train_and_evaluate(config, workdir, mnist=mnist),
        optimizers=optimizers, num_params=num_params, step_settings=settings,
        notes=["the binary's step also averages d_acc (2 scalar ops)"])


def binary_run(name: str, steps_per_epoch: int, epochs: int, batch_size: int, *,
               mnist=None, data_dir: Optional[str] = None, seed: int = 0) -> BinaryRun:
    """The binary of bench model `name`, configured like it (see the module docstring).

    `mnist` (as `tfcore.data.load_mnist` returns) is used by train.vat and train.dcgan;
    train.autoencoder loads MNIST itself from `data_dir` (None: `$TFCORE_DATA_DIR`, ...).
    """
    if name in ("vat_cnn", "vat_cnn_vat"):
        return _vat(name, steps_per_epoch, epochs, batch_size, mnist, seed)
    if name in ("dense_ae", "conv_ae"):
        return _autoencoder(name, steps_per_epoch, epochs, batch_size, data_dir, seed)
    if name == "dcgan":
        return _dcgan(name, steps_per_epoch, epochs, batch_size, mnist, seed)
    raise ValueError(f"no binary for model {name!r}; known: {', '.join(MODELS)}")


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


def config_differences(name: str, run: BinaryRun, metrics: Dict[str, Any],
                       seed: int = 0) -> List[str]:
    """How the binary's configuration differs from the bench's model (empty: none).

    Compares the optimizers (class and every setting, see `optimizer_settings`), the
    parameter count and `run.step_settings`.
    """
    setup = bench_run.MODELS[name].build(8, np.random.default_rng(seed))
    bench_opts = {k: o for k, o in setup.objects.items()
                  if isinstance(getattr(o, "learning_rate", None), tf.Variable)}
    out: List[str] = []
    binary_opts = run.optimizers()
    if sorted(bench_opts) != sorted(binary_opts):
        out.append(f"optimizers {sorted(binary_opts)} vs bench {sorted(bench_opts)}")
    for k in sorted(set(bench_opts) & set(binary_opts)):
        a, b = optimizer_settings(binary_opts[k]), optimizer_settings(bench_opts[k])
        for key in sorted(set(a) | set(b)):
            if not _same(a.get(key), b.get(key)):
                out.append(f"{k}.{key} {a.get(key)!r} vs bench {b.get(key)!r}")
    bench_params = sum(o.count_params() for k, o in setup.objects.items()
                       if k not in bench_opts)
    params = run.num_params(metrics)
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
    mode = bench_mode(name)
    bench_kw = dict(steps=bench_steps, rounds=bench_rounds, warmup=bench_warmup,
                    budget_s=model_budget_s, peak_size=peak_size, seed=seed, log=log)
    before = _bench_ms(name, mode, batch_size, **bench_kw)
    run = binary_run(name, steps_per_epoch, epochs, batch_size, mnist=mnist,
                     data_dir=data_dir, seed=seed)
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
# The binaries' common flags (train/flags.py) are defined on absl's global FLAGS when
# train.* is imported; --epochs, --seed and --data_dir are used from them, the others
# are refused.
_UNUSED_COMMON = ("workdir", "resume", "deterministic", "steps", "batch_size", "jit",
                  "strategy", "export", "optimizer", "learning_rate")


def _define_flags():
    from absl import flags
    from train import flags as common  # defines --epochs, --seed, --data_dir, ...
    common.FLAGS.set_default("epochs", 3)
    flags.DEFINE_list("models", list(MODELS), f"Models: {', '.join(MODELS)}.")
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
    unused = [f"--{n}" for n in _UNUSED_COMMON if f[n].present]
    if unused:
        raise SystemExit(f"error: {', '.join(unused)} not used by bench.epoch_check (it "
                         "configures each binary like the bench's model; --epochs, "
                         "--seed and --data_dir are used)")
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
