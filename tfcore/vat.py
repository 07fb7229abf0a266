"""Virtual Adversarial Training (VAT): the loss and its pure helpers.

Reference: T. Miyato, S. Maeda, M. Koyama, S. Ishii, "Virtual Adversarial Training:
A Regularization Method for Supervised and Semi-Supervised Learning", IEEE TPAMI 2018
(arXiv:1704.03976). Official code: github.com/takerum/vat_tf.

With p(y | x) = softmax(logits_fn(x)), the VAT loss of a batch is

    LDS(x)  = KL( p(. | x) || p(. | x + r_adv) ),     r_adv = eps * d / ||d||_2
    loss    = mean over the batch of LDS(x_i)

where d approximates the dominant eigenvector of the Hessian H of
D(r) = sum_i KL(p(. | x_i) || p(. | x_i + r_i)) at r = 0, found by K power
iterations d_{k+1} = H d_k / ||d_k|| from d_0 ~ N(0, I). Each product H d_k is taken
at r = xi * d_k / ||d_k||_2 (`kl_hessian_vector_product`), in one of three ways (`hvp`):

* 'finite_difference' (the paper's and the official code's): since grad D(0) = 0,
      H d  ~  grad_r D(r) / xi  =  J^T (softmax(q) - p) / xi,
  J = d logits / d x at x + r, q = logits_fn(x + r); softmax(q) - p comes from
  `kl_gradient_from_logits`, written so that its classes sum to zero exactly.
* 'exact': the Gauss-Newton product, the Hessian itself for a piecewise-linear
  (ReLU / max-pool) network:
      H d  =  J^T F J d,     F = diag(softmax(q)) - softmax(q) softmax(q)^T,
  J d by transposing the reverse-mode product (`_jacobian_vector_product`), F in
  closed form (`fisher_vector_product`), J^T by one more reverse-mode product; J is
  linearised at x + r, where ReLU and max-pool ties (MNIST's blank background) are
  broken as the finite difference breaks them.
* 'secant': the finite difference again, with the logits' change q - p_logits not
  from subtracting two forward passes (in float32 their rounding, ~1e-6 of logits of
  size ~10, swamps the change at a small xi) but propagated layer by layer through a
  `secant_fn(x, r) -> (logits, change)` (`tfcore.secant`, e.g. a Sequential's
  `secant`); softmax(q) - p then comes from that change
  (`kl_gradient_from_logit_change`), and J^T by backpropagating through the change.

Only the perturbed forward pass p(. | x + r_adv) carries gradients: p(. | x) and
r_adv are held fixed (stop_gradient), as in the paper and the official code.

Pure functions, no state: `virtual_adversarial_loss`, `kl_hessian_vector_product`,
`kl_gradient_from_logits`, `kl_gradient_from_logit_change`, `fisher_vector_product`,
`l2_normalize_per_example`,
`kl_from_logits`, `entropy_loss` (for VAT + entropy minimisation) and
`stateless_standard_normal` (the seeded draw of d, identical under XLA).
"""
from __future__ import annotations

import numbers
from typing import Callable, Tuple, Union

import tensorflow as tf

from tfcore.checks import check_choice
from tfcore.losses import entropy_from_logits, kl_divergence_from_logits

HVP_METHODS = ("finite_difference", "exact", "secant")
_ZERO = tf.UnconnectedGradients.ZERO


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


def _top_class(probabilities: tf.Tensor) -> tf.Tensor:
    """One-hot [..., classes] (probabilities' dtype) of the most probable class."""
    return tf.one_hot(tf.argmax(probabilities, axis=-1), tf.shape(probabilities)[-1],
                      dtype=probabilities.dtype)


def kl_gradient_from_logits(p_logits, q_logits) -> tf.Tensor:
    """The gradient of KL(p || q) with respect to q's logits, per position.

        g = d/d q_logits sum_c p_c (log p_c - log q_c) = softmax(q_logits) - p,

    computed so that its classes sum to zero exactly (to rounding relative to |g|):

        g_c = q_c - p_c  for c != m,     g_m = -sum_{c != m} g_c,
        m   = argmax_c (p_c + q_c)

    For a confident prediction, p_m and q_m are both near 1, and q_m - p_m (what
    autodiff through `tf.nn.log_softmax` computes in effect) carries the rounding of
    a number near 1, an absolute error of ~1e-7 in float32 that does not sum to zero
    with the other classes and, once J^T is applied, can outweigh the signal
    J^T (q - p) ~ xi * H d of a finite-difference step xi. The other classes' q_c - p_c
    are differences of small numbers, accurate relative to their size; g_m, their
    negated sum, is then accurate too.

    Args:
      p_logits: [..., classes] logits of the reference distribution p (no gradient is
        defined through this function: wrap the result in `tf.stop_gradient` or use it
        as an `output_gradients` of a tape).
      q_logits: [..., classes] logits of q, same shape; half precision is promoted to
        float32.

    Returns:
      g, the shape of `q_logits` (float32 for half-precision logits).
    """
    p_logits = _float_logits(p_logits, "p_logits")
    q_logits = tf.cast(_float_logits(q_logits, "q_logits"), p_logits.dtype)
    p = tf.nn.softmax(p_logits, axis=-1)
    q = tf.nn.softmax(q_logits, axis=-1)
    top = _top_class(p + q)
    rest = (q - p) * (1.0 - top)
    return rest - top * tf.reduce_sum(rest, axis=-1, keepdims=True)


def kl_gradient_from_logit_change(p_logits, dz) -> tf.Tensor:
    """`kl_gradient_from_logits(p_logits, p_logits + dz)` from the change dz itself.

        q_c - p_c = p_c expm1(dz_c - L),   L = log sum_c p_c exp(dz_c)
                                              = log1p(sum_c p_c expm1(dz_c)),

    accurate relative to |dz| however small it is (no softmax of p_logits + dz, whose
    float32 rounding is ~1e-7 absolute), with the top class of p taking minus the sum
    of the others, as in `kl_gradient_from_logits`.

    Args:
      p_logits: [..., classes] logits of p (constants).
      dz: [..., classes] change of the logits (q's logits minus p's), same shape.

    Returns:
      g = softmax(p_logits + dz) - softmax(p_logits), the shape of dz.
    """
    p_logits = _float_logits(p_logits, "p_logits")
    dz = tf.cast(_float_logits(dz, "dz"), p_logits.dtype)
    p = tf.nn.softmax(p_logits, axis=-1)
    shift = tf.math.log1p(tf.reduce_sum(p * tf.math.expm1(dz), axis=-1, keepdims=True))
    rest = p * tf.math.expm1(dz - shift) * (1.0 - _top_class(p))
    return rest - _top_class(p) * tf.reduce_sum(rest, axis=-1, keepdims=True)


def fisher_vector_product(q_logits, v) -> tf.Tensor:
    """F v per position, F = diag(q) - q q^T the Hessian of KL(p || softmax(z)) in z.

        (F v)_c = q_c (v_c - sum_k q_k v_k),      q = softmax(q_logits)

    F annihilates constant vectors (F 1 = 0), so v is first shifted by its entry at
    the most probable class m: v'_c = v_c - v_m. Then v'_m = 0 exactly, the mean
    sum_k q_k v'_k is a sum of small terms when q_m is near 1, and (F v)_m =
    -q_m sum_k q_k v'_k keeps its relative accuracy (without the shift it is the
    difference of two numbers near v_m). The classes of F v sum to zero.

    Args:
      q_logits: [..., classes] logits (half precision is promoted to float32).
      v: [..., classes] vector, e.g. J d (cast to the logits' dtype).

    Returns:
      F v, the shape of `q_logits`.
    """
    q_logits = _float_logits(q_logits, "q_logits")
    v = tf.cast(v, q_logits.dtype)
    q = tf.nn.softmax(q_logits, axis=-1)
    v = v - tf.reduce_sum(_top_class(q) * v, axis=-1, keepdims=True)
    return q * (v - tf.reduce_sum(q * v, axis=-1, keepdims=True))


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


def _check_hvp(hvp, secant_fn) -> None:
    check_choice(hvp, "hvp", HVP_METHODS)
    if hvp == "secant" and not callable(secant_fn):
        raise ValueError(f"hvp='secant' needs a callable secant_fn (x, dx) -> (logits, "
                         f"change of the logits), got {secant_fn!r}")


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


def _jacobian_vector_product(tape: tf.GradientTape, y: tf.Tensor, x: tf.Tensor,
                             v: tf.Tensor) -> tf.Tensor:
    """J v, J = dy/dx, from a persistent reverse-mode `tape` that recorded y(x).

    J^T u (one reverse-mode product) is linear in u, so J v = d/du <J^T u, v> at any u
    (here u = 0): the reverse-mode product of that backward pass. Only its transposed
    ops remain in a traced graph (a Conv2DBackpropInput becomes a Conv2D, a
    MaxPoolGrad a MaxPoolGradGrad, a ReluGrad a ReluGrad), so under `tf.function` it
    costs about one forward pass without biases, and it needs none of y's
    activations beyond those the tape keeps. Eagerly the u = 0 backward pass runs too.
    """
    u = tf.zeros_like(y)
    with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(u)
        jt_u = tape.gradient(y, x, output_gradients=u, unconnected_gradients=_ZERO)
    return inner.gradient(jt_u, u, output_gradients=tf.cast(v, x.dtype),
                          unconnected_gradients=_ZERO)


def _secant_product(secant_fn, x: tf.Tensor, p_logits: tf.Tensor, r: tf.Tensor,
                    xi) -> tf.Tensor:
    """hvp='secant': J^T kl_gradient_from_logit_change(p, dz) / xi, dz = secant_fn's."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(r)
        _, dz = secant_fn(x, r)
        dz = _float_logits(dz, "secant_fn's change")
    u = kl_gradient_from_logit_change(p_logits, dz) / tf.cast(xi, dz.dtype)
    return tape.gradient(dz, r, output_gradients=tf.stop_gradient(u),
                         unconnected_gradients=_ZERO)


def _hessian_vector_product(logits_fn, x: tf.Tensor, p_logits: tf.Tensor, d: tf.Tensor,
                            xi, hvp: str, secant_fn=None) -> tf.Tensor:
    """`kl_hessian_vector_product` on checked arguments (x a floating tensor)."""
    xi = tf.cast(xi, x.dtype)
    d_hat = l2_normalize_per_example(tf.cast(d, x.dtype))
    r = xi * d_hat
    if hvp == "secant":
        return _secant_product(secant_fn, x, p_logits, r, xi)
    with tf.GradientTape(watch_accessed_variables=False, persistent=hvp == "exact") as tape:
        tape.watch(r)
        q_logits = _float_logits(logits_fn(x + r), "logits_fn(x + r)")
    if hvp == "exact":
        jd = _jacobian_vector_product(tape, q_logits, r, d_hat)
        u = fisher_vector_product(q_logits, jd)
    else:
        u = kl_gradient_from_logits(p_logits, q_logits) / tf.cast(xi, q_logits.dtype)
    return tape.gradient(q_logits, r, output_gradients=tf.stop_gradient(u),
                         unconnected_gradients=_ZERO)


def kl_hessian_vector_product(logits_fn: Callable[[tf.Tensor], tf.Tensor], x, p_logits,
                              d, *, xi, hvp: str = "finite_difference",
                              secant_fn=None) -> tf.Tensor:
    """H d_hat for H the Hessian of D(r) = sum_i KL(p_i || softmax(logits_fn(x + r))_i).

    d_hat = l2_normalize_per_example(d), r = xi * d_hat, q = logits_fn(x + r) and
    J = d q / d x at x + r (the whole batch: BatchNorm's batch moments couple the
    examples). Positions of [batch, ..., classes] logits are summed.

        'finite_difference':  J^T g / xi,   g = kl_gradient_from_logits(p_logits, q)
                              (= (grad D(r) - grad D(0)) / xi: O(xi) from H d_hat)
        'exact':              J^T F J d_hat, F per position from `fisher_vector_product`
                              at q (the exact Hessian at x + r when logits_fn is
                              piecewise linear in x, its Gauss-Newton part otherwise)
        'secant':             J^T g / xi as 'finite_difference', with
                              g = kl_gradient_from_logit_change(p_logits, dz) and
                              (_, dz) = secant_fn(x, r), J^T through dz

    Each costs one forward pass at x + r and one reverse-mode product; 'exact' adds
    the forward-mode product J d_hat (`_jacobian_vector_product`). One power
    iteration of `virtual_adversarial_loss` is d <- this product.

    XLA: 'exact' differentiates the model's backward pass, and XLA's MaxPoolGradGrad
    (that derivative for max pooling) compares bf16-rounded values, so through a
    `tfcore.MaxPool2D` with its default gradient 'exact' is approximate under
    `jit_compile=True`; TensorFlow's own kernels (eager, graph) are exact. A pool with
    `gradient='one_hot'` is exact in every mode (`train.vat` uses it under XLA;
    docs/vat_direction.md).

    Args:
      logits_fn: x' -> logits [batch, ..., classes], differentiable in x' (twice,
        for 'exact': its gradient must itself have a gradient).
      x: [batch, ...] floating inputs.
      p_logits: [batch, ..., classes] reference logits (treated as constants; unused
        by 'exact', which takes F at q).
      d: [batch, ...] direction, the shape of x (any per-example scale).
      xi: step / linearisation distance, > 0 (a number or a scalar tensor).
      hvp: 'finite_difference' (default), 'exact' or 'secant'.
      secant_fn: for 'secant' (required there): (x, dx) -> (logits_fn(x),
        logits_fn(x + dx) - logits_fn(x)), e.g. `tfcore.secant.secant(model, x, dx,
        training=..., seed=...)` with the arguments logits_fn closes over.

    Returns:
      H d_hat, the shape and dtype of x (zero where the logits do not depend on x).

    Raises:
      ValueError: a bad xi or hvp, 'secant' without a secant_fn, or an x that is not
        floating.
    """
    _check_scalar(xi, "xi", allow_zero=False)
    _check_hvp(hvp, secant_fn)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"x must be a floating tensor, got dtype {x.dtype.name!r}")
    return _hessian_vector_product(logits_fn, x, tf.stop_gradient(p_logits), d, xi, hvp,
                                   secant_fn)


def virtual_adversarial_loss(
        logits_fn: Callable[[tf.Tensor], tf.Tensor],
        x,
        logits=None,
        *,
        xi: float = 10.0,
        eps: float = 1.0,
        power_iterations: int = 1,
        hvp: str = "finite_difference",
        seed=None,
        return_direction: bool = False,
        secant_fn=None,
) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
    """The VAT loss: mean_i KL(p(. | x_i) || p(. | x_i + eps * d_i)).

    Algorithm (Miyato et al. 2018, Alg. 1, and the official `virtual_adversarial_loss`):

        p_logits = stop_gradient(logits if given else logits_fn(x))
        d ~ N(0, I), shape of x        (stateless_standard_normal(seed): Philox bits +
                                        Box-Muller, when `seed` is given, else
                                        tf.random.normal)
        repeat power_iterations times:
            d = stop_gradient(kl_hessian_vector_product(logits_fn, x, p_logits, d,
                                                        xi=xi, hvp=hvp))
        d = l2_normalize_per_example(d)            (held fixed: stop_gradient)
        loss = mean_i KL(p_logits_i || logits_fn(x + eps * d)_i)

    With hvp='finite_difference' (the default) each product is the gradient of
    sum_i KL(p_logits_i || logits_fn(x + r)_i) with respect to the perturbation
    r = xi * normalize(d) (divided by xi, which the normalisation ignores), as the
    official code's `tf.gradients(dist, [d])` after `d = xi * normalize(d)`:
    differentiating w.r.t. the raw d instead would project out d's own direction and
    stop the power iteration from converging. The KL's gradient in the perturbed
    logits comes in closed form (`kl_gradient_from_logits`), so that it sums to zero
    over the classes; autodiff through log_softmax leaves a float32 residue there
    that dominates J^T (q - p) for small xi on a confident model. hvp='exact' takes
    J^T F J d instead (no finite difference, so no cancellation however small xi is;
    J linearised at x + xi * normalize(d)); docs/vat_direction.md measures both
    against float64. The KL is summed over the batch
    for these products, so each example's direction does not shrink with the batch
    size (the per-example normalisation makes the scale irrelevant otherwise).

    Gradients of the returned loss reach the model's variables (and `x`) only through
    the final perturbed pass logits_fn(x + eps * d); the clean logits and d are
    constants. A model whose output does not depend on x gets d = 0 and a loss of 0.

    BatchNorm and dropout: this function only calls `logits_fn`; the caller decides.
    Recommended: close over `training=True` with BatchNorm's `update_stats=False` (the
    official code's `update_batch_stats=False`) so the extra passes do not move the
    moving averages, and give dropout the same stateless seed in the clean and the
    perturbed passes so the KL measures the perturbation, not a new dropout mask.
    `logits_fn` is called power_iterations + 1 times (+1 when `logits` is None).

    Defaults: xi=10, eps=1, one power iteration, the finite difference (the issue's
    write-up). The official code's settings, as quoted in the issue: xi=1e-6 (a true
    finite difference, below float32's resolution on a confident model: use
    hvp='secant' or 'exact' for such a small xi), eps=2.1 for MNIST with all labels and eps=0.3
    for MNIST with 100 labels.

    Works eagerly, under `tf.function` and `tf.function(jit_compile=True)` (but see
    `kl_hessian_vector_product` for hvp='exact' through max pooling under XLA: use
    `MaxPool2D(gradient='one_hot')` there); the
    batch size may be unknown (a `TensorSpec` with None). `power_iterations` is a
    Python int (the loop is unrolled).

    Args:
      logits_fn: callable x_perturbed -> logits [batch, ..., classes] (softmax over
        the last axis). Must be differentiable in its input (twice for 'exact').
      x: [batch, ...] floating input of any rank (e.g. [batch, features] or NHWC images).
      logits: optional clean logits logits_fn(x), to save a forward pass; they are
        treated as constants (stop_gradient).
      xi: finite-difference step (or, for 'exact', linearisation distance) of the
        power iteration, > 0 (Python number or a scalar tensor).
      eps: norm of the adversarial perturbation r_adv, >= 0 (number or scalar tensor).
      power_iterations: K >= 0; 0 gives a random direction (the paper's "RPT" baseline).
      hvp: how each power-iteration product H d is computed: 'finite_difference'
        (default), 'exact' or 'secant' (see `kl_hessian_vector_product`).
      seed: optional stateless seed, int32/int64 of shape [2]; same seed, same d, also
        across eager, `tf.function` and XLA (see `stateless_standard_normal`).
      return_direction: also return the unit direction d (shape of x, stop_gradient'ed,
        each example of L2 norm 1, or 0 where the model ignores x).
      secant_fn: for hvp='secant' (required there): (x, dx) -> (logits, change), see
        `kl_hessian_vector_product`.

    Returns:
      The scalar loss (float32 for half-precision logits, else the logits' dtype), or
      `(loss, direction)` when `return_direction`.

    Raises:
      ValueError: bad xi, eps, power_iterations, hvp (or 'secant' without secant_fn),
        seed, or an input of unknown rank.
    """
    if not callable(logits_fn):
        raise ValueError(f"logits_fn must be callable, got {logits_fn!r}")
    _check_scalar(xi, "xi", allow_zero=False)
    _check_scalar(eps, "eps", allow_zero=True)
    if (isinstance(power_iterations, bool) or not isinstance(power_iterations, int)
            or power_iterations < 0):
        raise ValueError(f"power_iterations must be an integer >= 0, got {power_iterations!r}")
    _check_hvp(hvp, secant_fn)
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
    for _ in range(power_iterations):
        d = tf.stop_gradient(_hessian_vector_product(logits_fn, x, p_logits, d, xi, hvp,
                                                     secant_fn))
    direction = tf.stop_gradient(l2_normalize_per_example(d))
    r_adv = tf.cast(eps, x.dtype) * direction
    loss = kl_from_logits(p_logits, logits_fn(x + r_adv), reduction="mean")
    if return_direction:
        return loss, direction
    return loss
