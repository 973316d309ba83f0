"""Opset stage: a simplified ONNX (opset 18+) → the same graph at an older opset, proven equal to PyTorch.

TensorRT 8.2's ONNX parser reads opsets up to 13 and 8.5's up to 17; from opset 18 Reduce* take ``axes``
as an input, which those parsers ignore (they reduce over every axis). ``onnx.version_converter`` has no
down-conversion adapters for several of our ops (Pad 18 → 17 fails), so each node whose schema differs
between the two opsets is rewritten here by a rule of the table below, and anything without a rule is
refused with the node's name. Runs after onnxsim, where Reduce axes are constants.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper

import featherface
from featherface.errors import ArtifactError
from toolchain.building.graph_edit import GraphEdit
from toolchain.building.metadata import get_metadata, load_onnx, set_metadata
from toolchain.measuring.compare import Comparison
from toolchain.stages.export import write_checked

# Ops whose newer versions only added element types (bfloat16, float8, …): the node is valid as it is.
# From the ONNX operator changelog (docs/Changelog.md): Add/Sub/Mul/Div-14, Relu-14, LeakyRelu-16,
# GreaterOrEqual/LessOrEqual-16, Where-16, Identity-14/16/19, Equal-19, PRelu-16, Clip-13.
TYPES_ONLY = {"Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "GreaterOrEqual", "LessOrEqual", "Where",
              "Identity", "Equal", "PRelu", "Less", "Greater", "Sigmoid", "Pow", "Constant", "Gather", "Concat"}
# Reduce ops that took ``axes`` as an attribute before opset 18 (ReduceSum moved it to an input at 13).
REDUCE_AXES_ATTRIBUTE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def _constant(graph: GraphEdit, node: onnx.NodeProto, index: int) -> np.ndarray:
    value = graph.array(node.input[index]) if index < len(node.input) else None
    if value is None:
        raise ArtifactError(f"node '{node.name}' ({node.op_type}): input {index} must be a constant to "
                            f"convert to an older opset (run the simplify stage first)")
    return value


def _drop_attributes(node: onnx.NodeProto, defaults: dict) -> None:
    """Remove attributes that the older schema lacks, refusing any that is not at its default."""
    for attribute in list(node.attribute):
        if attribute.name in defaults:
            value = helper.get_attribute_value(attribute)
            if value != defaults[attribute.name]:
                raise ArtifactError(f"node '{node.name}' ({node.op_type}): {attribute.name}={value!r} has no "
                                    f"equivalent before opset {defaults['_since']}")
            node.attribute.remove(attribute)


def _reduce(node, graph: GraphEdit, opset: int) -> list:
    if node.op_type not in REDUCE_AXES_ATTRIBUTE:
        return [node]
    noop = next((a.i for a in node.attribute if a.name == "noop_with_empty_axes"), 0)
    _drop_attributes(node, {"noop_with_empty_axes": noop, "_since": 18})
    if len(node.input) > 1 and node.input[1]:
        axes = _constant(graph, node, 1)
        del node.input[1:]
        node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
    elif noop:
        raise ArtifactError(f"node '{node.name}' ({node.op_type}): noop_with_empty_axes=1 has no older form")
    return [node]


def _shape(node, graph: GraphEdit, opset: int) -> list:
    """Shape-15 ``start``/``end`` → Shape followed by Slice."""
    start = next((a.i for a in node.attribute if a.name == "start"), None)
    end = next((a.i for a in node.attribute if a.name == "end"), None)
    if start is None and end is None:
        return [node]
    del node.attribute[:]
    full = graph.fresh(node.output[0] + "__full")
    sliced = helper.make_node("Slice", [full, graph.add_constant(f"{node.name}_start", np.array([start or 0])),
                                        graph.add_constant(f"{node.name}_end",
                                                           np.array([end if end is not None else 2**62])),
                                        graph.add_constant(f"{node.name}_axes", np.array([0]))],
                              [node.output[0]], name=f"{node.name}_slice")
    node.output[0] = full
    return [node, sliced]


def _resize(node, graph: GraphEdit, opset: int) -> list:
    _drop_attributes(node, {"antialias": 0, "keep_aspect_ratio_policy": b"stretch", "_since": 18})
    if any(a.name == "axes" for a in node.attribute):
        raise ArtifactError(f"node '{node.name}' (Resize): 'axes' has no equivalent before opset 18")
    return [node]


def _pad(node, graph: GraphEdit, opset: int) -> list:
    if len(node.input) > 3 and node.input[3]:
        raise ArtifactError(f"node '{node.name}' (Pad): the 'axes' input has no equivalent before opset 18")
    mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
    if mode == b"wrap":  # the one mode opset 19 added; constant, reflect and edge keep their attribute
        raise ArtifactError(f"node '{node.name}' (Pad): mode 'wrap' has no equivalent before opset 19")
    return [node]


def _reshape(node, graph: GraphEdit, opset: int) -> list:
    """``allowzero`` (14) only matters when the target shape holds a 0; ours are sizes of real tensors."""
    if opset < 14:
        shape = graph.array(node.input[1])
        if shape is not None and (shape == 0).any():
            raise ArtifactError(f"node '{node.name}' (Reshape): a 0 in the shape needs allowzero (opset 14)")
        for attribute in [a for a in node.attribute if a.name == "allowzero"]:
            node.attribute.remove(attribute)
    return [node]


def _batch_norm(node, graph: GraphEdit, opset: int) -> list:
    _drop_attributes(node, {"training_mode": 0, "_since": 14})
    return [node]


def _cast(node, graph: GraphEdit, opset: int) -> list:
    _drop_attributes(node, {"saturate": 1, "_since": 19})
    return [node]


RULES: dict[str, Callable[[onnx.NodeProto, GraphEdit, int], list]] = {
    **{op: _reduce for op in REDUCE_AXES_ATTRIBUTE}, "Shape": _shape, "Resize": _resize, "Pad": _pad,
    "Reshape": _reshape, "BatchNormalization": _batch_norm, "Cast": _cast,
}


def _since(op: str, opset: int) -> int:
    try:
        return onnx.defs.get_schema(op, opset).since_version
    except onnx.defs.SchemaError:
        return -1


def downgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at ``opset`` (< its own): each changed node rewritten by ``RULES`` or left when only types
    were added; any other changed op is refused with the node's name."""
    source = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= source:
        raise ArtifactError(f"opset {opset} is not older than the graph's opset {source}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = GraphEdit(model)
    nodes = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ArtifactError(f"node '{node.name}': custom-domain op {node.domain}::{node.op_type}")
        new, old = _since(node.op_type, source), _since(node.op_type, opset)
        if old < 0:
            raise ArtifactError(f"node '{node.name}': {node.op_type} does not exist at opset {opset}")
        if new == old or node.op_type in TYPES_ONLY and node.op_type not in RULES:
            nodes.append(node)
        elif node.op_type in RULES:
            nodes.extend(RULES[node.op_type](node, graph, opset))
        else:
            raise ArtifactError(f"node '{node.name}': {node.op_type}-{new} has no rule to convert it to "
                                f"{node.op_type}-{old} (opset {opset})")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    model.ir_version = min(model.ir_version, 8)  # IR 8 (ONNX 1.10+): what TensorRT 8.x's protobuf reads
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"converted graph is not valid at opset {opset}: {str(exc).splitlines()[0]}") from None
    return model


@dataclass
class OpsetReport:
    path: Path
    opset: int
    comparisons: list[Comparison]


def convert_opset(src: str | Path, out: str | Path, opset: int, weights: str | Path | None,
                  check_images: str | Path | None = None) -> OpsetReport:
    """``src`` rewritten to ``opset``; with ``check_images`` it is run against the PyTorch model it was
    exported from (named in its metadata) and refused, leaving nothing at ``out``, beyond the export tolerances."""
    out = Path(out)
    source = load_onnx(src)
    meta = get_metadata(source)
    try:
        converted = downgrade(source, opset)
    except ArtifactError as exc:
        raise ArtifactError(f"{src}: {exc}") from None
    set_metadata(converted, {"opset": opset, "converted_from_opset": meta.get("opset")})
    comparisons = write_checked(converted, out, lambda: featherface.load_model(meta["model"], weights), check_images,
                                f"opset-{opset} graph")
    return OpsetReport(out, opset, comparisons)
