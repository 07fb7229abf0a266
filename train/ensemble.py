"""Combine saved MNIST classifiers by averaged or weighted predictions.

    python -m train.ensemble --workdir=runs/ensemble \\
        --members=runs/search_vat/trial_000,runs/search_vat/trial_003,runs/vat \\
        --method=weighted [--val_size=5000 --split_seed=0] [--data_dir=...]

A member is a SavedModel directory, or a run directory holding one in `saved_model/`
(what `--export` writes), with a `serving_default` signature mapping one image input
([N, 28, 28, 1] float in [0, 1], or anything of 784 values per image) to class
probabilities [N, C] (the output `probabilities`, or the only output; --output_key
picks another). Members are run with `tf.saved_model.load` only: no tfcore code is
needed to evaluate them. Shell-style wildcards work in --members
(`runs/search/trial_*`).

Methods, on member probabilities p_k [N, C]:
* `average`: p = (1/K) sum_k p_k.
* `weighted`: p = sum_k w_k p_k with w on the probability simplex chosen to minimise
  the ensemble's validation log-loss  -1/N sum_i log(sum_k w_k p_k[i, y_i]).  The
  objective is convex in w; `fit_weights` finds its minimum with the EM iteration of a
  mixture's weights, w_k <- 1/N sum_i w_k p_k[i, y_i] / sum_j w_j p_j[i, y_i], which
  stays on the simplex and never increases the loss (deterministic, NumPy).

Validation split: the held-out part of the training set that the members did not
train on: `tfcore.data.train_val_split(x_train[:train_limit], y_train, val_size,
split_seed)`, as `train.vat --val_size=N --split_seed=S` draws it. --val_size,
--split_seed and --train_limit default to the values in the members' metrics.json
`config` (val_size, split_seed -- or seed for runs made before --split_seed existed --,
train_limit) when they all agree; members trained with
different splits (or without one) are refused unless the flags are given explicitly
(a warning then says the split may overlap their training data). The test set is
never used to fit anything.

Writes <workdir>/metrics.json: `members` (path, weight, val_accuracy, val_loss,
test_accuracy, test_loss each), `weights`, the ensemble's `val_accuracy`,
`val_loss`, `test_accuracy`, `test_loss`, with `weighted` also the plain average's
(`average`), and the split used; <workdir>/results.md holds the same table as
printed.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import flags

METHODS = ("average", "weighted")
_PROB_TOLERANCE = 1e-3  # |sum of a row - 1| allowed for "probabilities"
_EPS = 1e-12


class MemberError(ValueError):
    """A member that cannot be used (not a SavedModel, wrong signature or outputs)."""


# -- members --------------------------------------------------------------------------

def find_saved_model(path: str) -> str:
    """`path` if it is a SavedModel directory, else `path/saved_model` if that is one.

    Raises:
      MemberError: neither holds a `saved_model.pb`.
    """
    for d in (path, os.path.join(path, "saved_model")):
        if os.path.isfile(os.path.join(d, "saved_model.pb")):
            return d
    if not os.path.exists(path):
        raise MemberError(f"member {path!r} does not exist")
    raise MemberError(f"member {path!r} is not a SavedModel: no saved_model.pb in it or "
                      f"in {os.path.join(path, 'saved_model')!r} (train the member with "
                      f"--export)")


def member_run_config(path: str) -> Optional[Dict[str, Any]]:
    """The `config` dict of the member's run (metrics.json next to the SavedModel)."""
    import json  # pylint: disable=import-outside-toplevel
    saved = find_saved_model(path)
    for d in (path, os.path.dirname(os.path.abspath(saved))):
        p = os.path.join(d, "metrics.json")
        if os.path.isfile(p):
            try:
                with open(p, encoding="utf-8") as f:
                    cfg = json.load(f).get("config")
            except (OSError, ValueError, AttributeError):
                return None
            return cfg if isinstance(cfg, dict) else None
    return None


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

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities [N, C] (float64) for images [N, 28, 28, 1]."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        x = _fit_input(images, self.input_shape, self.path)
        out = []
        for start in range(0, len(x), batch_size):
            batch = tf.constant(x[start:start + batch_size])
            y = self.fn(**{self.input_key: batch})[self.output_key]
            out.append(np.asarray(y.numpy(), np.float64))
        p = np.concatenate(out, axis=0) if out else np.zeros([0, 0])
        check_probabilities(p, f"member {self.path!r} output {self.output_key!r}")
        return p


def _fit_input(images: np.ndarray, shape: Tuple[Optional[int], ...], path: str):
    """Images reshaped to the signature's per-example shape when the sizes agree."""
    per = tuple(shape[1:])
    if all(d is not None for d in per) and per != tuple(images.shape[1:]):
        if int(np.prod(per)) != int(np.prod(images.shape[1:])):
            raise MemberError(f"member {path!r} takes inputs of shape {list(shape)}, "
                              f"which does not fit images of shape "
                              f"{list(images.shape[1:])}")
        return images.reshape((len(images),) + per)
    return images


def load_member(path: str, output_key: Optional[str] = None) -> Member:
    """Loads a member's `serving_default` signature (one input, probabilities out).

    Raises:
      MemberError: not a SavedModel, no serving_default signature, not exactly one
        input, or no usable output (`output_key` missing, or several outputs and
        none named 'probabilities').
    """
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
    outputs = fn.structured_outputs
    if output_key is not None:
        if output_key not in outputs:
            raise MemberError(f"member {path!r}: no output {output_key!r} (outputs: "
                              f"{sorted(outputs)})")
        key = output_key
    elif "probabilities" in outputs:
        key = "probabilities"
    elif len(outputs) == 1:
        key = next(iter(outputs))
    else:
        raise MemberError(f"member {path!r}: several outputs {sorted(outputs)} and none "
                          f"named 'probabilities'; pick one with --output_key")
    out_shape = outputs[key].shape
    if out_shape.rank != 2:
        raise MemberError(f"member {path!r}: output {key!r} must be [N, classes], has "
                          f"shape {out_shape}")
    return Member(path=path, saved_model=saved, fn=fn, input_key=input_key,
                  output_key=key, input_shape=tuple(spec.shape.as_list()), module=module)


def expand_members(spec: Sequence[str]) -> List[str]:
    """Comma-separated entries, wildcards expanded (sorted); duplicates refused."""
    out: List[str] = []
    for item in spec:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if any(c in part for c in "*?["):
                matches = sorted(glob.glob(part))
                if not matches:
                    raise MemberError(f"--members pattern {part!r} matches nothing")
                out.extend(matches)
            else:
                out.append(part)
    if not out:
        raise MemberError("--members is empty: give at least one SavedModel or run "
                          "directory")
    dup = sorted({m for m in out if out.count(m) > 1})
    if dup:
        raise MemberError(f"--members lists {dup} more than once")
    return out


# -- maths (pure NumPy) ---------------------------------------------------------------

def check_probabilities(p: np.ndarray, what: str) -> None:
    """Raises MemberError unless p is [N, C] of finite values >= 0 with rows ~ 1."""
    if p.ndim != 2:
        raise MemberError(f"{what} must be [N, classes], got shape {list(p.shape)}")
    if not np.all(np.isfinite(p)) or np.any(p < -1e-6) or (
            p.size and np.max(np.abs(p.sum(axis=1) - 1.0)) > _PROB_TOLERANCE):
        raise MemberError(f"{what} is not a probability distribution per row (values "
                          f"must be >= 0 and sum to 1); export softmax probabilities, or "
                          f"pick the right output with --output_key")


def combine(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k weights[k] * probs[k]: probs [K, N, C], weights [K] -> [N, C]."""
    probs = np.asarray(probs, np.float64)
    return np.tensordot(np.asarray(weights, np.float64), probs, axes=1)


def accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax (first one on ties) is the label."""
    return float(np.mean(np.argmax(p, axis=1) == np.asarray(labels)))


def log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    """-mean_i log p[i, y_i] (p clipped at 1e-12)."""
    labels = np.asarray(labels, np.int64)
    picked = np.asarray(p, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, _EPS))))


def fit_weights(probs: np.ndarray, labels: np.ndarray, max_iter: int = 10000,
                tol: float = 1e-10) -> np.ndarray:
    """Simplex weights minimising the log-loss of `combine(probs, w)` on (probs, labels).

    EM for mixture weights: with q[k, i] = probs[k, i, y_i],
    w_k <- mean_i (w_k q[k, i] / sum_j w_j q[j, i]), from w = 1/K, until no weight
    moves more than `tol`. Each step stays on the simplex and does not increase the
    (convex) loss, so the limit is its minimum.

    Args:
      probs: [K, N, C] member probabilities on the validation examples.
      labels: [N] int labels.

    Returns:
      float64 [K], >= 0, summing to 1.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    if probs.ndim != 3 or probs.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"fit_weights: probs must be [K, N, C] with N = len(labels) > 0, "
                         f"got shape {list(probs.shape)} and {len(labels)} labels")
    k = probs.shape[0]
    q = np.maximum(probs[:, np.arange(len(labels)), labels], _EPS)  # [K, N]
    w = np.full([k], 1.0 / k)
    for _ in range(max_iter):
        mix = w @ q                                                 # [N]
        new = w * np.mean(q / mix, axis=1)
        new /= new.sum()
        done = np.max(np.abs(new - w)) < tol
        w = new
        if done:
            break
    return w


# -- the run --------------------------------------------------------------------------

@dataclasses.dataclass
class EnsembleConfig:
    """Everything `run_ensemble` needs (the flags of the same names)."""
    members: Sequence[str]
    method: str = "average"
    val_size: Optional[int] = None
    split_seed: Optional[int] = None
    train_limit: Optional[int] = None
    test_limit: int = 0
    data_dir: Optional[str] = None
    output_key: Optional[str] = None
    batch_size: int = 1000


def _config_value(run_config: Mapping[str, Any], key: str):
    """A member's recorded setting; runs from before train.vat had --split_seed drew
    their split with --seed, so `split_seed` falls back to `seed` there."""
    if key == "split_seed" and "split_seed" not in run_config:
        return run_config.get("seed")
    return run_config.get(key)


def resolve_split(config: EnsembleConfig, run_configs: Mapping[str, Optional[dict]],
                  log=print) -> Tuple[int, int, int]:
    """(val_size, split_seed, train_limit): each from its flag when given, else the
    value all members' run configs agree on, else (no member records it) the default
    (0 for all three). With --method=average, members that disagree only turn the
    validation metrics off (val_size 0), with a warning.

    Raises:
      ValueError: --method=weighted with members that disagree (or only some record a
        value) and no explicit flag, or without a validation split.
    """
    resolved = {}
    for flag, key in (("val_size", "val_size"), ("split_seed", "split_seed"),
                      ("train_limit", "train_limit")):
        explicit = getattr(config, flag)
        values = {p: (None if c is None else _config_value(c, key))
                  for p, c in run_configs.items()}
        known = [v for v in values.values() if v is not None]
        agree = len(known) == len(values) and len({repr(v) for v in known}) == 1
        detail = ", ".join(f"{p}: {v!r}" for p, v in values.items())
        if explicit is not None:
            if known and (not agree or known[0] != explicit):
                log(f"WARNING: --{flag}={explicit} but the members were trained with "
                    f"{key} = ({detail}): the validation split may overlap their "
                    f"training data, making the fitted weights and val scores optimistic")
            resolved[flag] = int(explicit)
        elif agree:
            resolved[flag] = int(known[0])
        elif not known:
            resolved[flag] = 0
        elif config.method == "average":
            log(f"WARNING: the members were trained with different (or unrecorded) "
                f"{key}: {detail}; reporting no validation metrics (give --{flag} to "
                f"get them)")
            resolved = {"val_size": 0, "split_seed": 0, "train_limit": 0}
            break
        else:
            raise ValueError(f"the members were trained with different (or unrecorded) "
                             f"{key}: {detail}. Their validation splits differ, so one "
                             f"member's validation images may be another's training "
                             f"images; give --{flag} explicitly to proceed anyway")
    if config.method == "weighted" and resolved["val_size"] <= 0:
        raise ValueError("--method=weighted fits the weights on a validation split, but "
                         "val_size is 0 (the members were trained on every training "
                         "image, or record no val_size and no --val_size was given); "
                         "fitting on the test set is refused. Train the members with "
                         "--val_size=N and pass it, or use --method=average")
    return resolved["val_size"], resolved["split_seed"], resolved["train_limit"]


def load_split(config: EnsembleConfig, val_size: int, split_seed: int,
               train_limit: int, data=None):
    """((x_val, y_val) or None, (x_test, y_test)): float32 images [N, 28, 28, 1]."""
    from tfcore import data as tfdata  # pylint: disable=import-outside-toplevel
    (x_tr, y_tr), (x_te, y_te) = data if data is not None else \
        tfdata.load_mnist(config.data_dir)
    if train_limit:
        x_tr, y_tr = x_tr[:train_limit], y_tr[:train_limit]
    if config.test_limit:
        x_te, y_te = x_te[:config.test_limit], y_te[:config.test_limit]
    val = None
    if val_size:
        _, (x_val, y_val) = tfdata.train_val_split(x_tr, y_tr, val_size, split_seed)
        val = (tfdata.mnist_images(x_val), np.asarray(y_val, np.int64))
    return val, (tfdata.mnist_images(x_te), np.asarray(y_te, np.int64))


def _scores(p: Optional[np.ndarray], y: Optional[np.ndarray]) -> Tuple[Optional[float],
                                                                       Optional[float]]:
    if p is None:
        return None, None
    return accuracy(p, y), log_loss(p, y)


def results_table(result: Mapping[str, Any]) -> str:
    """A markdown table: one row per member, then the ensemble(s)."""
    def f(v, pct=False):
        if v is None:
            return ""
        return f"{100 * v:.2f}%" if pct else f"{v:.4f}"
    lines = ["| model | weight | val accuracy | val log-loss | test accuracy | "
             "test log-loss |", "|---|---|---|---|---|---|"]
    for m in result["members"]:
        lines.append(f"| {m['path']} | {m['weight']:.4f} | {f(m['val_accuracy'], True)} | "
                     f"{f(m['val_loss'])} | {f(m['test_accuracy'], True)} | "
                     f"{f(m['test_loss'])} |")
    rows = [("ensemble (" + result["method"] + ")", result)]
    if "average" in result:
        rows.append(("ensemble (average)", result["average"]))
    for name, r in rows:
        lines.append(f"| **{name}** | | {f(r['val_accuracy'], True)} | "
                     f"{f(r['val_loss'])} | {f(r['test_accuracy'], True)} | "
                     f"{f(r['test_loss'])} |")
    return "\n".join(lines) + "\n"


def run_ensemble(config: EnsembleConfig, workdir: Optional[str], data=None,
                 log=print) -> Dict[str, Any]:
    """Loads the members, fits / averages, evaluates; writes workdir/metrics.json.

    Args:
      config: an `EnsembleConfig`.
      workdir: where metrics.json and results.md go (None: nothing written).
      data: optional ((x_train, y_train), (x_test, y_test)) uint8 arrays as
        `tfcore.data.load_mnist` returns (default: loaded from `config.data_dir`).

    Returns:
      The metrics dict (see the module docstring).

    Raises:
      MemberError: a member that is not a usable SavedModel, or members whose output
        shapes differ.
      ValueError: bad settings (method, split).
    """
    if config.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got "
                         f"{config.method!r}")
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise ValueError(f"--batch_size must be a positive integer, got "
                         f"{config.batch_size!r}")
    paths = expand_members(config.members)
    for p in paths:
        find_saved_model(p)  # fail fast, before loading anything
    members = [load_member(p, config.output_key) for p in paths]
    run_configs = {p: member_run_config(p) for p in paths}
    val_size, split_seed, train_limit = resolve_split(config, run_configs, log)
    val, (x_test, y_test) = load_split(config, val_size, split_seed, train_limit, data)

    test_p, val_p = [], []
    for m in members:
        test_p.append(m.predict(x_test, config.batch_size))
        if val is not None:
            val_p.append(m.predict(val[0], config.batch_size))
    first = members[0]
    for m, p in zip(members[1:], test_p[1:]):
        if p.shape != test_p[0].shape:
            raise MemberError(f"member {m.path!r} outputs shape {list(p.shape)} but "
                              f"member {first.path!r} outputs {list(test_p[0].shape)} "
                              f"on the same {len(x_test)} test images: members must "
                              f"predict the same classes")
    num_classes = test_p[0].shape[1]
    top = int(max(y_test.max(initial=0), val[1].max(initial=0) if val else 0))
    if top >= num_classes:
        raise MemberError(f"members output {num_classes} classes but the labels go up to "
                          f"{top}")

    k = len(members)
    test_p = np.stack(test_p)
    val_p = np.stack(val_p) if val is not None else None
    average = np.full([k], 1.0 / k)
    weights = fit_weights(val_p, val[1]) if config.method == "weighted" else average

    y_val = val[1] if val is not None else None
    result: Dict[str, Any] = {"status": "done", "method": config.method, "members": []}
    for i, m in enumerate(members):
        va, vl = _scores(val_p[i] if val_p is not None else None, y_val)
        ta, tl = _scores(test_p[i], y_test)
        result["members"].append({"path": m.path, "saved_model": m.saved_model,
                                  "weight": float(weights[i]), "val_accuracy": va,
                                  "val_loss": vl, "test_accuracy": ta, "test_loss": tl})
    result["weights"] = [float(w) for w in weights]

    def evaluate(w):
        va, vl = _scores(combine(val_p, w) if val_p is not None else None, y_val)
        ta, tl = _scores(combine(test_p, w), y_test)
        return {"val_accuracy": va, "val_loss": vl, "test_accuracy": ta, "test_loss": tl}

    result.update(evaluate(weights))
    if config.method == "weighted":
        result["average"] = evaluate(average)
    result.update({"val_size": val_size, "split_seed": split_seed,
                   "train_limit": train_limit, "num_val": 0 if val is None else len(y_val),
                   "num_test": len(y_test), "num_classes": num_classes})
    table = results_table(result)
    log(table.rstrip())
    if workdir:
        from tfcore.training import metrics_io  # pylint: disable=import-outside-toplevel
        metrics_io.write_metrics(workdir, result)
        metrics_io.atomic_write_text(os.path.join(workdir, "results.md"), table)
    return result


# -- the binary -----------------------------------------------------------------------

def define_flags(fv: flags.FlagValues) -> None:
    """The ensemble's flags, on their own `FlagValues`."""
    d = dict(flag_values=fv)
    flags.DEFINE_list("members", [], "SavedModel or run directories (comma-separated, "
                      "wildcards allowed).", **d)
    flags.DEFINE_enum("method", "average", list(METHODS), "average, or weighted (weights "
                      "fitted on the validation split).", **d)
    flags.DEFINE_string("workdir", None, "Where metrics.json and results.md go.", **d)
    flags.DEFINE_integer("val_size", None, "Validation images held out of the training "
                         "set (default: the members' val_size).", **d)
    flags.DEFINE_integer("split_seed", None, "Seed of the split (default: the members' "
                         "split_seed).", **d)
    flags.DEFINE_integer("train_limit", None, "The members' --train_limit (default: "
                         "theirs).", **d)
    flags.DEFINE_integer("test_limit", 0, "Evaluate on the first N test images (0: "
                         "all).", **d)
    flags.DEFINE_string("data_dir", None, "Directory holding mnist.npz (default: "
                        "$TFCORE_DATA_DIR, then ~/.keras/datasets).", **d)
    flags.DEFINE_string("output_key", None, "The members' output to use (default "
                        "'probabilities', or the only one).", **d)
    flags.DEFINE_integer("batch_size", 1000, "Prediction batch size.", **d)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses `argv` (default sys.argv) and runs; 0 on success, 2 on an error."""
    argv = list(sys.argv if argv is None else argv)
    fv = flags.FlagValues()
    define_flags(fv)
    if any(a in ("-h", "--help", "--helpfull", "-?") for a in argv[1:]):
        print(__doc__)
        print(fv.get_help())
        return 0
    try:
        rest = fv(argv)
        if len(rest) > 1:
            raise ValueError(f"unexpected arguments: {rest[1:]}")
        if fv.val_size is not None and fv.val_size < 0:
            raise ValueError(f"--val_size must be >= 0, got {fv.val_size}")
        if fv.data_dir is not None and not os.path.isdir(fv.data_dir):
            raise ValueError(f"--data_dir {fv.data_dir!r} is not a directory")
        config = EnsembleConfig(members=fv.members, method=fv.method,
                                val_size=fv.val_size, split_seed=fv.split_seed,
                                train_limit=fv.train_limit, test_limit=fv.test_limit,
                                data_dir=fv.data_dir, output_key=fv.output_key,
                                batch_size=fv.batch_size)
        run_ensemble(config, fv.workdir)
    except (flags.Error, ValueError) as e:
        print(f"train.ensemble: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
