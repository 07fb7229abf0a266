"""`main()` of a training binary: flags -> configuration -> one library call.

    # train/vat.py, the whole binary:
    from tfcore.training import binary
    from train import vat_lib

    if __name__ == "__main__":
        binary.main("train.vat", vat_lib.VatConfig, vat_lib.train_and_evaluate,
                    summary=vat_lib.summary_line)

`main` defines `--workdir` and one flag per option of the configuration class
(`tfcore.training.options`), parses them, builds the configuration, calls
`train_fn(config, workdir)` and prints `summary(metrics)`. Library code raises; the
binary reports (argparse's and absl's habit), once, here:

| what | printed on stderr | exit code |
| --- | --- | --- |
| a bad flag (unknown, unparsable, out of bounds, a refused combination), a bad or missing file, a refused resume or workdir, a model of the wrong kind: `tfcore.checks.ArgumentError` or `FileNotFoundError` | `train.X: error: <message>` | 2 |
| SIGINT / SIGTERM (`tfcore.training.loop.Interrupted`: the run was saved first) | `train.X: interrupted by SIGINT at step N; checkpoint saved: ...` | 130 / 143 |
| a NaN / Inf stop (`tfcore.training.loop.NonFiniteError`), or nothing to report (`NoResult`) | `train.X: error: non-finite 'loss' = nan at step N ...` | 1 |
| SIGINT / SIGTERM outside a training loop | `train.X: interrupted by SIGTERM` | 130 / 143 |
| anything else (a bug) | the traceback | 1 |
"""
from __future__ import annotations

import logging
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from absl import app, flags

from tfcore import checks
from tfcore.training import options

USER_ERRORS = (checks.ArgumentError, FileNotFoundError, NotADirectoryError,
               IsADirectoryError, PermissionError)


def fail(binary: str, message: Any, code: int = 2) -> None:
    """Prints `<binary>: error: <message>` (one line) on stderr and exits with `code`."""
    text = " ".join(str(message).split())
    print(f"{binary}: error: {text}", file=sys.stderr, flush=True)
    sys.exit(code)


def define_flags(config_cls: Type[options.Options],
                 flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """`--workdir` and one flag per option of `config_cls` on `flag_values`."""
    if "workdir" not in flag_values:
        flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.json, "
                            "config.json, TensorBoard logs (train/, eval/), exports.",
                            flag_values=flag_values)
    options.define_flags(config_cls, flag_values)


def _parser(binary: str, flag_values: flags.FlagValues) -> Callable[[List[str]], List[str]]:
    def parse(argv: List[str]) -> List[str]:
        try:
            return flag_values(argv)
        except flags.Error as e:
            fail(binary, e)
        return []  # not reached
    return parse


class NoResult(Exception):
    """The binary ran but produced nothing to report (e.g. a search without a single
    complete trial): one line, exit code 1."""


def run_main(binary: str, config_cls: Type[options.Options],
             train_fn: Callable[..., Dict[str, Any]],
             summary: Optional[Callable[[Dict[str, Any]], str]],
             flag_values: flags.FlagValues, argv: Sequence[str],
             workdir_required: bool = True, extra_args: bool = False) -> None:
    """What `main` runs after parsing (`argv`: what absl left: with `extra_args`, the
    arguments after `--` go to `train_fn(config, workdir, extra)`)."""
    from tfcore.training.loop import Interrupted, NonFiniteError  # pylint: disable=import-outside-toplevel
    if len(argv) > 1 and not extra_args:
        fail(binary, f"unexpected arguments: {' '.join(argv[1:])}")
    if workdir_required and not flag_values.workdir:
        fail(binary, "--workdir is required")
    logging.getLogger("tfcore").setLevel(logging.INFO)
    logging.getLogger("train").setLevel(logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # checkpoint chatter
    try:
        config = options.from_flags(config_cls, flag_values)
        extra = (list(argv[1:]),) if extra_args else ()
        metrics = train_fn(config, flag_values.workdir, *extra)
    except USER_ERRORS as e:
        fail(binary, e)
    except NoResult as e:
        fail(binary, e, code=1)
    except Interrupted as e:
        print(f"{binary}: {e}", file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    except NonFiniteError as e:
        fail(binary, e, code=1)
    except KeyboardInterrupt as e:  # outside a training loop (loading, evaluating)
        signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
        print(f"{binary}: interrupted by {signal.Signals(signum).name}", file=sys.stderr,
              flush=True)
        sys.exit(128 + signum)
    if summary is not None:
        print(summary(metrics), flush=True)


def run_in_process(binary: str, config_cls: Type[options.Options],
                   train_fn: Callable[..., Dict[str, Any]], argv: Sequence[str],
                   summary: Optional[Callable[[Dict[str, Any]], str]] = None,
                   workdir_required: bool = True, extra_args: bool = False) -> int:
    """Parses `argv` (argv[0] the program) into fresh flags and runs the binary in
    this process; returns its exit code (tests: what `python -m` would exit with)."""
    fv = flags.FlagValues()
    define_flags(config_cls, fv)
    try:
        rest = _parser(binary, fv)(list(argv))
        run_main(binary, config_cls, train_fn, summary, fv, rest, workdir_required,
                 extra_args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def main(binary: str, config_cls: Type[options.Options],
         train_fn: Callable[..., Dict[str, Any]],
         summary: Optional[Callable[[Dict[str, Any]], str]] = None,
         argv: Optional[Sequence[str]] = None, workdir_required: bool = True,
         extra_args: bool = False) -> None:
    """Runs a binary (see the module docstring); exits with its code. With
    `workdir_required=False` (a binary that trains nothing, e.g. train.gan_eval)
    `--workdir` may be left out: `train_fn` then gets None. With `extra_args` the
    arguments after `--` are passed on as `train_fn(config, workdir, extra)`
    (train.search hands them to every trial). SIGTERM is turned into the same clean
    stop as SIGINT (the loop handles both itself while training)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fv = flags.FLAGS
    define_flags(config_cls, fv)

    def terminate(signum, frame):  # pylint: disable=unused-argument
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, terminate)
    app.run(lambda args: run_main(binary, config_cls, train_fn, summary, fv, args,
                                  workdir_required, extra_args),
            argv=list(argv) if argv is not None else None,
            flags_parser=_parser(binary, fv))
