"""Random or grid search over another binary's flags, one subprocess per trial.

    python -m train.search --binary=train.vat --workdir=runs/search_vat \\
        --space='learning_rate=loguniform(0.01, 1.0)' --space='dropout=choice(true, false)' \\
        --space='eps=uniform(0.5, 3)' --space='batch_size=choice(64, 128)' \\
        --trials=8 --method=random --metric=val_accuracy --mode=max --seed=0 \\
        -- --epochs=3 --export

Everything after `--` is passed unchanged to every trial. The space can also come from
`--space_file` (a JSON object or `name=domain` lines; the syntax is in
`tfcore/hparams.py`). Trial i runs

    python -m <binary> --workdir=<workdir>/trial_<iii> --<flag>=<value> ... <extra flags>

in its own workdir (stdout.log, stderr.log, the binary's outputs, trial.json), and the
search reads the `metrics.json` the binary writes there. Written into --workdir:

* `results.md`, `results.csv`, `results.json`: one row per trial (status, the sampled
  flags, the selection metric, the other val_* / test_* metrics found, seconds), the
  best trial marked; `results.json` also holds the search's settings and each failed
  trial's exit code and stderr tail.
* `search.json`: the settings that fix the trials (binary, space, method, seed, extra
  flags); a rerun with other settings in the same --workdir is refused.
* `hparams/`: TensorBoard's HParams format (the experiment in the root run, one run
  per trial: its flags, metrics and success/failure); view with
  `tensorboard --logdir=<workdir>/hparams` (`pip install tensorboard`).

Resuming: rerunning the same command skips trials that completed (trial.json `ok`
and a final metrics.json holding the metric), reruns incomplete and failed ones from
scratch (--norerun_failed keeps failed ones), and samples the same configurations
(trial i's values depend only on --seed and i; more --trials extend the search).

Guard against tuning on the test set: --metric must be a validation metric (`val_`
prefix); a metric starting with `test` is always refused, any other needs
--allow_non_validation_metric and prints a warning. When the binary has a
`--val_size` flag (--val_flag) the search passes `--val_size=<--val_size>` to every
trial unless the extra flags or the space set it (0 is refused: no held-out data).

A trial that exits non-zero, or ends without the metric, is recorded as failed (exit
code, reason, stderr tail) and the search goes on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags

from tfcore import hparams as hp
from tfcore import metrics_io

METHODS = ("random", "grid")
TRIAL_FILE = "trial.json"
SEARCH_FILE = "search.json"
STDERR_TAIL_CHARS = 2000


@dataclasses.dataclass
class SearchConfig:
    """Everything `run_search` needs (the flags of the same names, parsed).

    `space` is a parsed space ({flag: domain}, `tfcore.hparams`); `trials` None means
    the whole grid (grid search only); `extra_flags` go to every trial.
    """
    binary: str
    space: hp.Space
    method: str = "random"
    trials: Optional[int] = None
    metric: str = "val_accuracy"
    mode: str = "max"
    seed: int = 0
    grid_points: int = 3
    extra_flags: Sequence[str] = ()
    val_flag: str = "val_size"
    val_size: int = 5000
    allow_non_validation_metric: bool = False
    rerun_failed: bool = True
    trial_timeout: Optional[float] = None
    python: str = sys.executable

    def validate(self) -> List[str]:
        """Raises ValueError naming the bad setting; returns warnings."""
        if not self.binary or not all(p.isidentifier() for p in self.binary.split(".")):
            raise ValueError(f"--binary must be a Python module path like train.vat, "
                             f"got {self.binary!r}")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, "
                             f"got {self.method!r}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"--mode must be 'max' or 'min', got {self.mode!r}")
        if self.trials is not None and (not isinstance(self.trials, int)
                                        or self.trials < 1):
            raise ValueError(f"--trials must be a positive integer, got {self.trials!r}")
        if self.method == "random" and self.trials is None:
            raise ValueError("--method=random needs --trials")
        if self.trial_timeout is not None and not self.trial_timeout > 0:
            raise ValueError(f"--trial_timeout must be > 0 seconds, got "
                             f"{self.trial_timeout!r}")
        if not isinstance(self.val_size, int) or self.val_size < 0:
            raise ValueError(f"--val_size must be an integer >= 0, got {self.val_size!r}")
        if not self.space:
            raise ValueError("the search space is empty: give at least one --space "
                             "entry or a --space_file")
        warnings = hp.check_selection_metric(self.metric, self.allow_non_validation_metric)
        extra = _flag_names(self.extra_flags, "extra flag (after --)")
        if "workdir" in extra:
            raise ValueError("extra flag --workdir: the search sets each trial's "
                             "--workdir itself")
        if "workdir" in self.space:
            raise ValueError("search space entry 'workdir': the search sets each "
                             "trial's --workdir itself")
        both = sorted(set(extra) & set(self.space))
        if both:
            raise ValueError(f"flag(s) {', '.join('--' + b for b in both)} given both in "
                             f"the search space and after --")
        return warnings


def _flag_names(args: Sequence[str], what: str) -> Dict[str, Optional[str]]:
    """{'lr': '0.1', 'export': None, 'dropout': 'false'} from ['--lr=0.1', '--export',
    '--nodropout']; anything not starting with '--' raises ValueError."""
    out: Dict[str, Optional[str]] = {}
    for a in args:
        if not a.startswith("--") or len(a) < 3:
            raise ValueError(f"{what} {a!r}: expected --name=value or --name")
        name, _, value = a[2:].partition("=")
        out[name] = value if "=" in a else None
    return out


# -- the searched binary ------------------------------------------------------------

def binary_flags(binary: str, python: str = sys.executable,
                 env: Optional[Mapping[str, str]] = None,
                 timeout: float = 300.0) -> Optional[Dict[str, str]]:
    """{flag name: absl type} of an absl binary, from `python -m <binary> --helpxml`.

    Returns None when the output holds no absl flag list (not an absl binary).

    Raises:
      ValueError: the module cannot be found or fails to start (stderr quoted).
    """
    try:
        proc = subprocess.run([python, "-m", binary, "--helpxml"], capture_output=True,
                              env=dict(env) if env is not None else None, timeout=timeout,
                              text=True)
    except subprocess.TimeoutExpired:
        raise ValueError(f"--binary={binary}: `--helpxml` did not answer within "
                         f"{timeout:.0f} s") from None
    xml_start = proc.stdout.find("<?xml")
    if xml_start < 0:
        tail = (proc.stderr or proc.stdout)[-STDERR_TAIL_CHARS:]
        if "No module named" in tail or "Error" in tail:
            raise ValueError(f"--binary={binary} cannot be run (exit code "
                             f"{proc.returncode}):\n{tail}")
        return None
    try:
        root = ElementTree.fromstring(proc.stdout[xml_start:])
    except ElementTree.ParseError:
        return None
    out = {}
    for f in root.iter("flag"):
        name, ftype = f.findtext("name"), f.findtext("type")
        if name:
            out[name] = ftype or "string"
    return out


def validation_flags(config: SearchConfig, known: Optional[Mapping[str, str]]
                     ) -> Tuple[List[str], List[str]]:
    """(flags to add to every trial, warnings): the validation-split flag."""
    name = config.val_flag
    if not name:
        return [], ["--val_flag is empty: make sure the binary's val_* metrics come "
                    "from data held out of training."]
    given = _flag_names(config.extra_flags, "extra flag (after --)")
    if name in config.space:
        domain = config.space[name]
        values = domain.grid(config.grid_points) if isinstance(domain, hp.Choice) \
            else [domain.low]
        if any(v == 0 for v in values):
            raise ValueError(f"search space entry {name!r} can be 0, which disables the "
                             f"validation split; selection needs held-out data")
        return [], []
    if name in given:
        if given[name] is not None and given[name].strip() in ("0", "0.0"):
            raise ValueError(f"extra flag --{name}={given[name]} disables the validation "
                             f"split: selecting on it would have no held-out data")
        return [], []
    if known is None:
        return [], [f"cannot list {config.binary}'s flags (not an absl binary?): not "
                    f"passing --{name}; make sure its val_* metrics come from held-out "
                    f"data."]
    if name not in known:
        return [], [f"{config.binary} has no --{name} flag: make sure its val_* metrics "
                    f"come from data held out of training."]
    if config.val_size == 0:
        raise ValueError(f"--val_size=0 would train the trials of {config.binary} "
                         f"without a validation split; selection needs held-out data")
    return [f"--{name}={config.val_size}"], []


def plan(config: SearchConfig) -> List[Dict[str, hp.Value]]:
    """The trial configurations (same for the same settings: resumable)."""
    if config.method == "grid":
        configs = hp.grid_configs(config.space, config.grid_points)
        return configs[:config.trials] if config.trials else configs
    return hp.random_configs(config.space, config.trials, config.seed)


# -- one trial ----------------------------------------------------------------------

def _tail(path: str, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def trial_complete(trial_dir: str, config: Mapping[str, Any], metric: str) -> bool:
    """Whether `trial_dir` holds a finished trial of `config` (resume skips it)."""
    record = hp.read_json(os.path.join(trial_dir, TRIAL_FILE))
    if not isinstance(record, dict) or record.get("status") != "ok":
        return False
    if record.get("config") != dict(config):
        return False
    return hp.metrics_complete(hp.read_json(os.path.join(trial_dir, "metrics.json")),
                               metric)


def run_trial(index: int, config: Mapping[str, Any], workdir: str, binary: str,
              extra_flags: Sequence[str], metric: str, python: str = sys.executable,
              timeout: Optional[float] = None,
              env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Runs one trial from scratch in `workdir/trial_<iii>`; returns its record.

    The record (also written to trial.json): name, index, config, command, status
    ('ok' or 'failed'), returncode, error, stderr_tail (failed only), metrics (the
    binary's metrics.json), seconds.
    """
    name = hp.trial_name(index)
    trial_dir = os.path.join(workdir, name)
    if os.path.exists(trial_dir):
        shutil.rmtree(trial_dir)
    os.makedirs(trial_dir)
    cmd = ([python, "-m", binary, f"--workdir={trial_dir}"]
           + hp.config_to_flags(config) + list(extra_flags))
    record: Dict[str, Any] = {"name": name, "index": index, "config": dict(config),
                              "command": cmd, "status": "running",
                              "start_time": time.time()}
    metrics_io.atomic_write_json(os.path.join(trial_dir, TRIAL_FILE), record)
    out_path = os.path.join(trial_dir, "stdout.log")
    err_path = os.path.join(trial_dir, "stderr.log")
    t0 = time.perf_counter()
    returncode, error = None, None
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            returncode = subprocess.run(cmd, stdout=out, stderr=err, timeout=timeout,
                                        env=dict(env) if env is not None else None,
                                        check=False).returncode
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout} s (--trial_timeout)"
    record["seconds"] = time.perf_counter() - t0
    record["end_time"] = time.time()
    record["returncode"] = returncode
    metrics = hp.read_json(os.path.join(trial_dir, "metrics.json"))
    record["metrics"] = metrics if isinstance(metrics, dict) else None
    if error is None and returncode != 0:
        error = f"exit code {returncode}"
    if error is None and not hp.metrics_complete(metrics, metric):
        if not isinstance(metrics, dict):
            error = "no metrics.json written"
        elif metrics.get("status") not in (None,) + hp.DONE_STATUSES:
            error = f"metrics.json has status {metrics.get('status')!r}"
        else:
            keys = sorted(hp.numeric_metrics(metrics))
            error = (f"metric {metric!r} missing from metrics.json (numeric metrics: "
                     f"{', '.join(keys) or 'none'})")
    record["status"] = "ok" if error is None else "failed"
    if error is not None:
        record["error"] = error
        record["stderr_tail"] = _tail(err_path)
    metrics_io.atomic_write_json(os.path.join(trial_dir, TRIAL_FILE), record)
    return record


# -- the search ---------------------------------------------------------------------

def _spec(config: SearchConfig, extra_flags: Sequence[str]) -> Dict[str, Any]:
    return {"binary": config.binary, "space": hp.describe_space(config.space),
            "method": config.method, "seed": config.seed,
            "grid_points": config.grid_points, "extra_flags": list(extra_flags)}


def _check_spec(workdir: str, spec: Mapping[str, Any]) -> None:
    old = hp.read_json(os.path.join(workdir, SEARCH_FILE))
    if not isinstance(old, dict):
        return
    diffs = [k for k in spec if old.get(k) != spec[k]]
    if diffs:
        lines = [f"  {k}: was {old.get(k)!r}, now {spec[k]!r}" for k in diffs]
        raise ValueError(f"--workdir={workdir} holds a search with other settings; "
                         f"resuming it would mix trials. Use a new --workdir, or the "
                         f"same settings:\n" + "\n".join(lines))


def write_results(workdir: str, config: SearchConfig, trials: Sequence[Mapping[str, Any]],
                  extra_flags: Sequence[str]) -> Optional[Mapping[str, Any]]:
    """Writes results.md / .csv / .json; returns the best trial (or None)."""
    names = list(config.space)
    best = hp.best_trial(trials, config.metric, config.mode)
    best_name = best["name"] if best else None
    metrics_io.atomic_write_text(os.path.join(workdir, "results.md"),
                                 hp.results_markdown(trials, names, config.metric,
                                                     config.mode, best_name))
    metrics_io.atomic_write_text(os.path.join(workdir, "results.csv"),
                                 hp.results_csv(trials, names, config.metric))
    summary = {
        "binary": config.binary, "method": config.method, "seed": config.seed,
        "metric": config.metric, "mode": config.mode,
        "space": hp.describe_space(config.space), "extra_flags": list(extra_flags),
        "best": None if best is None else {
            "name": best["name"], "config": best["config"],
            config.metric: hp.find_metric(best.get("metrics"), config.metric),
            "workdir": os.path.join(workdir, best["name"])},
        "trials": [{k: t.get(k) for k in ("name", "index", "status", "config", "seconds",
                                          "returncode", "error", "stderr_tail", "command")
                    if k in t} | {"metrics": hp.numeric_metrics(t.get("metrics"))}
                   for t in trials],
    }
    metrics_io.atomic_write_json(os.path.join(workdir, "results.json"), summary)
    return best


def run_search(config: SearchConfig, workdir: str,
               log: Callable[[str], None] = print,
               env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Runs (or resumes) the search in `workdir`; returns results.json's content.

    Raises:
      ValueError: bad settings (see `SearchConfig.validate`), a space entry that is not
        a flag of the binary, or a `workdir` holding a search with other settings.
    """
    if not workdir:
        raise ValueError("--workdir is required")
    for w in config.validate():
        log(w)
    known = binary_flags(config.binary, config.python, env)
    if known is not None:
        hp.check_against_flags(config.space, known, config.binary)
        unknown = [n for n in _flag_names(config.extra_flags, "extra flag (after --)")
                   if n not in known and not (n.startswith("no") and n[2:] in known)]
        if unknown:
            raise ValueError(f"extra flag(s) {', '.join('--' + n for n in unknown)}: not "
                             f"flags of {config.binary}")
    added, warnings = validation_flags(config, known)
    for w in warnings:
        log("WARNING: " + w)
    extra = list(config.extra_flags) + added
    configs = plan(config)
    if config.method == "grid" and config.trials and \
            config.trials < hp.grid_size(config.space, config.grid_points):
        log(f"grid of {hp.grid_size(config.space, config.grid_points)} points: running "
            f"the first {config.trials} (--trials)")

    os.makedirs(workdir, exist_ok=True)
    spec = _spec(config, extra)
    _check_spec(workdir, spec)
    metrics_io.atomic_write_json(os.path.join(workdir, SEARCH_FILE), spec)
    hp_dir = os.path.join(workdir, "hparams")
    created = time.time()
    hp.write_hparams_config(hp_dir, config.space, [config.metric], created,
                            f"{config.binary} {config.method} search")

    trials: List[Dict[str, Any]] = []
    for i, cfg in enumerate(configs):
        name = hp.trial_name(i)
        trial_dir = os.path.join(workdir, name)
        old = hp.read_json(os.path.join(trial_dir, TRIAL_FILE))
        if trial_complete(trial_dir, cfg, config.metric):
            record = dict(old)
            record["metrics"] = hp.read_json(os.path.join(trial_dir, "metrics.json"))
            log(f"{name}: done before, skipped ({config.metric}="
                f"{hp.find_metric(record['metrics'], config.metric):.6g})")
        elif (not config.rerun_failed and isinstance(old, dict)
              and old.get("status") == "failed" and old.get("config") == cfg):
            record = old
            log(f"{name}: failed before, kept (--norerun_failed): {old.get('error')}")
        else:
            flags_text = " ".join(hp.config_to_flags(cfg))
            log(f"{name}: running {config.binary} {flags_text}")
            record = run_trial(i, cfg, workdir, config.binary, extra, config.metric,
                               config.python, config.trial_timeout, env)
            if record["status"] == "ok":
                log(f"{name}: ok, {config.metric}="
                    f"{hp.find_metric(record['metrics'], config.metric):.6g} "
                    f"({record['seconds']:.1f} s)")
            else:
                log(f"{name}: FAILED ({record['error']}); stderr tail:\n"
                    f"{record.get('stderr_tail', '')[-500:]}")
        trials.append(record)
        hp.write_trial_hparams(
            os.path.join(hp_dir, name), cfg,
            {k: v for k, v in hp.numeric_metrics(record.get("metrics")).items()
             if k == config.metric or k.startswith("val_") or k.startswith("test_")},
            ok=record.get("status") == "ok",
            start_time_secs=float(record.get("start_time", 0.0) or 0.0),
            end_time_secs=float(record.get("end_time", 0.0) or 0.0),
            model_uri=trial_dir)
        write_results(workdir, config, trials, extra)

    _, metric_cols = hp.result_columns(trials, list(config.space), config.metric)
    hp.write_hparams_config(hp_dir, config.space, metric_cols, created,
                            f"{config.binary} {config.method} search")
    best = write_results(workdir, config, trials, extra)
    with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
        log(f.read().rstrip())
    failed = sum(t.get("status") != "ok" for t in trials)
    if best is None:
        log(f"no trial completed ({failed} failed); see {workdir}/results.json")
    else:
        log(f"best: {best['name']} {config.metric}="
            f"{hp.find_metric(best.get('metrics'), config.metric):.6g} "
            f"{' '.join(hp.config_to_flags(best['config']))} "
            f"({os.path.join(workdir, best['name'])})")
    return hp.read_json(os.path.join(workdir, "results.json"))


# -- the binary ---------------------------------------------------------------------

def define_flags(fv: flags.FlagValues) -> None:
    """The search's flags, on their own `FlagValues` (no clash with the binaries')."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("binary", None, "Module of the binary to tune, e.g. train.vat.",
                        **d)
    flags.DEFINE_multi_string("space", [], "name=domain, repeatable: "
                              "uniform(lo, hi), loguniform(lo, hi), int(lo, hi), "
                              "choice(a, b, ...), or a fixed value.", **d)
    flags.DEFINE_string("space_file", None, "A JSON object or name=domain lines.", **d)
    flags.DEFINE_enum("method", "random", list(METHODS), "Random or grid search.", **d)
    flags.DEFINE_integer("trials", None, "Number of trials (random: required; grid: "
                         "the first N grid points, default all).", **d)
    flags.DEFINE_integer("grid_points", 3, "Grid: points per continuous range.", **d)
    flags.DEFINE_string("metric", "val_accuracy", "Selection metric from the trials' "
                        "metrics.json (a val_ metric).", **d)
    flags.DEFINE_enum("mode", "max", ["max", "min"], "Maximise or minimise --metric.",
                      **d)
    flags.DEFINE_string("workdir", None, "Search directory (trial_NNN/, results, "
                        "hparams/).", **d)
    flags.DEFINE_integer("seed", 0, "Seed of the random search's sampling.", **d)
    flags.DEFINE_string("val_flag", "val_size", "The binary's validation-split flag "
                        "(passed to every trial when the binary has it).", **d)
    flags.DEFINE_integer("val_size", 5000, "Value passed as --<val_flag> unless set "
                         "after -- or in the space.", **d)
    flags.DEFINE_boolean("allow_non_validation_metric", False, "Allow a --metric "
                         "without the val_ prefix (never a test metric).", **d)
    flags.DEFINE_boolean("rerun_failed", True, "On resume, rerun failed trials.", **d)
    flags.DEFINE_float("trial_timeout", None, "Seconds before a trial is killed "
                       "(recorded as failed).", **d)


def config_from_flags(fv: flags.FlagValues, extra: Sequence[str]) -> SearchConfig:
    if not fv.binary:
        raise ValueError("--binary is required (e.g. --binary=train.vat)")
    space = hp.parse_space(fv.space)
    if fv.space_file:
        space = hp.merge_spaces(space, hp.parse_space_file(fv.space_file))
    return SearchConfig(
        binary=fv.binary, space=space, method=fv.method, trials=fv.trials,
        metric=fv.metric, mode=fv.mode, seed=fv.seed, grid_points=fv.grid_points,
        extra_flags=list(extra), val_flag=fv.val_flag, val_size=fv.val_size,
        allow_non_validation_metric=fv.allow_non_validation_metric,
        rerun_failed=fv.rerun_failed, trial_timeout=fv.trial_timeout)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses `argv` (default sys.argv), runs the search; 0 when a trial completed,
    1 when none did, 2 for bad flags (message on stderr)."""
    argv = list(sys.argv if argv is None else argv)
    fv = flags.FlagValues()
    define_flags(fv)
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in ("-h", "--help", "--helpfull", "-?") for a in own):
        print(__doc__)
        print(fv.get_help())
        return 0
    try:
        rest = fv(argv)
        config = config_from_flags(fv, rest[1:])
        summary = run_search(config, fv.workdir)
    except (flags.Error, ValueError) as e:
        print(f"train.search: error: {e}", file=sys.stderr)
        return 2
    return 0 if summary and summary.get("best") else 1


if __name__ == "__main__":
    sys.exit(main())
