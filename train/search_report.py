"""The study of `python -m train.search`: its storage, its stored settings, its reports.

* `open_storage(url, ...)`: Optuna's `RDBStorage` with heartbeats (any SQLAlchemy URL),
  `StudyLock(url)`: the lock under which the study is created and trials are asked
  for, `open_study(...)`: creates the study, or loads it and refuses other settings.
* `write_results(study, workdir, space, metric)`: results.md / results.csv /
  results.json, one row per trial in number order, the best complete trial marked
  `*`; `write_all` adds the plots (`optimization_history.png`,
  `param_importances.png`, `parallel_coordinate.png`, Optuna's
  `visualization.matplotlib`) and TensorBoard HParams (`hparams/`).

A trial's state in the tables: complete, pruned, failed (by the binary), interrupted
(the search was stopped; queued again), stale (its search process died; queued
again), running, waiting (queued).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from tfcore import hparams as hp
from tfcore.checks import ArgumentError
from tfcore.training import metrics_io

PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")


def mask_url(url: str) -> str:
    """The storage URL with its password hidden (for logs and results)."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def quiet_optuna() -> None:
    """Optuna's own log lines and experimental-feature warnings off (the search logs
    its own lines; the heartbeat is used with ask / tell on purpose)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


# -- storage and study ---------------------------------------------------------------

class StudyLock:
    """Mutual exclusion for creating the study and asking for trials: a threading
    lock, plus an flock on `<database>.lock` for an SQLite file (every process on the
    machine). Over a server database only this process's threads are excluded."""

    def __init__(self, url: str):
        import sqlalchemy  # pylint: disable=import-outside-toplevel
        try:
            u = sqlalchemy.engine.make_url(url)
        except sqlalchemy.exc.ArgumentError as e:
            raise ArgumentError(f"--storage={url}: {_first_line(e)}") from None
        sqlite_file = (u.get_backend_name() == "sqlite"
                       and u.database not in (None, "", ":memory:"))
        self.path = u.database + ".lock" if sqlite_file else None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self.path is None:
                yield
                return
            with open(self.path, "a", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(url: str, lock: StudyLock, heartbeat_interval: int, grace_period: int,
                 max_retry: int) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url`, recording heartbeats; a trial without one for
    `grace_period` s is failed and queued again (up to `max_retry` times).

    Raises:
      ValueError (one line): the URL, driver or database cannot be used.
    """
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # processes creating the tables at once race: retry
        try:
            with lock():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.
                    RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == 4:
                raise ArgumentError(f"--storage={mask_url(url)}: {_first_line(e)}") from None
            time.sleep(0.5 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError) as e:
            raise ArgumentError(f"--storage={mask_url(url)} cannot be opened: "
                             f"{_first_line(e)}") from None
    raise AssertionError("unreachable")


def search_settings(config: SearchConfig, space: hp.Space, extra: Sequence[str]
                    ) -> Dict[str, Any]:
    """What fixes the trials; stored with the study, compared on every rerun."""
    out = {"binary": config.binary, "space": hp.describe_space(space),
           "metric": config.metric, "mode": config.mode, "sampler": config.sampler,
           "seed": config.seed, "pruner": config.pruner, "extra_flags": list(extra)}
    if config.sampler == "grid":
        out["grid_points"] = config.grid_points
    if config.sampler in ("tpe", "cmaes"):
        out["startup_trials"] = config.startup_trials
    if config.pruner == "median":
        out["prune_startup_trials"] = config.prune_startup_trials
        out["prune_warmup_epochs"] = config.prune_warmup_epochs
    return out


def open_study(storage: optuna.storages.RDBStorage, study_name: str, mode: str,
               settings: Mapping[str, Any], lock: StudyLock, url: str) -> optuna.Study:
    """Creates the study (`settings` as its user attrs) or loads it.

    Raises:
      ValueError (one line): the stored study has other settings (each difference
        named), or it holds trials not made by train.search.
    """
    where = f"study {study_name!r} in {mask_url(url)}"
    with lock():
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    load_if_exists=True,
                                    direction="maximize" if mode == "max" else "minimize")
        stored = study.user_attrs
        if "binary" not in stored:
            if study.trials:
                raise ArgumentError(f"{where} has trials but was not made by train.search; "
                                 f"use another --study_name")
            for key, value in settings.items():
                study.set_user_attr(key, value)
            return study
    diffs = [f"{k}: stored {stored.get(k)!r}, given {v!r}" for k, v in settings.items()
             if stored.get(k) != v]
    diffs += [f"{k}: stored {stored[k]!r}, given none" for k in stored
              if k not in settings]
    if diffs:
        raise ArgumentError(f"{where} was made with other settings ({'; '.join(diffs)}); "
                         f"rerun with the stored ones, or use another --study_name or "
                         f"--workdir")
    return study


def progress(trials: Sequence[FrozenTrial]) -> Tuple[int, int]:
    """(finished trials that count toward --trials, running trials): complete,
    pruned, and failed by the binary count; interrupted and dead-search ones do not."""
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or
               (t.state == TrialState.FAIL and t.user_attrs.get("outcome") == "failed")
               for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


# -- results ---------------------------------------------------------------------------

def trial_state(t: FrozenTrial) -> str:
    """complete, pruned, failed, interrupted, stale, running or waiting."""
    if t.state == TrialState.FAIL:
        outcome = t.user_attrs.get("outcome")
        return outcome if outcome in ("failed", "interrupted") else "stale"
    return t.state.name.lower()


def trial_line(t: FrozenTrial, metric: str) -> str:
    """One log line on a finished trial."""
    a, state = t.user_attrs, trial_state(t)
    took = f"{a.get('seconds', 0.0):.1f} s"
    if state == "complete":
        return (f"trial {t.number}: complete, {metric}={t.value:.6g} after "
                f"{a.get('epochs')} epoch(s) ({took})")
    if state == "pruned":
        value = "" if t.value is None else f", {metric}={t.value:.6g}"
        return f"trial {t.number}: pruned at epoch {t.last_step}{value} ({took})"
    if state == "interrupted":
        return f"trial {t.number}: interrupted ({took}); queued again"
    tail = (a.get("stderr_tail") or "").strip().splitlines()[-5:]
    return (f"trial {t.number}: FAILED ({a.get('error')}, {took}); stderr tail:\n  "
            + "\n  ".join(tail))


def _best(study: optuna.Study) -> Optional[FrozenTrial]:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def _metric_columns(trials: Sequence[FrozenTrial], metric: str) -> List[str]:
    found = {k for t in trials for k in t.user_attrs.get("metrics", {}) if k != metric}
    return sorted(found)


def _rows(trials: Sequence[FrozenTrial], names: Sequence[str], metric: str):
    others = _metric_columns(trials, metric)
    header = (["trial", "state"] + list(names) + [metric, "epochs"] + others
              + ["seconds", "note"])
    rows = []
    for t in trials:
        a = t.user_attrs
        rerun = t.system_attrs.get("failed_trial")
        note = a.get("error") if trial_state(t) == "failed" else None
        note = note or (f"rerun of trial {rerun}" if rerun is not None else None)
        rows.append([t.number, trial_state(t)] + [t.params.get(n) for n in names]
                    + [t.value, a.get("epochs")]
                    + [a.get("metrics", {}).get(m) for m in others]
                    + [a.get("seconds"), note])
    return header, rows


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return hp.format_value(v) if isinstance(v, bool) else str(v)


def results_markdown(trials: Sequence[FrozenTrial], names: Sequence[str], metric: str,
                     mode: str, best: Optional[int]) -> str:
    """The trials as a markdown table, the best one marked '*'."""
    header, rows = _rows(trials, names, metric)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_cell(c) for c in row]
        if row[0] == best:
            cells[0] += " *"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Selection: {mode} of {metric}" +
              (f"; best (*): trial {best}" if best is not None else "; no complete trial")]
    return "\n".join(lines) + "\n"


def results_csv(trials: Sequence[FrozenTrial], names: Sequence[str], metric: str) -> str:
    header, rows = _rows(trials, names, metric)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(c) if isinstance(c, (bool, float)) or c is None else c
                         for c in row])
    return buf.getvalue()


def _trial_json(t: FrozenTrial) -> Dict[str, Any]:
    a = t.user_attrs
    return {"number": t.number, "state": trial_state(t), "params": t.params,
            "value": t.value, "intermediate": {str(k): v for k, v in
                                               sorted(t.intermediate_values.items())},
            "rerun_of": t.system_attrs.get("failed_trial"),
            **{k: a.get(k) for k in ("epochs", "seconds", "metrics", "returncode",
                                     "error", "stderr_tail", "command", "workdir",
                                     "host")}}


def write_results(study: optuna.Study, workdir: str, space: hp.Space,
                  metric: str) -> Dict[str, Any]:
    """Writes results.md / .csv / .json from the study (every machine's trials);
    returns results.json's content."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    names = list(space)
    best = _best(study)
    mode = study.user_attrs.get("mode", "max")
    metrics_io.atomic_write_text(os.path.join(workdir, "results.md"), results_markdown(
        trials, names, metric, mode, best.number if best else None))
    metrics_io.atomic_write_text(os.path.join(workdir, "results.csv"),
                                 results_csv(trials, names, metric))
    summary = {"study_name": study.study_name, "settings": study.user_attrs,
               "best": None if best is None else {
                   "number": best.number, "params": best.params, metric: best.value,
                   "workdir": best.user_attrs.get("workdir")},
               "trials": [_trial_json(t) for t in trials]}
    metrics_io.atomic_write_json(os.path.join(workdir, "results.json"), summary)
    return json.loads(json.dumps(metrics_io.to_jsonable(summary)))


# -- plots and HParams -------------------------------------------------------------------

def write_plots(study: optuna.Study, workdir: str, names: Sequence[str],
                log: Callable[[str], None]) -> List[str]:
    """The PNGs Optuna's matplotlib backend draws that the study can support:
    history from 1 complete trial, parallel coordinates from 2, importances from 2
    with a parameter that varies among them. Returns the files written."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from optuna.visualization import matplotlib as ovm  # pylint: disable=import-outside-toplevel
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varies = any(len({json.dumps(t.params.get(n)) for t in complete}) > 1 for n in names)
    plots = [(PLOTS[0], ovm.plot_optimization_history, len(complete) >= 1),
             (PLOTS[1], ovm.plot_param_importances, len(complete) >= 2 and varies),
             (PLOTS[2], ovm.plot_parallel_coordinate, len(complete) >= 2)]
    written = []
    for name, plot, possible in plots:
        path = os.path.join(workdir, name)
        if not possible:
            log(f"{name}: not drawn ({len(complete)} complete trial(s)"
                f"{'' if varies else ', no parameter varies'})")
            continue
        ax = plot(study)
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(path)
    return written


def write_hparams(study: optuna.Study, workdir: str, space: hp.Space,
                  metric: str) -> str:
    """TensorBoard HParams in `<workdir>/hparams`: the experiment, one run per trial
    (its params, metric value, val_/test_ metrics, epochs; status success for complete,
    failure for failed, unknown for pruned / interrupted / stale)."""
    logdir = os.path.join(workdir, "hparams")
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    metrics = [metric, "epochs"] + _metric_columns(trials, metric)
    hp.write_hparams_config(logdir, space, metrics)
    for t in trials:
        values = dict(t.user_attrs.get("metrics", {}), epochs=t.user_attrs.get("epochs"))
        values[metric] = t.value
        state = trial_state(t)
        status = {"complete": "success", "failed": "failure", "running": "running"}.get(
            state, "unknown")
        start, end = t.datetime_start, t.datetime_complete
        hp.write_trial_hparams(
            os.path.join(logdir, str(t.number)), t.params,
            {k: v for k, v in values.items() if isinstance(v, (int, float))
             and not isinstance(v, bool) and math.isfinite(v)}, status, str(t.number),
            start.timestamp() if start else None, end.timestamp() if end else None)
    return logdir


def write_all(study: optuna.Study, workdir: str, space: hp.Space, metric: str,
              log: Callable[[str], None]) -> Dict[str, Any]:
    """Results, plots and HParams; logs the table and the best trial."""
    summary = write_results(study, workdir, space, metric)
    write_plots(study, workdir, list(space), log)
    write_hparams(study, workdir, space, metric)
    with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
        log(f.read().rstrip())
    best = summary["best"]
    if best is None:
        log(f"no complete trial; see {workdir}/results.json")
    else:
        log(f"best: trial {best['number']} {metric}={best[metric]:.6g} "
            f"{' '.join(hp.config_to_flags(best['params']))} ({best['workdir']})")
    return summary
