"""The lint on small crafted graphs: each known deployment breaker is caught for the TensorRT generations (and
ONNX Runtime versions) it breaks and passes for those that handle it. CPU only, no model export."""
import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from featherface.errors import ArtifactError
from toolchain.building.lint import GRAPH, ONNXRUNTIME_OPS_SINCE, Violation, errors, lint_file, lint_model
from toolchain.building.targets import Profile, parse_target, version_tuple
from toolchain.building.tensorrt_support import DLA, TABLES, generation

TOML = """name = "t"
description = "lint test"
runtime = "{runtime}"
platform = "{platform}"
min_runtime_version = "{version}"
precisions = ["fp16"]
default_precision = "fp16"
opset = 19
dcn_lowering = "decomposed"
workspace_mb = 256

[profile]
min = [1, 640, 640]
opt = [1, 640, 640]
max = [1, 640, 640]
{dla}"""


@pytest.fixture
def target(tmp_path):
    def make(version: str, runtime: str = "tensorrt", dla: str = ""):
        path = tmp_path / f"t-{version}-{runtime}.toml"
        platform = "jetson" if runtime == "tensorrt" else "any"
        path.write_text(TOML.format(runtime=runtime, platform=platform, version=version, dla=dla))
        return parse_target(path)
    return make


def tensor(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, initializers=(), opset: int = 13, check: bool = True) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def only(violations: list[Violation], op: str) -> list[Violation]:
    return [v for v in violations if v.op == op]


def clean_model(opset: int = 13) -> onnx.ModelProto:
    weight = init("w", np.ones((4, 3, 3, 3), np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    return model(nodes, [tensor("x", TensorProto.FLOAT, [1, 3, 8, 8])], [tensor("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                 [weight], opset)


@pytest.mark.parametrize("version", sorted(TABLES))
def test_clean_graph_passes_every_generation(target, version):
    assert lint_model(clean_model(), target(version)) == []


def test_onnxruntime_target_passes_a_graph_of_old_operators(target):
    assert lint_model(clean_model(18), target("1.20", runtime="onnxruntime")) == []


@pytest.mark.parametrize("version,caught", [("8.2", True), ("8.5", True), ("10.3", False)])
def test_opset_above_parser(target, version, caught):
    found = lint_model(clean_model(18), target(version))
    assert bool(found) == caught
    if caught:
        assert [(v.node, v.op) for v in found] == [(GRAPH, "opset")]
        assert "opset 18" in found[0].message and f"[TensorRT {version}]" in str(found[0])


def reduce_mean_with_axes_input() -> onnx.ModelProto:
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=1)
    return model([node], [tensor("x", TensorProto.FLOAT, [2, 4, 8, 8])], [tensor("y", TensorProto.FLOAT, [2, 4, 1, 1])],
                 [init("axes", np.array([2, 3], np.int64))], opset=18)


def test_reduce_axes_input(target):
    caught = only(lint_model(reduce_mean_with_axes_input(), target("8.5")), "ReduceMean")
    assert len(caught) == 1 and "batch included" in caught[0].message
    assert lint_model(reduce_mean_with_axes_input(), target("10.3")) == []


@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_int32_initializer_dequantize(target, version):
    node = helper.make_node("DequantizeLinear", ["bias", "scale", "zero"], ["y"], name="bias_dq")
    m = model([node], [], [tensor("y", TensorProto.FLOAT, [4])],
              [init("bias", np.arange(4, dtype=np.int32)), init("scale", np.float32(0.1)),
               init("zero", np.int32(0))])
    found = lint_model(m, target(version))
    assert [(v.node, v.op) for v in found] == [("bias_dq", "DequantizeLinear")]
    assert "INT32" in found[0].message and "INT8" in found[0].message


def test_int8_quantize_dequantize_pair_passes(target):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    m = model(nodes, [tensor("x", TensorProto.FLOAT, [1, 4])], [tensor("y", TensorProto.FLOAT, [1, 4])],
              [init("s", np.float32(0.05)), init("z", np.int8(0))])
    for version in ("8.2", "8.5", "10.3"):
        assert lint_model(m, target(version)) == []
    m.graph.initializer[1].CopyFrom(init("z", np.int8(3)))
    found = lint_model(m, target("10.3"))
    assert {v.op for v in found} == {"QuantizeLinear", "DequantizeLinear"}
    assert all("zero point" in v.message for v in found)


def deform_conv() -> onnx.ModelProto:
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", kernel_shape=[3, 3])
    return model([node], [tensor("x", TensorProto.FLOAT, [1, 4, 8, 8]), tensor("offset", TensorProto.FLOAT,
                                                                            [1, 18, 6, 6])],
                 [tensor("y", TensorProto.FLOAT, [1, 4, 6, 6])], [init("w", np.ones((4, 4, 3, 3), np.float32))],
                 opset=19)


@pytest.mark.parametrize("version,caught", [("8.5", True), ("10.0", True), ("10.1", False), ("10.3", False)])
def test_deform_conv(target, version, caught):
    found = only(lint_model(deform_conv(), target(version)), "DeformConv")
    assert bool(found) == caught
    if caught:
        assert "needs TensorRT ≥ 10.1" in found[0].message and 'dcn_lowering = "decomposed"' in found[0].message
    else:
        assert lint_model(deform_conv(), target(version)) == []


@pytest.mark.parametrize("version,caught", [("1.20", True), ("1.24.4", True), ("1.25", False), ("1.32.0", False)])
def test_deform_conv_on_onnxruntime(target, version, caught):
    """ONNX Runtime before 1.25 has no DeformConv kernel: a CPU bundle promising it must fail here, not on load."""
    found = lint_model(deform_conv(), target(version, runtime="onnxruntime"))
    assert [v.op for v in found] == (["DeformConv"] if caught else [])
    if caught:
        assert str(found[0]) == (f"node 'dcn' (DeformConv): no CPU kernel before ONNX Runtime 1.25: raise "
                                 f"min_runtime_version [ONNX Runtime {version}]")


def test_the_onnxruntime_table_holds_for_the_installed_runtime():
    """Where the installed ONNX Runtime is at least the table's first version, it runs DeformConv."""
    installed = version_tuple(ort.__version__)
    if installed < version_tuple(ONNXRUNTIME_OPS_SINCE["DeformConv"]):
        pytest.skip(f"onnxruntime {ort.__version__} predates DeformConv")
    x = np.ones((1, 4, 8, 8), np.float32)
    offset = np.zeros((1, 18, 6, 6), np.float32)
    session = ort.InferenceSession(deform_conv().SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"x": x, "offset": offset})[0], 36.0)  # 4 channels × 9 taps of ones


def test_fp16_range(target):
    node = helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range")
    scalars = [init(n, np.float16(v)) for n, v in (("start", 0), ("limit", 4096), ("delta", 1))]
    m = model([node], [], [tensor("y", TensorProto.FLOAT16, [4096])], scalars, check=False)  # ONNX has no fp16 Range
    for version in TABLES:
        found = lint_model(m, target(version))
        assert [v.op for v in found] == ["Range"] and "2048" in found[0].message


def _range(start_type: int, dynamic_limit: bool) -> onnx.ModelProto:
    """Range(0, limit, 1) whose limit is the input's length (a Shape → Gather) or a constant."""
    cast = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64}[start_type]
    inits = [init("start", cast(0)), init("delta", cast(1)), init("zero", np.int64(0))]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0)]
    if start_type == TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["n"], ["n_typed"], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", ["n"], ["n_typed"]))
    if not dynamic_limit:
        nodes, inits = [], [*inits, init("n_typed", cast(16))]
    nodes.append(helper.make_node("Range", ["start", "n_typed", "delta"], ["y"], name="range"))
    return model(nodes, [tensor("x", TensorProto.FLOAT, ["n"])], [tensor("y", start_type, ["m"])], inits)


@pytest.mark.parametrize("version", sorted(TABLES))
def test_float_range_with_a_dynamic_limit(target, version):
    """TensorRT 8.2's Range importer takes FLOAT only when start, limit and delta are all initializers."""
    found = only(lint_model(_range(TensorProto.FLOAT, True), target(version)), "Range")
    assert (len(found) == 1 and "INT32" in found[0].message) == (version == "8.2")
    assert not only(lint_model(_range(TensorProto.FLOAT, False), target(version)), "Range")
    assert not only(lint_model(_range(TensorProto.INT64, True), target(version)), "Range")


def _one_op(op: str, inputs: list[tuple[str, int]], out_type: int) -> onnx.ModelProto:
    """One node on typed inputs; not checked (some of these types are what the importers refuse, and ONNX too)."""
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], name="node0")
    return model([node], [tensor(n, t, [4]) for n, t in inputs], [tensor("y", out_type, [4])], check=False)


@pytest.mark.parametrize("version", sorted(TABLES))
def test_importer_input_types_on_type_inference(target, version):
    """The importers' type rules, cited per generation: BOOL into a comparison or arithmetic, BOOL gathered,
    a FLOAT into And."""
    def flagged(m: onnx.ModelProto) -> bool:
        return bool(only(lint_model(m, target(version)), m.graph.node[0].op_type))

    b, f, i64 = TensorProto.BOOL, TensorProto.FLOAT, TensorProto.INT64
    assert flagged(_one_op("Less", [("a", b), ("b", b)], b)) and flagged(_one_op("Add", [("a", b), ("b", b)], b))
    assert not flagged(_one_op("Less", [("a", f), ("b", f)], b))
    assert flagged(_one_op("Equal", [("a", b), ("b", b)], b)) == (version == "8.2")  # later: "Equal supports all"
    gather = model([helper.make_node("Gather", ["a", "i"], ["y"], name="g", axis=0)],
                   [tensor("a", b, [4]), tensor("i", i64, [2])], [tensor("y", b, [2])], check=False)
    assert flagged(gather) == (version == "8.2")
    assert not flagged(_one_op("And", [("a", b), ("b", b)], b))
    assert flagged(_one_op("And", [("a", f), ("b", b)], b))


def test_cast_fp16_to_int64(target):
    node = helper.make_node("Cast", ["x"], ["y"], name="index", to=TensorProto.INT64)
    m = model([node], [tensor("x", TensorProto.FLOAT16, [16])], [tensor("y", TensorProto.INT64, [16])])
    found = lint_model(m, target("10.3"))
    assert [(v.node, v.op) for v in found] == [("index", "Cast")]
    assert "2048" in found[0].message and "INT64" in found[0].message
    as_fp32 = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)],
                    [tensor("x", TensorProto.FLOAT, [16])], [tensor("y", TensorProto.INT64, [16])])
    assert lint_model(as_fp32, target("10.3")) == []


def test_op_new_in_8_5_is_unknown_to_8_2(target):
    added = TABLES["8.5"].onnx_ops - TABLES["8.2"].onnx_ops
    assert "NonZero" in added
    m = model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [tensor("x", TensorProto.FLOAT, [4, 4])],
              [tensor("y", TensorProto.INT64, [2, "n"])])
    found = lint_model(m, target("8.2"))
    assert [(v.node, v.op) for v in found] == [("nz", "NonZero")] and "8.2" in found[0].message
    assert lint_model(m, target("8.5")) == []


def test_custom_domain_op_is_unknown(target):
    node = helper.make_node("MyPlugin", ["x"], ["y"], name="custom", domain="com.example")
    m = model([node], [tensor("x", TensorProto.FLOAT, [4])], [tensor("y", TensorProto.FLOAT, [4])], check=False)
    found = lint_model(m, target("10.3"))
    assert [v.op for v in found] == ["MyPlugin"] and "com.example::MyPlugin" in found[0].message


def opset18_node(op: str) -> onnx.ModelProto:
    x = tensor("x", TensorProto.FLOAT, [1, 3, 8, 8])
    if op == "Split":  # ONNX 18: ceil-sized chunks 2 + 1; the 8.x parser makes 1 + 1
        node = helper.make_node("Split", ["x"], ["y", "z"], name="split", axis=1, num_outputs=2)
        outputs = [tensor("y", TensorProto.FLOAT, [1, 2, 8, 8]), tensor("z", TensorProto.FLOAT, [1, 1, 8, 8])]
        return model([node], [x], outputs, opset=18)
    if op == "Pad":
        node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad")
        return model([node], [x], [tensor("y", TensorProto.FLOAT, [1, 3, 10, 10])],
                     [init("pads", np.array([1, 1, 1, 1], np.int64)), init("axes", np.array([2, 3], np.int64))],
                     opset=18)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear", antialias=1)
    return model([node], [x], [tensor("y", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [init("scales", np.array([1, 1, 2, 2], np.float32))], opset=18)


@pytest.mark.parametrize("op,word", [("Split", "num_outputs"), ("Pad", "axes"), ("Resize", "antialias")])
def test_opset18_forms_before_10(target, op, word):
    found = only(lint_model(opset18_node(op), target("8.6")), op)
    assert len(found) == 1 and word in found[0].message
    assert lint_model(opset18_node(op), target("10.3")) == []


DLA_TABLE = '\n[dla]\ncore = 0\ngpu_fallback = {}\n'


def dla_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Exp", ["c"], ["y"], name="exp")]
    return model(nodes, [tensor("x", TensorProto.FLOAT, [1, 3, 8, 8])], [tensor("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                 [init("w", np.ones((4, 3, 1, 1), np.float32))])


def test_dla_unsupported_op(target):
    assert "Exp" not in DLA and "Conv" in DLA
    with_fallback = lint_model(dla_model(), target("10.3", dla=DLA_TABLE.format("true")))
    assert [(v.node, v.op, v.severity) for v in with_fallback] == [("exp", "Exp", "warning")]
    assert str(with_fallback[0]).startswith("warning: node 'exp' (Exp): runs on the GPU (DLA has no Exp)")
    assert errors(with_fallback) == []
    without = lint_model(dla_model(), target("10.3", dla=DLA_TABLE.format("false")))
    assert [(v.op, v.severity) for v in without] == [("Exp", "error")] and errors(without) == without
    assert lint_model(dla_model(), target("10.3")) == []  # no DLA core: Exp is fine on the GPU


def test_dla_needs_static_shapes(target):
    dla = target("10.3", dla=DLA_TABLE.format("true"))
    dynamic = dataclasses.replace(dla, profile=Profile((1, 320, 320), (1, 640, 640), (1, 640, 640)))
    found = [v for v in lint_model(clean_model(), dynamic) if v.op == "profile"]
    assert len(found) == 1 and found[0].node == GRAPH and "DLA needs static shapes" in found[0].message


def test_violation_str():
    v = Violation("n", "Op", "bad", "8.5")
    assert str(v) == "node 'n' (Op): bad [TensorRT 8.5]"
    assert str(dataclasses.replace(v, severity="warning")) == "warning: node 'n' (Op): bad [TensorRT 8.5]"


def test_lint_file(tmp_path, target):
    good = tmp_path / "good.onnx"
    onnx.save(clean_model(18), good)
    assert [v.op for v in lint_file(good, target("8.5"))] == ["opset"]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf \xff\xfe")
    for path in (bad, tmp_path / "missing.onnx"):
        with pytest.raises(ArtifactError) as info:
            lint_file(path, target("10.3"))
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("version,key", [
    ("8.2", "8.2"), ("8.2.1", "8.2"), ("8.4", "8.2"), ("8.5.2", "8.5"), ("8.6.1", "8.6"), ("10", "10.0"),
    ("10.0.1", "10.0"), ("10.2", "10.1"), ("10.3", "10.3"), ("10.3.0", "10.3"), ("10.4", "10.3"),
    ("10.16", "10.3"), ("11.0", "11"), ("11.1", "11"),
])
def test_generation_lookup(version, key):
    assert generation(version) is TABLES[key]


@pytest.mark.parametrize("version", ["8.0", "7.1.3", "9.3", "12.0", "latest", ""])
def test_generation_unknown(version):
    with pytest.raises(ValueError):
        generation(version)


def test_python_api_facts():
    for gen in TABLES.values():
        assert "Logger" in gen.python_api and gen.sources["python_api.Logger"]
        assert gen.fp16_range is False
        assert gen.registers_plugins == (gen.name in ("8.2", "8.5", "8.6"))
    assert "execute_async_v3" not in TABLES["8.2"].python_api
    assert all("execute_async_v3" in TABLES[k].python_api for k in ("8.5", "8.6", "10.0", "10.1", "10.3", "11"))
    assert "execute_async_v2" in TABLES["8.6"].python_api and "execute_async_v2" not in TABLES["10.3"].python_api
    assert "BuilderFlag.FP16" in TABLES["10.3"].python_api and "BuilderFlag.FP16" not in TABLES["11"].python_api


def test_tables_cite_every_fact():
    facts = {"max_opset", "onnx_ops", "reduce_axes_input", "dq_input_types", "deform_conv", "registers_plugins",
             "split_num_outputs", "pad_axes_input", "resize_opset18_attributes", "fp16_range", "range_dynamic_float",
             "int64_as_int32", "refused_input_types", "python_api"}
    for key, gen in TABLES.items():
        assert gen.name == key and facts <= set(gen.sources), key
        assert all("@" in src for src in gen.sources.values())
        assert set(DLA) <= gen.onnx_ops  # the DLA table names ONNX ops every parser imports
