"""Device-side code calls only the TensorRT Python names its TensorRT generation has, and runs on Python 3.6.

An AST walk per generation: the runtime's engine class plus the API class ``io_class`` picks for that
version, and the kit's ``build`` with every ``if`` on ``version`` decided for that version (helpers it calls
are walked too). Names are checked against ``toolchain/building/tensorrt_support.py`` (NVIDIA's binding
sources at each tag); names no generation has (numpy, ours) are not TensorRT's and are skipped.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.building import tensorrt_support as support
from toolchain.runtime.featherface_runtime import TENSORRT_IO, BundleError, io_class

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "toolchain" / "runtime" / "featherface_runtime.py"
KIT = ROOT / "toolchain" / "kit" / "build_engine.py"
DEVICE_FILES = sorted((ROOT / "toolchain" / "runtime").glob("*.py")) + [KIT]  # everything shipped to devices
GENERATIONS = {key: tuple(int(p) for p in key.split(".")) + ((0,) if "." not in key else ())
               for key in support.TABLES}
UNIVERSE = set().union(*(g.python_api for g in support.TABLES.values()))


def _dotted(node: ast.Attribute) -> str:
    parts = [node.attr]
    while isinstance(node.value, ast.Attribute):
        node = node.value
        parts.append(node.attr)
    return ".".join(reversed(parts))


def _decide(test: ast.expr, version: tuple):
    """True/False for ``version[...] <op> constant`` or ``version <op> (tuple)`` (and ``and`` of those), else None."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        values = [_decide(v, version) for v in test.values]
        return False if False in values else (True if all(v is True for v in values) else None)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    left, right = test.left, test.comparators[0]
    if isinstance(left, ast.Subscript) and isinstance(left.value, ast.Name) and left.value.id == "version":
        value = version[ast.literal_eval(left.slice)]
    elif isinstance(left, ast.Name) and left.id == "version":
        value = version
    else:
        return None
    try:
        other = ast.literal_eval(right)
    except ValueError:
        return None
    op = type(test.ops[0])
    return {ast.Lt: value < other, ast.GtE: value >= other, ast.Gt: value > other, ast.LtE: value <= other}.get(op)


def tensorrt_names(tree: ast.AST, functions: dict, version: tuple, seen=None) -> set:
    """Attribute names (and dotted enum names) reachable in ``tree`` for ``version``."""
    seen = set() if seen is None else seen
    names = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If):
            decided = _decide(node.test, version)
            if decided is not None:
                stack.extend(node.body if decided else node.orelse)
                continue
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
            names.add(_dotted(node).split(".", 1)[-1])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions \
                and node.func.id not in seen:
            seen.add(node.func.id)
            names |= tensorrt_names(functions[node.func.id], functions, version, seen)
        stack.extend(ast.iter_child_nodes(node))
    return names & UNIVERSE


def _definitions(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def violations(version_key: str) -> list:
    version = GENERATIONS[version_key]
    api = support.TABLES[version_key].python_api
    runtime, kit = _definitions(RUNTIME), _definitions(KIT)
    used = {"runtime": tensorrt_names(runtime["TensorRTModel"], runtime, version)
            | tensorrt_names(runtime[io_class(version).__name__], runtime, version),
            "kit": tensorrt_names(kit["build"], kit, version) | tensorrt_names(kit["record_info"], kit, version)}
    return sorted(f"{where}: {name}" for where, names in used.items() for name in names - api)


@pytest.mark.parametrize("version_key", sorted(support.TABLES))
def test_device_code_calls_only_its_generations_api(version_key):
    assert violations(version_key) == []


def test_api_walk_catches_a_name_the_generation_lacks(tmp_path, monkeypatch):
    """The walk is not vacuous: the tensor API in the 8.2 class, or a missing plugin init, is caught."""
    source = RUNTIME.read_text().replace("self.context.execute_async_v2(bindings, stream_handle)",
                                         "self.context.execute_async_v3(stream_handle)")
    fake = tmp_path / "featherface_runtime.py"
    fake.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "RUNTIME", fake)
    assert violations("8.2") == ["runtime: execute_async_v3"]
    assert violations("10.3") == []


@pytest.mark.parametrize("path", [RUNTIME, KIT], ids=lambda p: p.name)
def test_plugins_registered_where_the_parser_no_longer_does(path):
    """From TensorRT 10.0 the application registers NVIDIA's plugins (DeformConv is one)."""
    needs = [k for k, g in support.TABLES.items() if not g.registers_plugins]
    assert needs, "the tables say some generation needs init_libnvinfer_plugins"
    definitions = _definitions(path)
    entry = definitions["TensorRTModel" if path == RUNTIME else "build"]
    for key in needs:
        assert "init_libnvinfer_plugins" in tensorrt_names(entry, definitions, GENERATIONS[key]), key


def test_io_class_per_generation():
    assert io_class((8, 2)).__name__ == "BindingIO" and io_class((8, 4)).__name__ == "BindingIO"
    assert io_class((8, 5)).__name__ == "TensorIO" and io_class((11, 1)).__name__ == "TensorIO"
    assert [name for _, name in TENSORRT_IO] == ["BindingIO", "TensorIO"]
    with pytest.raises(BundleError, match="older than 8.2"):
        io_class((7, 1))


def _vermin(paths) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("vermin")), "-t=3.6-", "--eval-annotations", "--violations",
                           "--no-tips", *map(str, paths)], capture_output=True, text=True)


def test_device_files_run_on_jetpack_python():
    """JetPack 4.6 ships Python 3.6, where TensorRT's bindings live; the files that run there must too."""
    result = _vermin(DEVICE_FILES)
    assert result.returncode == 0, result.stdout


def test_vermin_catches_newer_annotations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int | None) -> tuple[int, int]:\n    return (1, 2)\n")
    assert _vermin([bad]).returncode != 0
