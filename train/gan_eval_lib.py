"""Measure a generator's samples with the project's MNIST classifier (`train.gan_eval`).

With the classifier of `train.vat` (the VAT CNN, `models/vat_cnn.py`) as feature
extractor, on `num_samples` samples (10,000 by default) from a fixed z:

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

Inputs, whose kind is checked before any work (`train.gan_eval_models`):
--generator: a `train.dcgan` workdir (its config.json says how to rebuild the network;
the newest complete checkpoint in checkpoints/ is loaded, or in best/ with --use_best,
falling back past a truncated or corrupt one with a warning naming it), a checkpoint
directory or prefix inside one, or a SavedModel exported by `train.dcgan --export`
(signature `z` -> `images`).
--classifier: a `train.vat` workdir (its checkpoints/ and configuration). Without it,
the plain CNN (no VAT, dropout, Adam 1e-3, 2 epochs) is trained once by
`train.vat_lib.train_and_evaluate` and cached in `$TFCORE_CACHE/gan_eval_classifier`
(default `~/.cache/tfcore`), so only the first run pays (a few minutes on a CPU).

Writes `classifier_score`, `frechet_distance`, `classes_covered`, `class_shares`,
`real_classifier_score`, `real_frechet_distance`, `num_samples` into `metrics.json`
of --workdir (default: the generator's directory), merged with what is there.
"""
from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import vat_cnn
from tfcore import checks, gan_metrics
from tfcore import data as tfdata
from tfcore.layer import Layer
from tfcore.training import metrics_io
from tfcore.training.options import Options, option
from tfcore.training.run import apply_determinism, check_writable
from train.gan_eval_models import (CLASSIFIER_CACHE_NAME, ModelKindError, cache_dir,
                                   cached_classifier, load_classifier, load_generator)

__all__ = ["BINARY", "CLASSIFIER_CACHE_NAME", "GanEvalConfig", "ModelKindError",
           "RealReference", "cache_dir", "cached_classifier", "classifier_outputs",
           "evaluate", "evaluate_generator", "format_result", "load_classifier",
           "load_generator", "real_reference", "sample_images", "to_classifier_images"]

BINARY = "train.gan_eval"
NUM_CLASSES = 10
FEATURE_LAYER = "dense"  # VatCNN's Dense(128, relu): the penultimate features
log = logging.getLogger("train.gan_eval")


# -- the classifier's outputs ---------------------------------------------------------

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
        raise checks.ArgumentError(f"classifier has no layer named {FEATURE_LAYER!r} "
                                   f"(layers: {names})")
    fn = _outputs_fn(model, names.index(FEATURE_LAYER) + 1)
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
        raise checks.ArgumentError(f"images must be [N, H, W, 1], got shape {x.shape}")
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
    checks.check_int(num_samples, "num_samples", low=2)
    if reference is None:
        if real_train is None or real_test is None:
            raise checks.ArgumentError("give real_train and real_test, or a reference")
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


# -- the binary's configuration and call -------------------------------------------------

@dataclasses.dataclass
class GanEvalConfig(Options):
    """The options of `train.gan_eval` (each is the flag of the same name); it trains
    nothing, so it has no run options besides the seed and the data."""

    generator: Optional[str] = option(None, "A train.dcgan workdir, a checkpoint "
                                      "directory or prefix in one, or its exported "
                                      "SavedModel (required).")
    classifier: Optional[str] = option(None, "A train.vat workdir (default: the plain CNN "
                                       "trained once and cached under $TFCORE_CACHE).",
                                       is_dir=True)
    num_samples: int = option(10000, "Samples (and real images) measured.", low=2)
    eval_batch_size: int = option(500, "Images per call.", low=1)
    class_threshold: float = option(0.05, "A class is covered when it gets at least this "
                                    "share of the samples.", low=0, high=1)
    use_best: bool = option(False, "Load <workdir>/best (best per-epoch Frechet distance) "
                            "instead of the newest checkpoint.")
    seed: int = option(0, "Seed of the samples' z and of the real images' subsets.")
    deterministic: bool = option(False, "Op determinism (bitwise-reproducible numbers).")
    data_dir: Optional[str] = option(None, "Directory holding mnist.npz; default "
                                     "$TFCORE_DATA_DIR, then ~/.keras/datasets.",
                                     is_dir=True)

    def validate(self) -> "GanEvalConfig":
        if self.generator is None:
            raise checks.ArgumentError("--generator is required (a train.dcgan workdir, "
                                       "checkpoint or exported SavedModel)")
        return self


def evaluate(config: GanEvalConfig, workdir: Optional[str] = None, *,
             mnist=None) -> Dict[str, Any]:
    """Checks every input, then measures the generator; merges the numbers into
    `metrics.json` of `workdir` (None: the generator's directory) and returns them.

    The kinds of --generator and --classifier and the output directory's writability
    are checked before any work, so a wrong input writes nothing.

    Args:
      config: a `GanEvalConfig`.
      workdir: where metrics.json goes (default: the generator's directory).
      mnist: optional ((x_train, y_train), (x_test, y_test)) instead of loading.

    Raises:
      ModelKindError, FileNotFoundError, tfcore.training.run.WorkdirError: a wrong,
        missing or unreadable input, an output directory that cannot be written.
    """
    config.validate()
    fn, latent, gen_dir = load_generator(config.generator, use_best=config.use_best)
    classifier = load_classifier(config.classifier) if config.classifier else None
    out_dir = workdir or gen_dir
    check_writable(out_dir, "--workdir" if workdir else
                   "--workdir (default: the generator's directory)")
    apply_determinism(config.seed, config.deterministic)
    if classifier is None:
        classifier = cached_classifier(config.data_dir)[0]
    (x_train, _), (x_test, _) = (mnist if mnist is not None
                                 else tfdata.load_mnist(config.data_dir))
    result = evaluate_generator(fn, classifier, latent, x_train, x_test,
                                num_samples=config.num_samples, seed=config.seed,
                                batch_size=config.eval_batch_size,
                                threshold=config.class_threshold)
    metrics = metrics_io.read_metrics(out_dir) or {}
    metrics.update(result)
    metrics_io.write_metrics(out_dir, metrics)
    return result


def format_result(r: Dict[str, Any]) -> str:
    """The numbers of `evaluate` as a small text table."""
    shares = " ".join(f"{s:.3f}" for s in r["class_shares"])
    return (f"samples: {r['num_samples']}\n"
            f"classifier score   generated {r['classifier_score']:.3f}   real test "
            f"{r['real_classifier_score']:.3f}\n"
            f"Frechet distance   generated-train {r['frechet_distance']:.3f}   test-train "
            f"{r['real_frechet_distance']:.3f}\n"
            f"classes >= 5%      generated {r['classes_covered']}/10   real test "
            f"{r['real_classes_covered']}/10\n"
            f"class shares       {shares}")
