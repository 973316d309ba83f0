"""Lint an ONNX model against a target's runtime (TensorRT generation, ONNX Runtime version), on a CPU, before a build.

Why: the TensorRT ONNX parser fails late (on the device, minutes into a build) or, worse, not at all — an
opset-18 ReduceMean on 8.x silently reduces over the batch, an uneven opset-18 Split gets floor-sized chunks,
FP16 index math rounds past 2048. Each rule below reads a cited fact from ``tensorrt_support`` so a model is
checked against the oldest TensorRT the target promises (``min_runtime_version``), and a new fact is a table
edit, not a code change. ONNX Runtime targets are checked against ``ONNXRUNTIME_OPS_SINCE``, the first release
with a CPU kernel for operators newer than the rest. Only the main graph is walked: the FeatherFace exports have no
subgraphs.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from featherface.errors import ArtifactError, first_line
from toolchain.building.targets import Target, version_tuple
from toolchain.building.tensorrt_support import BOOL_ONLY, DLA, Generation, generation

GRAPH = "<graph>"
_INTEGER_TYPES = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                  TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
_FP16_INDEX = "FP16 holds integers exactly only to 2048; do index math in FP32 or INT32/INT64"

# First ONNX Runtime release with a CPU kernel for the op. DeformConv: added by microsoft/onnxruntime PR #27393
# (2026); the PyPI wheels 1.20.1 and 1.24.4 refuse V1's graph ("NOT_IMPLEMENTED: Could not find an implementation
# for DeformConv(19)"), 1.25.0 and 1.26.0 run it (checked here, CPU, Python 3.11).
ONNXRUNTIME_OPS_SINCE = {"DeformConv": "1.25"}


@dataclass(frozen=True)
class Violation:
    node: str
    op: str
    message: str
    version: str
    severity: str = "error"
    runtime: str = "TensorRT"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}node '{self.node}' ({self.op}): {self.message} [{self.runtime} {self.version}]"


def errors(violations: list[Violation]) -> list[Violation]:
    """Only the violations that stop a build (warnings are DLA layers that fall back to the GPU)."""
    return [v for v in violations if v.severity == "error"]


def lint_file(path: str | Path, target: Target) -> list[Violation]:
    """``lint_model`` on a file; an unreadable or invalid file is one ``ArtifactError`` line naming it."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # OSError, protobuf DecodeError, missing external data: all mean "unreadable"
        raise ArtifactError(f"{path}: cannot read ONNX ({first_line(exc)})") from None
    try:
        return lint_model(model, target)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"{path}: invalid ONNX ({first_line(exc)})") from None


def lint_model(model: onnx.ModelProto, target: Target) -> list[Violation]:
    """Everything the target's TensorRT generation is known to reject, ignore or get wrong in ``model``.

    ONNX Runtime targets need a valid model (``onnx.checker``) whose operators all have CPU kernels in
    ``target.min_runtime_version``; TensorRT targets are checked against ``generation(target.min_runtime_version)``
    and, with a DLA core, against the DLA layer table."""
    if target.runtime != "tensorrt":
        onnx.checker.check_model(model)
        return _onnxruntime_problems(model, target.min_runtime_version)
    gen, version = generation(target.min_runtime_version), target.min_runtime_version
    consts, types, producers = _graph_facts(model)
    found: list[Violation] = []

    def add(node: str, op: str, message: str, severity: str = "error") -> None:
        found.append(Violation(node, op, message, version, severity))

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > gen.max_opset:
        add(GRAPH, "opset", f"opset {opset} is above the {gen.max_opset} this parser supports; "
                            "it imports newer-opset nodes with its older rules")
    for index, node in enumerate(model.graph.node):
        name = _node_name(node, index)
        for message in _node_problems(node, gen, consts, types, producers):
            add(name, node.op_type, message)
        if target.dla_core is not None and node.op_type not in DLA and node.op_type != "Constant":
            if target.gpu_fallback:
                add(name, node.op_type, f"runs on the GPU (DLA has no {node.op_type})", "warning")
            else:
                add(name, node.op_type, f"DLA has no {node.op_type} and gpu_fallback is off: the build fails")
    profile = target.profile
    if target.dla_core is not None and profile.min != profile.max:
        add(GRAPH, "profile", f"DLA needs static shapes: profile min {profile.min} ≠ max {profile.max}")
    return found


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or (node.output[0] if node.output else f"#{index}")


def _onnxruntime_problems(model: onnx.ModelProto, version: str) -> list[Violation]:
    found = []
    for index, node in enumerate(model.graph.node):
        since = ONNXRUNTIME_OPS_SINCE.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if since and version_tuple(version) < version_tuple(since):
            found.append(Violation(_node_name(node, index), node.op_type,
                                   f"no CPU kernel before ONNX Runtime {since}: raise min_runtime_version", version,
                                   runtime="ONNX Runtime"))
    return found


def _node_problems(node: onnx.NodeProto, gen: Generation, consts: dict[str, np.ndarray],
                   types: dict[str, int], producers: dict[str, str]) -> list[str]:
    """Messages for one node; each rule is one fact of ``gen``."""
    op, inputs = node.op_type, list(node.input)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    given = {i for i, name in enumerate(inputs) if name}  # optional inputs may be left out as ""
    out: list[str] = []
    if op == "DeformConv" and not gen.deform_conv:
        return ['needs TensorRT ≥ 10.1; use dcn_lowering = "decomposed"']
    if node.domain not in ("", "ai.onnx") or op not in gen.onnx_ops:
        domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
        return [f"{domain}{op} is not an operator the TensorRT {gen.name} ONNX parser imports"]
    if op.startswith("Reduce") and op != "ReduceSum" and 1 in given:
        if not gen.reduce_axes_input:
            out.append("axes come as input 1 (opset 18): this parser ignores it and reduces over ALL "
                       "dimensions, batch included; pass axes as an attribute (opset ≤ 17)")
        elif inputs[1] not in consts:
            out.append("axes input must be an initializer")
    if op in ("QuantizeLinear", "DequantizeLinear") and 2 in given and inputs[2] in consts \
            and np.any(consts[inputs[2]] != 0):
        out.append("non-zero zero point: TensorRT takes only symmetric quantization")
    if op == "DequantizeLinear" and producers.get(inputs[0]) != "QuantizeLinear":
        dtype = TensorProto.DataType.Name(types.get(inputs[0], TensorProto.UNDEFINED))
        if dtype != "UNDEFINED" and dtype not in gen.dq_input_types:
            hint = " (keep a bias in float: do not quantize it to INT32)" if dtype == "INT32" else ""
            out.append(f"input '{inputs[0]}' is {dtype}; TensorRT {gen.name} dequantizes only "
                       f"{', '.join(sorted(gen.dq_input_types))}{hint}")
    if op == "Range" and not gen.fp16_range and any(types.get(i) == TensorProto.FLOAT16 for i in inputs):
        out.append(f"FLOAT16 Range is rejected by the importer; {_FP16_INDEX}")
    elif (op == "Range" and not gen.range_dynamic_float and types.get(inputs[0]) == TensorProto.FLOAT
          and not all(i in consts for i in inputs)):
        out.append("FLOAT Range with inputs that are not all initializers: this parser imports a dynamic Range "
                   "only in INT32; build it from integers and Cast")
    if op == "Cast" and attrs.get("to") in _INTEGER_TYPES and types.get(inputs[0]) == TensorProto.FLOAT16:
        out.append(f"casts FLOAT16 to {TensorProto.DataType.Name(attrs['to'])}: {_FP16_INDEX}")
    out += _type_problems(op, inputs, types, gen)
    if op == "Split" and "num_outputs" in attrs and not gen.split_num_outputs:
        out.append("num_outputs (opset 18) is ignored: this parser splits into floor-sized chunks, "
                   "so an uneven split gets wrong sizes; give the split sizes as input 1")
    if op == "Pad" and 3 in given and not gen.pad_axes_input:
        out.append("axes input (opset 18) is not supported by this parser; pad all axes instead")
    if op == "Resize" and not gen.resize_opset18_attributes:
        ignored = [k for k, default in (("antialias", 0), ("keep_aspect_ratio_policy", b"stretch"))
                   if k in attrs and attrs[k] != default] + (["axes"] if "axes" in attrs else [])
        if ignored:
            out.append(f"{', '.join(ignored)} (opset 18) silently ignored by this parser")
    return out


def _type_problems(op: str, inputs: list[str], types: dict[str, int], gen: Generation) -> list[str]:
    """The importer's input-type rules (``refused_input_types``, ``BOOL_ONLY``) on ONNX type inference's types; a
    tensor whose type inference cannot tell is not judged. 8.x parsers narrow INT64 to INT32 first."""
    def name(tensor: str) -> str | None:
        elem = types.get(tensor)
        if not elem:
            return None
        dtype = TensorProto.DataType.Name(elem)
        return "INT32" if dtype == "INT64" and gen.int64_as_int32 else dtype

    out = []
    if op in BOOL_ONLY:
        wrong = [(t, name(t)) for t in inputs if t and name(t) not in (None, "BOOL")]
        out += [f"input '{t}' is {d}: the TensorRT {gen.name} importer takes only BOOL for {op}" for t, d in wrong[:1]]
    refused = gen.refused_input_types.get(op, frozenset())
    data = inputs[1:3] if op == "Where" else inputs if op in _ELEMENTWISE else inputs[:1]
    for tensor in data:
        dtype = name(tensor) if tensor else None
        if dtype in refused:
            out.append(f"input '{tensor}' is {dtype}: the TensorRT {gen.name} importer refuses {dtype} for {op}")
            break
    return out


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Max", "Min"}


def float_layers(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """The nodes of ``names`` whose inputs and outputs are all FLOAT by ONNX type inference (in graph order).

    TensorRT's layer precision is a float precision: trtexec applies named ``--layerPrecisions`` /
    ``--layerOutputTypes`` entries without the guard that skips INT32/BOOL and shape-tensor layers for ``*``
    (NVIDIA/TensorRT@8.5.2 samples/common/sampleEngines.cpp:441-480, unchanged at v8.6.1; exact names unguarded at
    v10.3.0 :455-459), and under ``--precisionConstraints=obey`` an integer or boolean layer pinned to FP32 fails the
    build. A tensor whose type inference cannot tell is not float."""
    wanted, types = set(names), _graph_facts(model)[1]
    return [n.name for n in model.graph.node if n.name in wanted
            and all(types.get(t) == TensorProto.FLOAT for t in (*[i for i in n.input if i], *n.output))]


def pinned_problems(model: onnx.ModelProto, names: list[str], version: str) -> list[Violation]:
    """Layers a kit pins to FP32 that are not float in and float out (see ``float_layers``)."""
    allowed = set(float_layers(model, names))
    by_name = {n.name: n for n in model.graph.node}
    return [Violation(name, by_name[name].op_type if name in by_name else "?",
                      "pinned to FP32 but not float in and float out (or not in the graph): an FP32 precision "
                      "constraint on it fails the build", version)
            for name in names if name not in allowed]


def _graph_facts(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, str]]:
    """Constant values (initializers, Constant nodes), element types (shape inference where it works) and
    each tensor's producing op type."""
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    types = {t.name: t.data_type for t in graph.initializer}
    producers = {}
    for node in graph.node:
        for name in node.output:
            producers[name] = node.op_type
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                consts[node.output[0]] = numpy_helper.to_array(value)
                types[node.output[0]] = value.data_type
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # a graph inference cannot type is still linted with what it declares
        inferred = graph
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types.setdefault(info.name, info.type.tensor_type.elem_type)
    return consts, types, producers
