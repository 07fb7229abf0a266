"""TensorBoard summaries: writers under `workdir/train` and `workdir/eval`.

* `Writers(workdir)`: two `tf.summary.create_file_writer`s, `train` and `eval`, and
  helpers to write dicts of scalars, histograms and images at a step.
* `scalar`, `histogram`, `image`: single summaries through TensorBoard's own API
  (`tensorboard.summary.v2`; `tensorboard` is a dependency).
* `Writers.graph(which, graph, step)`: a traced function's graph for the Graphs tab
  (`tf.summary.graph`), e.g. the train step, also when XLA compiles it.
* `write_projector(logdir, embeddings)`: embedding vectors + metadata for the
  Projector tab (`tensorboard.plugins.projector`): `projector_config.pbtxt`, a
  checkpoint of the embedding variables (`embedding.ckpt-N`) and one
  `metadata_<name>.tsv` per embedding, in `logdir`.
* `read_events(logdir)`: the (tag, step, value) records of a log directory's event
  files, for tests and scripts.

Tags: scalars every N steps are written under their metric name (`loss`), epoch
averages as `epoch_<name>` in `train/` and the validation metrics as
`epoch_<name>` (without the `val_` prefix) in `eval/`, so TensorBoard overlays the
train and eval curves.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector
from tensorboard.summary import v2 as tb_summary

from tfcore import checks
from tfcore.training import metrics_io


class Writers:
    """`train` and `eval` summary writers under a workdir (created lazily).

    Args:
      workdir: the run directory; events go to `workdir/train` and `workdir/eval`.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}

    def logdir(self, which: str) -> str:
        if which not in ("train", "eval"):
            raise ValueError(f"which must be 'train' or 'eval', got {which!r}")
        return os.path.join(self.workdir, which)

    def writer(self, which: str) -> tf.summary.SummaryWriter:
        if which not in self._writers:
            self._writers[which] = tf.summary.create_file_writer(self.logdir(which))
        return self._writers[which]

    def scalars(self, which: str, step: int, values: Mapping[str, object],
                prefix: str = "") -> None:
        """Writes every numeric scalar in `values` as `prefix + name`."""
        with self.writer(which).as_default(step=int(step)):
            for name, value in values.items():
                v = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
                if v.size == 1 and np.issubdtype(v.dtype, np.number):
                    scalar(prefix + name, float(v.reshape(())), int(step))

    def histograms(self, which: str, step: int, tensors: Mapping[str, object],
                   prefix: str = "") -> None:
        with self.writer(which).as_default(step=int(step)):
            for name, value in tensors.items():
                histogram(prefix + name, value, int(step))

    def images(self, which: str, step: int, images: Mapping[str, object],
               max_outputs: int = 16) -> None:
        """Images [k, h, w, c] (or [k, h, w] / [h, w]) in [0, 1] (floats) or uint8."""
        with self.writer(which).as_default(step=int(step)):
            for name, value in images.items():
                image(name, value, int(step), max_outputs=max_outputs)

    def graph(self, which: str, graph, step: int) -> None:
        """Writes `graph` (a `tf.Graph`, e.g. a traced train step's) for TensorBoard's
        Graphs tab."""
        del step  # a graph has no step in TensorBoard
        with self.writer(which).as_default():
            tf.summary.graph(graph)

    def flush(self) -> None:
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, to the default writer (`tensorboard.summary.v2.scalar`)."""
    tb_summary.scalar(tag, float(value), step=step)


def histogram(tag: str, values, step: int, bucket_count: int = 30) -> None:
    """A TensorBoard histogram of all of `values` (`tensorboard.summary.v2.histogram`:
    `bucket_count` equal-width buckets from min to max)."""
    x = tf.reshape(tf.cast(tf.convert_to_tensor(values), tf.float64), [-1])
    tb_summary.histogram(tag, x, step=step, buckets=bucket_count)


def image(tag: str, images, step: int, max_outputs: int = 16) -> None:
    """TensorBoard images: [k, h, w, c] (or [k, h, w] / [h, w]), floats in [0, 1] or
    uint8, c in {1, 3, 4}; the first `max_outputs` (`tensorboard.summary.v2.image`)."""
    x = tf.convert_to_tensor(images)
    if x.shape.rank == 2:
        x = x[None, :, :, None]
    elif x.shape.rank == 3:
        x = x[..., None]
    if x.shape.rank != 4 or x.shape[-1] not in (1, 3, 4):
        raise checks.ArgumentError(f"image {tag!r} must be [k, h, w, c] with c in 1, 3, 4 "
                                   f"(or [k, h, w] / [h, w]), got shape {x.shape}")
    if x.dtype != tf.uint8:
        x = tf.clip_by_value(tf.cast(x, tf.float32), 0.0, 1.0)
    tb_summary.image(tag, x, step=step, max_outputs=max_outputs)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "embedding"


def write_projector(logdir: str,
                    embeddings: Mapping[str, Tuple[object, Optional[Sequence]]],
                    step: int = 0) -> str:
    """Writes embeddings for TensorBoard's Projector into `logdir`.

    Args:
      logdir: a run directory (e.g. `workdir/train`).
      embeddings: name -> (vectors [N, D] (array, tensor or variable), metadata):
        metadata is None or N labels (one row of `metadata_<name>.tsv` each).
      step: the checkpoint number of `embedding.ckpt-<step>`.

    Returns:
      The path of `projector_config.pbtxt`.

    Raises:
      ValueError: vectors are not 2-D, or metadata has the wrong length.
    """
    os.makedirs(logdir, exist_ok=True)
    variables, config = {}, projector.ProjectorConfig()
    for name, (vectors, metadata) in embeddings.items():
        key = _safe_name(name)
        values = np.asarray(vectors.numpy() if hasattr(vectors, "numpy") else vectors)
        if values.ndim != 2:
            raise ValueError(f"embedding {name!r} must be [N, D], got shape {values.shape}")
        variables[key] = tf.Variable(values, trainable=False, name=key)
        embedding = config.embeddings.add()
        embedding.tensor_name = f"{key}/.ATTRIBUTES/VARIABLE_VALUE"
        if metadata is not None:
            labels = [str(m).replace("\t", " ").replace("\n", " ") for m in metadata]
            if len(labels) != values.shape[0]:
                raise ValueError(f"embedding {name!r}: metadata has {len(labels)} rows, "
                                 f"vectors have {values.shape[0]}")
            tsv = f"metadata_{key}.tsv"
            metrics_io.atomic_write_text(os.path.join(logdir, tsv), "\n".join(labels) + "\n")
            embedding.metadata_path = tsv
    ckpt = tf.train.Checkpoint(**variables)
    manager = tf.train.CheckpointManager(ckpt, logdir, max_to_keep=1,
                                         checkpoint_name="embedding.ckpt")
    manager.save(checkpoint_number=int(step))
    projector.visualize_embeddings(logdir, config)
    return os.path.join(logdir, "projector_config.pbtxt")


def iter_events(logdir: str) -> Iterator[tf.compat.v1.Event]:
    """Every `tf.compat.v1.Event` of the event files directly in `logdir`."""
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            yield tf.compat.v1.Event.FromString(record.numpy())


def read_events(logdir: str) -> List[Tuple[str, int, object]]:
    """(tag, step, value) per summary value in `logdir`'s event files.

    value: a float for scalars, the tensor as a NumPy array for other tensor
    summaries (histograms, images), and for a graph ('__graph__', step, the
    `tf.compat.v1.GraphDef`) or a graph trace ('<name>', step, 'run_metadata').
    """
    out = []
    for event in iter_events(logdir):
        if event.HasField("tagged_run_metadata"):
            out.append((event.tagged_run_metadata.tag, event.step, "run_metadata"))
        if event.HasField("graph_def"):
            out.append(("__graph__", event.step,
                        tf.compat.v1.GraphDef.FromString(event.graph_def)))
        for v in event.summary.value:
            if v.HasField("tensor"):
                arr = tf.make_ndarray(v.tensor)
                out.append((v.tag, event.step, float(arr) if arr.ndim == 0 and
                            arr.dtype.kind == "f" else arr))
            elif v.HasField("simple_value"):
                out.append((v.tag, event.step, float(v.simple_value)))
            else:
                out.append((v.tag, event.step, None))
    return out
