"""tfcore.optimizers side by side with Keras 3's and Keras 2's optimizers, and their machinery.

Parity: the same small problem (a least-squares fit plus a wiggly non-convex term,
gradients recomputed by each side from its own current values) is optimised for
160 steps by tfcore and by the real Keras optimizer class, both in `tf.function`:
Keras 3's `keras.optimizers`, Keras 2's (tf-keras) `tf_keras.optimizers` and its
`tf_keras.optimizers.legacy` (the pre-2.11 ones), one set of cases. Every variable
must agree to `max|tfcore - keras| <= 1e-5 * max(1, max|keras|)`, and against Keras 3
every optimizer slot too, by name and order (Keras 2 names and orders its slots
differently). Both run the same float32 ops, so the observed difference is ~0.
Two Keras 2 exceptions: its RMSprop divides by `rsqrt`, which rounds differently, and
on this chaotic problem the rounding grows past 1e-5 after ~40 steps (7e-7 after
20), so RMSprop runs 20 steps against Keras 2; and Keras 2's legacy RMSprop without
momentum adds epsilon outside the square root (a real difference, tested on its own).
"""
import inspect
import os

import numpy as np
import pytest
import tensorflow as tf
import keras

import tfcore
from tfcore import optimizers
from tfcore.optimizers import (SGD, Adadelta, Adam, RMSprop, adadelta_update, adam_update,
                               rmsprop_update, sgd_update)

STEPS = 160
KERAS2_RMSPROP_STEPS = 20
REL_TOL = 1e-5

_rng = np.random.default_rng(0)
X = _rng.normal(size=(16, 4)).astype(np.float32)
Y = _rng.normal(size=(16, 3)).astype(np.float32)
INIT = {"w": _rng.normal(size=(4, 3)).astype(np.float32),
        "b": np.zeros(3, np.float32),
        "c": _rng.normal(size=(6,)).astype(np.float32)}


@tf.function
def _grads(w, b, c):
    """Gradients of mean((XW + b - Y)^2) + 0.3 * sum(sin(3c) + 0.1 c^2)."""
    with tf.GradientTape() as tape:
        tape.watch([w, b, c])
        loss = tf.reduce_mean(tf.square(X @ w + b - Y))
        loss += 0.3 * tf.reduce_sum(tf.sin(3.0 * c) + 0.1 * tf.square(c))
    return tape.gradient(loss, [w, b, c])


def _tf_vars():
    return [tf.Variable(v, name=k) for k, v in INIT.items()]


KERAS_OPTIMIZERS = ("keras3", "keras2", "keras2_legacy")


def _keras_optimizers(impl):
    """(optimizer namespace, variables) of a Keras implementation."""
    if impl == "keras3":
        return keras.optimizers, [keras.Variable(v, name=k) for k, v in INIT.items()]
    tf_keras = pytest.importorskip("tf_keras")
    namespace = tf_keras.optimizers.legacy if impl == "keras2_legacy" else tf_keras.optimizers
    return namespace, _tf_vars()


def _run(opt, variables, steps, jit=False):
    """`steps` updates in one compiled loop (a `tf.while_loop` over apply_gradients)."""
    @tf.function(jit_compile=jit)
    def loop(n):
        for _ in tf.range(n):
            grads = _grads(*[tf.convert_to_tensor(v) for v in variables])
            opt.apply_gradients(zip(grads, variables))

    loop(tf.constant(steps))


def _assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    scale = max(1.0, float(np.max(np.abs(theirs))) if theirs.size else 1.0)
    diff = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff} (scale {scale})"


SETTINGS = [
    ("SGD", dict(learning_rate=0.05)),
    ("SGD", dict(learning_rate=0.02, momentum=0.9)),
    ("SGD", dict(learning_rate=0.02, momentum=0.9, nesterov=True)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.02, beta_1=0.5, beta_2=0.99, epsilon=1e-4,
                  amsgrad=True)),
    ("Adam", dict(learning_rate=0.05, clipnorm=0.5)),
    ("SGD", dict(learning_rate=0.05, momentum=0.5, global_clipnorm=0.3)),
    ("RMSprop", dict(learning_rate=0.01)),
    ("RMSprop", dict(learning_rate=0.005, rho=0.8, momentum=0.7, centered=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(learning_rate=1.0, rho=0.9, epsilon=1e-6)),
]


def _parity_cases():
    """Every setting against Keras 3 with tfcore's fused kernels and without; against
    Keras 2 (current and legacy) with tfcore's default (fused == unfused is tested
    below), except legacy RMSprop without momentum (see the module docstring)."""
    cases = []
    for cls_name, kwargs in SETTINGS:
        rmsprop = cls_name == "RMSprop"  # it has no fused kernel (no `fused` argument)
        for impl in KERAS_OPTIMIZERS:
            if impl == "keras2_legacy" and rmsprop and not kwargs.get("momentum"):
                continue
            fused_values = ((False,) if rmsprop else (True, False) if impl == "keras3"
                            else (True,))
            cases += [(cls_name, kwargs, fused, impl) for fused in fused_values]
    return [pytest.param(*c, id=f"{c[0]}-{'-'.join(c[1])}-{'fused' if c[2] else 'unfused'}"
                                f"-{c[3]}") for c in cases]


@pytest.mark.parametrize("cls_name,kwargs,fused,impl", _parity_cases())
def test_parity_with_keras(cls_name, kwargs, fused, impl):
    steps = KERAS2_RMSPROP_STEPS if impl != "keras3" and cls_name == "RMSprop" else STEPS
    namespace, keras_vars = _keras_optimizers(impl)
    ours_vars = _tf_vars()
    ours = getattr(optimizers, cls_name)(**({"fused": fused} if cls_name != "RMSprop"
                                            else {}), **kwargs)
    theirs = getattr(namespace, cls_name)(**kwargs)
    ours.build(ours_vars)
    if impl != "keras2_legacy":  # the legacy ones build on their first apply
        theirs.build(keras_vars)
    _run(ours, ours_vars, steps)
    _run(theirs, keras_vars, steps)
    moved = max(float(np.max(np.abs(v.numpy() - INIT[k]))) for k, v in
                zip(INIT, ours_vars))
    assert moved > 1e-4, "the problem must move the variables for the test to mean much"
    for k, a, b in zip(INIT, ours_vars, keras_vars):
        _assert_close(a.numpy(), b.numpy(), f"variable {k}")
    assert int(ours.iterations.numpy()) == steps
    if impl != "keras3":
        return
    # Same state, same order and names as keras_opt.variables (so it copies 1:1).
    assert len(ours.variables) == len(theirs.variables)
    for a, b in zip(ours.variables, theirs.variables):
        assert a.name.split("/")[-1].split(":")[0] == b.name, (a.name, b.name)
        _assert_close(a.numpy(), b.numpy(), f"optimizer variable {b.name}")


def test_keras2_legacy_rmsprop_without_momentum():
    """Keras 2's legacy RMSprop without momentum steps by lr g / (sqrt(v) + eps); tfcore
    (Keras 3, and Keras 2's own fused kernel with momentum) by lr g / sqrt(v + eps)."""
    tf_keras = pytest.importorskip("tf_keras")
    g = np.array([1e-3, -2e-4, 0.5], np.float32)
    lr, rho, eps = 0.01, 0.9, 1e-7
    v = (1 - rho) * g.astype(np.float64) ** 2
    results = {}
    for name, opt in (("ours", RMSprop(lr, rho=rho, epsilon=eps)),
                      ("legacy", tf_keras.optimizers.legacy.RMSprop(lr, rho=rho,
                                                                    epsilon=eps))):
        var = tf.Variable(np.zeros(3, np.float32))
        opt.apply_gradients([(tf.constant(g), var)])
        results[name] = var.numpy()
    np.testing.assert_allclose(results["ours"], -lr * g / np.sqrt(v + eps), rtol=1e-5)
    np.testing.assert_allclose(results["legacy"], -lr * g / (np.sqrt(v) + eps), rtol=1e-5)
    assert abs(results["ours"][1] - results["legacy"][1]) > 1e-4 * abs(results["ours"][1])


@pytest.mark.parametrize("centered", [False, True])
def test_epsilon_outside_sqrt_is_keras2_legacy_rmsprop(centered):
    """RMSprop(epsilon_outside_sqrt=True) against tf_keras's legacy RMSprop (no
    momentum), 20 steps on a quadratic with small gradients, where eps's place shows."""
    tf_keras = pytest.importorskip("tf_keras")
    rng = np.random.RandomState(3)
    init = rng.normal(0, 1e-3, (4, 3)).astype(np.float32)
    target = rng.normal(0, 1e-3, (4, 3)).astype(np.float32)
    kwargs = dict(learning_rate=0.01, rho=0.9, epsilon=1e-6, centered=centered)
    runs = {}
    for name, opt in (("legacy", tf_keras.optimizers.legacy.RMSprop(**kwargs)),
                      ("outside", RMSprop(**kwargs, epsilon_outside_sqrt=True)),
                      ("inside", RMSprop(**kwargs))):
        var = tf.Variable(init)
        for _ in range(20):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(var - target))
            opt.apply_gradients([(tape.gradient(loss, var), var)])
        runs[name] = var.numpy()
    np.testing.assert_allclose(runs["outside"], runs["legacy"], rtol=1e-5, atol=1e-8)
    assert np.abs(runs["inside"] - runs["legacy"]).max() > 1e-2 * np.abs(init).max()


# --- defaults and validation --------------------------------------------------------
@pytest.mark.parametrize("name", ["SGD", "Adam", "Adadelta", "RMSprop"])
def test_constructor_defaults_match_keras(name):
    # tfcore's own arguments come last: `fused` (TensorFlow's fused training ops),
    # RMSprop's `epsilon_outside_sqrt` (Keras 2's legacy RMSprop), both off Keras's path.
    params = inspect.signature(getattr(optimizers, name)).parameters
    own = "epsilon_outside_sqrt" if name == "RMSprop" else "fused"
    assert list(params)[-1] == own
    assert params[own].default is (own == "fused")
    ours = {a: p for a, p in params.items() if a != own}
    theirs = inspect.signature(getattr(keras.optimizers, name)).parameters
    for arg, p in ours.items():
        assert arg in theirs, arg
        if arg != "name":
            assert p.default == theirs[arg].default, (arg, p.default, theirs[arg].default)
    assert [a for a in theirs if a in ours] == list(ours), "argument order as Keras"


@pytest.mark.parametrize("make,match", [
    (lambda: SGD(learning_rate=-0.1), "learning_rate.*-0.1"),
    (lambda: SGD(learning_rate="fast"), "learning_rate.*'fast'"),
    (lambda: SGD(momentum=1.5), "momentum.*1.5"),
    (lambda: SGD(nesterov="yes"), "nesterov.*'yes'"),
    (lambda: Adam(beta_1=1.0), "beta_1.*1.0"),
    (lambda: Adam(beta_2=-0.5), "beta_2.*-0.5"),
    (lambda: Adam(epsilon=float("nan")), "epsilon.*nan"),
    (lambda: Adadelta(rho=2.0), "rho.*2.0"),
    (lambda: RMSprop(centered=1), "centered.*1"),
    (lambda: RMSprop(momentum=-0.1), "momentum.*-0.1"),
    (lambda: RMSprop(epsilon_outside_sqrt="yes"), "epsilon_outside_sqrt.*'yes'"),
    (lambda: Adam(clipnorm=1.0, global_clipnorm=1.0), "only one of"),
    (lambda: Adam(clipnorm=0.0), "clipnorm.*0.0"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_get_by_name():
    opt = optimizers.get("Adam", learning_rate=0.1, amsgrad=True)
    assert isinstance(opt, Adam) and opt.amsgrad
    np.testing.assert_allclose(opt.learning_rate.numpy(), 0.1)
    for name, cls in [("sgd", SGD), ("adadelta", Adadelta), ("rmsprop", RMSprop)]:
        assert type(optimizers.get(name)) is cls
    assert optimizers.get(opt) is opt
    with pytest.raises(ValueError, match=r"'nadam'.*\['adadelta', 'adam', 'rmsprop', 'sgd'\]"):
        optimizers.get("nadam")
    assert tfcore.Adam is Adam and tfcore.SGD is SGD and tfcore.RMSprop is RMSprop
    assert tfcore.Adadelta is Adadelta and tfcore.optimizers is optimizers


# --- pure update functions against NumPy ------------------------------------------
def test_pure_updates_match_numpy():
    rng = np.random.default_rng(1)
    var, g, s1, s2 = (rng.normal(size=5) for _ in range(4))
    s2 = np.abs(s2) + 1.0  # a second-moment slot: >= (0.1 * s1)^2 below
    lr, t = 0.1, 3

    def f32(*xs):
        return [tf.constant(x, tf.float32) for x in xs]

    # Adam (bias correction folded into alpha, epsilon outside the sqrt).
    m1 = s1 + (g - s1) * 0.1
    v1 = s2 + (g * g - s2) * 0.001
    alpha = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    ref = var - m1 * alpha / (np.sqrt(v1) + 1e-7)
    out = adam_update(*f32(var, g, s1, s2), lr, 0.9, 0.999, 1e-7, t)
    for a, b in zip(out[:3], (ref, m1, v1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert out[3] is None
    vhat = s2 + 1.0
    out = adam_update(*f32(var, g, s1, s2), lr, 0.9, 0.999, 1e-7, t, *f32(vhat))
    np.testing.assert_allclose(out[0], var - m1 * alpha / (np.sqrt(np.maximum(vhat, v1))
                                                           + 1e-7), rtol=1e-5, atol=1e-6)
    # SGD: momentum holds the (negative) velocity.
    m = 0.9 * s1 - lr * g
    for nesterov, ref in [(False, var + m), (True, var + 0.9 * m - lr * g)]:
        out = sgd_update(*f32(var, g), lr, 0.9, nesterov, *f32(s1))
        np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[1], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sgd_update(*f32(var, g), lr)[0], var - lr * g, rtol=1e-6)
    # RMSprop centered with momentum.
    avg = 0.1 * s1
    v = 0.9 * s2 + 0.1 * g * g
    a = 0.9 * avg + 0.1 * g
    inc = lr * g / np.sqrt(v - a * a + 1e-7)
    mom = 0.5 * s1 + inc
    assert np.all(v - a * a > 0)
    out = rmsprop_update(*f32(var, g, s2), lr, 0.9, 1e-7, 0.5, *f32(s1, avg))
    for x, y in zip(out, (var - mom, v, mom, a)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Adadelta.
    ag = 0.95 * s2 + 0.05 * g * g
    delta = -np.sqrt(s2 + 1e-7) * g / np.sqrt(ag + 1e-7)
    ad = 0.95 * s2 + 0.05 * delta ** 2
    out = adadelta_update(*f32(var, g, s2, s2), lr, 0.95, 1e-7)
    for x, y in zip(out, (var + lr * delta, ag, ad)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


# --- machinery ------------------------------------------------------------------------
def test_state_variables_and_slot_names():
    w = tf.Variable(tf.zeros([2, 3]), name="dense/kernel")
    opt = Adam(0.01, amsgrad=True)
    assert opt.learning_rate.dtype == tf.float32 and not opt.learning_rate.trainable
    assert opt.iterations.dtype == tf.int64 and not opt.iterations.trainable
    opt.build([w])
    names = [v.name for v in opt.variables]
    assert names == ["adam/iteration:0", "adam/learning_rate:0",
                     "adam/dense_kernel_momentum:0", "adam/dense_kernel_velocity:0",
                     "adam/dense_kernel_velocity_hat:0"]
    assert opt.trainable_variables == ()
    opt.build([w])  # a second build is a no-op
    assert len(opt.variables) == 5
    opt.learning_rate = 0.5  # assigns the variable, keeps the object
    assert opt.variables[1] is opt.learning_rate
    np.testing.assert_allclose(opt.learning_rate.numpy(), 0.5)


def test_learning_rate_assign_takes_effect_without_retracing():
    w = tf.Variable([1.0, -2.0])
    opt = SGD(learning_rate=0.1)
    opt.build([w])
    traces = []

    @tf.function
    def step():
        traces.append(1)  # Python side effect: runs once per trace
        opt.apply_gradients([(tf.ones_like(w), w)])

    step()
    np.testing.assert_allclose(w.numpy(), [0.9, -2.1], rtol=1e-6)
    opt.learning_rate.assign(0.5)
    step()
    np.testing.assert_allclose(w.numpy(), [0.4, -2.6], rtol=1e-6)
    opt.learning_rate = 0.25
    step()
    np.testing.assert_allclose(w.numpy(), [0.15, -2.85], rtol=1e-5)
    assert len(traces) == 1
    assert int(opt.iterations.numpy()) == 3


@pytest.mark.parametrize("cls,kwargs", [
    (SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    (Adam, dict(learning_rate=0.01, amsgrad=True)),
    (RMSprop, dict(momentum=0.5, centered=True)),
    (Adadelta, dict(learning_rate=1.0)),
])
def test_xla_and_lazy_build_match_eager(cls, kwargs):
    """Unbuilt optimizers build lazily on the first apply (eager, tf.function, XLA)."""
    results = []
    for mode in ("eager", "function", "xla"):
        variables, opt = _tf_vars(), cls(**kwargs)
        if mode == "eager":
            for _ in range(5):
                grads = _grads(*[tf.convert_to_tensor(v) for v in variables])
                opt.apply_gradients(zip(grads, variables))
        else:
            _run(opt, variables, 5, jit=(mode == "xla"))
        assert opt.built and int(opt.iterations.numpy()) == 5
        results.append([v.numpy() for v in variables + list(opt.variables[2:])])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


FUSED_OPS = {"SGD": "ResourceApplyGradientDescent", "Adam": "ResourceApplyAdam",
             "Adadelta": "ResourceApplyAdadelta"}


@pytest.mark.parametrize("cls_name,kwargs", [
    s for s in SETTINGS if s[0] != "RMSprop"], ids=lambda v: str(v))
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_fused_kernels_match_the_pure_update(cls_name, kwargs, jit):
    """The fused training op is really used, and 40 compiled steps with it end where
    the pure-function path ends (graph mode and XLA)."""
    runs = {}
    for fused in (True, False):
        variables, opt = _tf_vars(), getattr(optimizers, cls_name)(fused=fused, **kwargs)
        opt.build(variables)
        _run(opt, variables, 40, jit=jit)
        runs[fused] = [v.numpy() for v in variables + list(opt.variables[2:])]
        graph = tf.function(lambda: opt.apply_gradients(
            zip([tf.zeros_like(v) for v in variables], variables))
        ).get_concrete_function().graph
        op_types = {op.type for op in graph.get_operations()}
        expected = ("ResourceApplyKerasMomentum" if kwargs.get("momentum")
                    else FUSED_OPS[cls_name])
        # AMSGrad has no XLA kernel, so it always takes the pure-function path.
        uses_kernel = fused and not kwargs.get("amsgrad")
        assert (expected in op_types) == uses_kernel, (fused, sorted(op_types))
    for i, (a, b) in enumerate(zip(runs[True], runs[False])):
        _assert_close(a, b, f"variable/slot {i}")  # the Keras parity tolerance


def test_rmsprop_has_no_fused_kernel_and_get_config_round_trips():
    assert RMSprop().fused is False and "fused" not in RMSprop().get_config()
    assert Adam().get_config()["fused"] is True
    for cls, kwargs in ((Adam, dict(fused=False, beta_1=0.5)), (SGD, dict(momentum=0.9)),
                        (Adadelta, dict(rho=0.9)), (RMSprop, dict(centered=True))):
        config = cls(**kwargs).get_config()
        assert cls(**config).get_config() == config


@pytest.mark.parametrize("jit", [False, True])
def test_indexed_slices_gradients_match_dense(jit):
    table = np.arange(12, dtype=np.float32).reshape(6, 2) / 10 + 1.0
    ids = tf.constant([0, 3, 3, 5])
    sparse_v, dense_v = tf.Variable(table), tf.Variable(table)
    opt_s, opt_d = Adam(0.1), Adam(0.1)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape(persistent=True) as tape:
            ls = tf.reduce_sum(tf.square(tf.gather(sparse_v, ids)))
            ld = tf.reduce_sum(tf.square(tf.gather(dense_v * 1.0, ids)))  # dense grad
        gs = tape.gradient(ls, sparse_v)
        gd = tape.gradient(ld, dense_v)
        assert isinstance(gs, tf.IndexedSlices) and not isinstance(gd, tf.IndexedSlices)
        opt_s.apply_gradients([(gs, sparse_v)])
        opt_d.apply_gradients([(gd, dense_v)])

    for _ in range(3):
        step()
    np.testing.assert_allclose(sparse_v.numpy(), dense_v.numpy(), rtol=1e-6)
    assert np.all(sparse_v.numpy()[[1, 2, 4]] == table[[1, 2, 4]])  # untouched rows
    assert np.all(sparse_v.numpy()[[0, 3, 5]] != table[[0, 3, 5]])


def test_none_gradients_are_skipped_and_unknown_variables_rejected():
    a, b = tf.Variable([1.0]), tf.Variable([2.0])
    opt = SGD(0.1, momentum=0.5)
    opt.apply_gradients([(tf.constant([1.0]), a), (None, b)])
    assert len(opt.variables) == 4  # slots for both variables
    np.testing.assert_allclose(a.numpy(), [0.9])
    np.testing.assert_allclose(b.numpy(), [2.0])
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply_gradients([(tf.constant([1.0]), tf.Variable([0.0], name="stranger"))])
    with pytest.raises(ValueError, match="No gradients"):
        opt.apply_gradients([(None, a), (None, b)])


@pytest.mark.parametrize("build_before_restore", [True, False])
def test_checkpoint_round_trip_continues_identically(tmp_path, build_before_restore):
    """Save mid-run, restore into fresh variables + optimizer, continue: bitwise equal."""
    variables, opt = _tf_vars(), Adam(0.02, amsgrad=True)
    opt.build(variables)
    ckpt = tf.train.Checkpoint(variables=variables, optimizer=opt)
    _run(opt, variables, 7)
    opt.learning_rate.assign(0.01)  # state beyond the constructor's
    path = ckpt.save(os.path.join(tmp_path, "ckpt"))
    _run(opt, variables, 7)
    expected = [v.numpy() for v in variables + list(opt.variables)]

    variables2 = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0])
                  for v in _tf_vars()]
    opt2 = Adam(0.02, amsgrad=True)
    if build_before_restore:
        opt2.build(variables2)
    status = tf.train.Checkpoint(variables=variables2, optimizer=opt2).restore(path)
    if not build_before_restore:
        opt2.build(variables2)  # deferred restoration fills the slots on creation
    status.assert_consumed()
    assert int(opt2.iterations.numpy()) == 7
    np.testing.assert_allclose(opt2.learning_rate.numpy(), 0.01)
    _run(opt2, variables2, 7)
    got = [v.numpy() for v in variables2 + list(opt2.variables)]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
