"""tfcore.distribute + the loop under tf.distribute.

Two logical CPU devices must be configured before TensorFlow initialises its devices,
so the strategy runs happen in ONE subprocess: a MirroredStrategy over 2 replicas
must match a single-device run on the same global batch (per-step and whole-epoch
modes), sync_moments must give the global-batch moments, and a single-worker
MultiWorkerMirroredStrategy must run the same loop. The in-process tests check the
one-replica identities and the errors.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfcore.training import distribute

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

SCRIPT = textwrap.dedent('''
    import json
    from tfcore.training import distribute
    distribute.use_logical_cpus(2)              # before TF touches its devices
    import numpy as np
    import tensorflow as tf
    import tfcore
    from tfcore.training import loop

    multi_worker = distribute.get_strategy("multi_worker")  # at startup (no TF_CONFIG)
    mirrored = distribute.get_strategy("mirrored")
    default = distribute.get_strategy("default")
    out = {"replicas": [distribute.num_replicas(s) for s in (default, mirrored, multi_worker)]}

    rs = np.random.RandomState(0)
    x = rs.randn(48, 5).astype("float32")
    y = (x @ rs.randn(5, 2) + 0.1).astype("float32")
    k0 = (rs.randn(5, 2) * 0.1).astype("float32")

    def run(strategy, spc):
        with distribute.scope(strategy):
            model = tfcore.Dense(2)
            model(tf.zeros([1, 5]))
            model.kernel.assign(k0)
            opt = tfcore.optimizers.get("adam", learning_rate=0.05)
            opt.build(model.trainable_variables)

        def step(batch, seed):
            bx, by = batch
            with tf.GradientTape() as tape:
                per_example = tf.reduce_mean(tf.square(model(bx) - by), axis=-1)
                loss = distribute.average_loss(per_example)   # / GLOBAL batch
            grads = distribute.gradients(tape, loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return {"loss": tf.reduce_mean(per_example),
                    "local_batch": tf.cast(tf.shape(bx)[0], tf.float32)}

        hist = loop.fit(step, (x, y), batch_size=16, objects={"model": model, "opt": opt},
                        epochs=3, strategy=strategy, steps_per_call=spc, progress=False,
                        jit="off")
        return {"kernel": model.kernel.numpy().tolist(), "bias": model.bias.numpy().tolist(),
                "loss": hist.history["loss"], "local_batch": hist.history["local_batch"],
                "iterations": int(opt.iterations.numpy())}

    out["single"] = run(default, 1)
    out["mirrored"] = run(mirrored, 1)
    out["mirrored_epoch"] = run(mirrored, "epoch")
    out["multi_worker"] = run(multi_worker, 1)

    @tf.function
    def moments():
        def fn(b):
            return distribute.sync_moments(distribute.replica_batch(b), [0])
        m, v = mirrored.run(fn, args=(tf.constant(x[:16]),))
        return mirrored.experimental_local_results(m), mirrored.experimental_local_results(v)
    m, v = moments()
    out["sync_mean"] = [t.numpy().tolist() for t in m]
    out["sync_var"] = [t.numpy().tolist() for t in v]
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def strategy_runs(tmp_path_factory):
    script = tmp_path_factory.mktemp("dist") / "dist.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_mirrored_two_replicas_matches_single_device(strategy_runs):
    r = strategy_runs
    assert r["replicas"] == [1, 2, 1]
    single = r["single"]
    assert single["local_batch"] == [16.0] * 3
    for key in ("mirrored", "mirrored_epoch"):
        run = r[key]
        assert run["local_batch"] == [8.0] * 3          # each replica got half the batch
        assert run["iterations"] == single["iterations"] == 9
        # same global-batch gradients; only the float summation order differs
        np.testing.assert_allclose(run["kernel"], single["kernel"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["bias"], single["bias"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["loss"], single["loss"], rtol=1e-5)
    # the trained weights moved far from the start: the comparison is not vacuous
    assert np.abs(np.array(single["kernel"])).max() > 0.3


def test_multi_worker_single_worker_runs_the_same_loop(strategy_runs):
    run, single = strategy_runs["multi_worker"], strategy_runs["single"]
    np.testing.assert_allclose(run["kernel"], single["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run["loss"], single["loss"], rtol=1e-5)


def test_sync_moments_are_global_batch_moments(strategy_runs):
    rs = np.random.RandomState(0)
    x = rs.randn(48, 5).astype("float32")[:16]
    for mean, var in zip(strategy_runs["sync_mean"], strategy_runs["sync_var"]):
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, x.var(0), rtol=1e-4, atol=1e-6)


def test_one_replica_helpers_are_identities():
    grads = [tf.constant([1.0, 2.0]), None]
    assert distribute.all_reduce_gradients(grads)[1] is None
    np.testing.assert_array_equal(distribute.all_reduce_gradients(grads)[0], [1.0, 2.0])
    per_example = tf.constant([1.0, 2.0, 6.0])
    assert float(distribute.average_loss(per_example)) == 3.0
    assert float(distribute.average_loss(per_example, global_batch_size=6)) == 1.5
    batch = (tf.ones([4, 2]), tf.zeros([4]))
    assert distribute.replica_batch(batch) is batch
    seed = tf.constant([1, 2], tf.int64)
    assert distribute.replica_seed(seed) is seed
    m, v = distribute.sync_moments(tf.constant([[1.0], [3.0]]), [0])
    assert float(m[0]) == 2.0 and float(v[0]) == 1.0
    assert distribute.is_chief() and distribute.num_replicas() == 1
    assert distribute.worker_dir("/tmp/w") == "/tmp/w"


def test_strategy_errors():
    with pytest.raises(ValueError, match="strategy must be one of default, mirrored, "
                                         "multi_worker, got 'tpu'"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        distribute.use_logical_cpus(0)
    tf.constant(1.0)  # devices are initialised in this process by now
    with pytest.raises(RuntimeError, match="before TensorFlow initialises its devices"):
        distribute.use_logical_cpus(2)
