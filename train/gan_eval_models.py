"""The models `train.gan_eval` measures with: loading them, after checking their kind.

* `load_generator(path)`: a `train.dcgan` workdir, a checkpoint directory or prefix in
  one, or its exported SavedModel (`z` -> `images`); anything else (a train.vat or
  train.autoencoder run, a classifier's SavedModel) is refused with `ModelKindError`
  before anything is loaded.
* `load_classifier(path)`: the VatCNN of a `train.vat` workdir; other runs (a DCGAN,
  an autoencoder) and SavedModels are refused the same way.
* `cached_classifier()`: the plain CNN trained once by `train.vat_lib` and cached.

A run's kind is what it says of itself: config.json's {"binary", "config"} (the run
layer's), else the run state in its newest complete checkpoint, else the
configuration in metrics.json (older runs), whose keys tell the binary apart. The
checkpoints are restored newest first, skipping (with a warning naming the file) a
truncated or corrupt one: `tfcore.training.checkpointing.Checkpointer.restore_latest`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

import tensorflow as tf

from models import dcgan as dcgan_model
from models import vat_cnn
from tfcore import checks
from tfcore.training import checkpointing, metrics_io
from tfcore.training.loop import read_run_state
from tfcore.training.run import CONFIG_FILE
from train import vat_lib

CLASSIFIER_CACHE_NAME = "gan_eval_classifier"
DCGAN, VAT = "train.dcgan", "train.vat"
NUM_CLASSES = 10
log = logging.getLogger("train.gan_eval")


class ModelKindError(checks.ArgumentError):
    """A --generator or --classifier of the wrong kind (the message says what it is and
    what was expected); nothing has been loaded or written."""


# -- what a directory holds ------------------------------------------------------------

def _guess_binary(config: Optional[Dict[str, Any]]) -> Optional[str]:
    """The binary of an older run's configuration (before config.json named it)."""
    if not config:
        return None
    if "d_batch" in config or "latent_dim" in config:
        return DCGAN
    if "xi" in config or "vat" in config:
        return VAT
    if "tied" in config or config.get("model") in ("dense", "conv"):
        return "train.autoencoder"
    return None


def run_kind(root: str) -> Tuple[Optional[str], Dict[str, Any]]:
    """(binary, configuration) of the run directory `root` (see the module docstring);
    (None, {}) when it says nothing."""
    saved = metrics_io.read_json(os.path.join(root, CONFIG_FILE))
    if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
        return saved.get("binary") or _guess_binary(saved["config"]), saved["config"]
    if isinstance(saved, dict) and saved:  # train.dcgan's flat config.json of old
        return _guess_binary(saved), saved
    for path in checkpointing.list_complete(os.path.join(root, "checkpoints"))[:1]:
        try:
            state = read_run_state(path) or {}
        except (tf.errors.OpError, ValueError):
            state = {}
        if state.get("binary"):
            return state["binary"], dict(state.get("config") or {})
    metrics = metrics_io.read_json(os.path.join(root, metrics_io.METRICS_FILE)) or {}
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    return metrics.get("binary") or _guess_binary(config), config


def _run_root(path: str) -> Optional[str]:
    """The run directory of `path`: itself, the parent of its checkpoints/ or best/,
    or the grandparent of a checkpoint prefix; None when none looks like one."""
    p = os.path.abspath(path)
    candidates = [p]
    if os.path.basename(p) in ("checkpoints", "best"):
        candidates.append(os.path.dirname(p))
    if os.path.exists(p + ".index"):
        candidates.append(os.path.dirname(os.path.dirname(p)))
    for c in candidates:
        if any(os.path.exists(os.path.join(c, n)) for n in
               (CONFIG_FILE, "checkpoints", metrics_io.METRICS_FILE)):
            return c
    return None


class _Restorer(checkpointing.Checkpointer):
    """A Checkpointer whose restore loads only its objects (others in the file are
    ignored) and asserts that each of them was found."""

    def restore(self, path: str, expect_partial: bool = False):
        status = self.checkpoint.restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
        return status


def restore(flag: str, path: str, objects: Dict[str, Any], what: str) -> str:
    """Loads `objects` from checkpoint directory `path` (newest complete first, a
    corrupt one skipped with a warning) or from the prefix `path`; returns the prefix.

    Raises:
      FileNotFoundError: no complete checkpoint there.
      ModelKindError: none of them holds `what` (the message is one line).
    """
    restorer = _Restorer(path, dict(objects))
    try:
        if os.path.isdir(path):
            restored = restorer.restore_latest()
            if restored is None:
                raise FileNotFoundError(f"{flag} {path!r}: no complete checkpoint there")
            return restored
        restorer.restore(path)
        return path
    except (AssertionError, RuntimeError, ValueError, IndexError,
            tf.errors.OpError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ModelKindError(f"{flag} {path!r}: no checkpoint there could be loaded as "
                             f"{what} ({type(e).__name__}: {first})") from None


# -- the generator ------------------------------------------------------------------------

def _saved_model_generator(path: str) -> Tuple[Callable, Tuple[int, ...], str]:
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures.get("serving_default")
    inputs = serve.structured_input_signature[1] if serve is not None else {}
    outputs = serve.structured_outputs if serve is not None else {}
    if len(inputs) != 1 or "images" not in outputs:
        found = (f"{', '.join(inputs)} -> {', '.join(outputs)}" if serve is not None
                 else "no serving_default signature")
        raise ModelKindError(f"--generator {path!r}: a SavedModel of {found}, not a "
                             "train.dcgan --export (z -> images)")
    name, z_spec = next(iter(inputs.items()))
    latent = tuple(int(d) for d in z_spec.shape[1:])

    def fn(z):
        return serve(**{name: tf.convert_to_tensor(z)})["images"]
    fn.saved_model = loaded  # keeps the variables alive
    return fn, latent, os.path.abspath(path)


def generator_from_config(config: Dict[str, Any]) -> dcgan_model.Generator:
    """A built Generator for a train.dcgan config dict (its `generator`, `latent_dim`)."""
    g = dcgan_model.Generator(latent_dim=config.get("latent_dim") or None,
                              upsampling=config.get("generator", "upsample"))
    g(tf.zeros([1, *g.latent_shape]))
    return g


def load_generator(path: str, use_best: bool = False
                   ) -> Tuple[Callable, Tuple[int, ...], str]:
    """A generator saved by `train.dcgan`: (fn(z) -> images, latent_shape, its dir).

    Args:
      path: a SavedModel directory (`saved_model.pb`: signature `z` -> `images`), a
        train.dcgan workdir, its checkpoints/ (or best/) directory, or a checkpoint
        prefix inside one. A run with --g_ema samples from its averaged generator.
      use_best: with a workdir, load best/ (the best per-epoch Frechet distance)
        instead of the newest checkpoint.

    Raises:
      ModelKindError: `path` holds something else (another binary's run, a SavedModel
        with another signature, a checkpoint without the generator).
      FileNotFoundError: nothing loadable at `path`.
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return _saved_model_generator(path)
    root = _run_root(path)
    if root is None:
        raise FileNotFoundError(f"--generator {path!r}: neither a SavedModel nor a "
                                f"train.dcgan workdir (no {CONFIG_FILE} or checkpoints/)")
    binary, config = run_kind(root)
    if binary != DCGAN:
        what = f"a {binary} run" if binary else "a run of unknown kind"
        raise ModelKindError(f"--generator {path!r}: {what}, not a train.dcgan one (give "
                             "a train.dcgan workdir, a checkpoint in one, or its "
                             "--export SavedModel)")
    g = generator_from_config(config)
    target = path
    if os.path.abspath(path) == root:
        target = os.path.join(root, "best" if use_best else "checkpoints")
    key = "generator_ema" if config.get("g_ema") else "generator"
    restore("--generator", target, {key: g}, f"the train.dcgan {key}")
    call = tf.function(lambda z: g(z, training=False), autograph=False)
    fn = lambda z: call(z)  # noqa: E731
    fn.module = g
    return fn, tuple(g.latent_shape), root


# -- the classifier -----------------------------------------------------------------------

def load_classifier(path: str) -> vat_cnn.VatCNN:
    """The VatCNN of a `train.vat` workdir or its checkpoints/ directory (the newest
    complete checkpoint there), built as its configuration says (`dropout`, `batch_norm`;
    without a configuration both dropout settings are tried).

    Raises:
      ModelKindError: `path` is a SavedModel or another binary's run, or its
        checkpoints hold no VatCNN.
      FileNotFoundError: no checkpoints/ there.
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ModelKindError(f"--classifier {path!r}: a SavedModel; give a train.vat "
                             "workdir (its checkpoints/ and configuration)")
    root = _run_root(path) or path
    binary, config = run_kind(root)
    if binary not in (None, VAT):
        raise ModelKindError(f"--classifier {path!r}: a {binary} run, not a train.vat one "
                             "(a classifier: the VAT CNN)")
    ckpt_dir = path if os.path.basename(os.path.abspath(path)) == "checkpoints" else \
        os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"--classifier {path!r}: not a train.vat workdir (no "
                                "checkpoints/ directory)")
    choices = [bool(config["dropout"])] if "dropout" in config else [False, True]
    for i, dropout in enumerate(choices):
        model = vat_cnn.VatCNN(num_classes=NUM_CLASSES, dropout=dropout,
                               batch_norm=bool(config.get("batch_norm", False)))
        model(tf.zeros([1, *vat_cnn.IMAGE_SHAPE]))
        try:
            restore("--classifier", ckpt_dir, {"model": model},
                    f"a VatCNN (dropout={dropout})")
            return model
        except ModelKindError:
            if i == len(choices) - 1:
                raise
    raise AssertionError("not reached")


@contextlib.contextmanager
def _file_lock(path: str):
    import fcntl  # POSIX; a second process waits here while the first trains
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_dir() -> str:
    """`$TFCORE_CACHE`, default `~/.cache/tfcore`."""
    return os.path.expanduser(os.environ.get("TFCORE_CACHE") or "~/.cache/tfcore")


def cached_classifier(data_dir: Optional[str] = None, epochs: int = 2,
                      directory: Optional[str] = None, train_limit: int = 0,
                      test_limit: int = 0) -> Tuple[vat_cnn.VatCNN, str]:
    """The plain CNN (no VAT, dropout, Adam 1e-3), trained once and cached.

    Trained with `train.vat_lib.train_and_evaluate` into a temporary directory renamed
    to `directory` (default `$TFCORE_CACHE/gan_eval_classifier`) when done, under a
    file lock, so concurrent runs train it once and never read a half-written one.

    Args:
      data_dir: where mnist.npz is (default search order of `tfcore.data`).
      epochs: training epochs (default 2).
      directory: the cache entry (default: see above).
      train_limit, test_limit: only the first N images (tests; 0: all).

    Returns:
      (model, directory).
    """
    directory = directory or os.path.join(cache_dir(), CLASSIFIER_CACHE_NAME)
    with _file_lock(directory + ".lock"):
        if not os.path.isdir(os.path.join(directory, "checkpoints")):
            log.info("training the evaluation classifier once into %s", directory)
            parent = os.path.dirname(os.path.abspath(directory))
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-", dir=parent)
            try:
                config = vat_lib.VatConfig(vat=False, dropout=True, optimizer="adam",
                                           learning_rate=1e-3, epochs=epochs,
                                           data_dir=data_dir, train_limit=train_limit,
                                           test_limit=test_limit, progress=False,
                                           tensorboard=False)
                metrics = vat_lib.train_and_evaluate(config, tmp)
                log.info("evaluation classifier: test accuracy %.4f",
                         metrics["test_accuracy"])
                if os.path.exists(directory):
                    shutil.rmtree(directory)
                os.rename(tmp, directory)
            finally:
                if os.path.exists(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
    return load_classifier(directory), directory
