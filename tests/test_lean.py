"""The lean FP32 graph: every rewrite fires on V1, the function is unchanged (PyTorch check and odd sizes)."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.stages.lean import lean_model, lean_onnx
from toolchain.stages.simplify import simplify_onnx

from .conftest import CALIB, V1_WEIGHTS


@pytest.fixture(scope="module")
def simplified(v1_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "v1.sim.onnx"
    simplify_onnx(v1_onnx.path, out)
    return out


def test_lean_graph_equals_pytorch(simplified, tmp_path):
    report = lean_onnx(simplified, tmp_path / "lean.onnx", V1_WEIGHTS, CALIB / "images")
    assert report.comparisons  # refused beyond the export tolerances, so reaching here means equal to PyTorch
    assert report.rewrites == Counter({"deform_batchnorm": 15, "deform_mask_scale": 15, "global_pools": 12,
                                       "same_max_pool": 6, "deform_project_first": 6,  # 64→32 and 64→16 per SSH
                                       "sibling_convs": report.rewrites["sibling_convs"]})
    assert report.rewrites["sibling_convs"] >= 10
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["DeformConv"] == 15 and ops["MaxPool"] == 6
    deform = [n for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node if n.op_type == "DeformConv"]
    assert all(len(n.input) == 5 and n.input[3] for n in deform)  # folded bias, mask input kept
    tap_groups = Counter(helper.get_attribute_value(a) for n in deform for a in n.attribute if a.name == "offset_group")
    assert tap_groups == Counter({9: 6, 1: 9})


@pytest.mark.parametrize("shape", [(1, 3, 336, 200), (2, 3, 200, 328)])  # odd feature-map sizes at P3/P4
def test_lean_graph_equals_the_source_graph_at_odd_sizes(simplified, shape):
    """'same' pooling pads size % 2 before: odd maps take the other branch than the export check's shapes."""
    lean, _ = lean_model(onnx.load(str(simplified)))
    x = (np.random.default_rng(0).standard_normal(shape) * 60).astype(np.float32)
    source = ort.InferenceSession(str(simplified), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    fast = ort.InferenceSession(lean.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    for a, b in zip(source, fast):
        assert np.abs(a - b).max() < 1e-4


def deform_graph(in_ch: int, out_ch: int, dilation: int, size: tuple[int, int]) -> onnx.ModelProto:
    rng = np.random.default_rng(in_ch + out_ch + dilation)
    weight = rng.standard_normal((out_ch, in_ch, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(out_ch).astype(np.float32)
    node = helper.make_node("DeformConv", ["x", "w", "offset", "b", "mask"], ["y"], name="dcn", kernel_shape=[3, 3],
                            pads=[dilation] * 4, dilations=[dilation, dilation])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, c, *size])
              for n, c in (("x", in_ch), ("offset", 18), ("mask", 9))]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, out_ch, *size])
    graph = helper.make_graph([node], "g", inputs, [output],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("dilation", [1, 2])
def test_project_first_deform_conv_equals_the_deform_conv(dilation):
    """Offsets up to ±6 px send many taps past the border, where both forms must read zeros."""
    model = deform_graph(16, 4, dilation, (13, 10))
    lean, counts = lean_model(model)
    assert counts["deform_project_first"] == 1
    ops = Counter(n.op_type for n in lean.graph.node)
    assert ops["DeformConv"] == 1 and ops["MatMul"] == 1 and ops["Add"] == 1  # projection, taps' offset shift
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 16, 13, 10)).astype(np.float32),
             "offset": (rng.standard_normal((2, 18, 13, 10)) * 3).clip(-6, 6).astype(np.float32),
             "mask": rng.random((2, 9, 13, 10)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(lean.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_project_first_skips_deform_convs_that_do_not_narrow():
    lean, counts = lean_model(deform_graph(16, 16, 1, (8, 8)))
    assert counts["deform_project_first"] == 0 and [n.op_type for n in lean.graph.node] == ["DeformConv"]


def test_lean_leaves_a_graph_without_its_patterns_alone():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    lean, counts = lean_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    assert sum(counts.values()) == 0 and [n.op_type for n in lean.graph.node] == ["Relu"]
