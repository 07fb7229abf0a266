"""tfcore.loop: per-step vs compiled multi-step, History / metrics.json, step seeds,
data order, NaN stop (last good checkpoint kept), progress display, validation.

A tiny regression problem (Dense + tfcore Adam, or an in-file SGD stand-in where a
test needs only the interface), a few dozen steps per test.
"""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfcore
from tfcore.training import callbacks, checkpointing, compile as tcompile, loop

try:
    from tfcore.optimizers import get as get_optimizer
except ImportError:  # pragma: no cover - stand-in with the same interface
    get_optimizer = None


class _SGD(tf.Module):
    """Minimal stand-in: learning_rate variable + apply_gradients (plain SGD)."""

    def __init__(self, learning_rate=0.1):
        super().__init__()
        self.learning_rate = tf.Variable(learning_rate, trainable=False)

    def apply_gradients(self, grads_and_vars):
        for g, v in grads_and_vars:
            v.assign_sub(self.learning_rate * g)


def _problem(n=96, d=6, seed=0):
    rs = np.random.RandomState(seed)
    x = rs.randn(n, d).astype("float32")
    w = rs.randn(d, 1).astype("float32")
    y = (x @ w + 0.3 * rs.randn(n, 1)).astype("float32")
    return x, y


def _model_and_opt(d=6, opt="adam", lr=0.05):
    tf.random.set_seed(7)
    model = tfcore.Dense(1)
    model(tf.zeros([1, d]))
    if opt == "adam" and get_optimizer is not None:
        optimizer = get_optimizer("adam", learning_rate=lr)
        optimizer.build(model.trainable_variables)
    else:
        optimizer = _SGD(lr)
    return model, optimizer


def _step_fn(model, optimizer, dropout=0.0, record=None):
    def step(batch, seed):
        x, y = batch
        if dropout:  # stochastic: uses the loop's per-step stateless seed
            x = tf.nn.experimental.stateless_dropout(x, dropout, seed=seed)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {"loss": loss, "grad_norm": tf.linalg.global_norm(grads)}
    return step


class _Recorder(callbacks.Callback):
    def __init__(self):
        self.batches, self.epochs, self.weights = [], [], []

    def on_batch_end(self, step, logs=None):
        self.batches.append((step, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs)))
        self.weights.append(self.loop.objects["model"].kernel.numpy().copy())


def test_multi_step_equals_per_step():
    x, y = _problem()
    results = {}
    for spc in (1, 5, "epoch"):
        model, opt = _model_and_opt()
        rec = _Recorder()
        lp = loop.Loop(_step_fn(model, opt, dropout=0.2), (x, y), batch_size=16,
                       objects={"model": model, "optimizer": opt}, seed=3,
                       steps_per_call=spc, callbacks=[rec], progress=False, jit="off")
        hist = lp.fit(epochs=3)
        results[spc] = (model.kernel.numpy(), model.bias.numpy(), hist)
        assert int(lp.step.numpy()) == 18
        if spc == 1:
            assert lp.train_function.experimental_get_tracing_count() == 1
            assert [s for s, _ in rec.batches] == list(range(1, 19))
        else:
            assert lp.multi_step_function.experimental_get_tracing_count() == 1
            # batch hooks once per call; calls never cross an epoch end (6 steps/epoch)
            want = [5, 6, 11, 12, 17, 18] if spc == 5 else [6, 12, 18]
            assert [s for s, _ in rec.batches] == want
    k1, b1, h1 = results[1]
    for spc in (5, "epoch"):
        k, b, h = results[spc]
        np.testing.assert_array_equal(k, k1)  # same ops, same order: bitwise
        np.testing.assert_array_equal(b, b1)
        for name in ("loss", "grad_norm"):
            np.testing.assert_allclose(h.history[name], h1.history[name], rtol=1e-6)


def test_xla_multi_step_matches_graph_mode():
    x, y = _problem()
    out = []
    for jit, spc in (("off", 1), ("on", "epoch")):
        model, opt = _model_and_opt()
        loop.fit(_step_fn(model, opt), (x, y), batch_size=32, objects={"m": model, "o": opt},
                 epochs=2, jit=jit, steps_per_call=spc, progress=False)
        out.append(model.kernel.numpy())
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-6)  # XLA fuses: not bitwise


def test_history_metrics_json_and_eval(tmp_path):
    x, y = _problem(n=100)
    xv, yv = _problem(n=37, seed=1)  # 37 = 2 * 16 + 5: a padded, masked last batch
    model, opt = _model_and_opt()
    rec = _Recorder()

    def metric_fn(batch):
        bx, by = batch
        err = tf.square(model(bx) - by)[:, 0]
        return {"loss": err, "abs": tf.sqrt(err)}

    eval_fn = loop.make_eval_fn(metric_fn, (xv, yv), batch_size=16, jit="off")
    hist = loop.fit(_step_fn(model, opt), (x, y), batch_size=20,
                    objects={"model": model, "optimizer": opt}, eval_fn=eval_fn, epochs=3,
                    workdir=str(tmp_path), callbacks=[rec], progress=False)
    # Train means are the means of the per-step values of the epoch.
    per_step = np.array([logs["loss"] for _, logs in rec.batches]).reshape(3, 5)
    np.testing.assert_allclose(hist.history["loss"], per_step.mean(1), rtol=1e-12)
    # The last epoch's val metrics are exact means over all 37 examples.
    err = np.square(xv @ model.kernel.numpy() + model.bias.numpy() - yv)[:, 0]
    np.testing.assert_allclose(hist.final["val_loss"], err.mean(), rtol=1e-5)
    np.testing.assert_allclose(hist.final["val_abs"], np.sqrt(err).mean(), rtol=1e-5)
    assert hist.epoch == [0, 1, 2] and hist.final["step"] == 15
    with open(tmp_path / "metrics.json") as f:
        m = json.load(f)
    assert m["status"] == "done" and m["step"] == 15
    assert m["final"] == hist.final
    assert m["history"]["val_loss"] == hist.history["val_loss"]
    assert [e["epoch"] for e in m["epochs"]] == [0, 1, 2]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic writes


def test_step_seeds_and_data_order_follow_seed_epoch_step():
    from tfcore.data import batch_indices
    n, bs = 40, 8
    ids = np.arange(n, dtype=np.int64)
    probe = tf.Variable(0.0)
    seen = []

    def step(batch, seed):  # batch = (ids[b],); ints are not NaN-checked
        probe.assign_add(1.0)
        return {"first_id": batch[0][0], "s0": seed[0], "s1": seed[1], "loss": probe + 0.0}

    class Keep(callbacks.Callback):
        def on_batch_end(self, step, logs=None):
            seen.append(logs)

    loop.fit(step, (ids,), batch_size=bs, objects={"probe": probe}, seed=11, epochs=2,
             callbacks=[Keep()], progress=False)
    firsts = [l["first_id"] for l in seen]
    want = [int(batch_indices(n, bs, 11, e)[j][0]) for e in range(2) for j in range(n // bs)]
    assert firsts == want  # tfcore.data's order for (seed, epoch, step)
    for k, logs in enumerate(seen):
        s = loop.step_seed(11, k).numpy()
        assert (logs["s0"], logs["s1"]) == (s[0], s[1])
    assert len({(l["s0"], l["s1"]) for l in seen}) == len(seen)  # one seed per step


@pytest.mark.parametrize("spc,metric", [(1, "loss"), (4, "grad_norm")])
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, spc, metric):
    x, y = _problem(n=64)
    model, opt = _model_and_opt()
    counter = tf.Variable(0, dtype=tf.int64)

    def step(batch, seed):
        bx, by = batch
        counter.assign_add(1)
        bad = tf.cast(counter, tf.float32) >= 7.0  # the 7th step goes bad
        with tf.GradientTape() as tape:
            pred = model(bx)
            if metric == "grad_norm":  # finite loss, infinite gradient
                pred = pred + tf.where(bad, 1e38, 0.0) * model.bias
            loss = tf.reduce_mean(tf.square(pred - by))
            if metric == "loss":
                loss = loss * tf.where(bad, np.nan, 1.0)  # NaN weights too
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        loss_out = loss if metric == "loss" else tf.minimum(loss, 1e30)
        return {"loss": loss_out, "grad_norm": tf.linalg.global_norm(grads)}

    ckpt_cb = callbacks.ModelCheckpoint(every_steps=2)
    with pytest.raises(loop.NonFiniteError) as err:
        loop.fit(step, (x, y), batch_size=8, objects={"model": model, "optimizer": opt},
                 epochs=3, workdir=str(tmp_path), steps_per_call=spc,
                 callbacks=[ckpt_cb], progress=False)
    e = err.value
    assert e.step == 7 and e.metric == metric
    assert "step 7" in str(e) and repr(metric) in str(e)
    saver = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), {"model": model})
    # per-step mode saved at 2, 4, 6; multi-step (calls of 4 steps) at 4 only
    want = 6 if spc == 1 else 4
    assert saver.latest.endswith(f"ckpt-{want}")
    fresh, _ = _model_and_opt()
    checkpointing.restore_objects(str(tmp_path / "checkpoints"), {"model": fresh})
    assert np.all(np.isfinite(fresh.kernel.numpy()))
    live = np.concatenate([model.kernel.numpy().ravel(), model.bias.numpy()])
    assert not np.all(np.isfinite(live))  # the live weights went bad
    with open(tmp_path / "metrics.json") as f:
        m = json.load(f)
    assert m["status"] == "failed" and "NonFiniteError" in m["error"]


def test_progress_logger_plain_and_tty():
    x, y = _problem(n=64)
    for tty in (False, True):
        model, opt = _model_and_opt(opt="sgd")
        buf = io.StringIO()
        loop.fit(_step_fn(model, opt), (x, y), batch_size=8, objects={"m": model, "o": opt},
                 epochs=2, jit="off",
                 callbacks=[callbacks.ProgressLogger(log_every=3, stream=buf, tty=tty,
                                                     refresh_s=0.0)])
        text = buf.getvalue()
        assert "epoch 2/2 done, step 16 (" in text
        if tty:
            assert "\r[" in text and "steps/s" in text and "ETA" in text
        else:
            lines = [l for l in text.splitlines() if l.startswith("step ")]
            # one line per interval of 3 steps: 3, 6, 9, 12, 15
            assert [l.split()[1] for l in lines] == ["3/16", "6/16", "9/16", "12/16", "15/16"]
            assert "steps/s" in lines[-1] and "ETA" in lines[-1] and "loss=" in lines[-1]
            assert "\r" not in text


def test_resolve_jit_and_compile_step():
    assert tcompile.resolve_jit("on") is True and tcompile.resolve_jit("off") is False
    assert tcompile.resolve_jit("auto") is bool(tf.config.list_physical_devices("GPU"))
    # A model's measured CPU preference: auto takes XLA with cpu_xla, on/off win over it.
    assert tcompile.resolve_jit("auto", cpu_xla=True) is True
    assert tcompile.resolve_jit("off", cpu_xla=True) is False
    assert tcompile.resolve_jit("on", cpu_xla=False) is True
    with pytest.raises(ValueError, match="jit must be one of.*'xla'"):
        tcompile.resolve_jit("xla")
    f = tcompile.compile_step(lambda a: a * 2.0, jit="off",
                              input_signature=[tf.TensorSpec([None], tf.float32)])
    assert float(f(tf.constant([2.0]))[0]) == 4.0
    f(tf.constant([1.0, 2.0]))
    assert f.experimental_get_tracing_count() == 1


def test_fit_argument_errors(tmp_path):
    x, y = _problem(n=32)
    model, opt = _model_and_opt(opt="sgd")
    objs = {"model": model, "optimizer": opt}
    step = _step_fn(model, opt)
    with pytest.raises(ValueError, match="give epochs or steps"):
        loop.fit(step, (x, y), batch_size=8, objects=objs, progress=False)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        loop.fit(step, (x, y), batch_size=8, objects=objs, steps=0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        loop.fit(step, (x, y), objects=objs, epochs=1, progress=False)
    with pytest.raises(ValueError, match="steps_per_call"):
        loop.Loop(step, (x, y), batch_size=8, objects=objs, steps_per_call=0)
    with pytest.raises(ValueError, match="reserved name 'step'"):
        loop.Loop(step, (x, y), batch_size=8, objects={"step": model})
    with pytest.raises(ValueError, match="must return a non-empty dict"):
        loop.fit(lambda b, s: b[0][0, 0], (x, y), batch_size=8, objects=objs, steps=1,
                 progress=False)
    with pytest.raises(ValueError, match="must return scalars; 'loss'"):
        loop.fit(lambda b, s: {"loss": b[0]}, (x, y), batch_size=8, objects=objs, steps=1,
                 progress=False)
    wd = str(tmp_path)
    lp = loop.Loop(step, (x, y), batch_size=8, objects=objs, workdir=wd, progress=False)
    lp.fit(steps=2)
    lp.fit(steps=3)  # the same loop object continues without resume=True
    assert int(lp.step.numpy()) == 3
    m2, o2 = _model_and_opt(opt="sgd")
    with pytest.raises(ValueError, match="already holds checkpoints.*resume=True"):
        loop.fit(_step_fn(m2, o2), (x, y), batch_size=8, objects={"model": m2, "optimizer": o2},
                 steps=4, workdir=wd, progress=False)
    with pytest.raises(ValueError, match="seed 5 differs from the seed 0"):
        loop.fit(_step_fn(m2, o2), (x, y), batch_size=8, objects={"model": m2, "optimizer": o2},
                 steps=4, workdir=wd, seed=5, resume=True, progress=False)


def test_module_docstring_example_runs(tmp_path, monkeypatch):
    doc = loop.__doc__
    code = doc[doc.index("    import tensorflow as tf"):]
    code = "\n".join(l[4:] for l in code.splitlines())
    rs = np.random.RandomState(0)
    x_train = rs.randn(256, 12).astype("float32")
    y_train = (x_train[:, 0] > 0).astype("int32") + (x_train[:, 1] > 0).astype("int32")
    ns = {"x_train": x_train, "y_train": y_train, "x_val": x_train[:100],
          "y_val": y_train[:100]}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "loop-docstring", "exec"), ns)  # 10 epochs of 2 steps
    final = ns["history"].final
    assert final["step"] == 20 and {"loss", "accuracy", "grad_norm", "val_loss",
                                    "val_accuracy", "learning_rate"} <= set(final)
    assert os.path.exists(tmp_path / "runs" / "mlp" / "metrics.json")
    assert os.path.exists(tmp_path / "runs" / "mlp" / "best" / "best.json")


def test_zip_data_steps_sources_together():
    from tfcore.data import DeviceDataset, batch_indices
    a = DeviceDataset((np.arange(40, dtype=np.int64),), 8, seed=1)   # 5 steps / epoch
    b = DeviceDataset((np.arange(12, dtype=np.int64),), 4, seed=2)   # 3 steps / epoch
    zipped = loop.ZipData(a, b)
    assert zipped.steps_per_epoch == 5
    got = []

    def step(batch, seed):
        (ids_a,), (ids_b,) = batch
        return {"a": ids_a[0], "b": ids_b[0], "nb": tf.shape(ids_b)[0]}

    class Keep(callbacks.Callback):
        def on_batch_end(self, step, logs=None):
            got.append((logs["a"], logs["b"], logs["nb"]))

    probe = tf.Variable(0)
    for spc in (1, "epoch"):
        got.clear()
        lp = loop.Loop(step, loop.ZipData(a, b), objects={"p": probe}, callbacks=[Keep()],
                       progress=False, steps_per_call=spc)
        lp.fit(epochs=2)
        if spc == 1:
            want_a = [batch_indices(40, 8, 1, e)[j][0] for e in range(2) for j in range(5)]
            want_b = [batch_indices(12, 4, 2, p // 3)[p % 3][0] for p in range(10)]
            assert [g[0] for g in got] == want_a and [g[1] for g in got] == want_b
            assert {g[2] for g in got} == {4}
            per_step = list(got)
        else:  # one call per epoch: its logs are the means of that epoch's steps
            for e in range(2):
                chunk = np.array(per_step[5 * e: 5 * e + 5], np.float64).mean(0)
                np.testing.assert_allclose(got[e][:2], chunk[:2], rtol=1e-12)
    with pytest.raises(ValueError, match="source 1 must have batch"):
        loop.ZipData(a, np.zeros(3))


def _branchy_step(model, optimizer):
    """A step with a Python `if` on a tensor: needs AutoGraph (a tf.cond)."""
    def step(batch, seed):
        x, y = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        if tf.reduce_mean(y) > 0:  # AutoGraph makes this a tf.cond
            branch = tf.constant(1.0)
        else:
            branch = tf.constant(-1.0)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {"loss": loss, "branch": branch}
    return step


@pytest.mark.parametrize("spc", [1, 3])
def test_autograph_off_rejects_python_control_flow_on_tensors(tmp_path, spc):
    x, y = _problem(n=24)
    # With AutoGraph (the default) the `if` works, per batch: check it against NumPy.
    model, opt = _model_and_opt(opt="sgd")
    rec = _Recorder()
    loop.fit(_branchy_step(model, opt), (x, y), batch_size=4,
             objects={"model": model, "o": opt}, epochs=1, jit="off", progress=False,
             callbacks=[rec], seed=3)
    from tfcore.data import batch_indices
    want = [1.0 if y[idx].mean() > 0 else -1.0 for idx in batch_indices(24, 4, 3, 0)]
    assert [logs["branch"] for _, logs in rec.batches] == want
    assert 1.0 in want and -1.0 in want  # both branches taken
    # Without it, the first trace fails with a ValueError naming the option; nothing
    # was trained. (Multi-step mode traces before training starts: no metrics.json.)
    model, opt = _model_and_opt(opt="sgd")
    kernel = model.kernel.numpy().copy()
    with pytest.raises(ValueError, match=r"autograph=True.*tf\.cond") as info:
        loop.fit(_branchy_step(model, opt), (x, y), batch_size=4, objects={"m": model,
                 "o": opt}, epochs=1, jit="off", progress=False, autograph=False,
                 steps_per_call=spc, workdir=str(tmp_path))
    assert isinstance(info.value.__cause__, tf.errors.OperatorNotAllowedInGraphError)
    np.testing.assert_array_equal(model.kernel.numpy(), kernel)
    if spc == 1:
        with open(tmp_path / "metrics.json") as f:
            assert json.load(f)["status"] == "failed"
    else:
        assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("spc", [1, 5])
def test_autograph_off_gives_identical_results(spc):
    x, y = _problem(n=60)
    xv, yv = _problem(n=13, seed=1)
    out = {}
    for autograph in (True, False):
        model, opt = _model_and_opt()

        def metric_fn(batch):
            bx, by = batch
            return {"loss": tf.square(model(bx) - by)[:, 0]}

        hist = loop.fit(_step_fn(model, opt, dropout=0.2), (x, y), batch_size=12,
                        objects={"m": model, "o": opt}, epochs=2, jit="off",
                        progress=False, steps_per_call=spc, autograph=autograph,
                        eval_fn=loop.make_eval_fn(metric_fn, (xv, yv), 8, jit="off",
                                                  autograph=autograph))
        assert hist.loop.autograph is autograph
        out[autograph] = (model.kernel.numpy(), model.bias.numpy(), hist.epochs)
    for a, b in zip(out[True][:2], out[False][:2]):
        np.testing.assert_array_equal(a, b)  # bitwise: the same graph ops
    assert out[True][2] == out[False][2]
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match="autograph must be a bool"):
            loop.Loop(_step_fn(*_model_and_opt()), (x, y), batch_size=12,
                      objects={}, autograph=bad, progress=False)
        with pytest.raises(ValueError, match="autograph must be a bool"):
            loop.make_eval_fn(lambda b: {"v": b[0][:, 0]}, (xv, yv), 4, autograph=bad)


def test_total_steps_is_the_first_limit_reached():
    assert loop.total_steps(3, None, 10) == 30
    assert loop.total_steps(None, 7, 10) == 7
    assert loop.total_steps(3, 25, 10) == 25
    assert loop.total_steps(1, 50, 4) == 4
