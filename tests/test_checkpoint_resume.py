"""Faults: resume exactness (in-process, and in a subprocess with --deterministic),
a process SIGKILLed while saving, torn checkpoints, atomic metrics.json.

Subprocesses (TF import ~5 s each) are two: the deterministic split run and the
kill-during-save run.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tfcore.training import checkpointing, loop, metrics_io

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Shared by the test process and the subprocesses: deterministic data, model init
# from NumPy (not TF's stateful RNG, whose op seeds depend on creation order).
COMMON = textwrap.dedent('''
    import numpy as np
    import tensorflow as tf
    import tfcore
    from tfcore.training import callbacks, loop

    def make_data(n=60, d=5):
        rs = np.random.RandomState(0)
        x = rs.randn(n, d).astype("float32")
        y = (x @ rs.randn(d, 1) + 0.1).astype("float32")
        return x, y

    def make_model(d=5, extra=None):
        model = tfcore.Dense(1)
        model(tf.zeros([1, d]))
        rs = np.random.RandomState(1)
        model.kernel.assign(rs.randn(d, 1).astype("float32") * 0.1)
        opt = tfcore.optimizers.get("adam", learning_rate=0.02)
        opt.build(model.trainable_variables)
        return model, opt

    def make_step(model, opt, rate=0.25):
        def step(batch, seed):
            x, y = batch
            x = tf.nn.experimental.stateless_dropout(x, rate, seed=seed)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return {"loss": loss}
        return step
''')
exec(COMMON)  # make_data, make_model, make_step in this module too


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _state(model, opt):
    return [v.numpy().copy() for v in list(model.trainable_variables) + list(opt.variables)]


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_resume_is_bitwise_exact_in_process(tmp_path):
    x, y = make_data()  # 60 examples, batch 8: 7 steps per epoch
    # A: 17 steps in one run.
    ma, oa = make_model()
    ha = loop.fit(make_step(ma, oa), (x, y), batch_size=8, objects={"model": ma, "optimizer": oa},
                  steps=17, seed=4, workdir=str(tmp_path / "a"), progress=False, jit="off")
    # B: 9 steps (stops inside epoch 1), then a NEW process-like set of objects resumes
    # to 17 in multi-step mode (the two modes give identical updates).
    mb, ob = make_model()
    loop.fit(make_step(mb, ob), (x, y), batch_size=8, objects={"model": mb, "optimizer": ob},
             steps=9, seed=4, workdir=str(tmp_path / "b"), progress=False, jit="off")
    mc, oc = make_model()
    mc.kernel.assign(tf.ones_like(mc.kernel))  # must be overwritten by the restore
    lc = loop.Loop(make_step(mc, oc), (x, y), batch_size=8, objects={"model": mc, "optimizer": oc},
                   seed=4, workdir=str(tmp_path / "b"), progress=False, jit="off",
                   steps_per_call="epoch")
    hc = lc.fit(steps=17, resume=True)
    assert int(lc.step.numpy()) == 17 and int(oc.iterations.numpy()) == 17
    _assert_bitwise(_state(mc, oc), _state(ma, oa))
    # History: epoch 0 (before the stop) is read back from metrics.json; epoch 2 was
    # fully run after the resume and matches the uninterrupted run.
    assert hc.epoch == [0, 1, 2]
    assert hc.history["loss"][0] == ha.history["loss"][0]
    np.testing.assert_allclose(hc.history["loss"][2], ha.history["loss"][2], rtol=1e-6)
    m = metrics_io.read_metrics(str(tmp_path / "b"))
    assert m["status"] == "done" and m["step"] == 17 and len(m["epochs"]) == 3


DETERMINISTIC_SCRIPT = COMMON + textwrap.dedent('''
    import json, sys
    from tfcore.training import run as run_layer
    run_layer.apply_determinism(7, deterministic=True)
    wd = sys.argv[1]
    x = np.random.RandomState(2).rand(48, 8, 8, 1).astype("float32")
    y = np.random.RandomState(3).randint(0, 3, size=48).astype("int32")

    def conv_model():
        m = tfcore.Sequential([tfcore.Conv2D(4, 3, activation="relu"), tfcore.Flatten(),
                               tfcore.Dropout(0.3), tfcore.Dense(3)])
        m(tf.zeros([1, 8, 8, 1]))
        rs = np.random.RandomState(5)
        for v in m.trainable_variables:
            v.assign(rs.randn(*v.shape).astype("float32") * 0.2)
        o = tfcore.optimizers.get("adam", learning_rate=0.01)
        o.build(m.trainable_variables)
        return m, o

    def step_for(m, o):
        def step(batch, seed):
            bx, by = batch
            with tf.GradientTape() as tape:
                logits = m(bx, training=True, seed=seed)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(by, logits))
            g = tape.gradient(loss, m.trainable_variables)
            o.apply_gradients(zip(g, m.trainable_variables))
            return {"loss": loss}
        return step

    def run(workdir, steps, resume):
        m, o = conv_model()
        loop.fit(step_for(m, o), (x, y), batch_size=12, objects={"model": m, "optimizer": o},
                 steps=steps, resume=resume, progress=False, seed=7, jit="auto",
                 workdir=workdir)
        return [v.numpy() for v in list(m.trainable_variables) + list(o.variables)]

    full = run(wd + "/full", 10, False)
    run(wd + "/split", 5, False)
    split = run(wd + "/split", 10, True)
    same = all(np.array_equal(a, b) for a, b in zip(full, split))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(full, split))
    print(json.dumps({"bitwise": same, "max_abs_diff": diff, "n": len(full)}))
''')


def test_deterministic_split_run_is_bitwise_identical_subprocess(tmp_path):
    script = tmp_path / "det.py"
    script.write_text(DETERMINISTIC_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bitwise"], res
    assert res["n"] >= 6  # conv kernel+bias, dense kernel+bias, optimizer state


KILL_SCRIPT = COMMON + textwrap.dedent('''
    import os, random, signal, sys, threading, time
    wd, N, target, max_delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    x, y = make_data()
    model, opt = make_model()
    big = tf.Variable(tf.zeros([N]))  # makes every save take a while
    started = [0]

    class Before(callbacks.Callback):  # runs before ModelCheckpoint saves ckpt-<step>
        def on_batch_end(self, step, logs=None):
            big.assign(tf.fill([N], float(step)))  # ckpt-k holds big == k everywhere
            started[0] = step

    def killer():
        # SIGKILL ourselves at a random moment after TensorFlow started writing the
        # shards of ckpt-<k> (its "<prefix>_temp" dir exists until the merge), k >= target.
        # A fast disk may finish a save inside the random delay: then try the next
        # checkpoint with half the delay, so the kill always lands mid-write.
        delay, k = max_delay, target
        for _ in range(40):
            tmp = os.path.join(wd, "checkpoints", f"ckpt-{k}_temp")
            while not os.path.exists(tmp) and started[0] <= k + 1:
                time.sleep(0.0002)
            time.sleep(random.uniform(0.0, delay))
            if os.path.exists(tmp):
                print("killing", k, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            delay /= 2
            k = max(k + 1, started[0] + 1)  # the next save that has not begun
        print("never caught a save in progress", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()
    loop.fit(make_step(model, opt), (x, y), batch_size=8, seed=4, steps=10 ** 6,
             objects={"model": model, "optimizer": opt, "big": big}, workdir=wd,
             progress=False, jit="off",
             callbacks=[Before(), callbacks.ModelCheckpoint(every_epochs=None, every_steps=1,
                                                            max_to_keep=2)])
''')


def test_sigkill_during_save_leaves_a_restorable_checkpoint(tmp_path):
    n_big, target = 4_000_000, 4
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    wd = tmp_path / "run"
    out = subprocess.run([sys.executable, str(script), str(wd), str(n_big), str(target),
                          "0.02"], env=_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    # it died while ckpt-<target> was being written
    assert out.stdout.startswith("killing "), out.stdout
    target = int(out.stdout.split()[1])
    leftovers = sorted(os.listdir(wd / "checkpoints"))

    # Restore into fresh objects: the newest COMPLETE checkpoint wins.
    model, opt = make_model()
    big = tf.Variable(tf.zeros([n_big]))
    lp = loop.Loop(make_step(model, opt), make_data(), batch_size=8, seed=4,
                   objects={"model": model, "optimizer": opt, "big": big},
                   workdir=str(wd), progress=False, jit="off")
    path = lp.checkpointer.restore_latest()
    step = int(lp.step.numpy())
    complete = f"ckpt-{target}.index" in leftovers
    assert step == (target if complete else target - 1), leftovers
    assert path.endswith(f"ckpt-{step}")
    np.testing.assert_array_equal(big.numpy(), np.full([n_big], float(step), np.float32))
    assert int(opt.iterations.numpy()) == step

    # ... and training continues exactly as an uninterrupted run.
    lp.fit(steps=step + 3, resume=True)
    ref_model, ref_opt = make_model()
    loop.fit(make_step(ref_model, ref_opt), make_data(), batch_size=8, seed=4,
             objects={"model": ref_model, "optimizer": ref_opt}, steps=step + 3,
             progress=False, jit="off")
    _assert_bitwise(_state(model, opt), _state(ref_model, ref_opt))


def test_torn_newest_checkpoint_is_skipped(tmp_path):
    v = tf.Variable([0.0, 0.0])
    saver = checkpointing.Checkpointer(str(tmp_path), {"v": v}, max_to_keep=5)
    for s in (1, 2, 3):
        v.assign([float(s), -float(s)])
        saver.save(s)
    # ckpt-3: data file truncated (a torn write); ckpt-4: data without its index
    data3 = [p for p in os.listdir(tmp_path) if p.startswith("ckpt-3.data")][0]
    with open(tmp_path / data3, "r+b") as f:
        f.truncate(3)
    (tmp_path / "ckpt-4_temp").mkdir()
    (tmp_path / "ckpt-4.data-00000-of-00001").write_bytes(b"partial")
    v.assign([9.0, 9.0])
    fresh = checkpointing.Checkpointer(str(tmp_path), {"v": v})
    path = fresh.restore_latest()
    assert path.endswith("ckpt-2") and v.numpy().tolist() == [2.0, -2.0]
    # a state file naming a deleted checkpoint (killed between sweep steps) is survived
    for p in os.listdir(tmp_path):
        if p.startswith("ckpt-2."):
            os.remove(tmp_path / p)
    v.assign([9.0, 9.0])
    assert checkpointing.Checkpointer(str(tmp_path), {"v": v}).restore_latest().endswith("ckpt-1")
    assert v.numpy().tolist() == [1.0, -1.0]


def test_checkpoint_holds_step_seed_rng_and_objects(tmp_path):
    x, y = make_data()
    model, opt = make_model()
    lp = loop.Loop(make_step(model, opt), (x, y), batch_size=8, seed=9,
                   objects={"model": model, "optimizer": opt}, workdir=str(tmp_path),
                   progress=False, jit="off")
    lp.fit(steps=3)
    draw = lp.rng.uniform([3]).numpy()  # advances the generator after the save
    keys = set(tf.train.load_checkpoint(lp.checkpointer.latest).get_variable_to_shape_map())
    for k in ("step/.ATTRIBUTES/VARIABLE_VALUE", "seed/.ATTRIBUTES/VARIABLE_VALUE",
              "rng/_state_var/.ATTRIBUTES/VARIABLE_VALUE",
              "model/kernel/.ATTRIBUTES/VARIABLE_VALUE"):
        assert k in keys, sorted(keys)
    slots = [k for k in keys if k.startswith("optimizer/_optimizer_variables/")]
    assert len(slots) == 4  # Adam's m and v for kernel and bias
    m2, o2 = make_model()
    l2 = loop.Loop(make_step(m2, o2), (x, y), batch_size=8, seed=9,
                   objects={"model": m2, "optimizer": o2}, workdir=str(tmp_path),
                   progress=False)
    l2.checkpointer.restore_latest()
    assert int(l2.step.numpy()) == 3
    np.testing.assert_array_equal(l2.rng.uniform([3]).numpy(), draw)  # RNG state restored


def test_metrics_io_atomic_and_strict_json(tmp_path):
    path = tmp_path / "m.json"
    metrics_io.atomic_write_json(str(path), {"a": np.float32(1.5), "b": float("nan"),
                                             "c": tf.constant(2), "d": [np.int64(3)]})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None, "c": 2, "d": [3]}

    class Boom:
        pass

    with pytest.raises(TypeError):
        metrics_io.atomic_write_json(str(path), {"x": Boom()})
    assert json.loads(path.read_text())["a"] == 1.5  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["m.json"]  # no temp file left behind


def test_a_checkpoint_from_before_the_run_state_resumes(tmp_path):
    """Checkpoints of earlier tfcore versions held no run state: they restore (every
    other object), and the epochs they finished come from their metrics.json."""
    x, y = make_data(n=32, d=5)
    model, opt = make_model()
    step_v, seed_v = tf.Variable(8, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    old = tf.train.Checkpoint(model=model, optimizer=opt, step=step_v, seed=seed_v,
                              rng=tf.random.Generator.from_seed(0, alg="philox"))
    tf.train.CheckpointManager(old, str(tmp_path / "checkpoints"), 3).save(
        checkpoint_number=8)
    metrics_io.write_metrics(str(tmp_path), {"status": "done", "epochs": [
        {"epoch": 0, "step": 4, "loss": 1.0}, {"epoch": 1, "step": 8, "loss": 0.5},
        {"epoch": 2, "step": 12, "loss": 0.25}]})  # epoch 2: after the checkpoint
    kernel = model.kernel.numpy()
    model2, opt2 = make_model()
    model2.kernel.assign(tf.zeros_like(model2.kernel))
    lp = loop.Loop(make_step(model2, opt2), (x, y), batch_size=8,
                   objects={"model": model2, "optimizer": opt2},
                   workdir=str(tmp_path), progress=False)
    lp._restore(resume=True)
    np.testing.assert_array_equal(model2.kernel.numpy(), kernel)
    assert int(lp.step.numpy()) == 8 and lp.history.epoch == [0, 1]
    history = lp.fit(epochs=3, resume=True)
    assert history.epoch == [0, 1, 2] and history.epochs[0]["loss"] == 1.0
