"""Virtual Adversarial Training (VAT): the loss and its pure helpers.

Reference: T. Miyato, S. Maeda, M. Koyama, S. Ishii, "Virtual Adversarial Training:
A Regularization Method for Supervised and Semi-Supervised Learning", IEEE TPAMI 2018
(arXiv:1704.03976). Official code: github.com/takerum/vat_tf.

With p(y | x) = softmax(logits_fn(x)), the VAT loss of a batch is

    LDS(x)  = KL( p(. | x) || p(. | x + r_adv) ),     r_adv = eps * d / ||d||_2
    loss    = mean over the batch of LDS(x_i)

where d approximates the dominant eigenvector of the Hessian of
r -> KL(p(. | x) || p(. | x + r)) at r = 0, found by K power iterations
(finite differences, step `xi`):

    d_0     ~ N(0, I)
    d_{k+1} = grad_r KL( p(. | x) || p(. | x + r) ) at r = xi * d_k / ||d_k||_2

Only the perturbed forward pass p(. | x + r_adv) carries gradients: p(. | x) and
r_adv are held fixed (stop_gradient), as in the paper and the official code.

Pure functions, no state: `virtual_adversarial_loss`, `l2_normalize_per_example`,
`kl_from_logits`, `entropy_loss` (for VAT + entropy minimisation) and
`stateless_standard_normal` (the seeded draw of d, identical under XLA).
"""
from __future__ import annotations

import numbers
from typing import Callable, Tuple, Union

import tensorflow as tf

from tfcore.losses import entropy_from_logits, kl_divergence_from_logits


def _float_logits(logits, what: str) -> tf.Tensor:
    """Logits as a float tensor of rank >= 1; half precision is promoted to float32."""
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise ValueError(f"{what} must be a floating tensor, got dtype {logits.dtype.name!r}")
    if logits.shape.rank is not None and logits.shape.rank < 1:
        raise ValueError(f"{what} must have a class axis (rank >= 1), got shape {logits.shape}")
    if logits.dtype in (tf.float16, tf.bfloat16):
        logits = tf.cast(logits, tf.float32)
    return logits


def kl_from_logits(p_logits, q_logits, reduction: str = "mean") -> tf.Tensor:
    """KL(p || q) between two categorical distributions given by logits.

        KL(p || q) = sum_c p_c * (log p_c - log q_c),
        p = softmax(p_logits), log p = log_softmax(p_logits) (likewise q),

    summed over the last (class) axis; computed from log_softmax, never from clipped
    probabilities, so it stays exact and finite for saturated logits. This is
    `tfcore.losses.kl_divergence_from_logits` with float16/bfloat16 logits promoted
    to float32 first (VAT's KL values are small differences of nearly equal logs).

    Args:
      p_logits: [batch, classes] logits of the reference distribution p (any axes
        between batch and class are averaged per example, as in tfcore.losses).
      q_logits: logits of q, same shape as `p_logits`.
      reduction: 'mean' (default, the batch mean), 'sum' or 'none' (shape [batch]).

    Returns:
      The KL divergence, a scalar or [batch] per `reduction`.
    """
    p_logits = _float_logits(p_logits, "p_logits")
    q_logits = tf.cast(_float_logits(q_logits, "q_logits"), p_logits.dtype)
    return kl_divergence_from_logits(p_logits, q_logits, reduction=reduction)


def entropy_loss(logits, reduction: str = "mean") -> tf.Tensor:
    """Entropy of softmax(logits): H(p) = -sum_c p_c log p_c (log from log_softmax).

    Added to the VAT loss for "VAT + EntMin" (Miyato et al. 2018, Sec. 4.1.3);
    minimising it pushes the model towards confident predictions on unlabeled data.
    This is `tfcore.losses.entropy_from_logits` with half precision promoted to float32.

    Args:
      logits: [batch, classes] logits.
      reduction: 'mean' (default, the batch mean), 'sum' or 'none' (shape [batch]).

    Returns:
      The entropy, a scalar or [batch] per `reduction` (gradients flow to `logits`).
    """
    return entropy_from_logits(_float_logits(logits, "logits"), reduction=reduction)


def l2_normalize_per_example(d) -> tf.Tensor:
    """Scales each example d[i] to unit L2 norm over all its non-batch axes.

    Two steps, safe over the whole float range: d[i] is first divided by its largest
    absolute entry (so the largest becomes exactly 1 and the squared sum can neither
    underflow nor overflow, e.g. for d ~ 1e-30 or 1e30 in float32), then by its L2
    norm (which is then in [1, sqrt(n)]). An all-zero example stays all zero (no NaN).
    This replaces the official code's `get_normalized_vector`, whose `1e-12` and `1e-6`
    guards leave tiny vectors far from unit norm (1e-30 -> norm 1e-15).

    Args:
      d: [batch, ...] floating tensor of any rank >= 1 (rank 1: each example is a
        scalar, mapped to its sign).

    Returns:
      A tensor of d's shape and dtype; each example has L2 norm 1 (or is zero).
    """
    d = tf.convert_to_tensor(d)
    if not d.dtype.is_floating:
        raise ValueError(f"d must be a floating tensor, got dtype {d.dtype.name!r}")
    rank = d.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"d must have a known rank >= 1 ([batch, ...]), got shape {d.shape}")
    axes = list(range(1, rank))
    max_abs = tf.reduce_max(tf.abs(d), axis=axes, keepdims=True)
    d = d / tf.where(max_abs > 0, max_abs, tf.ones_like(max_abs))
    norm = tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes, keepdims=True))
    return d / tf.where(norm > 0, norm, tf.ones_like(norm))


def stateless_standard_normal(shape, seed, dtype=tf.float32) -> tf.Tensor:
    """N(0, 1) samples from a stateless seed, the same eagerly, in graphs and under XLA.

    `tf.random.stateless_normal` (and `stateless_uniform` for floats) give *different*
    numbers under XLA than TensorFlow's own kernels for the same seed and alg='philox'
    (checked with TF 2.21 on CPU), so a VAT step would start from another d once
    compiled with `jit_compile=True`. The raw Philox bits (`stateless_uniform` with
    dtype=uint32, minval=maxval=None) do agree, so this draws 2 * prod(shape) of them
    and applies Box-Muller:

        u1, u2 = ((bits[0] >> 8) + 0.5) / 2**24, ((bits[1] >> 8) + 0.5) / 2**24  in (0, 1)
        z      = sqrt(-2 log u1) * cos(2 pi u2)

    (24-bit uniforms, so |z| <= 5.9; eager and XLA agree up to the rounding of log/cos.)

    Args:
      shape: 1-D int tensor or list, the output shape.
      seed: int32/int64 tensor of shape [2].
      dtype: floating output dtype (half types are computed in float32 and cast).

    Returns:
      A tensor of `shape` and `dtype` of independent standard normal samples.
    """
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(f"dtype must be floating, got {dtype.name!r}")
    shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
    bits = tf.random.stateless_uniform(tf.concat([[2], shape], 0), seed=seed, minval=None,
                                       maxval=None, dtype=tf.uint32, alg="philox")
    compute = tf.float64 if dtype == tf.float64 else tf.float32
    u = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), compute) + 0.5) \
        * (2.0 ** -24)
    z = tf.sqrt(-2.0 * tf.math.log(u[0])) * tf.cos((2.0 * 3.141592653589793) * u[1])
    return tf.cast(z, dtype)


def _check_scalar(value, what: str, allow_zero: bool):
    """Python numbers are validated; tensors/variables (e.g. a schedule) pass through."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        ok = value >= 0 if allow_zero else value > 0
        if not ok or value != value or value == float("inf"):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{what} must be finite and {bound}, got {value!r}")
    return value


def _check_seed(seed):
    if seed is None:
        return None
    seed_t = tf.convert_to_tensor(seed)
    if seed_t.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an int32/int64 tensor of shape [2], got dtype "
                         f"{seed_t.dtype.name!r} ({seed!r})")
    if seed_t.shape.rank is not None and seed_t.shape.as_list() not in ([2], [None]):
        raise ValueError(f"seed must have shape [2], got shape {seed_t.shape} ({seed!r})")
    return seed_t


def virtual_adversarial_loss(
        logits_fn: Callable[[tf.Tensor], tf.Tensor],
        x,
        logits=None,
        *,
        xi: float = 10.0,
        eps: float = 1.0,
        power_iterations: int = 1,
        seed=None,
        return_direction: bool = False,
) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
    """The VAT loss: mean_i KL(p(. | x_i) || p(. | x_i + eps * d_i)).

    Algorithm (Miyato et al. 2018, Alg. 1, and the official `virtual_adversarial_loss`):

        p_logits = stop_gradient(logits if given else logits_fn(x))
        d ~ N(0, I), shape of x        (stateless_standard_normal(seed): Philox bits +
                                        Box-Muller, when `seed` is given, else
                                        tf.random.normal)
        repeat power_iterations times:
            r = xi * l2_normalize_per_example(d)
            d = stop_gradient(grad_r sum_i KL(p_logits_i || logits_fn(x + r)_i))
        d = l2_normalize_per_example(d)            (held fixed: stop_gradient)
        loss = mean_i KL(p_logits_i || logits_fn(x + eps * d)_i)

    The gradient is taken with an explicit `tf.GradientTape` that watches the
    perturbation r = xi * normalize(d) (only r, not the model's variables), as the
    official code's `tf.gradients(dist, [d])` does after `d = xi * normalize(d)`.
    Differentiating w.r.t. the raw d instead would project out d's own direction and
    stop the power iteration from converging. The KL is summed over the batch for
    this gradient, so each example's direction does not shrink with the batch size
    (the per-example normalisation makes the scale irrelevant otherwise).

    Gradients of the returned loss reach the model's variables (and `x`) only through
    the final perturbed pass logits_fn(x + eps * d); the clean logits and d are
    constants. A model whose output does not depend on x gets d = 0 and a loss of 0.

    BatchNorm and dropout: this function only calls `logits_fn`; the caller decides.
    Recommended: close over `training=True` with BatchNorm's `update_stats=False` (the
    official code's `update_batch_stats=False`) so the extra passes do not move the
    moving averages, and give dropout the same stateless seed in the clean and the
    perturbed passes so the KL measures the perturbation, not a new dropout mask.
    `logits_fn` is called power_iterations + 1 times (+1 when `logits` is None).

    Defaults: xi=10, eps=1, one power iteration (the issue's write-up). The official
    code's settings, as quoted in the issue: xi=1e-6 (a true finite difference; in
    float32 it needs inputs of order 1), eps=2.1 for MNIST with all labels and eps=0.3
    for MNIST with 100 labels.

    Works eagerly, under `tf.function` and `tf.function(jit_compile=True)`; the batch
    size may be unknown (a `TensorSpec` with None). `power_iterations` is a Python int
    (the loop is unrolled).

    Args:
      logits_fn: callable x_perturbed -> logits [batch, ..., classes] (softmax over
        the last axis). Must be differentiable in its input.
      x: [batch, ...] floating input of any rank (e.g. [batch, features] or NHWC images).
      logits: optional clean logits logits_fn(x), to save a forward pass; they are
        treated as constants (stop_gradient).
      xi: finite-difference step of the power iteration, > 0 (Python number or a scalar
        tensor).
      eps: norm of the adversarial perturbation r_adv, >= 0 (number or scalar tensor).
      power_iterations: K >= 0; 0 gives a random direction (the paper's "RPT" baseline).
      seed: optional stateless seed, int32/int64 of shape [2]; same seed, same d, also
        across eager, `tf.function` and XLA (see `stateless_standard_normal`).
      return_direction: also return the unit direction d (shape of x, stop_gradient'ed,
        each example of L2 norm 1, or 0 where the model ignores x).

    Returns:
      The scalar loss (float32 for half-precision logits, else the logits' dtype), or
      `(loss, direction)` when `return_direction`.

    Raises:
      ValueError: bad xi, eps, power_iterations, seed, or an input of unknown rank.
    """
    if not callable(logits_fn):
        raise ValueError(f"logits_fn must be callable, got {logits_fn!r}")
    _check_scalar(xi, "xi", allow_zero=False)
    _check_scalar(eps, "eps", allow_zero=True)
    if (isinstance(power_iterations, bool) or not isinstance(power_iterations, int)
            or power_iterations < 0):
        raise ValueError(f"power_iterations must be an integer >= 0, got {power_iterations!r}")
    seed = _check_seed(seed)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"x must be a floating tensor, got dtype {x.dtype.name!r}")
    if x.shape.rank is None or x.shape.rank < 1:
        raise ValueError(f"x must have a known rank >= 1 ([batch, ...]), got shape {x.shape}")

    if logits is None:
        logits = logits_fn(x)
    p_logits = tf.stop_gradient(_float_logits(logits, "logits"))

    if seed is None:
        d = tf.random.normal(tf.shape(x), dtype=x.dtype)
    else:
        d = stateless_standard_normal(tf.shape(x), seed, dtype=x.dtype)
    xi_t = tf.cast(xi, x.dtype)
    for _ in range(power_iterations):
        r = xi_t * l2_normalize_per_example(d)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(r)
            dist = kl_from_logits(p_logits, logits_fn(x + r), reduction="sum")
        d = tape.gradient(dist, r, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        d = tf.stop_gradient(d)
    direction = tf.stop_gradient(l2_normalize_per_example(d))
    r_adv = tf.cast(eps, x.dtype) * direction
    loss = kl_from_logits(p_logits, logits_fn(x + r_adv), reduction="mean")
    if return_direction:
        return loss, direction
    return loss
