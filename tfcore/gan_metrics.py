"""GAN sample-quality metrics on a classifier's outputs or features (NumPy, float64).

* `classifier_score(probs)`: the Inception-score formula (Salimans et al. 2016) on any
  classifier's softmax outputs p(y|x):  CS = exp( E_x [ KL( p(y|x) || p(y) ) ] ),
  p(y) = E_x p(y|x). It ranges from 1 (every sample gets the same prediction, or
  predictions carry no information) to K (confident predictions spread evenly over
  K classes). `classifier_score_splits` gives the mean and std over splits.
* `frechet_distance(feats_a, feats_b)`: the Frechet distance between Gaussians fitted
  to two feature sets (FID, Heusel et al. 2017):
      FD = ||mu_a - mu_b||^2 + Tr( S_a + S_b - 2 (S_a S_b)^(1/2) ).
  Tr (S_a S_b)^(1/2) is computed without a general matrix square root: with
  R = S_a^(1/2) (symmetric, by eigendecomposition), S_a S_b = R (R S_b R) R^-1 is
  similar to the symmetric PSD matrix R S_b R, so
      Tr (S_a S_b)^(1/2) = sum_i sqrt(lambda_i(R S_b R)),
  eigenvalues from `eigh`, clipped at 0 (also valid for singular S_a by continuity).
* `class_coverage(probs_or_labels)`: the share of samples predicted as each class and
  the number of classes whose share reaches a threshold (mode-collapse check).

Inputs may be NumPy arrays or eager tensors; all arithmetic is float64.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def _probs(probs, atol: float = 1e-3) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty [num_samples, num_classes] array, "
                         f"got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=atol):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1, "
                         f"atol {atol}): got row sums in [{p.sum(axis=1).min():.4g}, "
                         f"{p.sum(axis=1).max():.4g}] and min {p.min():.4g}; pass "
                         "softmax outputs, not logits")
    return p


def _score(p: np.ndarray, eps: float) -> float:
    py = p.mean(axis=0, keepdims=True)
    # p * (log p - log p(y)), with 0 log 0 = 0 (p(y) > 0 wherever p > 0).
    kl_terms = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(py, eps))),
                        0.0)
    return float(np.exp(np.mean(np.sum(kl_terms, axis=1))))


def classifier_score(probs, eps: float = 1e-12) -> float:
    """Classifier (Inception-style) score CS = exp(E_x KL(p(y|x) || p(y))).

    Args:
      probs: [num_samples, num_classes] softmax outputs p(y|x) (rows sum to 1).
      eps: floor inside the logs (default 1e-12); zero probabilities contribute 0.

    Returns:
      The score, a float in [1, num_classes].
    """
    return _score(_probs(probs), eps)


def classifier_score_splits(probs, splits: int = 10, eps: float = 1e-12
                            ) -> Tuple[float, float]:
    """Classifier score on `splits` consecutive equal parts: (mean, std) over the parts.

    Args:
      probs: [num_samples, num_classes] softmax outputs; num_samples >= splits.
      splits: number of parts (positive int, default 10, the Inception-score habit);
        p(y) is estimated within each part; the remainder rows are dropped.
      eps: as in `classifier_score`.

    Returns:
      (mean, std) of the per-part scores (population std, ddof=0).
    """
    p = _probs(probs)
    if isinstance(splits, bool) or not isinstance(splits, int) or not 0 < splits <= len(p):
        raise ValueError(f"splits must be an int in [1, num_samples={len(p)}], "
                         f"got {splits!r}")
    n = len(p) // splits
    scores = [_score(p[i * n:(i + 1) * n], eps) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def _features(feats, name: str) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be a [num_samples >= 2, dim] array, got shape "
                         f"{f.shape}")
    return f


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma_a, sigma_b) -> float:
    """Tr (S_a S_b)^(1/2) for symmetric PSD S_a, S_b: sum sqrt(eig(S_a^1/2 S_b S_a^1/2))."""
    sa = np.asarray(sigma_a, dtype=np.float64)
    sb = np.asarray(sigma_b, dtype=np.float64)
    r = _sqrt_psd(sa)
    m = r @ sb @ r
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """FD = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr (S_a S_b)^(1/2).

    Args:
      mu_a, mu_b: means, shape [dim].
      sigma_a, sigma_b: symmetric PSD covariances, shape [dim, dim].

    Returns:
      The distance, a float >= 0 (tiny negative rounding is clipped to 0).
    """
    mu_a, mu_b = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu_a, mu_b))
    sa, sb = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma_a, sigma_b))
    d = mu_a.shape[0]
    for name, arr, shape in (("mu_a", mu_a, (d,)), ("mu_b", mu_b, (d,)),
                             ("sigma_a", sa, (d, d)), ("sigma_b", sb, (d, d))):
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * trace_sqrt_product(sa, sb)
    return float(max(fd, 0.0))


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID's formula).

    mu = mean over samples, S = unbiased sample covariance (ddof=1, as `np.cov` and the
    FID reference code); then `frechet_distance_from_stats`.

    Args:
      feats_a: [n_a, dim] features (n_a >= 2).
      feats_b: [n_b, dim] features (n_b >= 2), same dim.

    Returns:
      The distance, a float >= 0.
    """
    fa, fb = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same feature dim, got "
                         f"{fa.shape[1]} and {fb.shape[1]}")
    return frechet_distance_from_stats(fa.mean(axis=0), np.cov(fa, rowvar=False),
                                       fb.mean(axis=0), np.cov(fb, rowvar=False))


def class_coverage(probs_or_labels, num_classes: int = 10, threshold: float = 0.05
                   ) -> Tuple[np.ndarray, int]:
    """Share of samples per predicted class and how many classes are covered.

    Args:
      probs_or_labels: [num_samples] int labels in [0, num_classes), or
        [num_samples, num_classes] probabilities / logits (argmax is taken).
      num_classes: number of classes K (positive int, default 10).
      threshold: a class counts as covered when its share >= threshold (in [0, 1],
        default 0.05, half the uniform share for 10 classes).

    Returns:
      (shares [K] float64 summing to 1, number of covered classes).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    x = np.asarray(probs_or_labels)
    if x.ndim == 2:
        if x.shape[1] != num_classes:
            raise ValueError(f"probs have {x.shape[1]} classes but num_classes="
                             f"{num_classes}")
        labels = np.argmax(x, axis=1)
    elif x.ndim == 1:
        if x.size and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {x.dtype}")
        labels = x.astype(np.int64)
    else:
        raise ValueError(f"probs_or_labels must be [n] labels or [n, num_classes] probs, "
                         f"got shape {x.shape}")
    if labels.size == 0:
        raise ValueError("probs_or_labels is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    shares = np.bincount(labels, minlength=num_classes).astype(np.float64) / labels.size
    return shares, int(np.sum(shares >= threshold))
