"""tfcore.callbacks: EarlyStopping and ReduceLROnPlateau (in fit, and against Keras 3's
callbacks on the same metric sequences), best-only and periodic ModelCheckpoint,
TensorBoard event files, ActivationLogger, argument errors.

The monitored validation metric is controlled: `eval_fn` returns a given sequence,
one value per epoch, so the expected epoch of every decision is known in advance.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfcore
from tfcore.training import callbacks, checkpointing, loop, summaries


class _SGD(tf.Module):
    """Stand-in optimizer with the tfcore interface (learning_rate variable)."""

    def __init__(self, learning_rate=0.05):
        super().__init__()
        self.learning_rate = tf.Variable(learning_rate, trainable=False)

    def apply_gradients(self, grads_and_vars):
        for g, v in grads_and_vars:
            v.assign_sub(self.learning_rate * g)


def _setup(n=40, d=4):
    rs = np.random.RandomState(0)
    x = rs.randn(n, d).astype("float32")
    y = (x.sum(1, keepdims=True) + 0.5).astype("float32")
    model = tfcore.Dense(1)
    model(tf.zeros([1, d]))
    opt = _SGD()

    def step(batch, seed):
        bx, by = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(bx) - by))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return {"loss": loss, "lr": opt.learning_rate + 0.0}

    return x, y, model, opt, step


def _sequence_eval(values, name="loss"):
    """eval_fn returning values[0], values[1], ... on successive calls."""
    calls = []

    def eval_fn():
        calls.append(1)
        return {name: float(values[len(calls) - 1])}

    return eval_fn


class _Snapshots(callbacks.Callback):
    """Records the model weights at each epoch end (before later callbacks)."""

    def __init__(self):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        m = self.loop.objects["model"]
        self.weights.append((m.kernel.numpy().copy(), m.bias.numpy().copy()))


def _fit(step, x, y, model, opt, cbs, epochs, eval_fn=None, workdir=None):
    return loop.fit(step, (x, y), batch_size=8, objects={"model": model, "optimizer": opt},
                    eval_fn=eval_fn, epochs=epochs, callbacks=cbs, workdir=workdir,
                    progress=False, jit="off")


def test_early_stopping_in_fit_stops_at_right_epoch_and_restores_best():
    x, y, model, opt, step = _setup()
    snaps = _Snapshots()
    # best 0.8 at epoch 1; epochs 2, 3 do not improve -> with patience 2, stop after 3
    es = callbacks.EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    hist = _fit(step, x, y, model, opt, [snaps, es], epochs=10,
                eval_fn=_sequence_eval([1.0, 0.8, 0.85, 0.9, 0.1, 0.1]))
    assert hist.epoch == [0, 1, 2, 3] and es.stopped_epoch == 3 and es.best_epoch == 1
    assert hist.status == "stopped_early"
    np.testing.assert_array_equal(model.kernel.numpy(), snaps.weights[1][0])
    np.testing.assert_array_equal(model.bias.numpy(), snaps.weights[1][1])
    assert not np.array_equal(snaps.weights[3][0], snaps.weights[1][0])

    # min_delta: 0.97 and 0.98 are not 0.04 below 1.0 -> stop after epoch 2
    x, y, model, opt, step = _setup()
    es = callbacks.EarlyStopping("val_loss", patience=2, min_delta=0.04)
    hist = _fit(step, x, y, model, opt, [es], epochs=10,
                eval_fn=_sequence_eval([1.0, 0.97, 0.98, 0.5]))
    assert hist.epoch == [0, 1, 2]


class _FakeLoop:
    def __init__(self, optimizer=None):
        self.stop_training = False
        self._opt = optimizer
        self.objects = {}

    def optimizers(self):
        return [self._opt] if self._opt is not None else []

    def model_variables(self):
        return {}


class _KerasModelStub:
    """What Keras's EarlyStopping / ReduceLROnPlateau touch on a model."""

    def __init__(self, lr=1.0):
        self.stop_training = False
        self.optimizer = type("Opt", (), {})()
        self.optimizer.learning_rate = lr


def test_early_stopping_matches_keras():
    import keras
    rs = np.random.RandomState(3)
    for trial in range(24):
        mode = ("min", "max")[trial % 2]
        patience = [0, 1, 3][trial % 3]
        min_delta = [0.0, 0.05][(trial // 3) % 2]
        baseline = [None, 0.5][(trial // 6) % 2]
        values = rs.uniform(0, 1, size=12).round(2)
        ours = callbacks.EarlyStopping("val_loss", min_delta=min_delta, patience=patience,
                                       mode=mode, baseline=baseline)
        ours.set_loop(_FakeLoop())
        ref = keras.callbacks.EarlyStopping("val_loss", min_delta=min_delta,
                                            patience=patience, mode=mode, baseline=baseline)
        stub = _KerasModelStub()
        ref.set_model(stub)
        ours.on_train_begin()
        ref.on_train_begin()
        stop_ours = stop_ref = None
        for epoch, v in enumerate(values):
            ours.on_epoch_end(epoch, {"val_loss": float(v)})
            ref.on_epoch_end(epoch, {"val_loss": float(v)})
            if stop_ours is None and ours.loop.stop_training:
                stop_ours = epoch
            if stop_ref is None and stub.stop_training:
                stop_ref = epoch
            if stop_ours is not None and stop_ref is not None:
                break
        assert stop_ours == stop_ref, (trial, values, mode, patience, min_delta, baseline)
        assert ours.best_epoch == ref.best_epoch


def test_reduce_lr_on_plateau_in_fit_without_retrace():
    x, y, model, opt, step = _setup()
    opt.learning_rate.assign(1.0)
    rl = callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_lr=0.2)
    lp = loop.Loop(step, (x, y), batch_size=8, objects={"model": model, "optimizer": opt},
                   eval_fn=_sequence_eval([1.0] * 6), callbacks=[rl], progress=False,
                   jit="off")
    hist = lp.fit(epochs=6)
    # epoch 0 sets the best; each later epoch is a plateau: 1 -> .5 -> .25 -> .2 (floor)
    want = [1.0, 1.0, 0.5, 0.25, 0.2, 0.2]
    np.testing.assert_allclose(hist.history["learning_rate"], want, rtol=1e-6)
    # the compiled step read the new rate every epoch, and was traced once
    np.testing.assert_allclose(hist.history["lr"], want, rtol=1e-6)
    assert lp.train_function.experimental_get_tracing_count() == 1
    assert abs(float(opt.learning_rate.numpy()) - 0.2) < 1e-7


def test_reduce_lr_on_plateau_matches_keras():
    import keras
    rs = np.random.RandomState(5)
    for trial in range(16):
        kw = dict(factor=[0.5, 0.1][trial % 2], patience=[0, 1, 2][trial % 3],
                  cooldown=[0, 2][(trial // 2) % 2], min_lr=[0.0, 0.01][(trial // 4) % 2],
                  min_delta=[1e-4, 0.1][(trial // 8) % 2], mode=["min", "max"][trial % 2])
        values = rs.uniform(0, 1, size=15).round(2)
        opt = _SGD(1.0)
        ours = callbacks.ReduceLROnPlateau("val_loss", **kw)
        ours.set_loop(_FakeLoop(opt))
        ref = keras.callbacks.ReduceLROnPlateau("val_loss", **kw)
        stub = _KerasModelStub(lr=1.0)
        ref.set_model(stub)
        ours.on_train_begin()
        ref.on_train_begin()
        for epoch, v in enumerate(values):
            ours.on_epoch_end(epoch, {"val_loss": float(v)})
            ref.on_epoch_end(epoch, {"val_loss": float(v)})
            np.testing.assert_allclose(float(opt.learning_rate.numpy()),
                                       float(stub.optimizer.learning_rate), rtol=1e-6,
                                       err_msg=f"trial {trial} epoch {epoch} {kw}")


def test_model_checkpoint_best_only_keeps_the_best(tmp_path):
    x, y, model, opt, step = _setup()
    snaps = _Snapshots()
    best = callbacks.ModelCheckpoint(save_best_only=True, monitor="val_loss")
    _fit(step, x, y, model, opt, [snaps, best], epochs=5, workdir=str(tmp_path),
         eval_fn=_sequence_eval([3.0, 1.0, 2.0, 0.5, 0.7]))
    with open(tmp_path / "best" / "best.json") as f:
        info = json.load(f)
    assert info["epoch"] == 3 and info["value"] == 0.5 and info["step"] == 4 * 5
    fresh = tfcore.Dense(1)
    fresh(tf.zeros([1, 4]))
    path = checkpointing.restore_objects(str(tmp_path / "best"), {"model": fresh})
    assert path.endswith("ckpt-20")
    np.testing.assert_array_equal(fresh.kernel.numpy(), snaps.weights[3][0])
    np.testing.assert_array_equal(fresh.bias.numpy(), snaps.weights[3][1])
    assert len(checkpointing.Checkpointer(str(tmp_path / "best"), {"m": fresh})
               .all_checkpoints()) == 1


def test_model_checkpoint_periodic_every_steps_and_max_to_keep(tmp_path):
    x, y, model, opt, step = _setup()
    ck = callbacks.ModelCheckpoint(every_epochs=None, every_steps=3, max_to_keep=2)
    saved = []

    class Watch(callbacks.Callback):
        def on_batch_end(self, step, logs=None):
            saved.append(ck.saved_step)

    _fit(step, x, y, model, opt, [ck, Watch()], epochs=2, workdir=str(tmp_path))
    assert sorted(set(saved)) == [0, 3, 6, 9]
    kept = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), {"m": model}
                                      ).all_checkpoints()
    assert [os.path.basename(p) for p in kept] == ["ckpt-10", "ckpt-9"]  # +1 at the end


def test_tensorboard_event_files_have_expected_tags(tmp_path):
    x, y, model, opt, step = _setup()
    sample = tf.constant(x[:6])
    labels = [f"ex{i}" for i in range(4)]
    tb = callbacks.TensorBoard(
        log_every=2, activations=lambda: {"dense": model(sample)},
        images=lambda: {"samples": tf.reshape(tf.linspace(0.0, 1.0, 2 * 5 * 3), [2, 5, 3, 1])},
        embeddings=lambda: {"rows": (model.kernel, labels)})
    _fit(step, x, y, model, opt, [tb], epochs=2, workdir=str(tmp_path),
         eval_fn=lambda: {"loss": 0.25, "accuracy": 0.5})
    train = summaries.read_events(str(tmp_path / "train"))
    evals = summaries.read_events(str(tmp_path / "eval"))
    steps_of = lambda ev, tag: [s for t, s, _ in ev if t == tag]
    assert steps_of(train, "loss") == [2, 4, 6, 8, 10]      # every 2 of 10 steps
    assert steps_of(train, "epoch_loss") == [5, 10]           # per epoch, at the step
    assert steps_of(evals, "epoch_loss") == [5, 10]
    assert [v for t, _, v in evals if t == "epoch_accuracy"] == [0.5, 0.5]
    hist = [v for t, s, v in train if t == "weights/model/kernel"]
    assert len(hist) == 2 and hist[0].shape == (30, 3) and hist[0][:, 2].sum() == 4
    np.testing.assert_allclose(hist[-1][:, 2], np.histogram(
        model.kernel.numpy(), bins=hist[-1][:, 0].tolist() + [hist[-1][-1, 1]])[0])
    assert "weights/model/bias" in {t for t, _, _ in train}
    assert [v.shape for t, _, v in train if t == "activations/dense"] == [(30, 3)] * 2
    img = [v for t, _, v in train if t == "samples"][-1]
    assert img[0] == b"3" and img[1] == b"5" and len(img) == 4 and img[2][:4] == b"\x89PNG"
    graph = [v for t, _, v in train if t == "__graph__"]
    assert len(graph) == 1
    ops = {n.op for n in graph[0].node}
    assert len(graph[0].node) > 10 and "MatMul" in ops, ops  # the train step itself
    # projector: config + checkpoint of the embedding + metadata
    config = (tmp_path / "train" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "rows/.ATTRIBUTES/VARIABLE_VALUE"' in config
    assert 'metadata_path: "metadata_rows.tsv"' in config
    reader = tf.train.load_checkpoint(str(tmp_path / "train"))
    np.testing.assert_array_equal(reader.get_tensor("rows/.ATTRIBUTES/VARIABLE_VALUE"),
                                  model.kernel.numpy())
    assert (tmp_path / "train" / "metadata_rows.tsv").read_text().split() == labels


def test_activation_logger_saves_each_epoch(tmp_path):
    x, y, model, opt, step = _setup()
    sample = x[:5]
    al = callbacks.ActivationLogger(lambda s: {"dense": model(s), "relu": tf.nn.relu(model(s))},
                                    sample)
    _fit(step, x, y, model, opt, [al], epochs=3, workdir=str(tmp_path))
    files = sorted(os.listdir(tmp_path / "activations"))
    assert files == ["epoch_0000.npz", "epoch_0001.npz", "epoch_0002.npz"]
    last = np.load(tmp_path / "activations" / files[-1])
    np.testing.assert_allclose(last["dense"], model(tf.constant(sample)).numpy(), rtol=1e-6)
    assert int(last["epoch"]) == 2 and int(last["step"]) == 15
    first = np.load(tmp_path / "activations" / files[0])
    assert first["dense"].shape == (5, 1) and not np.allclose(first["dense"], last["dense"])


def test_callback_argument_errors():
    with pytest.raises(ValueError, match="factor must be a finite number in \\(0, 1\\), got 1.5"):
        callbacks.ReduceLROnPlateau(factor=1.5)
    with pytest.raises(ValueError, match="mode must be one of auto, min, max, got 'up'"):
        callbacks.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience must be a non-negative integer, got -1"):
        callbacks.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="every_steps must be a positive integer"):
        callbacks.ModelCheckpoint(every_steps=0)
    with pytest.raises(ValueError, match="log_every must be a positive integer"):
        callbacks.TensorBoard(log_every=0)
    with pytest.raises(ValueError, match="callbacks must be tfcore.training.callbacks.Callback"):
        x, y, model, opt, step = _setup()
        loop.Loop(step, (x, y), batch_size=8, objects={"model": model},
                  callbacks=[object()])
    x, y, model, opt, step = _setup()
    with pytest.raises(ValueError, match="no optimizer with a learning_rate"):
        loop.fit(step, (x, y), batch_size=8, objects={"model": model}, epochs=1,
                 callbacks=[callbacks.ReduceLROnPlateau()], progress=False)


class _Contributor(callbacks.Callback):
    """A user's callback adding its own keys: per epoch (on_epoch_end's logs) and to
    the final record (on_train_end's logs); it also tries to overwrite 'step'."""

    def on_epoch_end(self, epoch, logs=None):
        kernel = self.loop.objects["model"].kernel.numpy()
        logs["classifier_score"] = float(np.abs(kernel).sum()) + epoch
        logs["step"] = -1  # reserved: the loop's value wins

    def on_train_end(self, logs=None):
        logs["final_eval"] = 0.25 * int(self.loop.step.numpy())
        logs["class_shares"] = [0.5, 0.5]


def test_callback_keys_reach_metrics_json_and_survive_rewrites(tmp_path):
    x, y, _, _, _ = _setup()
    runs = {}
    for name, extra in (("plain", []), ("contrib", [_Contributor()])):
        tf.random.set_seed(5)  # the same initial weights in both runs
        _, _, model, opt, step = _setup()
        snaps = _Snapshots()
        workdir = str(tmp_path / name)
        kw = dict(eval_fn=lambda: {"loss": 1.0}, workdir=workdir)
        hist = _fit(step, x, y, model, opt, [snaps] + extra, epochs=2, **kw)
        # Resume for a third epoch: the rewrites keep the earlier epochs' keys.
        _, _, model, opt, step = _setup()
        hist = loop.fit(step, (x, y), batch_size=8,
                        objects={"model": model, "optimizer": opt}, epochs=3,
                        callbacks=[snaps] + extra, resume=True, progress=False,
                        jit="off", **kw)
        with open(os.path.join(workdir, "metrics.json")) as f:
            runs[name] = (json.load(f), hist, snaps)
    plain, contrib = runs["plain"][0], runs["contrib"][0]
    hist, snaps = runs["contrib"][1:]
    # Per epoch: in every epoch entry (epochs 0-1 written by the first run, then
    # rewritten by the resumed one), in `history`, and in `final` (the last epoch).
    weights = [w for w, _ in snaps.weights]  # epochs 0, 1, then 2 (resumed)
    want = [float(np.abs(w).sum()) + e for e, w in enumerate(weights)]
    assert [e["classifier_score"] for e in contrib["epochs"]] == pytest.approx(want)
    assert contrib["history"]["classifier_score"] == pytest.approx(want)
    assert contrib["final"]["classifier_score"] == pytest.approx(want[-1])
    # At train end: only in `final` (and the History's final), not in the epochs.
    assert contrib["final"]["final_eval"] == 0.25 * 15
    assert contrib["final"]["class_shares"] == [0.5, 0.5]
    assert hist.final == contrib["final"]
    assert not any("final_eval" in e for e in contrib["epochs"])
    assert "final_eval" not in contrib["history"]
    # The loop's own keys and values are unchanged ('step' not overwritten).
    assert [e["step"] for e in contrib["epochs"]] == [5, 10, 15]
    assert contrib["step"] == 15 and contrib["status"] == "done"
    assert set(contrib) == set(plain)
    for e_plain, e_contrib in zip(plain["epochs"], contrib["epochs"]):
        assert {k: v for k, v in e_contrib.items() if k != "classifier_score"} == e_plain
    assert {k: v for k, v in contrib["final"].items()
            if k not in ("classifier_score", "final_eval", "class_shares")} == \
        plain["final"]
    assert plain["final"] == plain["epochs"][-1]


class _FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Tick(callbacks.Callback):
    """Advances the fake clock before every step: 1 s a step, plus `extra[step]`
    (e.g. the first step's tracing)."""

    def __init__(self, clock, extra=None):
        self.clock, self.extra = clock, extra or {}

    def on_batch_begin(self, step, logs=None):
        self.clock.now += 1.0 + self.extra.get(step, 0.0)


class _SlowEpochEnd(callbacks.Callback):
    """Work at the epoch end (after the timer's hook), e.g. pictures: 50 s."""

    def __init__(self, clock):
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += 50.0


def test_epoch_timer_times_training_only_and_skips_the_first_epoch():
    x, y, model, opt, step = _setup()  # 40 examples, batch 8: 5 steps per epoch
    clock = _FakeClock()
    timer = callbacks.EpochTimer(clock=clock)
    assert timer.steady_steps_per_second() is None

    def eval_fn():  # evaluation costs 100 s of the fake clock: excluded
        clock.now += 100.0
        return {"loss": 1.0}

    hist = _fit(step, x, y, model, opt,
                [timer, _Tick(clock, extra={0: 2.0}), _SlowEpochEnd(clock)], epochs=3,
                eval_fn=eval_fn)
    # The first step "traces" for 2 s more; eval and epoch-end work are not counted.
    assert timer.seconds == [7.0, 5.0, 5.0] and timer.steps == [5, 5, 5]
    assert [e["epoch_seconds"] for e in hist.epochs] == [7.0, 5.0, 5.0]
    assert hist.history["epoch_seconds"] == [7.0, 5.0, 5.0]
    # Steady state: the epochs after the first (10 steps in 10 s), not 15 / 17.
    assert timer.steady_steps_per_second() == pytest.approx(1.0)

    # One epoch only: its rate, tracing included; a partial last epoch counts its steps.
    x, y, model, opt, step = _setup()
    one = callbacks.EpochTimer(clock=clock)
    _fit(step, x, y, model, opt, [one, _Tick(clock, extra={0: 2.0})], epochs=1)
    assert one.seconds == [7.0] and one.steady_steps_per_second() == pytest.approx(5 / 7)
    x, y, model, opt, step = _setup()
    part = callbacks.EpochTimer(clock=clock)
    loop.fit(step, (x, y), batch_size=8, objects={"model": model, "optimizer": opt},
             steps=7, callbacks=[part, _Tick(clock, extra={0: 2.0, 5: 1.0})],
             progress=False, jit="off")
    assert part.steps == [5, 2] and part.seconds == [7.0, 3.0]
    assert part.steady_steps_per_second() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="clock must be callable"):
        callbacks.EpochTimer(clock=3.0)


@pytest.mark.parametrize("jit,steps_per_call", [("on", 1), ("off", 5)])
def test_tensorboard_writes_the_train_steps_graph_also_under_xla(tmp_path, jit,
                                                                   steps_per_call):
    """The Graphs tab gets the compiled train step (not an eager fragment), in XLA and
    in multi-step mode too."""
    x, y, model, opt, step = _setup()
    loop.fit(step, (x, y), batch_size=8, objects={"model": model, "optimizer": opt},
             epochs=1, workdir=str(tmp_path), progress=False, jit=jit,
             steps_per_call=steps_per_call,
             callbacks=[callbacks.TensorBoard(log_every=1, histograms=False)])
    graphs = [v for t, _, v in summaries.read_events(str(tmp_path / "train"))
              if t == "__graph__"]
    assert len(graphs) == 1
    nodes = list(graphs[0].node) + [n for f in graphs[0].library.function
                                    for n in f.node_def]
    ops = {n.op for n in nodes}
    assert "MatMul" in ops and len(nodes) > 20, sorted(ops)
