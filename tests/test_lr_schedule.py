"""tfcore.training.lr_schedule.scheduled_step: the rate assigned before each update, from the
optimizer's own step count (the schedules' values are tested in
test_autoencoder_model.test_learning_rate_schedules)."""
import numpy as np
import pytest
import tensorflow as tf

from tfcore import optimizers
from tfcore.training import lr_schedule


def _sgd_step(var, opt):
    def step(batch, seed):
        del seed
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(var * batch)
        opt.apply_gradients([(tape.gradient(loss, var), var)])
        return {"loss": loss}
    return step


@pytest.mark.parametrize("compiled", [False, True])
def test_scheduled_step_applies_the_rate_of_each_iteration(compiled):
    var = tf.Variable([0.0])
    opt = optimizers.get("sgd", learning_rate=1.0)
    opt.build([var])
    lr_fn = lr_schedule.make_learning_rate_fn("wsd", 0.1, total_steps=4, decay_fraction=0.5)
    step = lr_schedule.scheduled_step(_sgd_step(var, opt), opt, lr_fn)
    if compiled:
        step = tf.function(step)
    rates = []
    for _ in range(4):
        logs = step(tf.constant([1.0]), tf.constant([0, 0]))
        rates.append(float(logs["learning_rate"]))
        assert set(logs) == {"loss", "learning_rate"}
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.1, 0.05], rtol=1e-6)
    # d loss / d var = 1: var = -(sum of the rates), each applied to its own update.
    np.testing.assert_allclose(var.numpy(), [-0.35], rtol=1e-6)
    assert int(opt.iterations.numpy()) == 4


def test_scheduled_step_needs_a_variable_rate():
    class Opt:
        learning_rate = 0.1
        iterations = tf.Variable(0)

    with pytest.raises(ValueError, match="learning_rate must be a tf.Variable"):
        lr_schedule.scheduled_step(lambda b, s: {}, Opt(), lambda t: 0.1)


def test_learning_rate_schedules():
    t = np.array([0, 100, 250, 500, 750, 999, 1000, 2000])
    cos = lr_schedule.make_learning_rate_fn("cosine", 0.01, 1000)
    np.testing.assert_allclose([float(cos(s)) for s in t],
                               0.01 * 0.5 * (1 + np.cos(np.pi * np.minimum(t / 1000, 1))),
                               rtol=1e-5, atol=1e-9)
    warm = lr_schedule.make_learning_rate_fn("cosine", 0.01, 1000, warmup_steps=100,
                                             final_fraction=0.1)
    assert float(warm(0)) == pytest.approx(0.01 / 100)
    assert float(warm(99)) == pytest.approx(0.01)
    assert float(warm(1000)) == pytest.approx(0.001)
    step = lr_schedule.make_learning_rate_fn("step", 0.01, 1000)
    np.testing.assert_allclose([float(step(s)) for s in (0, 499, 500, 749, 750)],
                               [0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-5)
    wsd = lr_schedule.make_learning_rate_fn("wsd", 0.01, 1000, decay_fraction=0.3)
    np.testing.assert_allclose([float(wsd(s)) for s in (0, 699, 700, 850, 1000, 1500)],
                               [0.01, 0.01, 0.01, 0.005, 0.0, 0.0], rtol=1e-5, atol=1e-9)
    constant = lr_schedule.make_learning_rate_fn("constant", 0.002, 10)
    assert float(constant(7)) == pytest.approx(0.002)
    with pytest.raises(ValueError, match="schedule must be one of.*'linear'"):
        lr_schedule.make_learning_rate_fn("linear", 0.01, 10)
    with pytest.raises(ValueError, match="warmup_steps.*10"):
        lr_schedule.make_learning_rate_fn("cosine", 0.01, 10, warmup_steps=10)
    with pytest.raises(ValueError, match="learning_rate must be a positive number, got 0"):
        lr_schedule.make_learning_rate_fn("cosine", 0, 10)
    with pytest.raises(ValueError, match="decay_fraction must be in .*1.5"):
        lr_schedule.make_learning_rate_fn("wsd", 0.01, 10, decay_fraction=1.5)
