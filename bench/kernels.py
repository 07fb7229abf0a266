"""Kernel micro-benchmarks at the bench models' real shapes, per execution mode.

Each kernel runs eagerly (`eager`), inside a `tf.function` (`graph`: TensorFlow's own
kernels, oneDNN on x86 CPUs) and inside `tf.function(jit_compile=True)` (`xla`); the
three modes of one kernel are timed in interleaved rounds (`bench.harness`). The
matmul peak is measured the same way in this run (square float32 matmuls per size and
mode, records of kind 'peak', sizes `harness.PEAK_SIZES`); each kernel's rounds also
time a [n,n]@[n,n] graph-mode matmul (n = `peak_size`, default `harness.PEAK_SIZE`)
in between, and its % of peak is against that one, measured under the same machine
load.

Kernels (batch sizes are the models' defaults: 128, DCGAN 64):

| name                    | model.layer            | op                                     |
| ----------------------- | ---------------------- | -------------------------------------- |
| conv2d_fwd              | vat_cnn conv2d_1       | x [128,26,26,32] * w [3,3,32,32], valid |
| conv2d_input_grad       | vat_cnn conv2d_1       | dy [128,24,24,32] -> dx                 |
| conv2d_filter_grad      | vat_cnn conv2d_1       | x, dy -> dw [3,3,32,32]                 |
| conv2d_fwd_c1           | vat_cnn conv2d (1 in)  | x [128,28,28,1] * w [3,3,1,32]          |
| conv2d_filter_grad_c1   | vat_cnn conv2d         | x, dy [128,26,26,32] -> dw [3,3,1,32]   |
| matmul_dense            | vat_cnn dense          | [128,4608] @ [4608,128]                 |
| matmul_dense_grad_w     | vat_cnn dense          | [128,4608]^T @ [128,128]                |
| conv2d_transpose        | conv_ae last decoder   | [128,14,14,8] -> [128,28,28,16], 3x3 s2 |
| conv2d_fwd_s2           | dcgan D conv2d_1       | [64,16,16,64] * [3,3,64,128], s2 same   |
| conv2d_fwd_same         | dcgan G conv2d_2       | [64,16,16,128] * [3,3,128,128], same    |
| matmul_d_dense          | dcgan D dense          | [64,4096] @ [4096,2048]                 |
| batchnorm_moments       | dcgan G BN (tfcore's)  | training fwd+bwd, tf.nn.moments + batch_normalization, [64,16,16,128] |
| batchnorm_fused         | the same, fused        | training fwd+bwd, tf.compat.v1.nn.fused_batch_norm |
| conv2d_1out_dcgan       | dcgan G conv2d_3       | fwd + dx + dw, [64,32,32,128] * [5,5,128,1], same, tf.nn.conv2d |
| conv2d_1out_dcgan_shift_add | the same           | the same as `tfcore.conv2d.shift_add_conv2d` (matmul + shift-add) |
| conv2d_1out_ae          | conv_ae last conv2d    | fwd + dx + dw, [128,28,28,16] * [3,3,16,1], same, tf.nn.conv2d |
| conv2d_1out_ae_shift_add | the same              | the same as `tfcore.conv2d.shift_add_conv2d` |

The `conv2d_1out_*` pairs show TensorFlow's slow CPU convolution with one output
channel and the `Conv2D(algorithm='shift_add')` route that avoids it; their FLOPs
are the convolution's (3x the forward), for both algorithms.

Records: `kind` 'kernel' (or 'peak' for the matmul peak), `model` (the kernel name),
`shape`, `mode`, `median_ms`, `min_ms`, `max_ms`, `samples_ms`, `steps`, `flops`
(per call; None for BatchNorm), `gflops`, `peak_gflops`, `pct_of_peak`, and for
kernels `peak_size` (the matmul timed beside them).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from bench import harness
from tfcore.conv2d import shift_add_conv2d

KERNEL_MODES = ("eager", "graph", "xla")


def _randn(rng, *shape) -> tf.Tensor:
    return tf.constant(rng.standard_normal(shape, dtype=np.float32))


def _conv_flops(y_shape, kh: int, kw: int, cin: int) -> int:
    return 2 * int(np.prod(y_shape)) * kh * kw * cin


def _conv_fwd_bwd(conv: Callable) -> Callable:
    """(x, w, dy) -> [dL/dx, dL/dw] for L = sum(conv(x, w) * dy): forward + both grads."""
    def fn(x, w, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(conv(x, w) * dy)
        return tape.gradient(loss, [x, w])
    return fn


def kernel_specs(rng=None) -> List[Tuple[str, str, Callable, Tuple, Optional[int]]]:
    """[(name, shape text, fn, args, flops per call)] for every kernel in the table."""
    rng = rng or np.random.default_rng(0)
    specs = []
    # VAT CNN conv2d_1 (the FLOP-heavy layer), batch 128.
    x, w, dy = _randn(rng, 128, 26, 26, 32), _randn(rng, 3, 3, 32, 32), _randn(rng, 128, 24, 24, 32)
    f = _conv_flops([128, 24, 24, 32], 3, 3, 32)
    specs += [
        ("conv2d_fwd", "vat_cnn conv2d_1 [128,26,26,32]*[3,3,32,32]",
         lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"), (x, w), f),
        ("conv2d_input_grad", "vat_cnn conv2d_1 dy [128,24,24,32]",
         lambda dy, w: tf.compat.v1.nn.conv2d_backprop_input(
             [128, 26, 26, 32], w, dy, [1, 1, 1, 1], "VALID"), (dy, w), f),
        ("conv2d_filter_grad", "vat_cnn conv2d_1 -> dw [3,3,32,32]",
         lambda x, dy: tf.compat.v1.nn.conv2d_backprop_filter(
             x, [3, 3, 32, 32], dy, [1, 1, 1, 1], "VALID"), (x, dy), f)]
    x1, w1, dy1 = _randn(rng, 128, 28, 28, 1), _randn(rng, 3, 3, 1, 32), _randn(rng, 128, 26, 26, 32)
    f1 = _conv_flops([128, 26, 26, 32], 3, 3, 1)
    specs += [
        ("conv2d_fwd_c1", "vat_cnn conv2d [128,28,28,1]*[3,3,1,32]",
         lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"), (x1, w1), f1),
        ("conv2d_filter_grad_c1", "vat_cnn conv2d -> dw [3,3,1,32]",
         lambda x, dy: tf.compat.v1.nn.conv2d_backprop_filter(
             x, [3, 3, 1, 32], dy, [1, 1, 1, 1], "VALID"), (x1, dy1), f1)]
    a, k, g = _randn(rng, 128, 4608), _randn(rng, 4608, 128), _randn(rng, 128, 128)
    specs += [
        ("matmul_dense", "vat_cnn dense [128,4608]@[4608,128]",
         lambda a, k: tf.linalg.matmul(a, k), (a, k), 2 * 128 * 4608 * 128),
        ("matmul_dense_grad_w", "vat_cnn dense [128,4608]^T@[128,128]",
         lambda a, g: tf.linalg.matmul(a, g, transpose_a=True), (a, g), 2 * 128 * 4608 * 128)]
    # Conv AE: the last transposed conv of the decoder (14x14x8 -> 28x28x16).
    xt, wt = _randn(rng, 128, 14, 14, 8), _randn(rng, 3, 3, 16, 8)
    specs.append(("conv2d_transpose", "conv_ae [128,14,14,8]->[128,28,28,16] 3x3 s2",
                  lambda x, w: tf.nn.conv2d_transpose(x, w, [128, 28, 28, 16], 2, "SAME"),
                  (xt, wt), _conv_flops([128, 14, 14, 8], 3, 3, 16)))
    # DCGAN (batch 64).
    xd, wd = _randn(rng, 64, 16, 16, 64), _randn(rng, 3, 3, 64, 128)
    specs.append(("conv2d_fwd_s2", "dcgan D [64,16,16,64]*[3,3,64,128] s2",
                  lambda x, w: tf.nn.conv2d(x, w, 2, "SAME"), (xd, wd),
                  _conv_flops([64, 8, 8, 128], 3, 3, 64)))
    xg, wg = _randn(rng, 64, 16, 16, 128), _randn(rng, 3, 3, 128, 128)
    specs.append(("conv2d_fwd_same", "dcgan G [64,16,16,128]*[3,3,128,128]",
                  lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), (xg, wg),
                  _conv_flops([64, 16, 16, 128], 3, 3, 128)))
    ad, kd = _randn(rng, 64, 4096), _randn(rng, 4096, 2048)
    specs.append(("matmul_d_dense", "dcgan D dense [64,4096]@[4096,2048]",
                  lambda a, k: tf.linalg.matmul(a, k), (ad, kd), 2 * 64 * 4096 * 2048))
    gamma, beta = tf.ones([128]), tf.zeros([128])

    def bn_moments(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            mean, var = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-3)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, gamma, beta])

    def bn_fused(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-3,
                                                      is_training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, gamma, beta])

    specs += [("batchnorm_moments", "dcgan G BN [64,16,16,128] fwd+bwd", bn_moments,
               (xg, gamma, beta), None),
              ("batchnorm_fused", "dcgan G BN [64,16,16,128] fwd+bwd", bn_fused,
               (xg, gamma, beta), None)]
    # One-output-channel convs (fwd + dx + dw): TF's conv kernel vs matmul + shift-add.
    for name, (b, h, c, k), text in (
            ("dcgan", (64, 32, 128, 5), "dcgan G conv2d_3 [64,32,32,128]*[5,5,128,1]"),
            ("ae", (128, 28, 16, 3), "conv_ae last conv2d [128,28,28,16]*[3,3,16,1]")):
        xs, ws, dys = _randn(rng, b, h, h, c), _randn(rng, k, k, c, 1), _randn(rng, b, h, h, 1)
        f3 = 3 * _conv_flops([b, h, h, 1], k, k, c)
        specs += [(f"conv2d_1out_{name}", f"{text} same fwd+bwd",
                   _conv_fwd_bwd(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")), (xs, ws, dys), f3),
                  (f"conv2d_1out_{name}_shift_add", f"{text} same fwd+bwd, shift_add",
                   _conv_fwd_bwd(lambda x, w: shift_add_conv2d(x, w, "same")), (xs, ws, dys),
                   f3)]
    return specs


def _runners(fn: Callable, args: Sequence[Any], modes: Sequence[str]
             ) -> Dict[str, harness.Runner]:
    compiled = {"eager": fn, "graph": tf.function(fn),
                "xla": tf.function(fn, jit_compile=True)}
    return {m: harness.repeat(lambda c=compiled[m]: c(*args)) for m in modes}


def measure_peak(sizes: Sequence[int] = harness.PEAK_SIZES, modes: Sequence[str] = ("graph", "xla"),
                 steps: int = 3, rounds: int = 5, warmup: int = 1,
                 time_budget_s: Optional[float] = None) -> List[Dict[str, Any]]:
    """Square float32 matmul GFLOP/s per size and mode (records of kind 'peak')."""
    rng = np.random.default_rng(1)
    out = []
    for n in sizes:
        a, b = _randn(rng, n, n), _randn(rng, n, n)
        t = harness.interleave(_runners(tf.linalg.matmul, (a, b), modes), steps=steps,
                               rounds=rounds, warmup=warmup, time_budget_s=time_budget_s,
                               min_rounds=min(3, rounds))
        for mode, tm in t.items():
            flops = 2 * n ** 3
            out.append({"kind": "peak", "model": f"matmul_{n}", "shape": f"[{n},{n}]@[{n},{n}]",
                        "mode": mode, "flops": flops,
                        "gflops": flops / (tm.median_ms * 1e-3) / 1e9, **tm.to_dict()})
    return out


def run_kernels(steps: int = 5, rounds: int = 5, warmup: int = 2,
                modes: Sequence[str] = KERNEL_MODES, names: Optional[Sequence[str]] = None,
                peak_sizes: Sequence[int] = harness.PEAK_SIZES,
                peak_size: int = harness.PEAK_SIZE,
                time_budget_s: Optional[float] = None,
                log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Times the peak matmuls, then every kernel in every mode; returns the records.

    Args:
      steps: calls per timed round. rounds: timed rounds. warmup: untimed calls.
      modes: subset of ('eager', 'graph', 'xla').
      names: kernels to run (default: all of `kernel_specs`).
      peak_sizes: square matmul sizes of the peak section.
      peak_size: the square matmul timed in every kernel's rounds for its % of peak.
      time_budget_s: cap on each kernel's timed rounds (at least 3 rounds), see
        `bench.harness.interleave`.
      log: progress printer.
    """
    bad = [m for m in modes if m not in KERNEL_MODES]
    if bad:
        raise ValueError(f"unknown kernel modes {bad}; known: {', '.join(KERNEL_MODES)}")
    peak_size = harness.check_count(peak_size, "peak_size", 1)
    records = measure_peak(peak_sizes, [m for m in modes if m != "eager"] or ["graph"],
                           steps=max(1, min(steps, 3)), rounds=rounds,
                           time_budget_s=time_budget_s)
    peak = max(r["gflops"] for r in records)
    log("[kernels] matmul peak: " + ", ".join(
        f"{r['model']} {r['mode']} {r['gflops']:.1f}" for r in records) + " GFLOP/s")
    for r in records:
        r.update({"peak_gflops": peak, "pct_of_peak": 100.0 * r["gflops"] / peak})
    specs = kernel_specs()
    if names is not None:
        unknown = sorted(set(names) - {s[0] for s in specs})
        if unknown:
            raise ValueError(f"unknown kernels {unknown}")
        specs = [s for s in specs if s[0] in names]
    rng = np.random.default_rng(2)
    n = peak_size
    a, b = _randn(rng, n, n), _randn(rng, n, n)
    peak_run = _runners(tf.linalg.matmul, (a, b), ["graph"])["graph"]
    for name, shape, fn, args, flops in specs:
        runners = {**_runners(fn, args, modes), "matmul_peak": peak_run}
        t = harness.interleave(runners, steps=steps, rounds=rounds, warmup=warmup,
                               steps_for={"matmul_peak": max(1, min(steps, 3))},
                               time_budget_s=time_budget_s, min_rounds=min(3, rounds))
        # % of peak against the matmul timed in the same rounds (same machine load).
        local_peak = 2 * n ** 3 / (t.pop("matmul_peak").median_ms * 1e-3) / 1e9
        for mode, tm in t.items():
            gflops = flops / (tm.median_ms * 1e-3) / 1e9 if flops else None
            records.append({"kind": "kernel", "model": name, "shape": shape, "mode": mode,
                            "flops": flops, "gflops": gflops, "peak_gflops": local_peak,
                            "peak_size": n,
                            "pct_of_peak": 100.0 * gflops / local_peak if gflops else None,
                            **tm.to_dict()})
        log(f"[kernels] {name}: " + ", ".join(f"{m} {tm.median_ms:.3f}" for m, tm in t.items())
            + " ms")
    return records
