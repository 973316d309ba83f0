"""Device-side code uses only the numpy of JetPack 4.6 (1.13.3): an AST walk against toolchain/building/numpy_floor."""
import ast
from pathlib import Path

import pytest

from toolchain.building.numpy_floor import NAMES

ROOT = Path(__file__).resolve().parent.parent
DEVICE_FILES = sorted((ROOT / "toolchain" / "runtime").glob("*.py")) + [ROOT / "toolchain" / "kit" / "build_engine.py"]


def numpy_problems(source: str, where: str) -> list[str]:
    """Every ``np.NAME`` the floor lacks, every keyword it does not take and every string value it refuses."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np" \
                and node.attr not in NAMES:
            problems.append(f"{where}:{node.lineno}: np.{node.attr} is not in numpy 1.13.3's table")
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "np" and node.func.attr in NAMES):
            continue
        entry = NAMES[node.func.attr]
        for keyword in node.keywords:
            if keyword.arg not in entry.keywords and not entry.any_keyword:
                problems.append(f"{where}:{node.lineno}: np.{node.func.attr}({keyword.arg}=...) not in 1.13.3")
            elif keyword.arg in entry.values and isinstance(keyword.value, ast.Constant) \
                    and keyword.value.value not in entry.values[keyword.arg]:
                problems.append(f"{where}:{node.lineno}: np.{node.func.attr}({keyword.arg}={keyword.value.value!r}) "
                                "is refused by numpy 1.13.3")
    return problems


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_device_code_runs_on_jetpack_46_numpy(path):
    assert numpy_problems(path.read_text(), path.name) == []


def test_the_walk_catches_what_numpy_1_13_lacks():
    source = ("import numpy as np\norder = np.argsort(-s, kind='stable')\nx = np.take_along_axis(a, i, 1)\n"
              "g = np.meshgrid(a, b, indexing='ij')\nq = np.percentile(a, 50, method='linear')\n")
    found = sorted(numpy_problems(source, "x.py"))
    assert found == ["x.py:2: np.argsort(kind='stable') is refused by numpy 1.13.3",
                     "x.py:3: np.take_along_axis is not in numpy 1.13.3's table",
                     "x.py:5: np.percentile(method=...) not in 1.13.3"]


def test_every_name_cites_numpy_at_the_floor_tag():
    assert all(entry.source.startswith("numpy/numpy@v1.13.3:") for entry in NAMES.values())
