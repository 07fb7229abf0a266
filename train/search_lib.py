"""The hyperparameter search behind `python -m train.search`, on Optuna (no flags here).

`run_search(config, workdir, extra_flags)` runs each trial as a subprocess

    python -m <binary> --workdir=<workdir>/trials/<trial number> <sampled flags> <extra>

and polls the metrics.json it writes after every epoch: each new epoch's value of the
selection metric goes to `trial.report(value, epoch)`; when `trial.should_prune()` the
trial's process group gets SIGTERM (SIGKILL after `stop_grace` s) and the trial is
PRUNED at the epoch it reached. Exit 0 with a final metrics.json holding the metric:
COMPLETE with the final value; any other end: FAIL (exit code, reason, stderr tail).

`workers` threads here and the same command on other machines share the study in its
RDB storage (`search_report.open_storage`). `trials` counts finished trials (complete,
pruned, failed by the binary) whoever ran them; a worker asks for one only while
finished + running trials are fewer, under `search_report.StudyLock`. A RUNNING trial
whose heartbeat (recorded every `heartbeat_interval` s) is older than `grace_period` s
belongs to a dead search: the next worker fails it (Optuna's `fail_stale_trials`) and
queues it again (`RetryHeartbeatStaleTrialCallback`); on Linux its process got SIGTERM
when that search died (PR_SET_PDEATHSIG). An interrupted search stops its trials and
queues them again. Design and measurements: docs/search.md.
"""
from __future__ import annotations

import contextlib
import json
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import optuna
from optuna.trial import TrialState

from tfcore import checks
from tfcore import hparams as hp
from tfcore.training import metrics_io
from tfcore.training.options import Options, option
from tfcore.training.run import check_writable
from train import search_report

BINARY = "train.search"
STDERR_TAIL_CHARS = 2000
MAX_RETRIES = 3  # of a trial whose search process died


@dataclasses.dataclass
class SearchConfig(Options):
    """The search's options, each declared once (`tfcore.training.options`): the flags
    of `train.search` are generated from them."""
    binary: Optional[str] = option(None, "Module of the binary to tune, e.g. "
                                    "train.autoencoder.")
    space: Tuple[str, ...] = option((), "name=domain, repeatable: uniform(lo, hi), "
                                     "loguniform(lo, hi), int(lo, hi), choice(a, ...), "
                                     "or a value.", multi=True)
    space_file: Optional[str] = option(None, "A JSON object or name=domain lines.")
    trials: Optional[int] = option(None, "Finished trials the study should hold "
                                    "(grid: default the whole grid).", low=1)
    sampler: str = option("tpe", "Optuna sampler.", choices=hp.SAMPLERS)
    seed: int = option(0, "Sampler seed (trial i draws from (seed, i)).", low=0)
    startup_trials: int = option(10, "tpe/cmaes: random trials first.", low=0)
    grid_points: int = option(3, "grid: points per continuous range.", low=2)
    pruner: str = option("median", "Optuna pruner.", choices=hp.PRUNERS)
    prune_startup_trials: int = option(5, "median: trials before any pruning.", low=0)
    prune_warmup_epochs: int = option(0, "median: epochs before a trial can be "
                                       "pruned.", low=0)
    metric: str = option("val_accuracy", "Selection metric (a val_ metric).")
    mode: str = option("max", "Maximise or minimise --metric.", choices=("max", "min"))
    allow_non_validation_metric: bool = option(False, "Allow a --metric without the "
                                                "val_ prefix (never test*).")
    val_flag: str = option("val_size", "The binary's validation-split flag.")
    val_size: int = option(5000, "--<val_flag> of every trial unless set after -- or "
                            "in the space.", low=0)
    workers: int = option(1, "Trials this process runs at once.", low=1)
    storage: Optional[str] = option(None, "SQLAlchemy URL of the study (default "
                                     "sqlite:///<workdir>/study.db).")
    study_name: str = option("search", "Name of the study in --storage.")
    trial_timeout: Optional[float] = option(None, "Seconds before a trial is stopped "
                                             "(failed).", low=0, low_open=True)
    stop_grace: float = option(30.0, "Seconds from SIGTERM to SIGKILL.", low=0)
    heartbeat_interval: int = option(30, "Seconds between heartbeats.", low=1)
    grace_period: int = option(120, "Seconds without a heartbeat before a running "
                                "trial counts as dead.", low=1)
    poll_interval: float = option(1.0, "Seconds between reads of metrics.json.",
                                   low=0, low_open=True)

    def validate(self) -> "SearchConfig":
        """The rules across options; raises ArgumentError naming the options."""
        if not self.binary or not all(p.isidentifier() for p in self.binary.split(".")):
            raise checks.ArgumentError(f"--binary must be a Python module path like train.vat, "
                             f"got {self.binary!r}")
        if self.trials is None and self.sampler != "grid":
            raise checks.ArgumentError(f"--sampler={self.sampler} needs --trials")
        if self.grace_period <= self.heartbeat_interval + self.stop_grace:
            raise checks.ArgumentError(f"--grace_period={self.grace_period} must exceed "
                             f"--heartbeat_interval + --stop_grace "
                             f"({self.heartbeat_interval} + {self.stop_grace:g} s): "
                             f"live trials would be taken for dead ones")
        checks.check_name(self.study_name, "--study_name")
        self.selection_warnings()  # a test* metric is refused
        return self

    def selection_warnings(self) -> List[str]:
        """Warnings about --metric (a metric without val_ allowed by the flag); a
        test* metric raises (`tfcore.hparams.check_selection_metric`)."""
        return hp.check_selection_metric(self.metric, self.allow_non_validation_metric)

    def parsed_space(self) -> hp.Space:
        """The search space of `space` and `space_file` (a flag in both is refused)."""
        space = hp.parse_space(self.space)
        if self.space_file:
            space = hp.merge_spaces(space, hp.parse_space_file(self.space_file))
        if not space:
            raise checks.ArgumentError("the search space is empty: give at least one --space "
                             "entry or a --space_file")
        return space


# -- one trial ----------------------------------------------------------------------

# Run by the trial's process before it becomes the binary (os.execv keeps the pid):
# SIGTERM when the search that started it dies (Linux PR_SET_PDEATHSIG = 1).
_LAUNCHER = ("import ctypes, os, signal, sys\n"
             "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
             "if os.getppid() != int(sys.argv[1]): sys.exit(143)\n"
             "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n")


@dataclasses.dataclass
class _Search:
    """What the workers share."""
    config: SearchConfig
    space: hp.Space
    extra: List[str]
    workdir: str
    storage: optuna.storages.RDBStorage
    lock: search_report.StudyLock
    budget: int
    log: Callable[[str], None]
    env: Optional[Mapping[str, str]]
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    report_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    errors: List[BaseException] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrialResult:  # outcome: 'complete', 'pruned', 'failed' or 'interrupted'
    outcome: str
    value: Optional[float]
    epochs: int
    seconds: float
    returncode: Optional[int]
    error: Optional[str] = None
    stderr_tail: Optional[str] = None
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group of `proc`, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def _watch(s: _Search, trial: optuna.Trial, proc: subprocess.Popen, trial_dir: str
           ) -> Tuple[Optional[str], int]:
    """Polls the running trial until it exits or is stopped: reports its epochs,
    records heartbeats; returns (why it was stopped or None, epochs reported)."""
    c = s.config
    path = os.path.join(trial_dir, metrics_io.METRICS_FILE)
    start = beat = time.monotonic()
    reported = 0
    while True:
        done = proc.poll() is not None
        before, reported = reported, hp.report_epochs(trial, path, c.metric, reported)
        if done:
            return None, reported
        reason = None
        if reported > before and trial.should_prune():
            reason = "pruned"
        elif s.stop.is_set():
            reason = "interrupted"
        elif c.trial_timeout and time.monotonic() - start > c.trial_timeout:
            reason = f"timed out after {c.trial_timeout:g} s (--trial_timeout)"
        if reason:
            s.storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
            stop_process(proc, c.stop_grace)
            return reason, reported
        if time.monotonic() - beat >= c.heartbeat_interval:
            s.storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
            beat = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(c.poll_interval)  # returns at once when the trial exits


def run_trial(s: _Search, trial: optuna.Trial, params: Mapping[str, hp.Value]
              ) -> TrialResult:
    """Runs trial `trial.number` of the binary in `<workdir>/trials/<number>` (made
    afresh), watching it (`_watch`); returns how it ended."""
    c = s.config
    trial_dir = os.path.join(s.workdir, "trials", str(trial.number))
    shutil.rmtree(trial_dir, ignore_errors=True)
    os.makedirs(trial_dir)
    cmd = ([sys.executable, "-m", c.binary, f"--workdir={trial_dir}"]
           + hp.config_to_flags(params) + s.extra)
    attrs = {"outcome": "running", "command": cmd, "workdir": trial_dir,
             "host": socket.gethostname(), "search_pid": os.getpid()}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    metrics_io.atomic_write_json(os.path.join(trial_dir, "trial.json"), {
        "study": c.study_name, "number": trial.number, "params": dict(params), **attrs})
    launch = ([sys.executable, "-c", _LAUNCHER, str(os.getpid())] + cmd[1:]
              if sys.platform.startswith("linux") else cmd)
    err_path = os.path.join(trial_dir, "stderr.log")
    start = time.monotonic()
    with open(os.path.join(trial_dir, "stdout.log"), "wb") as out, \
            open(err_path, "wb") as err:
        proc = subprocess.Popen(launch, stdout=out, stderr=err, start_new_session=True,
                                env=dict(s.env) if s.env is not None else None)
        trial.set_user_attr("pid", proc.pid)
        reason, epochs = _watch(s, trial, proc, trial_dir)
    metrics = hp.read_json(os.path.join(trial_dir, metrics_io.METRICS_FILE))
    kept = {k: v for k, v in hp.numeric_metrics(metrics).items()
            if k == c.metric or k.startswith(("val_", "test_"))}
    result = TrialResult("failed", None, epochs, time.monotonic() - start,
                         proc.returncode, metrics=kept)
    if reason in ("pruned", "interrupted"):
        result.outcome = reason
    elif reason is not None:
        result.error = reason
    elif proc.returncode != 0:
        result.error = f"exit code {proc.returncode}"
    elif hp.metrics_problem(metrics, c.metric):
        result.error = hp.metrics_problem(metrics, c.metric)
    else:
        result.outcome, result.value = "complete", hp.find_metric(metrics, c.metric)
    if result.outcome == "failed":
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - STDERR_TAIL_CHARS))
            result.stderr_tail = f.read().decode("utf-8", "replace")
    return result


# -- the workers and the search -----------------------------------------------------

def _tell(study: optuna.Study, trial: optuna.Trial, r: TrialResult):
    for key in ("outcome", "epochs", "seconds", "returncode", "error", "stderr_tail",
                "metrics"):
        if getattr(r, key) is not None:
            trial.set_user_attr(key, getattr(r, key))
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(
        r.outcome, TrialState.FAIL)
    frozen = study.tell(trial, r.value, state=state)
    if r.outcome == "interrupted":  # queued again, like a trial of a dead search
        optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES)(study, frozen)
    return frozen


def _ask(s: _Search, study: optuna.Study) -> Tuple[Optional[optuna.Trial], bool]:
    """(a new trial or None, whether the study is done)."""
    optuna.storages.fail_stale_trials(study)
    with s.lock():
        done, running = search_report.progress(study.get_trials(deepcopy=False))
        if done + running >= s.budget:
            return None, done >= s.budget
        trial = study.ask()
        s.storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
        return trial, False


def _worker(s: _Search) -> None:
    """Asks for trials and runs them until the study holds `budget` finished ones
    (waiting while the running ones could fill it) or the search is stopped."""
    c = s.config
    study = optuna.load_study(
        study_name=c.study_name, storage=s.storage,
        sampler=hp.make_sampler(c.sampler, s.space, c.seed, c.grid_points,
                                c.startup_trials),
        pruner=hp.make_pruner(c.pruner, c.prune_startup_trials, c.prune_warmup_epochs))
    while not s.stop.is_set():
        trial, finished = _ask(s, study)
        if finished:
            return
        if trial is None:
            s.stop.wait(max(1.0, c.poll_interval))
            continue
        params = {name: domain.suggest(trial, name) for name, domain in s.space.items()}
        rerun = s.storage.get_trial_system_attrs(
            trial._trial_id).get("failed_trial")  # pylint: disable=protected-access
        s.log(f"trial {trial.number}: {c.binary} {' '.join(hp.config_to_flags(params))}"
              + (f" (rerun of trial {rerun})" if rerun is not None else ""))
        try:
            frozen = _tell(study, trial, run_trial(s, trial, params))
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile
            s.log(f"trial {trial.number}: failed by another worker (no heartbeat for "
                  f"--grace_period); its result is dropped, a rerun is queued")
            continue
        s.log(search_report.trial_line(frozen, c.metric))
        with s.report_lock:
            search_report.write_results(study, s.workdir, s.space, c.metric)


def _guarded(s: _Search) -> None:
    """`_worker`; an unexpected error stops the other workers and is kept for
    `run_search` to raise."""
    try:
        _worker(s)
    except BaseException as e:  # pylint: disable=broad-except
        s.errors.append(e)
        s.stop.set()


def run_search(config: SearchConfig, workdir: str, extra_flags: Sequence[str] = (),
               log: Callable[[str], None] = print,
               env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Runs (or continues) the search in `workdir` (trials/, study.db, results, plots,
    hparams/); `extra_flags` go to every trial, `env` is the trials' environment.
    Returns results.json's content.

    Raises:
      ValueError: bad options, a space entry or extra flag the binary does not take, a
        storage that cannot be opened, a stored study with other settings.
      KeyboardInterrupt: after the running trials were stopped and queued again.
    """
    if not workdir:
        raise checks.ArgumentError("--workdir is required")
    config.validate()
    check_writable(workdir)
    for warning in config.selection_warnings():
        log(warning)
    space = config.parsed_space()
    extra, warnings_ = hp.trial_flags(config.binary, space, extra_flags, config.val_flag,
                                      config.val_size, env)
    for warning in warnings_:
        log("WARNING: " + warning)
    size = hp.grid_size(space, config.grid_points) if config.sampler == "grid" else None
    budget = min(config.trials or size, size) if size else config.trials
    hp.make_sampler(config.sampler, space)  # a missing cmaes package: refused now
    search_report.quiet_optuna()
    os.makedirs(workdir, exist_ok=True)
    url = config.storage or f"sqlite:///{os.path.abspath(workdir)}/study.db"
    lock = search_report.StudyLock(url)
    storage = search_report.open_storage(url, lock, config.heartbeat_interval,
                                         config.grace_period, MAX_RETRIES)
    settings = search_report.search_settings(config, space, extra)
    study = search_report.open_study(storage, config.study_name, config.mode, settings,
                                     lock, url)
    s = _Search(config, space, extra, workdir, storage, lock, budget, log, env)
    done, running = search_report.progress(study.get_trials(deepcopy=False))
    log(f"study {config.study_name!r} in {search_report.mask_url(url)}: {done} of "
        f"{budget} trials finished, {running} running; {config.workers} worker(s)")
    threads = [threading.Thread(target=_guarded, args=(s,), daemon=True,
                                name=f"search-worker-{i}") for i in range(config.workers)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        log("interrupted: stopping the running trials (they are queued again)")
        s.stop.set()
        for t in threads:
            t.join()
        search_report.write_results(study, workdir, space, config.metric)
        raise
    if s.errors:
        raise s.errors[0]
    return search_report.write_all(study, workdir, space, config.metric, log)


def search(config: SearchConfig, workdir: str, extra_flags: Sequence[str] = ()
           ) -> Dict[str, Any]:
    """`run_search` for the binary: raises `binary.NoResult` (exit 1) when the study
    holds no complete trial."""
    from tfcore.training.binary import NoResult  # pylint: disable=import-outside-toplevel
    summary = run_search(config, workdir, extra_flags)
    if not summary.get("best"):
        raise NoResult(f"no complete trial in the study {config.study_name!r} "
                       f"(results in {workdir})")
    return summary


def summary_line(summary: Mapping[str, Any]) -> str:
    """The best trial, one JSON line."""
    return json.dumps({"best": summary["best"]})
