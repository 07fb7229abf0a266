"""Checkpoints: `tf.train.Checkpoint` + `CheckpointManager`, safe against kills.

What a training checkpoint holds (`make_checkpoint`): the caller's objects (e.g.
`model=`, `optimizer=`, or `generator=`, `discriminator=`, `g_opt=`, `d_opt=` for a
GAN: every `tf.Variable` they track, optimizer slots and `iterations` included), the
global `step` (int64), the base `seed` (int64) and a `rng` (`tf.random.Generator`,
philox), and with `tfcore.training.loop` the run state (a JSON string: the epochs'
records, callback states, the run's configuration). Randomness in tfcore steps is
stateless, derived from (seed, step), and data order from (seed, epoch, step), so
restoring `step` and `seed` restores both exactly.

Why a kill at any moment leaves a restorable checkpoint:
* TensorFlow writes a checkpoint's shards under a temporary prefix and merges them
  into `ckpt-N.index` + `ckpt-N.data-*` only when all are written;
* `CheckpointManager` then rewrites the small `checkpoint` state file atomically
  (write to a temp file + rename), listing ckpt-N only after it is complete, and
  `Checkpointer` deletes the files beyond `max_to_keep` only after that (from what is
  on disk, so a checkpoint a kill left unlisted is pruned too);
* `Checkpointer.restore_latest` tries the listed checkpoints newest first, then any
  complete `ckpt-N.index` on disk, and skips one that fails to read. A partial
  checkpoint (no merged index, or unreadable) is ignored; the next save at the same
  number overwrites its leftovers.

Example:
    ckpt = make_checkpoint({"model": model, "optimizer": opt}, step=step)
    saver = Checkpointer(os.path.join(workdir, "checkpoints"), ckpt, max_to_keep=3)
    saver.restore_latest()      # None on a fresh workdir
    ...
    saver.save(int(step))       # -> ".../checkpoints/ckpt-<step>"
"""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import weakref
from typing import Callable, Dict, List, Mapping, Optional, Union

import tensorflow as tf

RESERVED_NAMES = ("step", "seed", "rng", "run_state")
# Where the loop's run state (a JSON string variable) sits inside a checkpoint.
RUN_STATE_KEY = "run_state/.ATTRIBUTES/VARIABLE_VALUE"
_WITHOUT_RUN_STATE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def make_checkpoint(objects: Mapping[str, object], step: Optional[tf.Variable] = None,
                    seed: Optional[tf.Variable] = None,
                    rng: Optional[tf.random.Generator] = None,
                    run_state: Optional[tf.Variable] = None) -> tf.train.Checkpoint:
    """A `tf.train.Checkpoint` of `objects` plus the training state.

    Args:
      objects: name -> trackable (a `tf.Module`, `tf.Variable`, optimizer, ...).
      step: the global step variable (int64), saved as `step`.
      seed: the base seed variable (int64), saved as `seed`.
      rng: a `tf.random.Generator`, saved as `rng`.
      run_state: a string variable (the loop's run state, JSON), saved as `run_state`.

    Raises:
      ValueError: `objects` is empty, uses a reserved name, or holds a non-trackable.
    """
    if not objects:
        raise ValueError(f"objects must name at least one trackable, got {objects!r}")
    kwargs = {}
    for name, obj in objects.items():
        if name in RESERVED_NAMES:
            raise ValueError(f"objects may not use the reserved name {name!r} "
                             f"(reserved: {', '.join(RESERVED_NAMES)})")
        if not isinstance(obj, (tf.Module, tf.Variable, tf.train.Checkpoint)) and \
                not hasattr(obj, "_track_trackable"):
            raise ValueError(f"objects[{name!r}] must be a tf.Module or tf.Variable, "
                             f"got {type(obj).__name__}")
        kwargs[name] = obj
    for name, obj in (("step", step), ("seed", seed), ("rng", rng)):
        if obj is not None:
            kwargs[name] = obj
    if run_state is None:
        return tf.train.Checkpoint(**kwargs)
    ckpt = tf.train.Checkpoint(run_state=run_state, **kwargs)
    # Checkpoints written before the run state existed restore through this one (kept
    # aside: an attribute of `ckpt` would become part of what it saves).
    _WITHOUT_RUN_STATE[ckpt] = tf.train.Checkpoint(**kwargs)
    return ckpt


def _number(path: str) -> int:
    m = re.search(r"-(\d+)$", path)
    return int(m.group(1)) if m else -1


def is_complete(path: str) -> bool:
    """Whether checkpoint prefix `path` has its merged index and readable data."""
    if not tf.io.gfile.exists(path + ".index"):
        return False
    try:
        reader = tf.train.load_checkpoint(path)
        reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return False
    return True


def _write_state_file(directory: str, latest: str, paths: List[str]) -> None:
    """Rewrites the `checkpoint` state file (atomically) to list `paths`. The
    CheckpointManager's own writer: `tf.compat.v1.train.update_checkpoint_state` is the
    same function, deprecated in favour of the manager, which cannot list a set it
    did not save itself."""
    try:
        from tensorflow.python.checkpoint import checkpoint_management as cm  # pylint: disable=import-outside-toplevel
        cm.update_checkpoint_state_internal(directory, latest,
                                            all_model_checkpoint_paths=paths,
                                            save_relative_paths=True)
    except (ImportError, AttributeError):  # a TF without it: the public alias
        tf.compat.v1.train.update_checkpoint_state(directory, latest,
                                                   all_model_checkpoint_paths=paths)


def list_complete(directory: str, name: str = "ckpt") -> List[str]:
    """The complete checkpoint prefixes `<name>-<N>` in `directory`, newest first
    (no checkpoint object needed: for checks before a model exists)."""
    prefixes = [p[: -len(".index")] for p in
                glob.glob(os.path.join(directory, f"{name}-*.index"))]
    prefixes = [p for p in prefixes if re.search(rf"{re.escape(name)}-\d+$", p)]
    return [p for p in sorted(prefixes, key=_number, reverse=True) if is_complete(p)]


class Checkpointer:
    """One directory of numbered checkpoints (`<name>-<step>`), kept `max_to_keep`.

    Args:
      directory: where checkpoints live (created on the first save).
      checkpoint: a `tf.train.Checkpoint`, or a dict of objects (see
        `make_checkpoint`).
      max_to_keep: how many recent checkpoints to keep (None: all).
      name: the file prefix (default 'ckpt').
      before_save: called before every save (the loop stores its run state).

    Pruning is done here, from what is on disk, after every save: the newest
    `max_to_keep` complete checkpoints are kept and every other `<name>-<N>` file or
    folder (older complete ones, a checkpoint a kill left out of the state file,
    partial leftovers) is deleted, then the state file lists exactly the kept ones.
    `tf.train.CheckpointManager` (kept for its atomic state file) prunes only what its
    state file lists, so a checkpoint saved just before a kill was never pruned.
    """

    def __init__(self, directory: str, checkpoint: Union[tf.train.Checkpoint, Mapping],
                 max_to_keep: Optional[int] = 3, name: str = "ckpt",
                 before_save: Optional[Callable[[], None]] = None):
        if max_to_keep is not None and (isinstance(max_to_keep, bool)
                                        or not isinstance(max_to_keep, int)
                                        or max_to_keep <= 0):
            raise ValueError(f"max_to_keep must be a positive integer or None, "
                             f"got {max_to_keep!r}")
        if not isinstance(checkpoint, tf.train.Checkpoint):
            checkpoint = make_checkpoint(checkpoint)
        self.directory = directory
        self.checkpoint = checkpoint
        self.name = name
        self.max_to_keep = max_to_keep
        self.before_save = before_save
        self._manager = None

    @property
    def manager(self) -> tf.train.CheckpointManager:
        # Created lazily (it reads the directory's state file when built); it keeps
        # every checkpoint: `_prune` decides.
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self.directory, max_to_keep=None,
                checkpoint_name=self.name)
        return self._manager

    def _numbered(self) -> Dict[int, List[str]]:
        """N -> the files and folders of `<name>-<N>` in the directory."""
        out: Dict[int, List[str]] = {}
        pattern = re.compile(rf"^{re.escape(self.name)}-(\d+)(\.|_temp|$)")
        if not os.path.isdir(self.directory):
            return out
        for entry in os.listdir(self.directory):
            m = pattern.match(entry)
            if m:
                out.setdefault(int(m.group(1)), []).append(
                    os.path.join(self.directory, entry))
        return out

    def _on_disk(self) -> List[str]:
        paths = glob.glob(os.path.join(self.directory, f"{self.name}-*.index"))
        prefixes = [p[: -len(".index")] for p in paths]
        return [p for p in prefixes if re.search(rf"{re.escape(self.name)}-\d+$", p)]

    def all_checkpoints(self) -> List[str]:
        """Complete checkpoint prefixes, newest (highest number) first."""
        listed = list(self.manager.checkpoints) if os.path.isdir(self.directory) else []
        candidates = sorted(set(listed) | set(self._on_disk()), key=_number, reverse=True)
        return [p for p in candidates if is_complete(p)]

    @property
    def latest(self) -> Optional[str]:
        """The newest complete checkpoint prefix, or None."""
        paths = self.all_checkpoints()
        return paths[0] if paths else None

    def save(self, step: int) -> str:
        """Saves checkpoint number `step`, prunes, returns its prefix
        (`.../ckpt-<step>`)."""
        if self.before_save is not None:
            self.before_save()
        path = self.manager.save(checkpoint_number=int(step))
        self._prune(path)
        return path

    def _prune(self, newest: str) -> None:
        complete = [p for p in self.all_checkpoints() if _number(p) <= _number(newest)]
        kept = complete[: self.max_to_keep] if self.max_to_keep else complete
        keep = {_number(p) for p in kept}
        for number, entries in self._numbered().items():
            if number in keep:
                continue
            for entry in entries:
                if os.path.isdir(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                elif os.path.exists(entry):
                    os.remove(entry)
        _write_state_file(self.directory, newest, list(reversed(kept)))
        self._manager = None  # re-read the state file: it lists the kept ones

    def restore(self, path: str, expect_partial: bool = False):
        """Restores `path` (a prefix); returns TF's load status. A checkpoint saved
        before the loop kept a run state in it restores everything else."""
        checkpoint = self.checkpoint
        legacy = _WITHOUT_RUN_STATE.get(checkpoint)
        if legacy is not None and not tf.train.load_checkpoint(path).has_tensor(
                RUN_STATE_KEY):
            checkpoint = legacy
        status = checkpoint.restore(path)
        if expect_partial:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
        return status

    def restore_latest(self, expect_partial: bool = False) -> Optional[str]:
        """Restores the newest readable checkpoint; returns its prefix or None.

        Checkpoints that fail to restore (partial, corrupt) are skipped, newest first,
        with a warning naming each one skipped.
        """
        errors = []
        for path in self.all_checkpoints():
            try:
                self.restore(path, expect_partial=expect_partial)
            except Exception as e:  # pylint: disable=broad-except  # torn / corrupt
                errors.append(f"{path}: {e}")
                logging.getLogger("tfcore.checkpointing").warning(
                    "skipping checkpoint %s: it could not be restored (%s)", path,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            return path
        if errors:
            raise RuntimeError("no checkpoint in " + self.directory + " could be restored:\n"
                               + "\n".join(errors))
        return None


def restore_objects(directory_or_path: str, objects: Mapping[str, object]) -> str:
    """Loads only `objects` (e.g. {'model': fresh_model}) from a checkpoint.

    Args:
      directory_or_path: a checkpoint directory (its newest complete checkpoint is
        used) or a checkpoint prefix.
      objects: name -> trackable, named as when saved; other saved objects are ignored.

    Returns:
      The prefix restored.

    Raises:
      FileNotFoundError: no complete checkpoint found.
    """
    ckpt = tf.train.Checkpoint(**dict(objects))
    if tf.io.gfile.isdir(directory_or_path):
        path = Checkpointer(directory_or_path, ckpt).latest
    else:
        path = directory_or_path if is_complete(directory_or_path) else None
    if path is None:
        raise FileNotFoundError(f"no complete checkpoint at {directory_or_path!r}")
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    return path


def variables_by_path(objects: Mapping[str, object]) -> Dict[str, tf.Variable]:
    """'name/attr/0/kernel' -> variable, for every variable under `objects` (unique)."""
    out: Dict[str, tf.Variable] = {}
    seen = set()
    for name, obj in objects.items():
        if isinstance(obj, tf.Variable):
            items = [((), obj)]
        elif isinstance(obj, tf.Module):
            items = obj._flatten(with_path=True,  # pylint: disable=protected-access
                                 predicate=lambda v: isinstance(v, tf.Variable))
        else:
            items = []
        for path, var in items:
            if id(var) in seen:
                continue
            seen.add(id(var))
            out["/".join([name] + [str(p) for p in path])] = var
    return out
