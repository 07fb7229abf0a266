"""tfcore.training.options and .binary: one declaration per option -> flags, checks,
resume rules; every binary's flags are exactly its configuration's fields."""
import ast
import dataclasses
import glob
import os
import re
from typing import Optional, Tuple

import pytest
from absl import flags

from tfcore import checks
from tfcore.training import binary, options
from tfcore.training.options import Options, option, override

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# Every binary in train/ (python -m train.<name>), each a binary.main over its library.
BINARIES = ("ae_table", "autoencoder", "dcgan", "ensemble", "gan_eval", "search", "vat",
            "vat_table")


@dataclasses.dataclass
class _Config(Options):
    steps: Optional[int] = option(None, "Steps.", low=1, resume="free")
    rate: float = option(0.5, "A rate.", low=0, high=1, high_open=True, resume="opt_in")
    mode: str = option("a", "A mode.", choices=("a", "b"))
    names: Tuple[str, ...] = option((), "Names.", choices=("x", "y"))
    flag: bool = option(True, "A switch.")
    where: Optional[str] = option(None, "A folder.", is_dir=True)


@dataclasses.dataclass
class _Child(_Config):
    steps: Optional[int] = override(_Config, "steps", 7)


def _parse(cls, argv):
    fv = flags.FlagValues()
    options.define_flags(cls, fv)
    fv(["prog"] + list(argv))
    return options.from_flags(cls, fv)


def test_flags_are_generated_typed_and_parsed(tmp_path):
    c = _parse(_Config, [])
    assert c == _Config() and (c.steps, c.rate, c.mode, c.names, c.flag) == (
        None, 0.5, "a", (), True)
    c = _parse(_Config, ["--steps=3", "--rate=0.25", "--mode=b", "--names=x,y",
                         "--noflag", f"--where={tmp_path}"])
    assert (c.steps, c.rate, c.mode, c.names, c.flag, c.where) == (
        3, 0.25, "b", ("x", "y"), False, str(tmp_path))
    fv = flags.FlagValues()
    options.define_flags(_Config, fv)
    assert fv["mode"].help == "A mode. One of: a, b."
    with pytest.raises(flags.Error):  # absl parses the type
        fv(["prog", "--steps=three"])


@pytest.mark.parametrize("argv,message", [
    (["--steps=0"], "--steps must be a positive integer, got 0"),
    (["--rate=1"], r"--rate must be a finite number in \[0, 1\), got 1.0"),
    (["--rate=nan"], r"--rate must be a finite number in \[0, 1\), got nan"),
    (["--mode=c"], "--mode must be one of a, b, got 'c'"),
    (["--names=x,z"], "--names must be one of x, y, got 'z'"),
    (["--where=/no/such/dir"], "--where must be an existing directory, got '/no/such/dir'"),
])
def test_single_value_checks_come_from_the_declaration(argv, message):
    with pytest.raises(checks.ArgumentError, match=message):
        _parse(_Config, argv)


def test_configs_built_in_code_are_checked_the_same_way():
    with pytest.raises(checks.ArgumentError, match="--flag must be a bool, got 'yes'"):
        _Config(flag="yes")
    with pytest.raises(checks.ArgumentError, match="--steps must be a positive integer"):
        dataclasses.replace(_Config(), steps=-1)
    assert _Config(names=["x"]).names == ("x",)  # lists are kept as tuples


def test_override_keeps_the_declaration_and_rules():
    assert _Child().steps == 7
    assert options.resume_rules(_Child) == {"steps": "free", "rate": "opt_in",
                                            "mode": "same", "names": "same",
                                            "flag": "same", "where": "same"}
    with pytest.raises(checks.ArgumentError, match="--steps must be a positive integer"):
        _Child(steps=0)


def test_a_field_without_option_is_refused():
    @dataclasses.dataclass
    class Bad(Options):
        x: int = 3

    with pytest.raises(TypeError, match="Bad.x is not declared with option"):
        Bad()


def _main_calls(path):
    """The `binary.main(...)` calls of a module's source."""
    tree = ast.parse(open(path).read())
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "main" and getattr(node.func.value, "id", "") == "binary"]


def test_every_train_module_with_a_main_is_a_thin_binary_main():
    found = [os.path.basename(p)[:-3] for p in sorted(glob.glob(os.path.join(ROOT, "train",
                                                                           "*.py")))
             if _main_calls(p)]
    assert found == list(BINARIES)
    for path in glob.glob(os.path.join(ROOT, "train", "*.py")):
        source = open(path).read()
        assert "DEFINE_" not in source, f"{path} defines flags by hand"
        assert "train import flags" not in source and "train.flags" not in source, path


def _binary_config(name):
    """(binary name, configuration class) of `python -m train.<name>`'s main call."""
    import importlib
    path = os.path.join(ROOT, "train", f"{name}.py")
    (call,) = _main_calls(path)
    module = importlib.import_module(f"train.{name}")
    return (ast.literal_eval(call.args[0]) if isinstance(call.args[0], ast.Constant)
            else eval(ast.unparse(call.args[0]), vars(module)),  # noqa: S307
            eval(ast.unparse(call.args[1]), vars(module)))  # noqa: S307


@pytest.mark.parametrize("name", BINARIES)
def test_each_binarys_flags_are_exactly_its_config_fields(name):
    binary_name, cls = _binary_config(name)
    assert binary_name == f"train.{name}"
    fv = flags.FlagValues()
    binary.define_flags(cls, fv)
    assert set(fv) == {f.name for f in dataclasses.fields(cls)} | {"workdir"}
    for f in dataclasses.fields(cls):  # and each with the declared default
        default = f.default
        assert fv[f.name].default == (list(default) if isinstance(default, tuple)
                                      else default), f.name


def test_the_vat_binary_defines_exactly_those_flags():
    """The process itself (`--helpfull`): no flag beyond the configuration's."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "train.vat", "--helpfull"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).stdout
    sections, current = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        m = re.match(r"^  (?:-\w+,)?--(?:\[no\])?(\w+)", line)
        if m and current:
            sections.setdefault(current, set()).add(m.group(1))
    # The project's sections (absl and TensorFlow define flags of their own).
    ours = set().union(*(v for k, v in sections.items()
                         if k.split(".")[0] in ("tfcore", "train", "models")))
    from train.vat_lib import VatConfig
    assert ours == {f.name for f in dataclasses.fields(VatConfig)} | {"workdir"}, sections


def test_binary_main_reports_user_errors_as_one_line(capsys):
    def train_fn(config, workdir):
        raise checks.ArgumentError("--rate: something\nspread over two lines")

    fv = flags.FlagValues()
    binary.define_flags(_Config, fv)
    fv(["prog", "--workdir=/tmp/x"])
    with pytest.raises(SystemExit) as e:
        binary.run_main("train.x", _Config, train_fn, None, fv, ["prog"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("train.x: error: --rate: something spread over "
                                       "two lines\n")
    fv = flags.FlagValues()
    binary.define_flags(_Config, fv)
    with pytest.raises(SystemExit) as e:
        binary._parser("train.x", fv)(["prog", "--steps=x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.x: error: ") and "--steps" in err and err.count("\n") == 1


def test_binary_main_shows_the_traceback_of_a_bug():
    def train_fn(config, workdir):
        raise KeyError("a bug")

    fv = flags.FlagValues()
    binary.define_flags(_Config, fv)
    fv(["prog", "--workdir=/tmp/x"])
    with pytest.raises(KeyError, match="a bug"):
        binary.run_main("train.x", _Config, train_fn, None, fv, ["prog"])


def test_optimizer_names_match_tfcore_optimizers():
    from tfcore import optimizers
    from tfcore.training import run
    for name in run.OPTIMIZERS:
        opt = optimizers.get(name, learning_rate=0.5)
        assert abs(float(opt.learning_rate.numpy()) - 0.5) < 1e-7


def test_apply_determinism_seeds_python_numpy_tf():
    import random

    import numpy as np
    import tensorflow as tf
    from tfcore.training import run
    run.apply_determinism(5, deterministic=False)  # op determinism: a subprocess test
    a = (random.random(), np.random.rand(), float(tf.random.uniform([])))
    run.apply_determinism(5, deterministic=False)
    b = (random.random(), np.random.rand(), float(tf.random.uniform([])))
    assert a == b
