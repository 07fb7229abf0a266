"""tfcore.gan_metrics against closed forms (tolerances stated per test)."""
import numpy as np
import pytest

from tfcore import gan_metrics as gm


def _denman_beavers_sqrtm(a, iters=60):
    """Independent reference: the Denman-Beavers iteration for a general square root."""
    y, z = a.copy(), np.eye(len(a))
    for _ in range(iters):
        y, z = (y + np.linalg.inv(z)) / 2.0, (z + np.linalg.inv(y)) / 2.0
    return y


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Frechet distance ------------------------------------------------------------------
def test_frechet_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert gm.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_shifted_set_is_squared_shift():
    # Same samples shifted: covariances identical, so FD = ||shift||^2 exactly
    # (up to rounding, atol 1e-8 relative to the ~14 of the shift).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    shift = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    assert gm.frechet_distance(x, x + shift) == pytest.approx(shift @ shift, abs=1e-8)


def test_frechet_shifted_gaussians_large_n():
    # Independent samples of N(0, I) and N(shift, I): FD -> ||shift||^2 as N grows.
    # The sampling error is dominated by 2 shift . (mean_b - mean_a - shift), of std
    # 2 ||shift|| sqrt(2 / N) (~0.049 here); tolerance 5 such stds.
    rng = np.random.default_rng(2)
    n, shift = 20000, np.array([1.0, 0.0, -1.0, 2.0])
    a = rng.normal(size=(n, 4))
    b = rng.normal(size=(n, 4)) + shift
    tol = 5 * 2 * np.linalg.norm(shift) * np.sqrt(2.0 / n)
    assert gm.frechet_distance(a, b) == pytest.approx(shift @ shift, abs=tol)
    assert gm.frechet_distance(a, b) > gm.frechet_distance(a, b - shift / 2)


def test_frechet_diagonal_closed_form():
    # Diagonal covariances commute: FD = ||dmu||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    got = gm.frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb))
    assert got == pytest.approx(expected, rel=1e-12)
    # 1-D: (mu_a - mu_b)^2 + (sd_a - sd_b)^2.
    assert gm.frechet_distance_from_stats(0.5, 4.0, -0.5, 1.0) == pytest.approx(1.0 + 1.0)


def test_frechet_diagonal_from_samples():
    # Samples from diagonal Gaussians, N = 40000: sample covariances are close to
    # diagonal; compare with the closed form at tolerance 0.03.
    rng = np.random.default_rng(3)
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    mu_b = np.array([0.0, 1.0, 0.0])
    a = rng.normal(size=(40000, 3)) * sd_a
    b = rng.normal(size=(40000, 3)) * sd_b + mu_b
    expected = mu_b @ mu_b + np.sum((sd_a - sd_b) ** 2)
    assert gm.frechet_distance(a, b) == pytest.approx(expected, abs=0.03)


def test_trace_sqrt_product_non_commuting():
    rng = np.random.default_rng(4)
    # 2x2 closed form: Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)) for M = S_a S_b.
    sa, sb = _random_spd(rng, 2), _random_spd(rng, 2)
    m = sa @ sb
    expected2 = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    assert gm.trace_sqrt_product(sa, sb) == pytest.approx(expected2, rel=1e-10)
    # 6x6 against the Denman-Beavers square root of the (non-symmetric) product.
    sa, sb = _random_spd(rng, 6), _random_spd(rng, 6)
    ref = np.trace(_denman_beavers_sqrtm(sa @ sb))
    assert gm.trace_sqrt_product(sa, sb) == pytest.approx(ref, rel=1e-9)


def test_frechet_symmetric_and_positive():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(200, 6)) * 2.0 + 1.0
    fab, fba = gm.frechet_distance(a, b), gm.frechet_distance(b, a)
    assert fab > 0
    assert fab == pytest.approx(fba, rel=1e-10)


def test_frechet_rank_deficient_covariance():
    # S_a singular (features on a line, S_a = s s^T with s = sd(t) [1, 2, -1]): S_a S_b
    # has rank 1 with eigenvalue s^T S_b s, so Tr (S_a S_b)^(1/2) = sqrt(s^T S_b s).
    rng = np.random.default_rng(6)
    t = rng.normal(size=(1000, 1))
    a = np.concatenate([t, 2 * t, -t], axis=1)
    b = rng.normal(size=(1000, 3))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s = np.std(t, ddof=1) * np.array([1.0, 2.0, -1.0])
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(s @ sb @ s)
    assert gm.trace_sqrt_product(sa, sb) == pytest.approx(np.sqrt(s @ sb @ s), rel=1e-7)
    assert gm.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_frechet_bad_shapes():
    with pytest.raises(ValueError, match="same feature dim"):
        gm.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"feats_a must be .*got shape \(4,\)"):
        gm.frechet_distance(np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="sigma_b must have shape"):
        gm.frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# --- classifier score ------------------------------------------------------------------
def test_classifier_score_one_class_is_one():
    probs = np.zeros((50, 10))
    probs[:, 3] = 1.0
    assert gm.classifier_score(probs) == pytest.approx(1.0, abs=1e-12)


def test_classifier_score_uniform_confident_is_num_classes():
    probs = np.eye(10)[np.arange(200) % 10]
    assert gm.classifier_score(probs) == pytest.approx(10.0, rel=1e-12)
    # Uninformative predictions (every row uniform) score 1.
    assert gm.classifier_score(np.full((20, 10), 0.1)) == pytest.approx(1.0, abs=1e-12)


def test_classifier_score_against_hand_computation():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(64, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p.mean(0)
    kl = [sum(p[i, k] * np.log(p[i, k] / py[k]) for k in range(5)) for i in range(64)]
    assert gm.classifier_score(p.astype(np.float32)) == pytest.approx(
        np.exp(np.mean(kl)), rel=1e-6)  # float32 input rounding ~1e-7


def test_classifier_score_splits():
    # First half confident over 10 classes (score 10), second half one class (score 1).
    probs = np.concatenate([np.eye(10)[np.arange(100) % 10], np.eye(10)[np.zeros(100, int)]])
    mean, std = gm.classifier_score_splits(probs, splits=2)
    assert mean == pytest.approx(5.5) and std == pytest.approx(4.5)
    with pytest.raises(ValueError, match=r"splits must be .*got 0"):
        gm.classifier_score_splits(probs, splits=0)


def test_classifier_score_rejects_logits():
    with pytest.raises(ValueError, match="not logits"):
        gm.classifier_score(np.array([[2.0, -1.0], [0.5, 0.5]]))


# --- class coverage --------------------------------------------------------------------
def test_class_coverage_labels_and_probs():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 16 + [3] * 4)  # shares .5 .3 .16 .04
    shares, covered = gm.class_coverage(labels, num_classes=10, threshold=0.05)
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.16, 0.04] + [0.0] * 6)
    assert covered == 3
    assert gm.class_coverage(labels, num_classes=10, threshold=0.04)[1] == 4
    probs = np.eye(10)[labels] * 0.9 + 0.01
    shares_p, covered_p = gm.class_coverage(probs)
    np.testing.assert_allclose(shares_p, shares)
    assert covered_p == 3


def test_class_coverage_errors():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), got range \[0, 12\]"):
        gm.class_coverage(np.array([0, 12]))
    with pytest.raises(ValueError, match="threshold must be in"):
        gm.class_coverage(np.array([0, 1]), threshold=1.5)
    with pytest.raises(ValueError, match="probs have 3 classes but num_classes=10"):
        gm.class_coverage(np.zeros((2, 3)))
