"""tfcore.lr_schedule.scheduled_step: the rate assigned before each update, from the
optimizer's own step count (the schedules' values are tested in
test_autoencoder_model.test_learning_rate_schedules)."""
import numpy as np
import pytest
import tensorflow as tf

from tfcore import lr_schedule, optimizers


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
