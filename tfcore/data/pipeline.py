"""Input pipelines with a reproducible, resumable data order, and MNIST preprocessing.

One data order everywhere. The order of epoch `k` under seed `s` is the permutation

    perm(N, s, k) = argsort(stateless_uniform([N], seed=[s, k], dtype=int64,
                                              full range, alg='philox'))

(64-bit keys, so ties practically never happen, and `argsort` is stable when they
do; the same on CPU, GPU and under XLA). Batch `j` of epoch `k` is
`perm[j * batch_size : (j + 1) * batch_size]`. Three views of that one order:

* `batch_indices(N, batch_size, seed, epoch)` / `epoch_permutation(...)`: the index
  arrays as NumPy, e.g. to check or replay an order.
* `make_dataset(arrays, batch_size, ...)`: a `tf.data` pipeline (host memory) that
  yields exactly those batches; `start_epoch=k` plus `.skip(j)` resumes at epoch `k`,
  step `j`.
* `DeviceDataset(arrays, batch_size, ...)`: the whole arrays held as tensors on the
  device, `ds.batch(epoch, step)` gathers one batch with static shapes; usable inside
  a compiled `tf.function` (XLA included), e.g. a multi-step epoch loop.

So a run resumed from a checkpoint that stores (epoch, step) sees the same batches as
an uninterrupted run, whichever of the three a trainer uses. Every epoch visits each
example at most once; with `drop_remainder` (the default, for static batch shapes)
the last `N mod batch_size` examples of each epoch's permutation are skipped, a
different set each epoch.

Also here: `mnist_images` (uint8 [N, 28, 28] -> float [N, 28, 28, 1] in [0, 1] or
[-1, 1], optionally padded to 32x32), `balanced_subset` (a class-balanced labeled
subset for semi-supervised training) and `train_val_split`.
"""
from __future__ import annotations

import contextlib
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfcore import checks

_MAX_EPOCHS = 2 ** 62  # "forever" for repeat=True


# -- the data order -----------------------------------------------------------------

def permutation_tensor(num_examples: int, seed, epoch, shuffle: bool = True) -> tf.Tensor:
    """The order of one epoch as a tensor; works eagerly and inside `tf.function`/XLA.

    Args:
      num_examples: N (a Python int).
      seed: integer seed (Python int or scalar integer tensor).
      epoch: epoch number (Python int or scalar integer tensor).
      shuffle: False gives `range(N)` whatever the epoch.

    Returns:
      int32 tensor [N], a permutation of 0..N-1 (see the module doc for the formula).
    """
    if not shuffle:
        return tf.range(num_examples, dtype=tf.int32)
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    keys = tf.random.stateless_uniform([num_examples], seed=pair, minval=None, maxval=None,
                                       dtype=tf.int64, alg="philox")
    return tf.argsort(keys, stable=True)


def epoch_permutation(num_examples: int, seed: int, epoch: int,
                      shuffle: bool = True) -> np.ndarray:
    """The order of epoch `epoch` as a NumPy int64 array [num_examples]."""
    checks.check_int(num_examples, "num_examples", low=1)
    perm = permutation_tensor(num_examples, checks.check_int(seed, "seed"),
                              checks.check_int(epoch, "epoch", low=0), shuffle)
    return perm.numpy().astype(np.int64)


def batch_indices(num_examples: int, batch_size: int, seed: int, epoch: int,
                  drop_remainder: bool = True, shuffle: bool = True) -> List[np.ndarray]:
    """The example indices of every batch of one epoch, in order.

    Args:
      num_examples: N.
      batch_size: examples per batch.
      seed: the data-order seed.
      epoch: the epoch (0-based); each epoch has its own order.
      drop_remainder: drop the last partial batch (default True, as `make_dataset`).
      shuffle: False keeps the stored order.

    Returns:
      A list of int64 arrays, item `j` = the indices of batch `j`: `N // batch_size`
      arrays of length `batch_size`, plus a shorter last one when `drop_remainder`
      is False and `batch_size` does not divide N. Identical to the batches of
      `make_dataset` and `DeviceDataset` with the same seed.
    """
    checks.check_int(batch_size, "batch_size", low=1)
    perm = epoch_permutation(num_examples, seed, epoch, shuffle)
    stop = (num_examples // batch_size) * batch_size if drop_remainder else num_examples
    return [perm[i:i + batch_size] for i in range(0, stop, batch_size)]


# -- tf.data pipeline ---------------------------------------------------------------

def _flatten_arrays(arrays, what: str):
    flat = tf.nest.flatten(arrays)
    if isinstance(arrays, list):  # tf.data would read a list as one stacked tensor
        arrays = tuple(arrays)
    if not flat:
        raise ValueError(f"{what}: arrays must hold at least one array, got {arrays!r}")
    lengths = [int(np.shape(a)[0]) if np.ndim(a) > 0 else None for a in flat]
    if None in lengths or len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(f"{what}: arrays must share a non-zero first dimension, got "
                         f"shapes {[tuple(np.shape(a)) for a in flat]}")
    return arrays, flat, lengths[0]


def make_dataset(arrays: Any, batch_size: int, shuffle: bool = True, seed: int = 0,
                 repeat: bool = False, drop_remainder: bool = True, prefetch: bool = True,
                 start_epoch: int = 0) -> tf.data.Dataset:
    """A `tf.data.Dataset` of batches of `arrays` in the module's reproducible order.

    Each epoch is reshuffled (epoch `k` uses `epoch_permutation(N, seed, k)`), yet the
    whole sequence is fixed by `seed`, independent of TensorFlow's global seed. The
    arrays are kept in host memory and each batch is one `tf.gather`.

    Args:
      arrays: an array or a nest (tuple, list, dict) of arrays with the same first
        dimension N, e.g. `(x, y)`. Elements come out with the same structure (a
        top-level list as a tuple).
      batch_size: examples per batch.
      shuffle: reshuffle every epoch (default True); False keeps the stored order.
      seed: the data-order seed (default 0).
      repeat: False (default) gives one epoch; True repeats epochs forever, each with
        its own order (`start_epoch`, `start_epoch + 1`, ...).
      drop_remainder: True (default) drops the last partial batch of each epoch so
        every batch has the static shape [batch_size, ...] (what compiled/XLA steps
        want); False keeps it (batch dimension then `None`).
      prefetch: add `prefetch(tf.data.AUTOTUNE)` (default True).
      start_epoch: the epoch whose order comes first (default 0). To resume at epoch
        `k`, step `j`: `make_dataset(..., repeat=True, start_epoch=k).skip(j)`.

    Returns:
      The dataset; batch `j` of epoch `k` holds `arrays[batch_indices(...)[j]]`.
    """
    checks.check_int(batch_size, "batch_size", low=1)
    seed = checks.check_int(seed, "seed")
    start_epoch = checks.check_int(start_epoch, "epoch", low=0)
    arrays, flat, n = _flatten_arrays(arrays, "make_dataset")
    with tf.device("/CPU:0"):
        tensors = [tf.convert_to_tensor(a) for a in flat]
    shuffle, drop_remainder = bool(shuffle), bool(drop_remainder)

    def epoch_batches(epoch):
        perm = permutation_tensor(n, seed, epoch, shuffle)
        return tf.data.Dataset.from_tensor_slices(perm).batch(batch_size, drop_remainder)

    def gather(idx):
        return tf.nest.pack_sequence_as(arrays, [tf.gather(t, idx) for t in tensors])

    stop = _MAX_EPOCHS if repeat else start_epoch + 1
    ds = tf.data.Dataset.range(start_epoch, stop).flat_map(epoch_batches)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


# -- in-memory device dataset ----------------------------------------------------------

class DeviceDataset:
    """Whole arrays held as tensors on a device; batch `j` of epoch `k` by `tf.gather`.

    For small datasets such as MNIST that fit in device memory: no host pipeline, and
    the batch lookup is plain TensorFlow, so it can live inside a compiled
    `tf.function` (also with `jit_compile=True`) that runs many steps, e.g.

        ds = DeviceDataset((x, y), batch_size=128, seed=0)

        @tf.function(jit_compile=True)
        def run_epoch(epoch):
            perm = ds.permutation(epoch)          # once per epoch
            for step in tf.range(ds.steps_per_epoch):
                x_b, y_b = ds.gather(perm, step)  # static shapes [128, ...]
                ...

    `ds.batch(epoch, step)` does both in one call but recomputes the permutation (an
    argsort of N keys) every time; prefer `permutation` + `gather` in loops.

    The order is the module's (same batches as `batch_indices` and `make_dataset` with
    the same seed). Batches always have `batch_size` examples: `steps_per_epoch =
    N // batch_size` and the remainder of each epoch's permutation is dropped.

    Attributes:
      num_examples: N.
      batch_size: examples per batch.
      steps_per_epoch: N // batch_size.
      seed: the data-order seed.
      shuffle: whether epochs are shuffled.
      tensors: the stored tensors, in the structure of `arrays`.
    """

    def __init__(self, arrays: Any, batch_size: int, seed: int = 0, shuffle: bool = True,
                 device: Optional[str] = None):
        """Copies `arrays` to the device.

        Args:
          arrays: an array or a nest of arrays with the same first dimension N; store
            them already preprocessed (e.g. float32 images from `mnist_images`, int32
            labels), as batches come out with the stored dtypes.
          batch_size: examples per batch, at most N.
          seed: the data-order seed (default 0).
          shuffle: reshuffle every epoch (default True).
          device: where to hold the tensors, e.g. '/GPU:0'; default TensorFlow's
            placement (the GPU when there is one).
        """
        checks.check_int(batch_size, "batch_size", low=1)
        arrays, flat, n = _flatten_arrays(arrays, "DeviceDataset")
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the number of examples {n}, "
                             f"got {batch_size}")
        self.num_examples = n
        self.batch_size = batch_size
        self.steps_per_epoch = n // batch_size
        self.seed = checks.check_int(seed, "seed")
        self.shuffle = bool(shuffle)
        scope = tf.device(device) if device else contextlib.nullcontext()
        with scope:
            self._flat = [tf.identity(tf.convert_to_tensor(a)) for a in flat]
        self._structure = arrays
        self.tensors = tf.nest.pack_sequence_as(arrays, self._flat)

    @property
    def element_spec(self):
        """`tf.TensorSpec`s of one batch (static shapes), in the arrays' structure."""
        return tf.nest.pack_sequence_as(self._structure, [
            tf.TensorSpec([self.batch_size] + t.shape[1:].as_list(), t.dtype)
            for t in self._flat])

    def permutation(self, epoch) -> tf.Tensor:
        """int32 [N]: the order of `epoch` (Python int or scalar integer tensor)."""
        if isinstance(epoch, (int, np.integer)):
            checks.check_int(epoch, "epoch", low=0)
        return permutation_tensor(self.num_examples, self.seed, epoch, self.shuffle)

    def gather(self, permutation: tf.Tensor, step) -> Any:
        """Batch `step` (0 <= step < steps_per_epoch) of the epoch whose `permutation`
        is given: tensors [batch_size, ...] in the arrays' structure."""
        if isinstance(step, (int, np.integer)) and not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"step must be in [0, {self.steps_per_epoch}), got {step!r}")
        # tf.gather, not tf.slice: under XLA a tf.slice `begin` is a compile-time
        # constant, so a step-dependent one recompiles the caller on every call
        # (docs/decisions.md, "DeviceDataset batches by tf.gather").
        start = tf.cast(step, tf.int32) * self.batch_size
        idx = tf.gather(permutation, start + tf.range(self.batch_size, dtype=tf.int32))
        return tf.nest.pack_sequence_as(self._structure,
                                        [tf.gather(t, idx) for t in self._flat])

    def batch(self, epoch, step) -> Any:
        """Batch `step` of `epoch` (each a Python int or scalar integer tensor)."""
        return self.gather(self.permutation(epoch), step)


# -- preprocessing and subsets --------------------------------------------------------

def mnist_images(x, dtype=tf.float32, add_channel: bool = True, scale: str = "unit",
                 pad_to: Optional[Union[int, Sequence[int]]] = None) -> np.ndarray:
    """MNIST pixels (0..255) -> float images.

    Args:
      x: array [N, H, W] (or [N, H, W, C] with `add_channel=False`) of pixel values in
        0..255, e.g. uint8 from `load_mnist`.
      dtype: floating output dtype (TensorFlow or NumPy dtype), default float32.
      add_channel: append a channel axis of size 1 (default True).
      scale: 'unit' -> x / 255 in [0, 1] (default); 'tanh' -> x / 127.5 - 1 in
        [-1, 1] (for GAN generators ending in tanh).
      pad_to: None (default) or an int / (height, width) at least H, W: pads with
        background, i.e. pixel 0 before scaling (0 for 'unit', -1 for 'tanh'),
        centred (an odd extra row/column goes bottom/right). 32 gives the 32x32
        images a DCGAN with four stride-2 stages wants.

    Returns:
      NumPy array [N, H', W', 1] (or [N, H', W'] / [N, H', W', C]) of `dtype`.
    """
    np_dtype = np.dtype(tf.as_dtype(dtype).as_numpy_dtype)
    if not np.issubdtype(np_dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}")
    if scale not in ("unit", "tanh"):
        raise ValueError(f"scale must be 'unit' or 'tanh', got {scale!r}")
    x = np.asarray(x)
    if x.ndim != 3 and not (x.ndim == 4 and not add_channel):
        raise ValueError(f"x must be [N, H, W] (or [N, H, W, C] with add_channel=False), "
                         f"got shape {x.shape}")
    if pad_to is not None:
        if isinstance(pad_to, (int, np.integer)) and not isinstance(pad_to, bool):
            pad_to = (int(pad_to), int(pad_to))
        pad_to = tuple(pad_to)
        h, w = x.shape[1], x.shape[2]
        if (len(pad_to) != 2 or not all(isinstance(p, (int, np.integer)) for p in pad_to)
                or pad_to[0] < h or pad_to[1] < w):
            raise ValueError(f"pad_to must be an int or (height, width) at least the "
                             f"image size ({h}, {w}), got {pad_to!r}")
        ph, pw = pad_to[0] - h, pad_to[1] - w
        widths = [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
        x = np.pad(x, widths + [(0, 0)] * (x.ndim - 3))
    out = x.astype(np_dtype)
    if scale == "unit":
        out /= np_dtype.type(255.0)
    else:
        out /= np_dtype.type(127.5)
        out -= np_dtype.type(1.0)
    if add_channel:
        out = out[..., None]
    return out


def _labels_1d(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: y must be a 1-D integer label array, got shape "
                         f"{y.shape}, dtype {y.dtype}")
    return y


def balanced_subset(x, y, num_labeled: int, seed: int,
                    num_classes: Optional[int] = None) -> np.ndarray:
    """Indices of a class-balanced subset: `num_labeled / num_classes` per class.

    Used for semi-supervised training (e.g. VAT with 100 labeled MNIST digits). The
    choice within each class is uniform without replacement from
    `np.random.Generator(np.random.PCG64(seed))`, so it is fixed by `seed`.

    Args:
      x: the examples (only its length is used, checked against `y`).
      y: int labels [N] in 0..num_classes-1.
      num_labeled: subset size, a multiple of the number of classes.
      seed: integer seed.
      num_classes: default `max(y) + 1`.

    Returns:
      Sorted int64 indices [num_labeled] into x / y.

    Raises:
      ValueError: `num_labeled` not a positive multiple of the number of classes, or
        a class with fewer examples than `num_labeled / num_classes`.
    """
    y = _labels_1d(y, "balanced_subset")
    if len(x) != len(y):
        raise ValueError(f"balanced_subset: x has {len(x)} examples but y has {len(y)}")
    checks.check_int(num_labeled, "num_labeled", low=1)
    seed = checks.check_int(seed, "seed")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if len(y) else 0
    checks.check_int(num_classes, "num_classes", low=1)
    if num_labeled % num_classes:
        raise ValueError(f"num_labeled must be divisible by the number of classes "
                         f"{num_classes}, got {num_labeled}")
    per_class = num_labeled // num_classes
    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ValueError(f"num_labeled={num_labeled} needs {per_class} examples of "
                             f"class {c}, but only {len(members)} are available")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def train_val_split(x, y, val_size: Union[int, float], seed: int
                    ) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Splits (x, y) into a training and a validation part, fixed by `seed`.

    The validation examples are a uniformly random subset (PCG64 permutation from
    `seed`); both parts keep the original relative order.

    Args:
      x: examples [N, ...].
      y: labels [N].
      val_size: number of validation examples (int in 1..N-1) or a fraction in
        (0, 1) of N (rounded to the nearest int, at least 1 and at most N-1).
      seed: integer seed.

    Returns:
      ((x_train, y_train), (x_val, y_val)).
    """
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"train_val_split: x has {n} examples but y has {len(y)}")
    seed = checks.check_int(seed, "seed")
    if isinstance(val_size, (float, np.floating)):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"val_size as a fraction must be in (0, 1), got {val_size!r}")
        count = min(max(int(round(val_size * n)), 1), n - 1)
    elif isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool):
        count = int(val_size)
    else:
        raise ValueError(f"val_size must be an int or a float fraction, got {val_size!r}")
    if not 0 < count < n:
        raise ValueError(f"val_size must leave both parts non-empty (N={n}), got "
                         f"{val_size!r}")
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    val_idx, train_idx = np.sort(perm[:count]), np.sort(perm[count:])
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
