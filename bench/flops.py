"""FLOPs of a train step: counted from XLA's HLO, or from the TensorFlow graph.

What is counted: the multiply-adds of matrix products and convolutions, 2 FLOPs
each (a multiply and an add), i.e. the work a matmul peak is measured in. Element-
wise ops, reductions, RNG and optimizer updates are not counted: in the models here
they are a few percent of the total, and they do not run at matmul speed anyway.
A reduction written as a matmul is a matmul here: on CPU, Conv2D's bias gradient is
ones @ dz (`tfcore.conv2d_bias_relu`), 2 FLOPs per element of dz, 0.2 % of the VAT
CNN's step (the Keras twin's `Sum` is not counted; the bench uses the tfcore count
for both).

`count_flops(fn, *args)` tries, in order:

1. `'xla_hlo'`: `tf.function(fn, jit_compile=True).experimental_get_compiler_ir(
   *args)(stage='hlo')`, the HLO module XLA compiles for these argument shapes
   (nothing is run). Instructions not reachable from the entry computation's ROOT
   are dropped first (dead code, e.g. the unused input gradient of a first conv
   layer, which TensorFlow's graph optimiser prunes as well). Then, per instruction:

   * `dot`: 2 * prod(output shape) * prod(lhs contracting dims);
   * `convolution` (forward, input- and filter-gradient convolutions all appear as
     one): 2 * B_out * F_out * I_k * prod_d taps_d, with I_k the kernel's input
     features (per group) and taps_d, per spatial dim d, the number of
     (output position, kernel tap) pairs that land on a real input element: taps
     on padding and on the holes of an lhs (base) dilation, as in a transposed
     convolution's input gradient, are not counted. For a stride-1 'valid' conv
     this is out_d * k_d; XLA's own HloCostAnalysis counts the same way.

   Called computations (fusions, `call`, `while` bodies, `conditional` branches,
   reducers) are counted once per calling instruction: a `while` body counts as
   one iteration.
2. `'tf_graph'` (fallback, e.g. when XLA cannot compile the step): the traced
   `tf.function` graph's MatMul / BatchMatMul / Conv2D / Conv2DBackpropInput /
   Conv2DBackpropFilter / DepthwiseConv2dNative(+grads) ops, counted from their
   static shapes (ops not reachable from the outputs or the stateful ops are
   skipped; nested function calls are not entered).

Both give the same number for the models here (see tests/test_bench.py, which also
checks the VAT CNN's against a hand count).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMP = re.compile(r"^\s*(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_ARRAY = re.compile(r"^[a-z]+[0-9]*\[([0-9,]*)\]")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition|true_computation|"
                     r"false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


@dataclasses.dataclass
class FlopCount:
    """FLOPs of one call of a function.

    Attributes:
      flops: total counted FLOPs (2 per multiply-add of dots and convolutions).
      source: 'xla_hlo' or 'tf_graph' (see the module docstring).
      by_op: FLOPs per op kind ('dot', 'convolution', or TF op types).
    """

    flops: int
    source: str
    by_op: Dict[str, int]


# -- HLO text ------------------------------------------------------------------------
@dataclasses.dataclass
class _Instr:
    name: str
    shape: str
    opcode: str
    operands: List[str]
    attrs: str
    called: List[str]
    root: bool


def _split_shape(rest: str) -> Tuple[str, str]:
    """'f32[2,3]{1,0} dot(...' -> ('f32[2,3]{1,0}', 'dot(...'); tuples kept whole."""
    rest = rest.strip()
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[:i + 1], rest[i + 1:].strip()
    i = rest.find(" ")
    return (rest, "") if i < 0 else (rest[:i], rest[i + 1:].strip())


def _matching_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return len(text)


def parse_hlo(text: str) -> Tuple[Dict[str, List[_Instr]], Optional[str]]:
    """HLO module text -> ({computation name: instructions}, entry computation name)."""
    comps: Dict[str, List[_Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            m = _COMP.match(line)
            if m:
                current = m.group(2)
                comps[current] = []
                if m.group(1):
                    entry = current
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        shape, rest = _split_shape(m.group(3))
        p = rest.find("(")
        if p < 0:
            continue
        opcode = rest[:p].strip()
        q = _matching_paren(rest, p)
        operand_text, attrs = rest[p + 1:q], rest[q + 1:]
        operands = re.findall(r"%([\w.\-]+)", operand_text)
        called = _CALLED.findall(attrs)
        for group in _BRANCHES.findall(attrs):
            called += re.findall(r"%?([\w.\-]+)", group)
        comps[current].append(_Instr(m.group(2), shape, opcode, operands, attrs, called,
                                     bool(m.group(1))))
    return comps, entry


def _dims(shape: str) -> List[int]:
    m = _ARRAY.match(shape)
    if not m:
        raise ValueError(f"not an array shape: {shape!r}")
    return [int(d) for d in m.group(1).split(",") if d]


def _window(attrs: str) -> Dict[str, List]:
    m = re.search(r"window=\{([^}]*)\}", attrs)
    out: Dict[str, List] = {}
    if not m:
        return out
    for item in m.group(1).split():
        key, _, val = item.partition("=")
        if key == "pad":
            out[key] = [tuple(int(v) for v in p.split("_")) for p in val.split("x")]
        else:
            out[key] = [int(v) for v in val.split("x")]
    return out


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad_lo: int,
                lhs_dil: int, rhs_dil: int) -> int:
    """(output position, tap) pairs of one spatial dim that hit a real input element."""
    size = (n_in - 1) * lhs_dil + 1 if n_in > 0 else 0
    o = np.arange(n_out)[:, None]
    j = np.arange(k)[None, :]
    p = o * stride + j * rhs_dil - pad_lo
    ok = (p >= 0) & (p < size) & (p % lhs_dil == 0)
    return int(ok.sum())


def _conv_macs(out_shape: str, lhs_shape: str, rhs_shape: str, attrs: str) -> int:
    m = re.search(r"dim_labels=([0-9a-z]+)_([0-9a-z]+)->([0-9a-z]+)", attrs)
    if not m:
        raise ValueError(f"convolution without dim_labels: {attrs[:200]!r}")
    lhs_l, rhs_l, out_l = m.groups()
    out, lhs, rhs = _dims(out_shape), _dims(lhs_shape), _dims(rhs_shape)
    spatial = sorted(c for c in out_l if c.isdigit())
    win = _window(attrs)
    nd = len(spatial)
    size = win.get("size", [1] * nd)
    stride = win.get("stride", [1] * nd)
    pad = win.get("pad", [(0, 0)] * nd)
    lhs_dil = win.get("lhs_dilate", [1] * nd)
    rhs_dil = win.get("rhs_dilate", [1] * nd)
    macs = out[out_l.index("b")] * out[out_l.index("f")] * rhs[rhs_l.index("i")]
    for d, c in enumerate(spatial):
        macs *= _valid_taps(lhs[lhs_l.index(c)], out[out_l.index(c)], size[d], stride[d],
                            pad[d][0], lhs_dil[d], rhs_dil[d])
    return macs


def _dot_macs(out_shape: str, lhs_shape: str, attrs: str) -> int:
    lhs = _dims(lhs_shape)
    m = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", attrs)
    contract = [int(d) for d in m.group(1).split(",") if d] if m else []
    k = int(np.prod([lhs[d] for d in contract])) if contract else 1
    return int(np.prod(_dims(out_shape))) * k


def hlo_flops(text: str) -> FlopCount:
    """FLOPs of an HLO module's text (stage 'hlo' or 'optimized_hlo').

    Dead instructions (not reachable from the entry ROOT) are skipped; see the module
    docstring for the counting rules.
    """
    comps, entry = parse_hlo(text)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    shapes = {i.name: i.shape for instrs in comps.values() for i in instrs}
    by_op: Dict[str, int] = {}

    def live(instrs: List[_Instr]) -> List[_Instr]:
        index = {i.name: i for i in instrs}
        roots = [i for i in instrs if i.root] or instrs[-1:]
        seen, stack = set(), [r.name for r in roots]
        while stack:
            n = stack.pop()
            if n in seen or n not in index:
                continue
            seen.add(n)
            stack.extend(index[n].operands)
        return [i for i in instrs if i.name in seen]

    def visit(comp: str, depth: int = 0) -> None:
        if depth > 64:
            raise ValueError("HLO call graph too deep")
        for ins in live(comps.get(comp, [])):
            if ins.opcode == "dot" and ins.operands:
                n = 2 * _dot_macs(ins.shape, shapes[ins.operands[0]], ins.attrs)
                by_op["dot"] = by_op.get("dot", 0) + n
            elif ins.opcode == "convolution" or (ins.opcode == "custom-call"
                                                and "dim_labels=" in ins.attrs):
                n = 2 * _conv_macs(ins.shape, shapes[ins.operands[0]],
                                   shapes[ins.operands[1]], ins.attrs)
                by_op["convolution"] = by_op.get("convolution", 0) + n
            for c in ins.called:
                visit(c, depth + 1)

    visit(entry)
    return FlopCount(int(sum(by_op.values())), "xla_hlo", by_op)


def xla_hlo_text(fn: Callable, *args, stage: str = "hlo", autograph: bool = False) -> str:
    """The HLO text XLA compiles `fn(*args)` to (traces `fn`; runs nothing).

    `fn` may be a Python callable or a `tf.function` (its Python function is used).
    `autograph=False` (default) traces the Python code as it is, which is enough for
    steps whose control flow depends only on Python values and is several times
    faster to trace; `count_flops` retries with AutoGraph when that fails.
    """
    python_fn = getattr(fn, "python_function", fn)
    compiled = tf.function(python_fn, jit_compile=True, autograph=autograph)
    return compiled.experimental_get_compiler_ir(*args)(stage=stage)


# -- TensorFlow graph (fallback) -------------------------------------------------------
_CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
             "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
             "DepthwiseConv2dNativeBackpropFilter")


def _static(shape) -> Optional[List[int]]:
    shape = tf.TensorShape(shape)
    if shape.rank is None or not shape.is_fully_defined():
        return None
    return shape.as_list()


def _op_flops(op) -> int:
    t = op.type
    if t in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = _static(op.inputs[0].shape)
        out = _static(op.outputs[0].shape)
        if a is None or out is None:
            return 0
        if t == "MatMul":
            k = a[0] if op.get_attr("transpose_a") else a[1]
        else:
            adj = op.get_attr("adj_x")
            k = a[-2] if adj else a[-1]
        return 2 * int(np.prod(out)) * k
    if t in _CONV_OPS:
        out = _static(op.outputs[0].shape)
        if t == "Conv2D" or t == "DepthwiseConv2dNative":
            x, w, y = _static(op.inputs[0].shape), _static(op.inputs[1].shape), out
        elif t.endswith("BackpropInput"):
            # inputs: input_sizes, filter, out_backprop -> the forward's x is `out`.
            x, w, y = out, _static(op.inputs[1].shape), _static(op.inputs[2].shape)
        else:
            # inputs: input, filter_sizes, out_backprop -> the forward's w is `out`.
            x, w, y = _static(op.inputs[0].shape), out, _static(op.inputs[2].shape)
        if x is None or w is None or y is None:
            return 0
        if op.get_attr("data_format") not in (b"NHWC", "NHWC"):
            raise ValueError(f"{t}: only NHWC is counted, got {op.get_attr('data_format')}")
        if t.startswith("Depthwise"):
            # y [b, h', w', in * multiplier]: one multiply-add per tap.
            return 2 * int(np.prod(y)) * w[0] * w[1]
        # the forward conv's multiply-adds (padding taps included)
        return 2 * int(np.prod(y)) * w[0] * w[1] * w[2]
    return 0


def graph_flops(fn: Callable, *args, autograph: bool = True) -> FlopCount:
    """FLOPs of the MatMul/Conv ops of `tf.function(fn)`'s graph for `args`."""
    python_fn = getattr(fn, "python_function", fn)
    graph = tf.function(python_fn, autograph=autograph).get_concrete_function(*args).graph
    wanted = [t.op for t in graph.outputs] + list(graph.control_outputs)
    wanted += [op for op in graph.get_operations() if op._is_stateful]  # pylint: disable=protected-access
    seen, stack = set(), list(wanted)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    by_op: Dict[str, int] = {}
    for op in graph.get_operations():
        if op.name in seen:
            n = _op_flops(op)
            if n:
                by_op[op.type] = by_op.get(op.type, 0) + n
    return FlopCount(int(sum(by_op.values())), "tf_graph", by_op)


def count_flops(fn: Callable, *args, prefer: str = "xla_hlo") -> FlopCount:
    """FLOPs of one call `fn(*args)`: XLA's HLO when it compiles, else the TF graph.

    Args:
      fn: the step (a Python callable or `tf.function`); its variables must exist
        (build the model and the optimizer first). Nothing is executed.
      *args: example arguments (tensors with the shapes of a real call).
      prefer: 'xla_hlo' (default) or 'tf_graph' to skip XLA.

    Returns:
      A `FlopCount` whose `source` says which count was used.
    """
    if prefer not in ("xla_hlo", "tf_graph"):
        raise ValueError(f"prefer must be 'xla_hlo' or 'tf_graph', got {prefer!r}")
    if prefer == "xla_hlo":
        for autograph in (False, True):
            try:
                return hlo_flops(xla_hlo_text(fn, *args, autograph=autograph))
            except Exception:  # pylint: disable=broad-except
                pass  # needs AutoGraph, or XLA cannot compile it: retry / fall back
    try:
        return graph_flops(fn, *args, autograph=False)
    except Exception:  # pylint: disable=broad-except
        return graph_flops(fn, *args, autograph=True)
