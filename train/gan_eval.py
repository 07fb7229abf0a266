"""Measure a generator's samples with the project's MNIST classifier.

    python -m train.gan_eval --generator=runs/dcgan [--classifier=runs/plain] \\
        [--num_samples=10000] [--workdir=DIR]

With the classifier of `train.vat` (the VAT CNN, `models/vat_cnn.py`) as feature
extractor, on `--num_samples` samples (10,000 by default) from a fixed z:

* classifier score  CS = exp(E_x KL(p(y|x) || p(y)))  (`tfcore.gan_metrics`, the
  Inception-score formula): 1 for one class, 10 for confident, evenly spread digits;
* Frechet distance between Gaussians fitted to the classifier's penultimate features
  (the Dense(128) relu activations) of the samples and of as many real TRAINING images;
* class coverage: the share of samples per predicted class, and how many classes get
  at least 5% of them.

For scale, the same numbers for REAL images are computed beside them: the score of
the real test images and the Frechet distance between test and training features, on
the same number of images (both estimates depend on the sample size).

The classifier sees 28x28 images in [0, 1]: generator outputs (32x32 in [-1, 1], MNIST
padded by 2 pixels per side) are cropped back to the centre 28x28 and mapped by
(x + 1) / 2 (`to_classifier_images`; other sizes are resized).

--generator: a `train.dcgan` workdir (its config.json says how to rebuild the network;
the newest checkpoint in checkpoints/ is loaded, or in best/ with --use_best), a
checkpoint directory or prefix inside one, or a SavedModel exported by `train.dcgan
--export` (signature `z` -> `images`).
--classifier: a `train.vat` workdir (its checkpoints/ and metrics.json's config).
Without it, the plain CNN (no VAT, dropout, Adam 1e-3, 2 epochs) is trained once and
cached in `$TFCORE_CACHE/gan_eval_classifier` (default `~/.cache/tfcore`), so only
the first run pays (a few minutes on a CPU).

Writes `classifier_score`, `frechet_distance`, `classes_covered`, `class_shares`,
`real_classifier_score`, `real_frechet_distance`, `num_samples` into `metrics.json`
of --workdir (default: the generator's directory), merged with what is there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags

from models import dcgan as dcgan_model
from models import vat_cnn
from tfcore import gan_metrics
from tfcore.training import checkpointing, metrics_io
from tfcore import data as tfdata
from tfcore.layer import Layer
from train import flags as common

FLAGS = common.FLAGS
log = logging.getLogger("train.gan_eval")

CLASSIFIER_CACHE_NAME = "gan_eval_classifier"
CONFIG_FILE = "config.json"
NUM_CLASSES = 10
FEATURE_LAYER = "dense"  # VatCNN's Dense(128, relu): the penultimate features


# -- the classifier -------------------------------------------------------------------

def cache_dir() -> str:
    """`$TFCORE_CACHE`, default `~/.cache/tfcore`."""
    return os.path.expanduser(os.environ.get("TFCORE_CACHE") or "~/.cache/tfcore")


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def load_classifier(path: str) -> vat_cnn.VatCNN:
    """The VatCNN of a `train.vat` workdir (newest checkpoint in `path/checkpoints`).

    The architecture (`dropout` on or off, which shifts the layers' checkpoint keys) is
    read from `path/metrics.json`'s config; without one both are tried.

    Raises:
      FileNotFoundError: no checkpoint there.
      ValueError: the checkpoint does not hold a VatCNN.
    """
    ckpt_dir = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"--classifier={path!r} is not a train.vat workdir "
                                f"(no checkpoints/ directory)")
    config = (_read_json(os.path.join(path, metrics_io.METRICS_FILE)) or {}).get("config")
    choices = [bool(config["dropout"])] if config and "dropout" in config else [False, True]
    errors = []
    for dropout in choices:
        model = vat_cnn.VatCNN(num_classes=NUM_CLASSES, dropout=dropout)
        model(tf.zeros([1, *vat_cnn.IMAGE_SHAPE]))
        try:
            checkpointing.restore_objects(ckpt_dir, {"model": model})
            return model
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            errors.append(f"dropout={dropout}: {type(e).__name__}: {e}")
    raise ValueError(f"--classifier={path!r}: the checkpoint is not a VatCNN "
                     f"({'; '.join(errors)})")


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


def cached_classifier(data_dir: Optional[str] = None, epochs: int = 2,
                      directory: Optional[str] = None, train_limit: int = 0,
                      test_limit: int = 0) -> Tuple[vat_cnn.VatCNN, str]:
    """The plain CNN (no VAT, dropout, Adam 1e-3), trained once and cached.

    Trained with `train.vat.train_and_evaluate` into a temporary directory renamed to
    `directory` (default `$TFCORE_CACHE/gan_eval_classifier`) when done, under a file
    lock, so concurrent runs train it once and never read a half-written one.

    Args:
      data_dir: where mnist.npz is (default search order of `tfcore.data`).
      epochs: training epochs (default 2).
      directory: the cache entry (default: see above).
      train_limit, test_limit: only the first N images (tests; 0: all).

    Returns:
      (model, directory).
    """
    from train import vat  # pylint: disable=import-outside-toplevel
    directory = directory or os.path.join(cache_dir(), CLASSIFIER_CACHE_NAME)
    with _file_lock(directory + ".lock"):
        if not os.path.isdir(os.path.join(directory, "checkpoints")):
            log.info("training the evaluation classifier once into %s", directory)
            parent = os.path.dirname(os.path.abspath(directory))
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-", dir=parent)
            try:
                config = vat.VatConfig(vat=False, dropout=True, optimizer="adam",
                                       learning_rate=1e-3, epochs=epochs,
                                       data_dir=data_dir, train_limit=train_limit,
                                       test_limit=test_limit, progress=False)
                metrics = vat.train_and_evaluate(config, tmp)
                log.info("evaluation classifier: test accuracy %.4f",
                         metrics["test_accuracy"])
                if os.path.exists(directory):
                    shutil.rmtree(directory)
                os.rename(tmp, directory)
            finally:
                if os.path.exists(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
    return load_classifier(directory), directory


def classifier_outputs(model: vat_cnn.VatCNN, images, batch_size: int = 500
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, 10], penultimate features [N, 128]) in inference mode.

    Args:
      model: a built VatCNN.
      images: [N, 28, 28, 1] float in [0, 1].
      batch_size: images per call.
    """
    names = [getattr(layer, "name", None) for layer in model.layers]
    if FEATURE_LAYER not in names:
        raise ValueError(f"classifier has no layer named {FEATURE_LAYER!r} (layers: "
                         f"{names})")
    cut = names.index(FEATURE_LAYER) + 1
    fn = _outputs_fn(model, cut)
    probs, feats = [], []
    x = np.asarray(images, np.float32)
    for i in range(0, len(x), batch_size):
        p, f = fn(tf.constant(x[i:i + batch_size]))
        probs.append(p.numpy())
        feats.append(f.numpy())
    return np.concatenate(probs).astype(np.float64), np.concatenate(feats).astype(np.float64)


_OUTPUT_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _apply(layer, h):
    return layer(h, training=False) if isinstance(layer, Layer) else layer(h)


def _outputs_fn(model, cut: int):
    """A compiled x -> (softmax(logits), features after layer cut-1), per model."""
    fns = _OUTPUT_FNS.setdefault(model, {})
    if cut not in fns:
        def outputs(x):
            h = x
            for layer in model.layers[:cut]:
                h = _apply(layer, h)
            features = h
            for layer in model.layers[cut:]:
                h = _apply(layer, h)
            return tf.nn.softmax(h, axis=-1), features
        fns[cut] = tf.function(outputs, autograph=False, input_signature=[
            tf.TensorSpec([None, *vat_cnn.IMAGE_SHAPE], tf.float32)])
    return fns[cut]


def to_classifier_images(images) -> np.ndarray:
    """Generator outputs [N, H, W, 1] in [-1, 1] -> [N, 28, 28, 1] in [0, 1].

    32x32 (MNIST padded by 2 per side, `mnist_images(pad_to=32)`): the centre 28x28
    crop; 28x28: as is; other sizes: bilinear resize. Then (x + 1) / 2, clipped.
    """
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"images must be [N, H, W, 1], got shape {x.shape}")
    h, w = x.shape[1:3]
    if (h, w) == (32, 32):
        x = x[:, 2:30, 2:30]
    elif (h, w) != (28, 28):
        x = tf.image.resize(x, [28, 28], method="bilinear").numpy()
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


def _unit_images(x) -> np.ndarray:
    """Real MNIST as [N, 28, 28, 1] floats in [0, 1] (uint8 [N, 28, 28] accepted)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return tfdata.mnist_images(x)
    x = x.astype(np.float32)
    return x[..., None] if x.ndim == 3 else x


# -- the measurement ------------------------------------------------------------------

@dataclasses.dataclass
class RealReference:
    """Classifier statistics of real images, computed once per sample size.

    Attributes:
      train_features: [n, 128] features of n real training images (the FD reference).
      real_classifier_score: CS of n real test images.
      real_frechet_distance: FD(test features, train features), n each.
      real_classes_covered: classes with >= threshold of the test predictions.
      num_samples: n.
    """
    train_features: np.ndarray
    real_classifier_score: float
    real_frechet_distance: float
    real_classes_covered: int
    num_samples: int


def real_reference(classifier, real_train, real_test, num_samples: int, seed: int = 0,
                   batch_size: int = 500, threshold: float = 0.05) -> RealReference:
    """Features and scores of `num_samples` real images (capped at the set sizes).

    Args:
      classifier: a built VatCNN.
      real_train, real_test: MNIST [N, 28, 28] uint8 or [N, 28, 28, 1] in [0, 1].
      num_samples: n; a seeded random subset of each set is used (all when smaller).
      seed: subset seed.
      batch_size: classifier batch.
      threshold: class-coverage threshold.
    """
    rng = np.random.default_rng(seed)
    tr, te = _unit_images(real_train), _unit_images(real_test)
    n_tr, n_te = min(num_samples, len(tr)), min(num_samples, len(te))
    tr = tr[np.sort(rng.permutation(len(tr))[:n_tr])]
    te = te[np.sort(rng.permutation(len(te))[:n_te])]
    _, f_tr = classifier_outputs(classifier, tr, batch_size)
    p_te, f_te = classifier_outputs(classifier, te, batch_size)
    return RealReference(
        train_features=f_tr,
        real_classifier_score=gan_metrics.classifier_score(p_te),
        real_frechet_distance=gan_metrics.frechet_distance(f_te, f_tr),
        real_classes_covered=gan_metrics.class_coverage(p_te, NUM_CLASSES, threshold)[1],
        num_samples=n_tr)


def sample_images(generator: Callable, latent_shape: Sequence[int], num_samples: int,
                  seed: int = 0, batch_size: int = 500) -> np.ndarray:
    """`num_samples` generator outputs from z ~ U(-1, 1) drawn with NumPy `seed`.

    Args:
      generator: `generator(z) -> images` (e.g. `lambda z: G(z, training=False)`).
      latent_shape: z's shape without the batch axis.
      num_samples, seed, batch_size: how many, the z seed, images per call.

    Returns:
      float32 [num_samples, H, W, C].
    """
    z = np.random.default_rng(seed).uniform(
        -1.0, 1.0, size=(num_samples, *latent_shape)).astype(np.float32)
    out = [np.asarray(generator(tf.constant(z[i:i + batch_size])))
           for i in range(0, num_samples, batch_size)]
    return np.concatenate(out)


def evaluate_generator(generator: Callable, classifier, latent_shape: Sequence[int],
                       real_train=None, real_test=None, num_samples: int = 10000,
                       seed: int = 0, batch_size: int = 500, threshold: float = 0.05,
                       reference: Optional[RealReference] = None) -> Dict[str, Any]:
    """Classifier score, Frechet distance and class coverage of a generator's samples.

    Args:
      generator: `generator(z) -> images [B, 32, 32, 1] in [-1, 1]` (inference mode).
      classifier: a built VatCNN (28x28 inputs in [0, 1]).
      latent_shape: z's shape without the batch axis.
      real_train, real_test: MNIST training / test images (uint8 [N, 28, 28] or floats
        [N, 28, 28, 1] in [0, 1]); not needed when `reference` is given.
      num_samples: samples (>= 2; default 10,000).
      seed: the z seed (and the real subsets').
      batch_size: images per generator / classifier call.
      threshold: a class is covered when it gets >= this share (default 0.05).
      reference: a precomputed `real_reference` (saves recomputing it each epoch).

    Returns:
      {'classifier_score', 'frechet_distance', 'classes_covered', 'class_shares' (list
      of 10), 'real_classifier_score', 'real_frechet_distance', 'real_classes_covered',
      'num_samples'}.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    if reference is None:
        if real_train is None or real_test is None:
            raise ValueError("give real_train and real_test, or a reference")
        reference = real_reference(classifier, real_train, real_test, num_samples, seed,
                                   batch_size, threshold)
    images = sample_images(generator, latent_shape, num_samples, seed, batch_size)
    probs, feats = classifier_outputs(classifier, to_classifier_images(images), batch_size)
    shares, covered = gan_metrics.class_coverage(probs, NUM_CLASSES, threshold)
    return {
        "classifier_score": gan_metrics.classifier_score(probs),
        "frechet_distance": gan_metrics.frechet_distance(feats, reference.train_features),
        "classes_covered": covered,
        "class_shares": [float(s) for s in shares],
        "real_classifier_score": reference.real_classifier_score,
        "real_frechet_distance": reference.real_frechet_distance,
        "real_classes_covered": reference.real_classes_covered,
        "num_samples": num_samples,
    }


# -- loading a generator ----------------------------------------------------------------

def _find_workdir(path: str) -> Optional[str]:
    """The train.dcgan workdir holding `path` (it, its parent or grandparent)."""
    p = os.path.abspath(path)
    for _ in range(3):
        if os.path.exists(os.path.join(p, CONFIG_FILE)):
            return p
        p = os.path.dirname(p)
    return None


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
        prefix inside one.
      use_best: with a workdir, load best/ (the best per-epoch Frechet distance)
        instead of the newest checkpoint.

    Raises:
      FileNotFoundError: nothing loadable at `path` (the message names --generator).
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        spec = serve.structured_input_signature[1]
        name, z_spec = next(iter(spec.items()))
        latent = tuple(int(d) for d in z_spec.shape[1:])

        def fn(z):
            return serve(**{name: tf.convert_to_tensor(z)})["images"]
        fn.saved_model = loaded  # keep the variables alive
        return fn, latent, os.path.abspath(path)
    workdir = _find_workdir(path)
    if workdir is None:
        raise FileNotFoundError(f"--generator={path!r}: neither a SavedModel nor inside a "
                                f"train.dcgan workdir (no {CONFIG_FILE} found)")
    config = _read_json(os.path.join(workdir, CONFIG_FILE))
    g = generator_from_config(config)
    target = path
    if os.path.abspath(path) == workdir:
        target = os.path.join(workdir, "best" if use_best else "checkpoints")
    # A run with --g_ema samples from its averaged generator (as its pictures did).
    key = "generator_ema" if config.get("g_ema") else "generator"
    try:
        checkpointing.restore_objects(target, {key: g})
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--generator={path!r}: {e}") from e
    call = tf.function(lambda z: g(z, training=False), autograph=False)
    fn = lambda z: call(z)  # noqa: E731
    fn.module = g
    return fn, tuple(g.latent_shape), workdir


# -- the binary -----------------------------------------------------------------------

def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The common flags and this binary's; `__main__` calls it."""
    common.define_flags(flag_values)
    if "classifier" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("generator", None, "A train.dcgan workdir, checkpoint or "
                        "exported SavedModel.", **fv)
    flags.DEFINE_string("classifier", None, "A train.vat workdir (default: the plain CNN "
                        "trained once and cached under $TFCORE_CACHE).", **fv)
    flags.DEFINE_integer("num_samples", 10000, "Samples (and real images) measured.", **fv)
    flags.DEFINE_integer("eval_batch_size", 500, "Images per call.", **fv)
    flags.DEFINE_float("class_threshold", 0.05, "A class is covered when it gets at "
                       "least this share of the samples.", **fv)
    flags.DEFINE_boolean("use_best", False, "Load <workdir>/best (best per-epoch Frechet "
                         "distance) instead of the newest checkpoint.", **fv)
    flags.mark_flag_as_required("generator", flag_values=flag_values)
    flags.register_validator("num_samples", lambda v: v is not None and v >= 2,
                             message="--num_samples must be an integer >= 2", **fv)
    flags.register_validator("eval_batch_size", lambda v: v is not None and v > 0,
                             message="--eval_batch_size must be positive", **fv)
    flags.register_validator("class_threshold", lambda v: v is not None and 0 <= v <= 1,
                             message="--class_threshold must be in [0, 1]", **fv)
    flags.register_validator("classifier", lambda v: v is None or os.path.isdir(v),
                             message="--classifier must be an existing directory", **fv)
    flags.register_validator("generator", lambda v: v is None or os.path.exists(v) or
                             os.path.exists(v + ".index"),
                             message="--generator must be an existing path", **fv)


def run(generator_path: str, classifier_path: Optional[str] = None,
        num_samples: int = 10000, data_dir: Optional[str] = None, seed: int = 0,
        batch_size: int = 500, threshold: float = 0.05, workdir: Optional[str] = None,
        use_best: bool = False, mnist=None) -> Dict[str, Any]:
    """Loads, measures, writes metrics.json (merged) and returns the numbers.

    `mnist`: optional ((x_train, y_train), (x_test, y_test)) instead of loading.
    """
    fn, latent, gen_dir = load_generator(generator_path, use_best=use_best)
    classifier = (load_classifier(classifier_path) if classifier_path
                  else cached_classifier(data_dir)[0])
    (x_train, _), (x_test, _) = mnist if mnist is not None else tfdata.load_mnist(data_dir)
    result = evaluate_generator(fn, classifier, latent, x_train, x_test,
                                num_samples=num_samples, seed=seed, batch_size=batch_size,
                                threshold=threshold)
    out_dir = workdir or gen_dir
    metrics = metrics_io.read_metrics(out_dir) or {}
    metrics.update(result)
    metrics_io.write_metrics(out_dir, metrics)
    return result


def format_result(r: Dict[str, Any]) -> str:
    shares = " ".join(f"{s:.3f}" for s in r["class_shares"])
    return (f"samples: {r['num_samples']}\n"
            f"classifier score   generated {r['classifier_score']:.3f}   real test "
            f"{r['real_classifier_score']:.3f}\n"
            f"Frechet distance   generated-train {r['frechet_distance']:.3f}   test-train "
            f"{r['real_frechet_distance']:.3f}\n"
            f"classes >= 5%      generated {r['classes_covered']}/10   real test "
            f"{r['real_classes_covered']}/10\n"
            f"class shares       {shares}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.apply_determinism(FLAGS.seed, FLAGS.deterministic)
    result = run(FLAGS.generator, FLAGS.classifier, FLAGS.num_samples, FLAGS.data_dir,
                 FLAGS.seed, FLAGS.eval_batch_size, FLAGS.class_threshold, FLAGS.workdir,
                 FLAGS.use_best)
    print(format_result(result), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    define_flags(FLAGS)
    app.run(main)
