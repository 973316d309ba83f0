"""INT8 semantics that do not depend on the CPU: each Q/DQ convolution accumulated exactly, as TensorRT does.

ONNX Runtime fuses ``DequantizeLinear → Conv ← DequantizeLinear(weights) → QuantizeLinear`` into an integer
kernel whose arithmetic depends on the host: x86 without VNNI multiplies u8 × s8 with ``vpmaddubsw``, which sums
two products in a saturating 16-bit register, while AVX-512/AVX VNNI, ARM's dot products and TensorRT accumulate
the products in int32 exactly. A verdict measured with those kernels changes with the build machine.

``integer_exact`` rewrites every such convolution as

    Conv(float(q_x − zp_x), float(q_w)) · (s_x · s_w[c]) + bias

The convolution sees whole numbers, and ``exact_bound`` proves per convolution that every partial sum stays within
±2^24 (``max|q_x − zp_x| · Σ_k |q_w[c, k]|``), where float32 represents every integer: whatever the summation
order, blocking or vector width of the host's float kernel, the sum is the int32 accumulation to the last bit. The
scale and the bias follow as two separate elementwise ops, each rounded once (IEEE), the same on every CPU. What
stays host-dependent is only what was float before: the FP32 layers' float rounding.
"""
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from featherface.errors import ArtifactError
from toolchain.building.graph_edit import GraphEdit

# Largest |integer| that float32 holds exactly, with every integer below it.
EXACT_LIMIT = 2 ** 24
# ONNX Runtime rules that would fold the per-channel scale into the integer weights (ConvMulFusion) or fuse the
# remaining Q/DQ into integer kernels again; the exact graph is run without them.
EXACT_DISABLED_OPTIMIZERS = ("ConvMulFusion",)
EXACT_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}


@dataclass(frozen=True)
class ConvBound:
    node: str
    worst_sum: int  # max over output channels of max|q_x − zp_x| · Σ|q_w|: a bound on every partial sum


def _quantized_conv_inputs(edit: GraphEdit, node: onnx.NodeProto):
    """(activation DQ, weight DQ) when ``node`` is a Conv on a dequantized activation and constant weights."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    x_dq, w_dq = edit.producer.get(node.input[0]), edit.producer.get(node.input[1])
    if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
        return None
    if edit.array(w_dq.input[0]) is None:
        return None
    return x_dq, w_dq


def _dq_parts(edit: GraphEdit, dq: onnx.NodeProto, model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a DequantizeLinear as arrays; the zero point defaults to 0 like the operator's."""
    scale = edit.array(dq.input[1])
    zero = edit.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)
    if scale is None or zero is None:
        raise ArtifactError(f"{model_name}: {dq.name} has a non-constant scale or zero point")
    return scale.astype(np.float32), zero


def _activation_span(zero: np.ndarray, dtype) -> int:
    """max |q − zp| over the integer type's range."""
    info = np.iinfo(dtype)
    z = int(zero)
    return max(z - info.min, info.max - z)


def exact_bound(model: onnx.ModelProto) -> list[ConvBound]:
    """The partial-sum bound of every quantized convolution (see the module docstring)."""
    edit, bounds = GraphEdit(model), []
    for node in model.graph.node:
        pair = _quantized_conv_inputs(edit, node)
        if pair is None:
            continue
        x_dq, w_dq = pair
        _, x_zero = _dq_parts(edit, x_dq, model.graph.name)
        weights = edit.array(w_dq.input[0]).astype(np.int64)
        w_zero = _dq_parts(edit, w_dq, model.graph.name)[1].astype(np.int64)
        centred = weights - (w_zero.reshape(-1, *[1] * (weights.ndim - 1)) if w_zero.ndim else w_zero)
        per_channel = np.abs(centred).reshape(len(weights), -1).sum(axis=1)
        span = _activation_span(x_zero, x_zero.dtype)
        bounds.append(ConvBound(node.name, int(per_channel.max()) * span))
    return bounds


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def integer_exact(model: onnx.ModelProto, name: str = "model") -> onnx.ModelProto:
    """A copy of the Q/DQ ``model`` whose quantized convolutions accumulate exactly (module docstring).

    Raises ``ArtifactError`` naming ``name`` and the node when a convolution's partial sums could leave float32's
    exact range, or a weight zero point is not zero (TensorRT's symmetric weights; ONNX Runtime's QDQ default)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    too_wide = [b for b in exact_bound(model) if b.worst_sum > EXACT_LIMIT]
    if too_wide:
        b = too_wide[0]
        raise ArtifactError(f"{name}: {b.node} may accumulate up to {b.worst_sum} > 2^24; its integer sum is not "
                            "exact in float32")
    edit = GraphEdit(model)
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # conv name → nodes that replace it, in order
    for node in list(model.graph.node):
        pair = _quantized_conv_inputs(edit, node)
        if pair is None:
            continue
        x_dq, w_dq = pair
        x_scale, x_zero = _dq_parts(edit, x_dq, name)
        w_scale, w_zero = _dq_parts(edit, w_dq, name)
        half = edit.array(x_dq.input[1]).dtype == np.float16  # an FP16 graph (TensorRT 11's int8-fp16) stays FP16
        if np.any(w_zero != 0):
            raise ArtifactError(f"{name}: {w_dq.name} has a non-zero weight zero point (symmetric weights expected)")
        if x_scale.size != 1:
            raise ArtifactError(f"{name}: {x_dq.name} quantizes an activation per channel (per tensor expected)")
        out_channels = edit.array(w_dq.input[0]).shape[0]
        weights = edit.add_constant(f"{node.name}_w_int", edit.array(w_dq.input[0]).astype(np.float32))
        # The combined scale in float32, computed once here: the reference's s_x · s_w[c].
        scale = np.broadcast_to(np.float32(x_scale.reshape(())) * w_scale.reshape(-1), (out_channels,))
        scale_name = edit.add_constant(f"{node.name}_scale", scale.astype(np.float32).reshape(1, -1, 1, 1))
        x_float = edit.fresh(f"{node.name}_x_int")
        steps = [helper.make_node("Cast", [x_dq.input[0]], [x_float], name=edit.fresh(f"{node.name}_cast"),
                                  to=onnx.TensorProto.FLOAT)]
        if np.any(x_zero != 0):
            zero = edit.add_constant(f"{node.name}_x_zero", np.asarray(x_zero, np.float32).reshape(()))
            centred = edit.fresh(f"{node.name}_x_centred")
            steps.append(helper.make_node("Sub", [x_float, zero], [centred], name=edit.fresh(f"{node.name}_centre")))
            x_float = centred
        acc = edit.fresh(f"{node.name}_acc")
        steps.append(helper.make_node("Conv", [x_float, weights], [acc], name=node.name,
                                      **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
        has_bias = len(node.input) > 2 and node.input[2]
        result = edit.fresh(f"{node.name}_float32") if half else node.output[0]
        scaled = edit.fresh(f"{node.name}_scaled") if has_bias else result
        steps.append(helper.make_node("Mul", [acc, scale_name], [scaled], name=edit.fresh(f"{node.name}_rescale")))
        if has_bias:
            bias = edit.array(node.input[2])
            if bias is None:
                raise ArtifactError(f"{name}: {node.name} has a non-constant bias")
            bias_name = edit.add_constant(f"{node.name}_bias", bias.astype(np.float32).reshape(1, -1, 1, 1))
            steps.append(helper.make_node("Add", [scaled, bias_name], [result],
                                          name=edit.fresh(f"{node.name}_bias_add")))
        if half:
            steps.append(helper.make_node("Cast", [result], [node.output[0]], name=edit.fresh(f"{node.name}_to_fp16"),
                                          to=onnx.TensorProto.FLOAT16))
        new_nodes[node.name] = steps
    nodes = []
    for node in model.graph.node:
        nodes.extend(new_nodes.get(node.name, [node]) if node.op_type == "Conv" else [node])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused(model)
    return model


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove the weight DequantizeLinears and initializers the rewrite left without readers. Activation DQs stay:
    the noise rounds (``qdq_loss_debug``) read each activation after its Q/DQ step by the DQ's output name."""
    initializers = {i.name for i in model.graph.initializer}
    used = {n for node in model.graph.node for n in node.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
            and not set(n.output) & used]
    for node in dead:
        model.graph.node.remove(node)
    used = {n for node in model.graph.node for n in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
