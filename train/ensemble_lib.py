"""train.ensemble's library: `EnsembleConfig` and `run_ensemble(config, workdir)`; the
binary (train/ensemble.py, whose docstring describes members, methods, the split and
the outputs) is flags over it."""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfcore import checks
from tfcore.training import metrics_io
from tfcore.training.options import Options, option
from tfcore.training.run import check_writable

BINARY = "train.ensemble"
METHODS = ("average", "weighted")
_PROB_TOLERANCE = 1e-3  # |sum of a row - 1| allowed for "probabilities"
_EPS = 1e-12
# Binaries whose runs are not classifiers (what a member's run records as `binary`).
NOT_CLASSIFIERS = {"train.autoencoder": "an autoencoder", "train.ae_table": "autoencoders",
                   "train.dcgan": "a GAN", "train.gan_eval": "a GAN evaluation",
                   "train.ensemble": "an ensemble", "train.search": "a search"}


class MemberError(checks.ArgumentError):
    """A member that cannot be used: missing, not a SavedModel, not a classifier."""


@dataclasses.dataclass
class EnsembleConfig(Options):
    """The options of `train.ensemble` (each is the flag of the same name)."""
    members: Tuple[str, ...] = option((), "SavedModel or run directories (comma-"
                                      "separated, wildcards allowed).")
    method: str = option("average", "average, or weighted (weights fitted on the "
                         "validation split).", choices=METHODS)
    val_size: Optional[int] = option(None, "Validation images held out of the training "
                                     "set (default: the members' val_size).", low=0)
    split_seed: Optional[int] = option(None, "Seed of the split (default: the members' "
                                       "split_seed).", low=0)
    train_limit: Optional[int] = option(None, "The members' --train_limit (default: "
                                        "theirs).", low=0)
    test_limit: int = option(0, "Evaluate on the first N test images (0: all).", low=0)
    data_dir: Optional[str] = option(None, "Directory holding mnist.npz (default: "
                                     "$TFCORE_DATA_DIR, then ~/.keras/datasets).",
                                     is_dir=True)
    output_key: Optional[str] = option(None, "The members' output to use (default "
                                       "'probabilities', or the only one).")
    batch_size: int = option(1000, "Prediction batch size.", low=1)


def run_record(path: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(binary, config) of the run holding member `path` (its metrics.json, then
    config.json, else those beside its SavedModel). Runs from before the run layer record
    no binary: a config with `latent_dim` is train.dcgan's, `noise_factor` an AE's."""
    binary, config = None, None
    for d in (path, os.path.dirname(os.path.abspath(path))):
        for name in ("metrics.json", "config.json"):
            try:
                record = metrics_io.read_json(os.path.join(d, name))
            except checks.ArgumentError:
                record = None
            if isinstance(record, dict):
                binary = binary or record.get("binary")
                cfg = record.get("config", record if name == "config.json" else None)
                config = cfg if config is None and isinstance(cfg, dict) else config
        if binary or config is not None or not os.path.isfile(
                os.path.join(path, "saved_model.pb")):
            break
    if binary is None and config:
        binary = ("train.dcgan" if "latent_dim" in config else
                  "train.autoencoder" if "noise_factor" in config else None)
    return binary, config


def find_saved_model(path: str) -> str:
    """`path` if it is a SavedModel directory, else `path/saved_model` if that is one;
    MemberError when `path` is missing, a run of a binary that trains no classifier,
    or neither holds a `saved_model.pb`."""
    if not os.path.exists(path):
        raise MemberError(f"member {path!r} does not exist")
    binary, _ = run_record(path)
    if binary in NOT_CLASSIFIERS:
        raise MemberError(f"member {path!r} is a {binary} run ({NOT_CLASSIFIERS[binary]}), "
                          "not a classifier: give classifiers exported with --export")
    for d in (path, os.path.join(path, "saved_model")):
        if os.path.isfile(os.path.join(d, "saved_model.pb")):
            return d
    raise MemberError(f"member {path!r} is not a SavedModel: no saved_model.pb in it or in "
                      f"{os.path.join(path, 'saved_model')!r} (train it with --export)")


@dataclasses.dataclass
class Member:
    """A loaded classifier: `predict(images) -> probabilities [N, C]`."""
    path: str
    saved_model: str
    fn: Any
    input_key: str
    output_key: str
    input_shape: Tuple[Optional[int], ...]
    module: Any = None  # keeps the loaded object (and its variables) alive
    classes: int = 0  # set by `check_members`

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities [N, C] (float64) for images [N, 28, 28, 1], reshaped to the
        signature's per-example shape when the sizes agree."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        per = tuple(self.input_shape[1:])
        if None not in per and per != tuple(images.shape[1:]):
            if int(np.prod(per)) != int(np.prod(images.shape[1:])):
                raise MemberError(f"member {self.path!r} takes inputs of shape "
                                  f"{list(self.input_shape)}, not images of shape "
                                  f"{list(images.shape[1:])}: not an image classifier")
            images = images.reshape((len(images),) + per)
        out = []
        for start in range(0, len(images), batch_size):
            y = self.fn(**{self.input_key: tf.constant(images[start:start + batch_size])})
            out.append(np.asarray(y[self.output_key].numpy(), np.float64))
        p = np.concatenate(out, axis=0) if out else np.zeros([0, 0])
        check_probabilities(p, f"member {self.path!r} output {self.output_key!r}")
        return p


def _output_key(path: str, outputs: Mapping[str, Any], output_key: Optional[str]) -> str:
    """The output a member's probabilities come from (see `load_member`)."""
    if output_key is not None:
        if output_key not in outputs:
            raise MemberError(f"member {path!r}: no output {output_key!r} (outputs: "
                              f"{sorted(outputs)})")
        return output_key
    for key, what in (("reconstructions", "an autoencoder's"), ("images", "a generator's")):
        if key in outputs and "probabilities" not in outputs:
            raise MemberError(f"member {path!r} is {what} SavedModel (it outputs "
                              f"{key!r}), not a classifier")
    if "probabilities" in outputs:
        return "probabilities"
    if len(outputs) == 1:
        return next(iter(outputs))
    raise MemberError(f"member {path!r}: several outputs {sorted(outputs)} and none named "
                      f"'probabilities'; pick one with --output_key")


def load_member(path: str, output_key: Optional[str] = None) -> Member:
    """A member's `serving_default` signature (one input, probabilities out); MemberError
    when it is not a classifier's (no such signature, not one input, an autoencoder's or
    a generator's outputs, no usable output or one that is not [N, classes])."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    saved = find_saved_model(path)
    try:
        module = tf.saved_model.load(saved)
    except Exception as e:  # noqa: BLE001 -- a broken SavedModel, reported as such
        raise MemberError(f"member {path!r}: cannot load the SavedModel {saved!r}: "
                          f"{type(e).__name__}: {e}") from None
    sigs = getattr(module, "signatures", {})
    if "serving_default" not in sigs:
        raise MemberError(f"member {path!r}: the SavedModel has no 'serving_default' "
                          f"signature (has: {sorted(sigs) or 'none'})")
    fn = sigs["serving_default"]
    _, kwargs = fn.structured_input_signature
    if len(kwargs) != 1:
        raise MemberError(f"member {path!r}: serving_default must take one input (the "
                          f"images), takes {sorted(kwargs)}")
    (input_key, spec), = kwargs.items()
    key = _output_key(path, fn.structured_outputs, output_key)
    out_shape = fn.structured_outputs[key].shape
    if out_shape.rank != 2:
        raise MemberError(f"member {path!r}: output {key!r} must be [N, classes], has "
                          f"shape {out_shape}: not a classifier")
    return Member(path=path, saved_model=saved, fn=fn, input_key=input_key,
                  output_key=key, input_shape=tuple(spec.shape.as_list()), module=module)


def check_members(paths: Sequence[str], output_key: Optional[str] = None) -> List[Member]:
    """The loaded members, each checked to be a classifier of the same classes: it
    loads (`load_member`) and maps two blank images to probabilities [2, C]."""
    members = []
    for p in paths:
        m = load_member(p, output_key)
        m.classes = m.predict(np.zeros([2, 28, 28, 1], np.float32)).shape[1]
        members.append(m)
        if m.classes != members[0].classes:
            raise MemberError(f"member {p!r} outputs {m.classes} classes but member "
                              f"{paths[0]!r} outputs {members[0].classes}: members must "
                              "predict the same classes")
    return members


def expand_members(spec: Sequence[str]) -> List[str]:
    """Comma-separated entries, wildcards expanded (sorted); duplicates refused."""
    out: List[str] = []
    for item in spec:
        for part in str(item).split(","):
            part = part.strip()
            if any(c in part for c in "*?["):
                matches = sorted(glob.glob(part))
                if not matches:
                    raise MemberError(f"--members pattern {part!r} matches nothing")
                out.extend(matches)
            elif part:
                out.append(part)
    if not out:
        raise MemberError("--members is empty: give at least one SavedModel or run dir")
    dup = sorted({m for m in out if out.count(m) > 1})
    if dup:
        raise MemberError(f"--members lists {dup} more than once")
    return out


def check_probabilities(p: np.ndarray, what: str) -> None:
    """Raises MemberError unless p is [N, C] of finite values >= 0 with rows ~ 1."""
    if p.ndim != 2 or not np.all(np.isfinite(p)) or np.any(p < -1e-6) or (
            p.size and np.max(np.abs(p.sum(axis=1) - 1.0)) > _PROB_TOLERANCE):
        raise MemberError(f"{what} is not a probability distribution per row (values "
                          "must be >= 0 and sum to 1): not a classifier's probabilities; "
                          "export softmax probabilities, or pick them with --output_key")


def combine(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k weights[k] * probs[k]: probs [K, N, C], weights [K] -> [N, C]."""
    return np.tensordot(np.asarray(weights, np.float64), np.asarray(probs, np.float64),
                        axes=1)


def accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax (first one on ties) is the label."""
    return float(np.mean(np.argmax(p, axis=1) == np.asarray(labels)))


def log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    """-mean_i log p[i, y_i] (p clipped at 1e-12)."""
    picked = np.asarray(p, np.float64)[np.arange(len(labels)), np.asarray(labels, np.int64)]
    return float(-np.mean(np.log(np.maximum(picked, _EPS))))


def fit_weights(probs: np.ndarray, labels: np.ndarray, max_iter: int = 10000,
                tol: float = 1e-10) -> np.ndarray:
    """Simplex weights w [K] (float64) minimising the log-loss of `combine(probs, w)`
    for member probabilities `probs` [K, N, C] and int `labels` [N].

    EM for mixture weights: with q[k, i] = probs[k, i, y_i],
    w_k <- mean_i (w_k q[k, i] / sum_j w_j q[j, i]), from w = 1/K, until no weight
    moves more than `tol`. Each step stays on the simplex and does not increase the
    (convex) loss, so the limit is its minimum.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    if probs.ndim != 3 or probs.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"fit_weights: probs must be [K, N, C] with N = len(labels) > 0, "
                         f"got shape {list(probs.shape)} and {len(labels)} labels")
    q = np.maximum(probs[:, np.arange(len(labels)), labels], _EPS)  # [K, N]
    w = np.full([probs.shape[0]], 1.0 / probs.shape[0])
    for _ in range(max_iter):
        new = w * np.mean(q / (w @ q), axis=1)
        new /= new.sum()
        if np.max(np.abs(new - w)) < tol:
            return new
        w = new
    return w


def resolve_split(config: EnsembleConfig, run_configs: Mapping[str, Optional[dict]],
                  log=print) -> Tuple[int, int, int]:
    """(val_size, split_seed, train_limit): each from its flag when given, else the
    value all members' run configs agree on, else (none records it) 0. Members that
    disagree turn the validation metrics off (val_size 0, a warning) with
    --method=average; with weighted they, and no validation split, raise ArgumentError.
    """
    resolved = {}
    for key in ("val_size", "split_seed", "train_limit"):
        explicit = getattr(config, key)
        # Runs from before train.vat had --split_seed drew their split with --seed.
        values = {p: None if c is None else c.get(key, c.get("seed") if key == "split_seed"
                                                  else None) for p, c in run_configs.items()}
        known = [v for v in values.values() if v is not None]
        agree = len(known) == len(values) and len({repr(v) for v in known}) == 1
        detail = ", ".join(f"{p}: {v!r}" for p, v in values.items())
        if explicit is not None:
            if known and (not agree or known[0] != explicit):
                log(f"WARNING: --{key}={explicit} but the members were trained with {key} = "
                    f"({detail}): the validation split may overlap their training data, "
                    "making the fitted weights and val scores optimistic")
            resolved[key] = int(explicit)
        elif agree or not known:
            resolved[key] = int(known[0]) if known else 0
        elif config.method == "average":
            log(f"WARNING: the members were trained with different (or unrecorded) {key}: "
                f"{detail}; reporting no validation metrics (give --{key} to get them)")
            resolved = {"val_size": 0, "split_seed": 0, "train_limit": 0}
            break
        else:
            raise checks.ArgumentError(
                f"the members were trained with different (or unrecorded) {key}: {detail}. "
                "Their validation splits differ, so one member's validation images may be "
                f"another's training images; give --{key} explicitly to proceed anyway")
    if config.method == "weighted" and resolved["val_size"] <= 0:
        raise checks.ArgumentError(
            "--method=weighted fits the weights on a validation split, but val_size is 0 "
            "(no --val_size, and the members record none or 0); fitting on the test set is "
            "refused. Train the members with --val_size=N, or use --method=average")
    return resolved["val_size"], resolved["split_seed"], resolved["train_limit"]


def load_split(config: EnsembleConfig, val_size: int, split_seed: int,
               train_limit: int, data=None):
    """((x_val, y_val) or None, (x_test, y_test)): float32 images [N, 28, 28, 1]."""
    from tfcore import data as tfdata  # pylint: disable=import-outside-toplevel
    (x_tr, y_tr), (x_te, y_te) = data or tfdata.load_mnist(config.data_dir)
    if train_limit:
        x_tr, y_tr = x_tr[:train_limit], y_tr[:train_limit]
    if config.test_limit:
        x_te, y_te = x_te[:config.test_limit], y_te[:config.test_limit]
    val = None
    if val_size:
        checks.check_int(val_size, "--val_size (with the training images)", low=0,
                         high=len(x_tr) - 1)
        _, (x_val, y_val) = tfdata.train_val_split(x_tr, y_tr, val_size, split_seed)
        val = (tfdata.mnist_images(x_val), np.asarray(y_val, np.int64))
    return val, (tfdata.mnist_images(x_te), np.asarray(y_te, np.int64))


def _evaluate(val_p, y_val, test_p, y_test, w) -> Dict[str, Optional[float]]:
    """{val,test}_{accuracy,loss} of the weights `w` (None without validation)."""
    out: Dict[str, Optional[float]] = {}
    for split, p, y in (("val", val_p, y_val), ("test", test_p, y_test)):
        q = None if p is None else combine(p, w)
        out[f"{split}_accuracy"] = None if q is None else accuracy(q, y)
        out[f"{split}_loss"] = None if q is None else log_loss(q, y)
    return out


def results_table(result: Mapping[str, Any]) -> str:
    """A markdown table: one row per member, then the ensemble(s)."""
    def f(v, pct=False):
        return "" if v is None else f"{100 * v:.2f}%" if pct else f"{v:.4f}"
    lines = ["| model | weight | val accuracy | val log-loss | test accuracy | "
             "test log-loss |", "|---|---|---|---|---|---|"]
    rows = [(m["path"], f"{m['weight']:.4f} ", m) for m in result["members"]]
    rows.append((f"**ensemble ({result['method']})**", "", result))
    if "average" in result:
        rows.append(("**ensemble (average)**", "", result["average"]))
    for name, weight, r in rows:
        lines.append(f"| {name} | {weight}| {f(r['val_accuracy'], True)} | "
                     f"{f(r['val_loss'])} | {f(r['test_accuracy'], True)} | "
                     f"{f(r['test_loss'])} |")
    return "\n".join(lines) + "\n"


def run_ensemble(config: EnsembleConfig, workdir: Optional[str], data=None,
                 log=print) -> Dict[str, Any]:
    """Checks, loads the members, fits / averages, evaluates; returns the metrics
    (train/ensemble.py's docstring) and writes them to `workdir` (None: nowhere).

    `data`: ((x_train, y_train), (x_test, y_test)) as `tfcore.data.load_mnist` returns
    (default: loaded from `config.data_dir`); `log` prints the warnings and the table.
    Raises, before any data is loaded and with nothing written: WorkdirError (a file
    or unwritable --workdir), MemberError (a member that is not a classifier
    SavedModel, or members of different classes), ArgumentError (the split).
    """
    config = config.validate()
    if workdir:
        check_writable(workdir)
    paths = expand_members(config.members)
    for p in paths:
        find_saved_model(p)  # fail fast (missing, another binary's run), loading nothing
    members = check_members(paths, config.output_key)
    run_configs = {p: run_record(p)[1] for p in paths}
    split = resolve_split(config, run_configs, log)
    val, (x_test, y_test) = load_split(config, *split, data)
    y_val = val[1] if val is not None else None
    top = int(max(y_test.max(initial=0), 0 if val is None else y_val.max(initial=0)))
    if top >= members[0].classes:
        raise MemberError(f"members output {members[0].classes} classes but the labels "
                          f"go up to {top}")
    test_p = np.stack([m.predict(x_test, config.batch_size) for m in members])
    val_p = None if val is None else np.stack([m.predict(val[0], config.batch_size)
                                               for m in members])
    average = np.full([len(members)], 1.0 / len(members))
    weights = fit_weights(val_p, y_val) if config.method == "weighted" else average
    result: Dict[str, Any] = {"status": "done", "method": config.method, "members": []}
    for i, m in enumerate(members):
        one = np.eye(len(members))[i]
        result["members"].append({"path": m.path, "saved_model": m.saved_model,
                                  "weight": float(weights[i]),
                                  **_evaluate(val_p, y_val, test_p, y_test, one)})
    result.update(weights=[float(w) for w in weights],
                  **_evaluate(val_p, y_val, test_p, y_test, weights))
    if config.method == "weighted":
        result["average"] = _evaluate(val_p, y_val, test_p, y_test, average)
    result.update({"val_size": split[0], "split_seed": split[1], "train_limit": split[2],
                   "num_val": 0 if val is None else len(y_val), "num_test": len(y_test),
                   "num_classes": members[0].classes})
    table = results_table(result)
    log(table.rstrip())
    if workdir:
        metrics_io.write_metrics(workdir, result)
        metrics_io.atomic_write_text(os.path.join(workdir, "results.md"), table)
    return result
