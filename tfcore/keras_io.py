"""Keras weights in and out: `.keras`, `.weights.h5` (Keras 3) and Keras 2 `.h5` files.

`load_weights(module, path)` copies the weights of a Keras model saved in any of
these formats into a built tfcore module, matching layers by name;
`save_weights(module, path)` writes a Keras 3 `.weights.h5` that Keras 3's
`model.load_weights` reads into the same architecture. h5py reads and writes the
files; Keras itself is not imported.

Formats (detected from the content, not the file name):

* Keras 3 `.keras`: a zip archive; the weights are its `model.weights.h5`.
* Keras 3 `.weights.h5` (and the `model.weights.h5` of a tf-keras `.keras`): one
  HDF5 group per layer at its Keras path, `layers/<class>[_k]/vars/0..n-1`
  (snake-cased class name numbered in model order; nested models add
  `layers/...` levels, an RNN's weights sit in `layers/lstm/cell/vars`), the
  weights in the layer's order (trainable ones first, each in creation order), the
  layer name in the `vars` group's `name` attribute (written by Keras 3.15; older files
  have none). Optimizer state (groups named `optimizer` or `*_optimizer`) is
  ignored.
* Keras 2 (tf-keras) `.h5`: a whole model (`model.save('m.h5')`: the weights in
  the `model_weights` group) or weights only (`model.save_weights('w.h5')`): one
  group per top-level layer named as the layer, listed in the `layer_names`
  attribute, its weights named in `weight_names` (`conv2d/kernel:0`). A nested
  model is one group whose weights are named by the inner layers
  (`conv_1/kernel:0`). Keras 3's own legacy `.h5` has the same layout.

Which weights are whose (`keras_layers(module)` lists the tfcore side):

* A *weight layer* is a module that holds `tf.Variable`s as attributes; each such
  attribute is a weight named like Keras's (`kernel`, `bias`, `gamma`, ...). Its
  weights are in Keras's order: trainable ones first, each group in creation
  order (the order the attributes were set). Containers (`Sequential`, models)
  hold layers, not weights.
* A layer's *name path* is the names of the modules from the root (excluded) down
  to it, e.g. `('encoder', 'conv2d')` for a `ConvAutoencoder`'s first conv. In a
  file, it is the names of the layers and nested models from the model (excluded)
  down to the layer. A name containing `__` stands for a nested path: Keras names
  cannot contain `/`, so a flat Keras functional model names a tfcore layer
  `block_1/conv_1` as `block_1__conv_1`.
* A file layer and a tfcore layer *match* when their name paths are equal, or else
  when they end in the same name and the enclosing names of the shorter path occur
  in order in the longer one (a container on one side only, such as the tfcore
  autoencoders' `encoder` / `decoder` Sequentials or a Keras nested model, is
  skipped). Equal paths are paired first; a layer with more than one candidate is
  ambiguous and refused. A module shared by several paths (a tied decoder's
  encoder, a shared LSTM or vision tower) is one layer, at its shortest path.
* Keras 3 files name each layer twice: by its layer name (the `name` attribute)
  and by its path, the snake-cased class name numbered in model order, which is
  what Keras 3 itself loads by and which is reproducible across sessions. Layer
  names are tried first, then path names, then the nested models' names with the
  layers' paths inside them (a Keras GAN `Sequential([generator, discriminator])`:
  the discriminator's layers are named after the generator's, `conv2d_4`, ..., but
  their paths restart at `conv2d` inside it); the first that fits is used.
* Keras 3 weights are matched by position; Keras 2 weights by name, with the
  Keras 2 names of `KERAS2_WEIGHT_NAMES` accepted (DepthwiseConv2D's kernel is
  `depthwise_kernel` in Keras 2, `kernel` in Keras 3 and tfcore). A weight stored
  in two Keras 2 groups under one name and value (a tied layer that holds its
  encoder) is read once.

Nothing is assigned unless every weight of the module gets a value of its shape
and every weight in the file (optimizer state excepted) is used: otherwise
`WeightsMismatchError` lists the missing, unexpected, mis-shaped and ambiguous
weights by name. Errors are one line and name the file; see `load_weights`.
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import tensorflow as tf

from tfcore.checks import ArgumentError
from tfcore.layer import Layer

PathLike = Union[str, os.PathLike]
NamePath = Tuple[str, ...]

# How Keras names and stores the tfcore layers whose Keras spelling differs from
# tfcore's (looked up by class name along the MRO, so subclasses inherit it).
KERAS_CLASS_NAMES: Dict[str, str] = {"BatchNorm": "BatchNormalization"}
KERAS2_WEIGHT_NAMES: Dict[str, Dict[str, str]] = {
    "DepthwiseConv2D": {"kernel": "depthwise_kernel"}}
# Keras 3 stores an RNN's weights in its cell: layers/<lstm>/cell/vars, named lstm_cell.
KERAS3_WEIGHT_SUBPATHS: Dict[str, Tuple[str, str]] = {"LSTM": ("cell", "lstm_cell")}

_ARCHIVE_WEIGHTS = "model.weights.h5"


# --- errors -------------------------------------------------------------------------
class KerasIOError(ArgumentError):
    """A Keras weights file that cannot be loaded into, or saved from, a module (an
    `ArgumentError`, so a `ValueError`: the binaries print it as one line)."""


class WeightsFileNotFoundError(FileNotFoundError):
    """The weights file does not exist."""


class WeightsFormatError(KerasIOError):
    """The file is not a Keras weights file this module reads."""


class NotBuiltError(KerasIOError):
    """The module has no variables yet (call it once on an example input)."""


class WeightsMismatchError(KerasIOError):
    """The file's weights do not fit the module; nothing was assigned.

    Attributes: `missing`, `unexpected`, `misshaped`, `ambiguous` (lists of str).
    """

    def __init__(self, message: str, missing: Sequence[str], unexpected: Sequence[str],
                 misshaped: Sequence[str], ambiguous: Sequence[str]):
        super().__init__(message)
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.misshaped, self.ambiguous = list(misshaped), list(ambiguous)


class LoadResult(NamedTuple):
    """What `load_weights` did: the file, its format, the naming that fitted
    ('layer name' or 'Keras 3 path'), and how many layers and weights were assigned."""

    path: str
    format: str
    matched_by: str
    layers: int
    weights: int


# --- the tfcore side ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KerasLayer:
    """One weight layer of a tfcore module, as Keras sees it.

    Attributes:
      path: its name path (module names below the root).
      module: the tfcore module.
      weights: `(name, variable)` pairs in Keras's order (trainable first, each in
        creation order); `name` is the Keras 3 weight name (the attribute name).
    """

    path: NamePath
    module: tf.Module
    weights: Tuple[Tuple[str, tf.Variable], ...]

    @property
    def name(self) -> str:
        """The Keras layer name of a flat Keras model: the path joined by '__'."""
        return "__".join(self.path)

    @property
    def keras_class(self) -> str:
        """The Keras class name (tfcore's class name unless `KERAS_CLASS_NAMES` says)."""
        return _class_info(self.module, KERAS_CLASS_NAMES) or type(self.module).__name__

    def keras2_name(self, weight: str) -> str:
        """The Keras 2 name of weight `weight` (e.g. 'depthwise_kernel' for 'kernel')."""
        return (_class_info(self.module, KERAS2_WEIGHT_NAMES) or {}).get(weight, weight)


def _class_info(module, table):
    for cls in type(module).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return None


def _children(value):
    """The tf.Modules held by an attribute value (itself, or inside lists/dicts)."""
    if isinstance(value, tf.Module):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _children(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _children(v)


def _module_children(module) -> List[tf.Module]:
    return [c for value in vars(module).values() for c in _children(value)]


def _own_weights(module) -> Tuple[Tuple[str, tf.Variable], ...]:
    """The variables held directly as attributes, trainable first, in creation order."""
    own = [(k, v) for k, v in vars(module).items() if isinstance(v, tf.Variable)]
    return tuple(sorted(own, key=lambda kv: not kv[1].trainable))  # stable


def _split(name: str) -> NamePath:
    return tuple(p for p in name.split("__") if p)


def keras_layers(module: tf.Module) -> List[KerasLayer]:
    """The weight layers of `module` with their name paths, in Keras model order.

    Order: depth first through the attributes in the order they were set (a
    `Sequential`'s `layers` in order), each module once; this is the order of the
    equivalent Keras model's layers class by class, which numbers Keras 3's paths.
    Paths: each module's shortest path of module names (breadth first), with names
    containing '__' split into levels; the root's name is not part of them, unless
    the root is itself a weight layer.
    """
    # The root is nameless, unless it is itself a weight layer (a lone Dense).
    paths: Dict[int, NamePath] = {id(module): _split(module.name) if _own_weights(module)
                                  else ()}
    frontier = [module]
    while frontier:  # breadth first: the shortest path of every module
        nxt = []
        for m in frontier:
            for c in _module_children(m):
                if id(c) not in paths:
                    paths[id(c)] = paths[id(m)] + _split(c.name)
                    nxt.append(c)
        frontier = nxt
    order, seen, stack = [], set(), [module]
    while stack:  # depth first, attribute order: the Keras layer order
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        order.append(m)
        stack.extend(reversed(_module_children(m)))
    return [KerasLayer(paths[id(m)], m, _own_weights(m)) for m in order if _own_weights(m)]


def _built_layers(module: tf.Module, path: str, action: str) -> List[KerasLayer]:
    """keras_layers(module), or NotBuiltError when some tfcore Layer is not built."""
    unbuilt = [m.name for m in [module, *module.submodules]
               if isinstance(m, Layer) and not m.built]
    layers = keras_layers(module)
    if unbuilt or not layers:
        what = (f"layers not built: {', '.join(unbuilt)}" if unbuilt
                else "it has no variables")
        raise NotBuiltError(f"{path}: cannot {action} module {module.name!r}, {what}; "
                            f"call it once on an example input first")
    return layers


# --- the file side -----------------------------------------------------------------
@dataclasses.dataclass
class _FileLayer:
    """A layer's weights in a file: `names` (layer names), `alt_names` (Keras 3 path
    names, or None), `weights`: (name or None for positional, label, h5py.Dataset)."""

    names: NamePath
    alt_names: Optional[NamePath]
    weights: List[Tuple[Optional[str], str, h5py.Dataset]]


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _open(path: str):
    """(h5py.File, format label) for a Keras weights file; raises the file errors."""
    if not os.path.exists(path):
        raise WeightsFileNotFoundError(f"Keras weights file not found: {path}")
    if os.path.isdir(path):
        raise WeightsFormatError(f"{path}: is a directory, not a Keras weights file "
                                 f"(a TensorFlow SavedModel is not read)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if _ARCHIVE_WEIGHTS not in archive.namelist():
                raise WeightsFormatError(f"{path}: a zip archive without "
                                         f"{_ARCHIVE_WEIGHTS}, not a .keras file")
            data = archive.read(_ARCHIVE_WEIGHTS)
        return h5py.File(io.BytesIO(data), "r"), "Keras 3 .keras archive"
    if not h5py.is_hdf5(path):
        raise WeightsFormatError(f"{path}: not a Keras weights file (neither HDF5 nor a "
                                 f".keras zip archive)")
    try:
        return h5py.File(path, "r"), None
    except OSError as e:
        raise WeightsFormatError(f"{path}: unreadable HDF5 file ({e})") from None


def _read_layers(h5: h5py.File, path: str, label: Optional[str]):
    """(format label, [_FileLayer]) from an open file, by its layout."""
    if "model_weights" in h5 and "layer_names" in h5["model_weights"].attrs:
        version = _text(h5.attrs.get("keras_version", "2"))
        return f"Keras {version} .h5 (whole model)", _read_keras2(h5["model_weights"])
    if "layer_names" in h5.attrs:
        version = _text(h5.attrs.get("keras_version", "2"))
        return f"Keras {version} .h5 (weights only)", _read_keras2(h5)
    if "vars" in h5 or "layers" in h5 or "_layer_checkpoint_dependencies" in h5:
        return label or "Keras 3 .weights.h5", _read_keras3(h5)
    raise WeightsFormatError(f"{path}: HDF5 without a Keras weights layout (no 'layers' "
                             f"or 'vars' group of Keras 3, no 'layer_names' of Keras 2)")


def _read_keras2(group: h5py.Group) -> List[_FileLayer]:
    """Keras 2 layout: a group per layer (`layer_names`), weights named in
    `weight_names` ('<layer>[/<sub-object>]/<weight>:0'); see the module docstring."""
    out, seen = [], {}
    names = [_text(n) for n in group.attrs["layer_names"]]
    if "top_level_model_weights" in group:  # a subclassed model's own weights
        names.append("top_level_model_weights")
    for gname in names:
        g = group[gname]
        entries = []
        for wname in (_text(w) for w in g.attrs.get("weight_names", [])):
            ds = g[wname]
            first = seen.setdefault(wname, ds)
            if first is not ds and first.shape == ds.shape and np.array_equal(first[()],
                                                                               ds[()]):
                continue  # the same weight held by two layers (a tied decoder)
            entries.append((wname, ds))
        by_path: Dict[NamePath, list] = {}
        for wname, ds in entries:
            *owner, short = wname.split("/")
            short = short.split(":")[0]
            own = gname in owner or gname == "top_level_model_weights"
            sub = owner[owner.index(gname) + 1:] if gname in owner else owner
            sub = tuple(p for part in sub for p in _split(part))
            base = () if gname == "top_level_model_weights" else _split(gname)
            by_path.setdefault(base if own else base + sub, []).append(
                (short, sub, wname, ds))
        for lpath, ws in by_path.items():
            shorts = [w[0] for w in ws]
            if len(set(shorts)) < len(shorts):  # several sub-layers: keep them apart
                for short, sub, wname, ds in ws:
                    out.append(_FileLayer(lpath + sub, None, [(short, wname, ds)]))
            else:
                out.append(_FileLayer(lpath, None, [(s, w, d) for s, _, w, d in ws]))
    return _merge_same_path(out)


def _merge_same_path(layers: List[_FileLayer]) -> List[_FileLayer]:
    merged: Dict[Tuple[NamePath, Optional[NamePath]], _FileLayer] = {}
    for layer in layers:
        key = (layer.names, layer.alt_names)
        if key in merged:
            merged[key].weights.extend(layer.weights)
        else:
            merged[key] = layer
    return list(merged.values())


@dataclasses.dataclass
class _Node:
    segment: str
    name: str
    via_list: bool
    datasets: List[Tuple[str, h5py.Dataset]]
    children: List["_Node"]


def _keras3_node(group: h5py.Group, segment: str, via_list: bool) -> _Node:
    """The saveable at `group`: its `vars` datasets (in index order) and children."""
    vars_group = group["vars"]
    keys = sorted(vars_group, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0,
                                             k))
    node = _Node(segment, _text(vars_group.attrs.get("name", segment)), via_list,
                 [(vars_group[k].name, vars_group[k]) for k in keys], [])
    _keras3_children(group, node, False)
    return node


def _keras3_children(group: h5py.Group, node: _Node, in_list: bool) -> None:
    """Adds the saveables below `group` (groups with a `vars` group) to `node`; a
    group without `vars` is a container (`layers`, a list attribute): its saveables
    are elements of a list."""
    for key, child in group.items():
        if key == "vars" or not isinstance(child, h5py.Group):
            continue
        if key == "optimizer" or key.endswith("_optimizer"):
            continue  # optimizer state, not layer weights
        if "vars" in child:
            node.children.append(_keras3_node(child, key, in_list))
        else:
            _keras3_children(child, node, True)


def _has_weights(node: _Node) -> bool:
    return bool(node.datasets) or any(_has_weights(c) for c in node.children)


def _fold(node: _Node, is_root: bool) -> None:
    """Moves an RNN cell's weights into its layer: a sub-object reached by attribute
    (not a `layers` list), the only one with weights, of a layer without weights."""
    for c in node.children:
        _fold(c, False)
    holders = [c for c in node.children if _has_weights(c)]
    if (not is_root and not node.datasets and len(holders) == 1
            and not holders[0].via_list and not holders[0].children):
        node.datasets = holders[0].datasets
        node.children = [c for c in node.children if c is not holders[0]]


def _read_keras3(h5: h5py.File) -> List[_FileLayer]:
    """Keras 3 layout: saveables with `vars` groups, nested by `layers` lists."""
    if "vars" in h5:
        root = _keras3_node(h5, "", False)
    else:
        root = _Node("", "", False, [], [])
        _keras3_children(h5, root, False)
    _fold(root, True)
    out = []

    def visit(node, names, segments):
        if node.datasets:
            out.append(_FileLayer(names, segments,
                                  [(None, label, ds) for label, ds in node.datasets]))
        for c in node.children:
            visit(c, names + _split(c.name), segments + (c.segment,))

    visit(root, (), ())
    return out


# --- matching --------------------------------------------------------------------------
def _is_subsequence(short: NamePath, long: NamePath) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def _compatible(a: NamePath, b: NamePath) -> bool:
    if not a or not b:
        return a == b
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return a[-1] == b[-1] and _is_subsequence(short[:-1], long[:-1])


def _pair_layers(ours: List[KerasLayer], theirs: List[_FileLayer],
                 key: Callable[[_FileLayer], NamePath]):
    """Pairs file layers with ours by name path (`key` of a file layer): ([(ours,
    theirs)], ambiguous, unused file layers, unmatched ours)."""
    pairs, ambiguous = [], []
    left_ours, left_theirs = list(ours), []
    for f in theirs:  # equal paths first
        exact = [t for t in left_ours if t.path == key(f)]
        if len(exact) == 1:
            pairs.append((exact[0], f))
            left_ours.remove(exact[0])
        else:
            left_theirs.append(f)
    unused = []
    for f in left_theirs:
        cands = [t for t in left_ours if _compatible(t.path, key(f))]
        back = [g for g in left_theirs if cands and _compatible(cands[0].path, key(g))]
        if len(cands) == 1 and len(back) == 1:
            pairs.append((cands[0], f))
            left_ours.remove(cands[0])
        elif cands:
            ambiguous.append(f"{'__'.join(key(f))} matches "
                             f"{' and '.join(t.name for t in cands)}")
        else:
            unused.append(f)
    return pairs, ambiguous, unused, left_ours


def _shape(ds) -> Tuple[int, ...]:
    return tuple(int(d) for d in ds.shape)


def _pair_weights(t: KerasLayer, f: _FileLayer, assign, missing, unexpected, misshaped):
    """Pairs one layer's weights (by position for Keras 3, by name for Keras 2)."""
    if f.weights and f.weights[0][0] is None:
        matched = list(zip(t.weights, f.weights))
        missing += [f"{t.name}/{n}" for n, _ in t.weights[len(f.weights):]]
        unexpected += [f"{label} {_shape(ds)}"
                       for _, label, ds in f.weights[len(t.weights):]]
    else:
        by_name = {w[0]: w for w in f.weights}
        matched = []
        for n, v in t.weights:
            w = by_name.pop(t.keras2_name(n), None) or by_name.pop(n, None)
            if w is None:
                missing.append(f"{t.name}/{n}")
            else:
                matched.append(((n, v), w))
        unexpected += [f"{label} {_shape(ds)}" for _, label, ds in by_name.values()]
    for (n, v), (_, label, ds) in matched:
        if _shape(ds) != tuple(v.shape):
            misshaped.append(f"{t.name}/{n} is {tuple(v.shape)}, file {label} "
                             f"{_shape(ds)}")
        else:
            assign.append((v, ds))


def _plan(ours: List[KerasLayer], theirs: List[_FileLayer],
          key: Callable[[_FileLayer], NamePath]):
    """(assignments, missing, unexpected, misshaped, ambiguous) for one naming."""
    pairs, ambiguous, unused, left = _pair_layers(ours, theirs, key)
    assign, missing, unexpected, misshaped = [], [], [], []
    for t, f in pairs:
        _pair_weights(t, f, assign, missing, unexpected, misshaped)
    missing += [f"{t.name}/{n}" for t in left for n, _ in t.weights]
    unexpected += [f"{label} {_shape(ds)}" for f in unused for _, label, ds in f.weights]
    return assign, missing, unexpected, misshaped, ambiguous


def _mismatch_error(path, module, fmt, naming, plan) -> WeightsMismatchError:
    _, missing, unexpected, misshaped, ambiguous = plan
    parts = [f"{what}: {', '.join(items)}" for what, items in (
        ("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
        ("ambiguous", ambiguous)) if items]
    return WeightsMismatchError(
        f"{path}: does not fit module {module.name!r} ({fmt}, layers matched by "
        f"{naming}): {'; '.join(parts)}; nothing was assigned",
        missing, unexpected, misshaped, ambiguous)


# --- public API ---------------------------------------------------------------------------
def load_weights(module: tf.Module, path: PathLike) -> LoadResult:
    """Assigns a Keras model's weights from `path` to the built `module`, by layer name.

    Reads Keras 3 `.keras` archives and `.weights.h5` files and Keras 2 `.h5` files
    (whole model or weights only), detected from the content; matches layers and
    weights as the module docstring says. Every variable of every weight layer of
    `module` (BatchNorm's moving statistics included) gets the file's value; the
    file's optimizer state is ignored. Nothing is assigned unless everything fits.
    Call it eagerly (outside `tf.function`).

    Args:
      module: a BUILT tfcore module (a `tfcore.Layer` or any `tf.Module` of them).
      path: the file.

    Returns:
      A `LoadResult` (format, the naming that fitted, layers and weights assigned).

    Raises:
      WeightsFileNotFoundError (a FileNotFoundError): `path` does not exist.
      NotBuiltError (a ValueError): `module` has unbuilt layers or no variables.
      WeightsFormatError (a ValueError): not a Keras weights file read here.
      WeightsMismatchError (a ValueError): the weights do not fit; the one-line
        message lists the missing, unexpected, mis-shaped and ambiguous weights.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsFileNotFoundError(f"Keras weights file not found: {path}")
    ours = _built_layers(module, path, "load weights into")
    h5, label = _open(path)
    with h5:
        fmt, theirs = _read_layers(h5, path, label)
        namings = [("layer name", lambda f: f.names)]
        if any(f.alt_names is not None and f.alt_names != f.names for f in theirs):
            namings += [("Keras 3 path", lambda f: f.alt_names),
                        ("nested model name and Keras 3 path",
                         lambda f: f.names[:-1] + (f.alt_names or f.names)[-1:])]
        plans = [(naming, _plan(ours, theirs, key)) for naming, key in namings]
        for naming, plan in plans:
            if not any(plan[1:]):
                values = [(v, np.asarray(ds[()]).astype(v.dtype.as_numpy_dtype))
                          for v, ds in plan[0]]
                for v, value in values:
                    v.assign(value)
                return LoadResult(path, fmt, naming, len(ours), len(values))
    naming, plan = min(plans, key=lambda p: sum(len(x) for x in p[1][1:]))
    raise _mismatch_error(path, module, fmt, naming, plan)


def _snake_case(name: str) -> str:
    """Keras's `naming.to_snake_case`: 'Conv2DTranspose' -> 'conv2d_transpose'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _in_keras_order(layers: List[KerasLayer], layer_order: Sequence[str],
                    path: str) -> List[KerasLayer]:
    """`layers` sorted by the position of their Keras layer name in `layer_order`."""
    keys = [_split(n) for n in layer_order]
    position, unplaced = {}, []
    for layer in layers:
        hits = [i for i, k in enumerate(keys) if _compatible(layer.path, k)]
        exact = [i for i in hits if keys[i] == layer.path]
        if len(exact) == 1 or len(hits) == 1:
            position[id(layer)] = (exact or hits)[0]
        else:
            unplaced.append(f"{layer.name} ({'ambiguous' if hits else 'not named'})")
    if unplaced:
        raise KerasIOError(f"{path}: layer_order does not place the weight layers "
                           f"{', '.join(unplaced)}")
    return sorted(layers, key=lambda layer: position[id(layer)])


def save_weights(module: tf.Module, path: PathLike,
                 layer_order: Optional[Sequence[str]] = None) -> None:
    """Writes the built `module`'s weights as a Keras 3 `.weights.h5` file.

    Layout: each weight layer of `keras_layers(module)`, in that order, at
    `layers/<snake-cased Keras class>[_k]/vars/0..n-1` (k counting the earlier layers
    of that class), its weights in Keras's order and its name ('__'-joined path) in
    the `name` attribute; an LSTM's weights in `layers/lstm[_k]/cell/vars`. Keras 3's
    `model.load_weights(path)` reads it into the Keras model with the same weight
    layers, class by class in the same order, directly in its `layers` (a
    Sequential, or a functional model without nested models); `load_weights` reads
    it back. The file is written to `path + '.tmp'` and then renamed.

    Args:
      module: a BUILT tfcore module.
      path: the file; its name must end in '.weights.h5'.
      layer_order: the Keras model's layer names in its `layers` order (e.g.
        `[l.name for l in keras_model.layers]`), when it differs from the module's
        attribute order (a functional model's layers come in graph order); each
        weight layer goes where its name is (matched as `load_weights` matches).

    Raises:
      KerasIOError (a ValueError): `path` does not end in '.weights.h5' (Keras 3
        loads only such names), or `layer_order` does not place every weight layer.
      NotBuiltError (a ValueError): `module` has unbuilt layers or no variables.
    """
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise KerasIOError(f"{path}: a Keras 3 weights file name must end in "
                           f".weights.h5")
    layers = _built_layers(module, path, "save weights of")
    if layer_order is not None:
        layers = _in_keras_order(layers, layer_order, path)
    tmp = path + ".tmp"
    counts: Dict[str, int] = {}
    with h5py.File(tmp, "w") as h5:
        h5.create_group("vars").attrs["name"] = module.name
        group = h5.create_group("layers")
        for layer in layers:
            target = _keras3_group(group, layer, counts)
            for i, (_, v) in enumerate(layer.weights):
                target[str(i)] = v.numpy()
    os.replace(tmp, path)


def _keras3_group(group: h5py.Group, layer: KerasLayer, counts: Dict[str, int]):
    """Creates `layers/<class>[_k]/vars` (or its RNN cell's) for `layer`; returns it."""
    snake = _snake_case(layer.keras_class)
    k = counts.get(snake, 0)
    counts[snake] = k + 1
    g = group.create_group(snake if k == 0 else f"{snake}_{k}")
    target = g.create_group("vars")
    target.attrs["name"] = layer.name
    sub = _class_info(layer.module, KERAS3_WEIGHT_SUBPATHS)
    if sub is not None:
        target = g.create_group(sub[0]).create_group("vars")
        target.attrs["name"] = sub[1]
    return target


__all__ = ["KERAS2_WEIGHT_NAMES", "KERAS3_WEIGHT_SUBPATHS", "KERAS_CLASS_NAMES",
           "KerasIOError", "KerasLayer", "LoadResult", "NotBuiltError",
           "WeightsFileNotFoundError", "WeightsFormatError", "WeightsMismatchError",
           "keras_layers", "load_weights", "save_weights"]
