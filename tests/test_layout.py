"""The layout rules of the design (issue 15): no function over 80 lines of code in
tfcore/, models/ or train/ (docstring, comments and blank lines excluded), no file in
train/ over 400 lines, no module importing a binary's main, and no Keras in library
code."""
import ast
import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LIBRARY = ("tfcore", "models", "train")
MAX_FUNCTION_LINES = 80
MAX_TRAIN_FILE_LINES = 400


def _python_files(*folders):
    for folder in folders:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def _code_lines(node, lines):
    """Lines of `node` that hold code: not blank, not comments, not its docstring."""
    skip = set()
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant) and isinstance(
            body[0].value.value, str):
        skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for n in range(node.lineno, node.end_lineno + 1):
        text = lines[n - 1].strip()
        if n not in skip and text and not text.startswith("#"):
            count += 1
    return count


def test_no_function_over_80_lines_of_code():
    long = []
    for path in _python_files(*LIBRARY):
        source = open(path).read()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} "
                                f"{node.name} ({n} lines)")
    assert not long, long


def test_no_file_in_train_over_400_lines():
    big = {os.path.relpath(p, ROOT): n for p in _python_files("train")
           if (n := len(open(p).read().splitlines())) > MAX_TRAIN_FILE_LINES}
    assert not big, big


def _binaries():
    """train/<name>.py modules that run a binary (call binary.main)."""
    return {os.path.basename(p)[:-3] for p in _python_files("train")
            if re.search(r"\bbinary\.main\(", open(p).read())}


def test_no_module_imports_a_binarys_main():
    binaries = _binaries()
    assert {"vat", "autoencoder", "dcgan", "search"} <= binaries, binaries
    offenders = []
    for path in _python_files(*LIBRARY, "bench", "tests"):
        for node in ast.walk(ast.parse(open(path).read())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            offenders += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names
                          if n in {f"train.{b}" for b in binaries}]
    assert not offenders, offenders


@pytest.mark.parametrize("folder", LIBRARY)
def test_no_keras_in_library_code(folder):
    pattern = re.compile(r"^\s*(import keras|from keras|import tf_keras|from tf_keras"
                         r"|from tensorflow import keras)|tf\.keras", re.M)
    hits = [os.path.relpath(p, ROOT) for p in _python_files(folder)
            if pattern.search(open(p).read())]
    assert not hits, hits
