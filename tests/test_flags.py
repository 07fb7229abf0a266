"""train/flags.py: the common flags, their validation messages, and the helpers."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from absl import flags

from train import flags as common

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _parse(argv):
    fv = flags.FlagValues()
    common.define_flags(fv)
    fv(["prog"] + list(argv))
    return fv


def test_defaults_and_values(tmp_path):
    fv = _parse([])
    assert (fv.workdir, fv.seed, fv.resume, fv.deterministic) == (None, 0, False, False)
    assert (fv.steps, fv.epochs, fv.batch_size) == (None, None, 128)
    assert (fv.jit, fv.strategy, fv.export) == ("auto", "default", False)
    assert (fv.data_dir, fv.optimizer, fv.learning_rate) == (None, None, None)
    fv = _parse([f"--workdir={tmp_path}", "--seed=3", "--resume", "--deterministic",
                 "--steps=50", "--epochs=2", "--batch_size=32", "--jit=off",
                 "--strategy=mirrored", "--export", f"--data_dir={tmp_path}",
                 "--optimizer=Adam", "--learning_rate=0.01"])
    assert common.fit_kwargs(fv) == {"workdir": str(tmp_path), "seed": 3, "resume": True,
                                     "epochs": 2, "steps": 50, "jit": "off"}
    assert fv.strategy == "mirrored" and fv.export and fv.optimizer == "Adam"


@pytest.mark.parametrize("arg,message", [
    ("--batch_size=0", "--batch_size must be a positive integer"),
    ("--batch_size=-8", "--batch_size must be a positive integer"),
    ("--epochs=0", "--epochs must be a positive integer"),
    ("--steps=-1", "--steps must be a positive integer"),
    ("--learning_rate=0", "--learning_rate must be a positive number"),
    ("--optimizer=adamw", "--optimizer must be one of sgd, adam, adadelta, rmsprop"),
    ("--data_dir=/no/such/dir", "--data_dir must be an existing directory"),
    ("--jit=xla", "flag --jit=xla"),
    ("--strategy=tpu", "flag --strategy=tpu"),
    ("--workdir=", "--workdir must not be empty"),
])
def test_bad_values_are_rejected_with_the_flag_name(arg, message):
    with pytest.raises(flags.IllegalFlagValueError) as err:
        _parse([arg])
    assert message in str(err.value)
    assert "--" + arg[2:].split("=")[0] in str(err.value)


def test_a_binary_rejects_bad_flags_before_any_work(tmp_path):
    marker = tmp_path / "worked"
    script = tmp_path / "binary.py"
    script.write_text(textwrap.dedent(f'''
        from absl import app
        from train import flags as common

        def main(argv):
            open({str(marker)!r}, "w").write("ran")

        if __name__ == "__main__":
            app.run(main)
    '''))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    bad = subprocess.run([sys.executable, str(script), "--batch_size=0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and not marker.exists()
    assert "--batch_size must be a positive integer" in bad.stderr
    bad = subprocess.run([sys.executable, str(script), "--data_dir", str(tmp_path / "nope")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and not marker.exists()
    assert "--data_dir must be an existing directory" in bad.stderr
    good = subprocess.run([sys.executable, str(script), "--batch_size=4"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and marker.read_text() == "ran", good.stderr[-2000:]


def test_optimizer_names_match_tfcore_optimizers():
    from tfcore import optimizers
    for name in common.OPTIMIZERS:
        opt = optimizers.get(name, learning_rate=0.5)
        assert abs(float(opt.learning_rate.numpy()) - 0.5) < 1e-7
    fv = _parse(["--optimizer=rmsprop", "--learning_rate=0.25"])
    opt = common.make_optimizer("adam", 1e-3, flag_values=fv)
    assert type(opt).__name__ == "RMSprop" and abs(float(opt.learning_rate.numpy()) - 0.25) < 1e-7
    opt = common.make_optimizer("adam", 1e-3, flag_values=_parse([]))
    assert type(opt).__name__ == "Adam" and abs(float(opt.learning_rate.numpy()) - 1e-3) < 1e-9


def test_apply_determinism_seeds_python_numpy_tf():
    import random
    import tensorflow as tf
    common.apply_determinism(5, deterministic=False)  # op determinism: tested in a subprocess
    a = (random.random(), np.random.rand(), float(tf.random.uniform([])))
    common.apply_determinism(5, deterministic=False)
    b = (random.random(), np.random.rand(), float(tf.random.uniform([])))
    assert a == b


def test_maybe_export(tmp_path):
    import tensorflow as tf
    import tfcore
    model = tfcore.Dense(2)
    model(tf.zeros([1, 3]))
    spec = tf.TensorSpec([None, 3], tf.float32, name="images")
    assert common.maybe_export(model, spec, flag_values=_parse([])) is None
    path = common.maybe_export(model, spec,
                               flag_values=_parse(["--export", f"--workdir={tmp_path}"]))
    assert path == os.path.join(str(tmp_path), "saved_model")
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    with pytest.raises(ValueError, match="--export needs --workdir"):
        common.maybe_export(model, spec, flag_values=_parse(["--export"]))
