"""The lean FP32 graph: every rewrite fires on V1, the function is unchanged (PyTorch check and odd sizes)."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from toolchain.stages.lean import lean_model, lean_onnx
from toolchain.stages.simplify import simplify_onnx

from .conftest import CALIB, V1_WEIGHTS


@pytest.fixture(scope="module")
def simplified(v1_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "v1.sim.onnx"
    simplify_onnx(v1_onnx.path, out)
    return out


def test_lean_graph_equals_pytorch_with_fewer_nodes(simplified, tmp_path):
    report = lean_onnx(simplified, tmp_path / "lean.onnx", V1_WEIGHTS, CALIB / "images")
    assert report.comparisons  # refused beyond the export tolerances, so reaching here means equal to PyTorch
    assert report.rewrites == Counter({"deform_batchnorm": 15, "deform_mask_scale": 15, "global_pools": 12,
                                       "same_max_pool": 6, "sibling_convs": report.rewrites["sibling_convs"]})
    assert report.rewrites["sibling_convs"] >= 10 and report.after < report.before
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["DeformConv"] == 15 and ops["MaxPool"] == 6
    deform = [n for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node if n.op_type == "DeformConv"]
    assert all(len(n.input) == 5 and n.input[3] for n in deform)  # folded bias, mask input kept


@pytest.mark.parametrize("shape", [(1, 3, 336, 200), (2, 3, 200, 328)])  # odd feature-map sizes at P3/P4
def test_lean_graph_equals_the_source_graph_at_odd_sizes(simplified, shape):
    """'same' pooling pads size % 2 before: odd maps take the other branch than the export check's shapes."""
    lean, _ = lean_model(onnx.load(str(simplified)))
    x = (np.random.default_rng(0).standard_normal(shape) * 60).astype(np.float32)
    source = ort.InferenceSession(str(simplified), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    fast = ort.InferenceSession(lean.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    for a, b in zip(source, fast):
        assert np.abs(a - b).max() < 1e-4


def test_lean_leaves_a_graph_without_its_patterns_alone():
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    lean, counts = lean_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    assert sum(counts.values()) == 0 and [n.op_type for n in lean.graph.node] == ["Relu"]
