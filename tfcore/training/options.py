"""One declaration per option: dataclass fields -> absl flags, checks and resume rules.

A binary's configuration is a dataclass of `Options` whose fields are declared with
`option(...)`: the default, the help text, the bounds or choices, and how the option
may change when a run is resumed. Everything else is generated from that one place:

    @dataclasses.dataclass
    class Config(Options):
        epochs: Optional[int] = option(12, "Total epochs.", low=1, resume="free")
        eps: Optional[float] = option(None, "Adversarial radius (default: the "
                                      "preset's).", low=0)
        preset: str = option("writeup", "Defaults of xi and eps.",
                             choices=("writeup", "official"))

    define_flags(Config, flags.FLAGS)     # --epochs, --eps, --preset (typed absl flags)
    config = from_flags(Config, flags.FLAGS)

* Types come from the annotations: `bool`, `int`, `float`, `str` (an enum-like string
  with `choices`), `Optional[...]` of those (None allowed: "take the default of the
  preset / model"), `Tuple[str, ...]` (a comma-separated list flag, or with
  `multi=True` a repeated one).
* Single-value checks run when a configuration is constructed (`__post_init__`),
  whether from flags or in code, with `tfcore.checks` under the flag's name
  (`--eps must be a finite number >= 0, got -1.0`). absl only parses the type.
  Rules that span several options go into the configuration's `validate()`.
* `resume`: what `--resume` may change (`tfcore.training.run` enforces it):
  'same' (default: the option shapes the model, optimizer, data, loss or schedule;
  a change is refused), 'free' (it extends or observes the run: epochs, logging,
  export, jit, ...), 'opt_in' (a change is possible only when named in
  `--change_on_resume`, and then honoured and recorded: the learning rate, the
  batch size).

Why dataclasses and not `ml_collections.ConfigDict` (Flax, big_vision): a dataclass
is typed (annotations give the flag types and the checks), immutable in use, has no
extra dependency, and `dataclasses.asdict` writes config.json; what ConfigDict adds
(config files, lazy references) no binary here needs. See BUILD_NOTES.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from absl import flags

from tfcore import checks

RESUME_RULES = ("same", "free", "opt_in")
_META = "tfcore_option"


def option(default: Any, help: str, *, low: Optional[float] = None,  # noqa: A002
           high: Optional[float] = None, low_open: bool = False, high_open: bool = False,
           choices: Optional[Sequence[Any]] = None, is_dir: bool = False,
           multi: bool = False, resume: str = "same") -> Any:
    """A dataclass field declaring one option (see the module docstring).

    Args:
      default: the default value (None for an Optional option).
      help: the flag's help text.
      low, high, low_open, high_open: bounds of an int / float option.
      choices: the allowed values of a str option.
      is_dir: a str option naming an existing directory.
      multi: a `Tuple[str, ...]` option given by repeating the flag (`--x=a --x=b`)
        instead of one comma-separated list (for values that hold commas).
      resume: 'same', 'free' or 'opt_in' (what `--resume` may change).
    """
    checks.check_choice(resume, "resume", RESUME_RULES)
    meta = {"help": help, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "choices": tuple(choices) if choices else None,
            "is_dir": is_dir, "multi": multi, "resume": resume}
    return dataclasses.field(default=default, metadata={_META: meta})


def override(base: type, name: str, default: Any) -> Any:
    """The field `name` of dataclass `base` with another default (a binary's own
    default for a shared option), keeping its help, bounds and resume rule."""
    for f in dataclasses.fields(base):
        if f.name == name:
            return dataclasses.field(default=default, metadata=f.metadata)
    raise checks.ArgumentError(f"{base.__name__} has no option {name!r}")


def _kind(annotation) -> Tuple[type, bool]:
    """(base type, optional) of an annotation: Optional[int] -> (int, True)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _kind(inner[0])[0], True
    if typing.get_origin(annotation) in (tuple, list):
        return tuple, False
    return annotation, False


def declared(cls: type) -> List[Tuple[str, type, bool, Dict[str, Any], Any]]:
    """(name, type, optional, metadata, default) of every option of `cls`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if _META not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option()")
        typ, optional = _kind(hints[f.name])
        out.append((f.name, typ, optional, f.metadata[_META], f.default))
    return out


def check_option(name: str, value: Any, typ: type, optional: bool,
                 meta: Dict[str, Any]) -> Any:
    """`value` of option `name` checked against its declaration (message: `--name`)."""
    flag = "--" + name
    if value is None and optional:
        return None
    if typ is bool:
        return checks.check_bool(value, flag)
    if typ is int:
        return checks.check_int(value, flag, low=meta["low"], high=meta["high"])
    if typ is float:
        return checks.check_real(value, flag, low=meta["low"], high=meta["high"],
                                 low_open=meta["low_open"], high_open=meta["high_open"])
    if typ is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise checks.ArgumentError(f"{flag} must be a list of names, got {value!r}")
        for v in value:
            if meta["choices"]:
                checks.check_choice(v, flag, meta["choices"])
        return tuple(value)
    if meta["choices"]:
        return checks.check_choice(value, flag, meta["choices"])
    if not isinstance(value, str):
        raise checks.ArgumentError(f"{flag} must be a string, got {value!r}")
    if meta["is_dir"] and not os.path.isdir(value):
        raise checks.ArgumentError(f"{flag} must be an existing directory, got {value!r}")
    return value


class Options:
    """Base of the binaries' configurations (dataclasses of `option` fields).

    Constructing one checks every field (`check_option`); `validate()` holds the
    rules that span several options (override it, return self).
    """

    def __post_init__(self):
        for name, typ, optional, meta, _ in declared(type(self)):
            object.__setattr__(self, name, check_option(name, getattr(self, name), typ,
                                                        optional, meta))

    def validate(self):
        """Cross-option rules; raises `tfcore.checks.ArgumentError`. Returns self."""
        return self

    def to_dict(self) -> Dict[str, Any]:
        """The options as plain JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def _help(meta: Dict[str, Any]) -> str:
    text = meta["help"]
    if meta["choices"]:
        text += f" One of: {', '.join(str(c) for c in meta['choices'])}."
    return text


def define_flags(cls: Type[Options], flag_values: flags.FlagValues = flags.FLAGS
                 ) -> None:
    """Defines one absl flag per option of `cls` on `flag_values` (types only: the
    checks run when `from_flags` builds the configuration). Already defined flags
    (a second call) are left alone."""
    fv = {"flag_values": flag_values}
    for name, typ, _, meta, default in declared(cls):
        if name in flag_values:
            continue
        if typ is bool:
            flags.DEFINE_boolean(name, default, _help(meta), **fv)
        elif typ is int:
            flags.DEFINE_integer(name, default, _help(meta), **fv)
        elif typ is float:
            flags.DEFINE_float(name, default, _help(meta), **fv)
        elif typ is tuple:
            define = flags.DEFINE_multi_string if meta["multi"] else flags.DEFINE_list
            define(name, list(default) if default is not None else None, _help(meta),
                   **fv)
        else:
            flags.DEFINE_string(name, default, _help(meta), **fv)


def from_flags(cls: Type[Options], flag_values: flags.FlagValues = flags.FLAGS):
    """The configuration of the parsed flags (checked; raises ArgumentError)."""
    values = {}
    for name, typ, _, _, _ in declared(cls):
        value = flag_values[name].value
        values[name] = tuple(value) if typ is tuple and value is not None else value
    return cls(**values)


def resume_rules(cls: Type[Options]) -> Dict[str, str]:
    """option name -> its resume rule ('same', 'free', 'opt_in')."""
    return {name: meta["resume"] for name, _, _, meta, _ in declared(cls)}
