"""tfcore.data pipelines: one reproducible data order (batch_indices, make_dataset,
DeviceDataset, also inside XLA), MNIST preprocessing, balanced subsets, splits."""
import numpy as np
import pytest
import tensorflow as tf

from tfcore.data import (DeviceDataset, balanced_subset, batch_indices, epoch_permutation,
                         load_mnist, make_dataset, mnist_images, train_val_split)

N, BS = 23, 5  # 4 full batches, remainder 3


def as_numpy(batch):
    return tf.nest.map_structure(lambda t: t.numpy(), batch)


# -- the order itself ----------------------------------------------------------------------

def test_batch_indices_deterministic_and_cover_each_example_once():
    a = batch_indices(N, BS, seed=3, epoch=0)
    b = batch_indices(N, BS, seed=3, epoch=0)
    assert len(a) == N // BS and all(len(i) == BS for i in a)
    for i, j in zip(a, b):
        np.testing.assert_array_equal(i, j)
    flat = np.concatenate(a)
    assert len(np.unique(flat)) == len(flat) == (N // BS) * BS  # no repeats, remainder dropped
    full = np.concatenate(batch_indices(N, BS, seed=3, epoch=0, drop_remainder=False))
    assert [len(i) for i in batch_indices(N, BS, 3, 0, drop_remainder=False)] == [5] * 4 + [3]
    np.testing.assert_array_equal(np.sort(full), np.arange(N))
    np.testing.assert_array_equal(full[: len(flat)], flat)  # same order, just not cut


def test_order_differs_across_epochs_and_seeds_but_not_calls():
    perms = {(s, e): tuple(epoch_permutation(1000, s, e)) for s in (0, 1) for e in (0, 1, 2)}
    assert len(set(perms.values())) == 6
    assert tuple(epoch_permutation(1000, 1, 2)) == perms[(1, 2)]
    assert tuple(epoch_permutation(1000, 0, 5, shuffle=False)) == tuple(range(1000))
    # A shuffle, not a near-identity: few fixed points (expected 1 for a random one).
    assert np.sum(np.array(perms[(0, 0)]) == np.arange(1000)) < 10


def test_order_ignores_global_seed():
    tf.random.set_seed(1)
    a = epoch_permutation(50, 7, 1)
    tf.random.set_seed(99)
    np.testing.assert_array_equal(a, epoch_permutation(50, 7, 1))


@pytest.mark.parametrize("bad, match", [
    (dict(seed=1.5), "seed must be an integer, got 1.5"),
    (dict(epoch=-1), "epoch must be a non-negative integer, got -1"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
])
def test_batch_indices_errors(bad, match):
    kwargs = dict(num_examples=N, batch_size=BS, seed=0, epoch=0)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        batch_indices(**kwargs)


# -- make_dataset ----------------------------------------------------------------------------

def _arrays():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(N, 3, 2)).astype(np.float32), np.arange(N, dtype=np.int32))


def test_make_dataset_matches_batch_indices_over_epochs():
    x, y = _arrays()
    ds = make_dataset((x, y), BS, seed=4, repeat=True)
    assert ds.element_spec[0].shape.as_list() == [BS, 3, 2]  # static batch dimension
    assert ds.element_spec[1].shape.as_list() == [BS]
    got = [as_numpy(b) for b in ds.take(3 * (N // BS))]
    expected = [i for e in range(3) for i in batch_indices(N, BS, seed=4, epoch=e)]
    for (xb, yb), idx in zip(got, expected):
        np.testing.assert_array_equal(yb, idx)
        np.testing.assert_array_equal(xb, x[idx])
    # Iterating again gives the same sequence (deterministic given seed).
    again = [as_numpy(b)[1] for b in ds.take(len(got))]
    np.testing.assert_array_equal(np.stack(again), np.stack([g[1] for g in got]))


def test_make_dataset_one_epoch_remainder_and_no_shuffle():
    x, y = _arrays()
    kept = [as_numpy(b) for b in make_dataset((x, y), BS, seed=1, drop_remainder=False)]
    assert [len(b[1]) for b in kept] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.sort(np.concatenate([b[1] for b in kept])), y)
    ds = make_dataset((x, y), BS, seed=1, drop_remainder=False)
    assert ds.element_spec[1].shape.as_list() == [None]
    plain = [as_numpy(b)[1] for b in make_dataset((x, y), BS, shuffle=False, prefetch=False)]
    np.testing.assert_array_equal(np.concatenate(plain), np.arange(20))


def test_make_dataset_resume_and_structures():
    x, y = _arrays()
    resumed = make_dataset((x, y), BS, seed=2, repeat=True, start_epoch=1).skip(2)
    first = as_numpy(next(iter(resumed)))
    np.testing.assert_array_equal(first[1], batch_indices(N, BS, 2, epoch=1)[2])
    single = next(iter(make_dataset(y, BS, seed=2)))
    np.testing.assert_array_equal(single, batch_indices(N, BS, 2, 0)[0])
    d = next(iter(make_dataset({"image": x, "label": y}, BS, seed=2)))
    assert set(d) == {"image", "label"}
    np.testing.assert_array_equal(d["image"], x[d["label"].numpy()])
    listed = next(iter(make_dataset([x, y], BS, seed=2)))  # a list comes out as a tuple
    assert isinstance(listed, tuple) and listed[0].shape == (BS, 3, 2)
    np.testing.assert_array_equal(listed[1], batch_indices(N, BS, 2, 0)[0])


@pytest.mark.parametrize("arrays, kwargs, match", [
    ((np.zeros(4), np.zeros(5)), {}, r"share a non-zero first dimension.*\(4,\), \(5,\)"),
    ((np.zeros(4),), dict(batch_size=-2), "batch_size must be a positive integer, got -2"),
    ((np.zeros(4),), dict(seed="0"), "seed must be an integer, got '0'"),
])
def test_make_dataset_errors(arrays, kwargs, match):
    kw = dict(batch_size=2)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_dataset(arrays, **kw)


# -- DeviceDataset ----------------------------------------------------------------------------

def test_device_dataset_matches_batch_indices_eager():
    x, y = _arrays()
    ds = DeviceDataset((x, y), BS, seed=5)
    assert ds.steps_per_epoch == N // BS and ds.num_examples == N
    assert ds.element_spec[0] == tf.TensorSpec([BS, 3, 2], tf.float32)
    for epoch in (0, 3):
        for step, idx in enumerate(batch_indices(N, BS, 5, epoch)):
            xb, yb = as_numpy(ds.batch(epoch, step))
            np.testing.assert_array_equal(yb, idx)
            np.testing.assert_array_equal(xb, x[idx])


@pytest.mark.parametrize("jit", [False, True])
def test_device_dataset_inside_compiled_epoch_loop(jit):
    x, y = _arrays()
    ds = DeviceDataset((x, y), BS, seed=6)

    @tf.function(jit_compile=jit)
    def run_epoch(epoch):
        perm = ds.permutation(epoch)
        seen = tf.TensorArray(tf.int32, size=ds.steps_per_epoch)
        total = tf.constant(0.0)
        for step in tf.range(ds.steps_per_epoch):
            xb, yb = ds.gather(perm, step)
            assert xb.shape == (BS, 3, 2) and yb.shape == (BS,)  # static inside the graph
            seen = seen.write(step, yb)
            total += tf.reduce_sum(xb)
        return seen.stack(), total

    @tf.function(jit_compile=jit)
    def one_batch(epoch, step):
        return ds.batch(epoch, step)

    for epoch in (0, 1):
        ids, total = run_epoch(tf.constant(epoch))
        expected = np.stack(batch_indices(N, BS, 6, epoch))
        np.testing.assert_array_equal(ids.numpy(), expected)
        np.testing.assert_allclose(total.numpy(), x[expected].sum(), rtol=1e-5)
        xb, yb = one_batch(tf.constant(epoch), tf.constant(2))
        np.testing.assert_array_equal(yb.numpy(), expected[2])
        np.testing.assert_array_equal(xb.numpy(), x[expected[2]])


def test_device_dataset_gather_under_xla_compiles_once():
    """A jit-compiled step whose batch index comes from a variable must not recompile
    per step (a tf.slice `begin` is a compile-time constant under XLA: each new step
    value recompiled the caller, ~100x the call's cost). Self-calibrating: ten calls
    at ten different steps must take less time than the first call's compilation."""
    import time
    x = np.arange(6400 * 64, dtype=np.float32).reshape(6400, 64)
    ds = DeviceDataset(x, 64, seed=0)
    perm = tf.Variable(ds.permutation(0))
    step = tf.Variable(0)

    @tf.function(jit_compile=True)
    def next_batch():
        xb = ds.gather(perm, step)
        step.assign_add(1)
        return tf.reduce_sum(xb * xb)

    t0 = time.perf_counter()
    next_batch().numpy()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        next_batch().numpy()
    assert time.perf_counter() - t0 < first, "the gather recompiles on every step"
    xb = ds.gather(perm, 3)
    np.testing.assert_array_equal(as_numpy(xb), x[ds.permutation(0).numpy()[192:256]])


def test_device_dataset_errors():
    x, y = _arrays()
    with pytest.raises(ValueError, match="batch_size must be at most the number of examples "
                                         "23, got 24"):
        DeviceDataset((x, y), 24)
    ds = DeviceDataset(y, BS)
    with pytest.raises(ValueError, match=r"step must be in \[0, 4\), got 4"):
        ds.batch(0, 4)
    with pytest.raises(ValueError, match="epoch must be a non-negative integer, got -1"):
        ds.batch(-1, 0)


# -- preprocessing ---------------------------------------------------------------------------

def test_mnist_images_scales_and_channel():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    unit = mnist_images(x)
    assert unit.shape == (3, 28, 28, 1) and unit.dtype == np.float32
    np.testing.assert_allclose(unit[..., 0], x / 255.0, atol=1e-7)
    tanh = mnist_images(x, scale="tanh", add_channel=False, dtype=tf.float64)
    assert tanh.shape == (3, 28, 28) and tanh.dtype == np.float64
    np.testing.assert_allclose(tanh, x / 127.5 - 1.0, atol=1e-12)
    assert mnist_images(np.array([[[0, 255]]], np.uint8), scale="tanh").ravel().tolist() == [-1, 1]


@pytest.mark.parametrize("scale, background", [("unit", 0.0), ("tanh", -1.0)])
def test_mnist_images_pad_to(scale, background):
    x = np.full((2, 28, 28), 200, np.uint8)
    padded = mnist_images(x, scale=scale, pad_to=32)
    assert padded.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], mnist_images(x, scale=scale))
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(padded[:, border] == background)
    odd = mnist_images(x, pad_to=(31, 30))
    assert odd.shape == (2, 31, 30, 1)
    # 3 extra rows: 1 on top, 2 at the bottom; 2 extra columns: 1 each side.
    assert odd[0, 0, 5, 0] == 0 and odd[0, 1, 5, 0] > 0 and odd[0, 29, 5, 0] == 0
    assert odd[0, 5, 0, 0] == 0 and odd[0, 5, 1, 0] > 0 and odd[0, 5, 28, 0] > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale="minmax"), "scale must be 'unit' or 'tanh', got 'minmax'"),
    (dict(pad_to=20), r"pad_to must be an int or \(height, width\) at least the image size "
                      r"\(28, 28\), got \(20, 20\)"),
    (dict(dtype=tf.int32), "dtype must be a floating dtype"),
])
def test_mnist_images_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mnist_images(np.zeros((1, 28, 28), np.uint8), **kwargs)


def test_mnist_images_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"x must be \[N, H, W\].*got shape \(28, 28\)"):
        mnist_images(np.zeros((28, 28), np.uint8))


# -- subsets ------------------------------------------------------------------------------------

def test_balanced_subset():
    y = np.repeat(np.arange(10), 30)[::-1].copy()
    x = np.zeros((len(y), 2))
    idx = balanced_subset(x, y, 100, seed=0)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == 100
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx], minlength=10).tolist() == [10] * 10
    np.testing.assert_array_equal(idx, balanced_subset(x, y, 100, seed=0))
    assert not np.array_equal(idx, balanced_subset(x, y, 100, seed=1))
    with pytest.raises(ValueError, match="num_labeled must be divisible by the number of "
                                         "classes 10, got 105"):
        balanced_subset(x, y, 105, seed=0)
    with pytest.raises(ValueError, match="needs 31 examples of class 0, but only 30"):
        balanced_subset(x, y, 310, seed=0)
    with pytest.raises(ValueError, match="x has 3 examples but y has 300"):
        balanced_subset(x[:3], y, 10, seed=0)


def test_balanced_subset_real_mnist(mnist_dir):
    (_, y), _ = load_mnist(mnist_dir)
    idx = balanced_subset(y, y, 100, seed=1)
    assert np.bincount(y[idx], minlength=10).tolist() == [10] * 10


def test_train_val_split():
    x, y = np.arange(50) * 10, np.arange(50)
    (xt, yt), (xv, yv) = train_val_split(x, y, 10, seed=0)
    assert len(xv) == 10 and len(xt) == 40
    np.testing.assert_array_equal(np.sort(np.concatenate([yt, yv])), y)  # disjoint, complete
    np.testing.assert_array_equal(xt, yt * 10)  # pairs kept together
    assert np.all(np.diff(yt) > 0) and np.all(np.diff(yv) > 0)  # original order kept
    (_, yt2), (_, yv2) = train_val_split(x, y, 10, seed=0)
    np.testing.assert_array_equal(yv, yv2)
    (_, _), (_, yv3) = train_val_split(x, y, 10, seed=1)
    assert not np.array_equal(yv, yv3)
    (_, _), (_, yf) = train_val_split(x, y, 0.2, seed=0)
    assert len(yf) == 10
    for bad, match in ((0, "val_size must leave both parts non-empty"),
                       (50, "val_size must leave both parts non-empty"),
                       (1.5, r"val_size as a fraction must be in \(0, 1\), got 1.5"),
                       ("10", "val_size must be an int or a float fraction, got '10'")):
        with pytest.raises(ValueError, match=match):
            train_val_split(x, y, bad, seed=0)
