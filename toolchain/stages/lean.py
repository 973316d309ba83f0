"""Lean stage: a simplified FP32 graph → the same function in fewer, cheaper ONNX Runtime kernels.

Each pass is an exact rewrite (equal up to float rounding), found where ``toolchain profile`` showed the
time going on a CPU; the result is checked against PyTorch like every export:
* ``deform_batchnorm``: a BatchNormalization right after a DeformConv folds into its weight and bias.
* ``deform_mask_scale``: the DCNv2 mask ``2·sigmoid(m)`` — the factor 2 moves into the DeformConv weight
  (the output is linear in the mask; ×2 is exact in floating point).
* ``sibling_convs``: convolutions reading the same tensor with the same geometry (each DCN's 18-channel
  offset and 9-channel mask predictors) become one convolution and a Split.
* ``same_max_pool``: 'same' 3×3/2 max pooling written as flip → pad → pool → flip becomes one Pad whose
  leading pad is ``size % 2`` (read from the shape) and the pool: two full-tensor copies fewer.
* ``global_pools``: ReduceMean/ReduceMax over H and W (the CBAM channel attention) become
  GlobalAveragePool/GlobalMaxPool, which run in ONNX Runtime's blocked (NCHWc) layout without reorders.
* ``deform_project_first``: a DeformConv that narrows its channels (each SSH's 64→32 and 64→16) projects
  first and samples after: bilinear sampling and the mask are linear per channel, so sampling ``W_t·x`` (a
  1×1 conv per kernel tap t, no bias) at tap t's point equals ``W_t`` applied to sampled ``x``. One projection
  to taps × M channels, then a 1×1 DeformConv with one offset group per tap (offsets shifted by the tap's
  position) sums them: M instead of C channels are sampled per tap.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import featherface
from featherface.errors import ArtifactError
from toolchain.building.graph_edit import GraphEdit
from toolchain.building.metadata import get_metadata, load_onnx, set_metadata
from toolchain.measuring.compare import Comparison
from toolchain.stages.export import write_checked


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def deform_batchnorm(g: GraphEdit) -> int:
    done = 0
    for dcn in [n for n in g.graph.node if n.op_type == "DeformConv"]:
        bn = g.only_consumer(dcn.output[0])
        if bn is None or bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        scale, shift, mean, var = (g.array(name) for name in bn.input[1:5])
        weight = g.array(dcn.input[1])
        if any(v is None for v in (scale, shift, mean, var, weight)):
            continue
        bias = g.array(dcn.input[3]) if len(dcn.input) > 3 and dcn.input[3] else np.zeros(weight.shape[0], weight.dtype)
        if bias is None:
            continue
        factor = scale / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
        inputs = list(dcn.input) + [""] * (5 - len(dcn.input))
        inputs[1] = g.add_constant(f"{dcn.input[1]}_bn", (weight * factor[:, None, None, None]).astype(weight.dtype))
        inputs[3] = g.add_constant(f"{dcn.name}_bias_bn", ((bias - mean) * factor + shift).astype(weight.dtype))
        del dcn.input[:]
        dcn.input.extend(inputs[: 5 if inputs[4] else 4])
        dcn.output[0] = bn.output[0]
        g.remove([bn])
        done += 1
    return done


def deform_mask_scale(g: GraphEdit) -> int:
    done = 0
    for dcn in [n for n in g.graph.node if n.op_type == "DeformConv" and len(n.input) > 4 and n.input[4]]:
        mul = g.producer.get(dcn.input[4])
        if mul is None or mul.op_type != "Mul" or g.only_consumer(mul.output[0]) is not dcn:
            continue
        constant = next((i for i in mul.input if i in g.inits), None)
        value = g.array(constant) if constant else None
        if value is None or value.size != 1:
            continue
        weight = g.array(dcn.input[1])
        if weight is None:
            continue
        dcn.input[1] = g.add_constant(f"{dcn.input[1]}_mask", (weight * value.reshape(())).astype(weight.dtype))
        dcn.input[4] = next(i for i in mul.input if i != constant)
        g.remove([mul])
        done += 1
    return done


def sibling_convs(g: GraphEdit) -> int:
    done = 0
    groups: dict[tuple, list] = {}
    for node in g.graph.node:
        if node.op_type != "Conv" or _attrs(node).get("group", 1) != 1 or g.array(node.input[1]) is None:
            continue
        weight = g.array(node.input[1])
        key = (node.input[0], tuple(sorted((k, str(v)) for k, v in _attrs(node).items())), weight.shape[1:],
               len(node.input) > 2 and bool(node.input[2]))
        groups.setdefault(key, []).append(node)
    for (source, _, _, has_bias), convs in groups.items():
        if len(convs) < 2:
            continue
        weights = [g.array(c.input[1]) for c in convs]
        biases = [g.array(c.input[2]) for c in convs] if has_bias else []
        if any(b is None for b in biases):  # a bias computed in the graph cannot be concatenated here
            continue
        stem = convs[0].name
        inputs = [source, g.add_constant(f"{stem}_merged_weight", np.concatenate(weights))]
        if has_bias:
            inputs.append(g.add_constant(f"{stem}_merged_bias", np.concatenate(biases)))
        merged = helper.make_node("Conv", inputs, [g.fresh(f"{stem}_merged")], name=g.fresh(f"{stem}_merged"),
                                  **_attrs(convs[0]))
        sizes = g.add_constant(f"{stem}_split", np.asarray([w.shape[0] for w in weights], np.int64))
        split = helper.make_node("Split", [merged.output[0], sizes], [c.output[0] for c in convs],
                                 name=g.fresh(f"{stem}_split"), axis=1)
        position = min(list(g.graph.node).index(c) for c in convs)
        g.remove(convs)
        g.graph.node.insert(position, split)
        g.graph.node.insert(position, merged)
        done += 1
    return done


def _is_flip(node, g: GraphEdit) -> bool:
    """Slice reversing H and W: starts −1, ends −∞, axes (2, 3) or (−2, −1), steps −1."""
    if node is None or node.op_type != "Slice" or len(node.input) != 5:
        return False
    starts, ends, axes, steps = (g.array(i) for i in node.input[1:5])
    if any(v is None for v in (starts, ends, axes, steps)):
        return False
    return (list(starts) == [-1, -1] and all(e <= -(2 ** 62) for e in ends) and sorted(axes % 4) == [2, 3]
            and list(steps) == [-1, -1])


def same_max_pool(g: GraphEdit) -> int:
    done = 0
    for pool in [n for n in g.graph.node if n.op_type == "MaxPool"]:
        attrs = _attrs(pool)
        pad = g.producer.get(pool.input[0])
        if (attrs.get("kernel_shape") != [3, 3] or attrs.get("strides") != [2, 2] or any(attrs.get("pads", [0]))
                or pad is None or pad.op_type != "Pad" or g.only_consumer(pad.output[0]) is not pool):
            continue
        flip_in, flip_out = g.producer.get(pad.input[0]), g.only_consumer(pool.output[0])
        pads = g.array(pad.input[1]) if len(pad.input) > 1 else None
        value = g.array(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        if (not (_is_flip(flip_in, g) and _is_flip(flip_out, g)) or g.only_consumer(flip_in.output[0]) is not pad
                or pads is None or list(pads) != [0, 0, 1, 1, 0, 0, 1, 1] or value is None or np.any(value)
                or (len(pad.input) > 3 and pad.input[3])):
            continue
        # pads = [0, 0, H % 2, W % 2, 0, 0, 1, 1]: 'same' puts size % 2 zeros before and one after.
        stem = pool.name
        shape, parity, dynamic = (g.fresh(f"{stem}_{s}") for s in ("shape", "parity", "pads"))
        new = [
            helper.make_node("Shape", [flip_in.input[0]], [shape], name=g.fresh(f"{stem}_shape"), start=2, end=4),
            helper.make_node("Mod", [shape, g.add_constant(f"{stem}_two", np.asarray([2], np.int64))], [parity],
                             name=g.fresh(f"{stem}_mod")),
            helper.make_node("Concat", [g.add_constant(f"{stem}_zeros", np.zeros(2, np.int64)), parity,
                                        g.add_constant(f"{stem}_after", np.asarray([0, 0, 1, 1], np.int64))],
                             [dynamic], name=g.fresh(f"{stem}_concat"), axis=0),
        ]
        pad.input[0] = flip_in.input[0]
        pad.input[1] = dynamic
        pool.output[0] = flip_out.output[0]
        position = list(g.graph.node).index(pad)
        for node in reversed(new):
            g.graph.node.insert(position, node)
        g.remove([flip_in, flip_out])
        done += 1
    return done


def global_pools(g: GraphEdit) -> int:
    done = 0
    for node in [n for n in g.graph.node if n.op_type in ("ReduceMean", "ReduceMax")]:
        axes = g.array(node.input[1]) if len(node.input) > 1 and node.input[1] else _attrs(node).get("axes")
        if axes is None or sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) != [2, 3]:
            continue
        op = "GlobalAveragePool" if node.op_type == "ReduceMean" else "GlobalMaxPool"
        if _attrs(node).get("keepdims", 1):
            g.graph.node[list(g.graph.node).index(node)].CopyFrom(
                helper.make_node(op, [node.input[0]], [node.output[0]], name=node.name))
        else:
            pooled = g.fresh(f"{node.name}_pooled")
            position = list(g.graph.node).index(node)
            g.graph.node.insert(position, helper.make_node(op, [node.input[0]], [pooled],
                                                           name=g.fresh(f"{node.name}_pool")))
            g.graph.node[position + 1].CopyFrom(
                helper.make_node("Flatten", [pooled], [node.output[0]], name=node.name, axis=1))
        done += 1
    return done


# Project-first pays when M ≤ C/2 (ONNX Runtime 1.32, 2 threads, 3×3, one DeformConv alone): 64→16 at 80×80
# 2.92 → 1.83 ms, at 40×40 0.81 → 0.60 ms; 64→32 3.19 → 3.09 ms; 16→16 is slower (1.05 → 1.15 ms).
# In V1 (640², 2 threads) the three 64→16 convs take the lean graph from 1.15× to 1.25× the simplified one,
# the three 64→32 ones to 1.28× (medians of interleaved runs on real images).
PROJECT_FIRST_MAX_NARROWING = 0.5


def deform_project_first(g: GraphEdit) -> int:
    done = 0
    for dcn in [n for n in g.graph.node if n.op_type == "DeformConv"]:
        attrs, weight = _attrs(dcn), g.array(dcn.input[1])
        if weight is None or weight.ndim != 4:
            continue
        out_ch, in_ch, kh, kw = weight.shape
        dil = attrs.get("dilations", [1, 1])
        same = [dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2]
        if (attrs.get("group", 1) != 1 or attrs.get("offset_group", 1) != 1 or attrs.get("strides", [1, 1]) != [1, 1]
                or kh % 2 == 0 or kw % 2 == 0 or attrs.get("pads", [0] * 4) != same * 2
                or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or out_ch > PROJECT_FIRST_MAX_NARROWING * in_ch):
            continue  # only 'same' stride-1 convs keep their output size as a 1×1 DeformConv
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        project = np.concatenate([weight[:, :, i, j] for i, j in taps])
        gather = np.zeros((out_ch, len(taps) * out_ch, 1, 1), weight.dtype)
        for t in range(len(taps)):
            gather[np.arange(out_ch), t * out_ch + np.arange(out_ch)] = 1
        shift = np.asarray([[i * dil[0] - same[0], j * dil[1] - same[1]] for i, j in taps], weight.dtype)
        stem = dcn.name
        flat, product, size, shape, projected, offsets = (
            g.fresh(f"{stem}_{s}") for s in ("flat", "product", "size", "shape", "projected", "tap_offsets"))
        # The projection as a MatMul over the flattened pixels, not a 1×1 Conv: ONNX Runtime would run the Conv
        # in its blocked layout and reorder the taps × M channels back for the DeformConv (V1: 1.28× → 1.31×).
        new = [
            helper.make_node("Reshape", [dcn.input[0], g.add_constant(f"{stem}_flat", np.asarray([0, in_ch, -1],
                                                                                                 np.int64))],
                             [flat], name=g.fresh(f"{stem}_flatten")),
            helper.make_node("MatMul", [g.add_constant(f"{stem}_project", project), flat], [product],
                             name=g.fresh(f"{stem}_project")),
            helper.make_node("Shape", [dcn.input[0]], [size], name=g.fresh(f"{stem}_size"), start=2, end=4),
            helper.make_node("Concat", [g.add_constant(f"{stem}_channels", np.asarray([0, len(project)], np.int64)),
                                        size], [shape], name=g.fresh(f"{stem}_shape"), axis=0),
            helper.make_node("Reshape", [product, shape], [projected], name=g.fresh(f"{stem}_unflatten")),
            helper.make_node("Add", [dcn.input[2], g.add_constant(f"{stem}_tap_shift", shift.reshape(1, -1, 1, 1))],
                             [offsets], name=g.fresh(f"{stem}_tap_shift")),
        ]
        inputs = [projected, g.add_constant(f"{stem}_sum_taps", gather), offsets, *dcn.input[3:]]
        position = list(g.graph.node).index(dcn)
        g.graph.node[position].CopyFrom(helper.make_node("DeformConv", inputs, list(dcn.output), name=dcn.name,
                                                         kernel_shape=[1, 1], offset_group=len(taps)))
        for node in reversed(new):
            g.graph.node.insert(position, node)
        done += 1
    return done


PASSES = (deform_batchnorm, deform_mask_scale, sibling_convs, same_max_pool, global_pools, deform_project_first)


def lean_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Counter]:
    """``model`` after every pass (a copy), and how many sites each pass rewrote."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    counts: Counter = Counter()
    for rewrite in PASSES:
        graph = GraphEdit(model)
        counts[rewrite.__name__] = rewrite(graph)
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model, counts


@dataclass
class LeanReport:
    path: Path
    rewrites: Counter
    before: int
    after: int
    comparisons: list[Comparison] = field(default_factory=list)


def lean_onnx(src: str | Path, out: str | Path, weights: str | Path | None,
              check_images: str | Path | None = None) -> LeanReport:
    """``src`` rewritten by ``PASSES``; with ``check_images`` it is run against the PyTorch model it was
    exported from and refused, leaving nothing at ``out``, beyond the export tolerances."""
    out = Path(out)
    source = load_onnx(src)
    meta = get_metadata(source)
    try:
        lean, counts = lean_model(source)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"{src}: lean rewrite produced an invalid graph ({str(exc).splitlines()[0]})") from None
    set_metadata(lean, {"lean": dict(counts)})
    comparisons = write_checked(lean, out, lambda: featherface.load_model(meta["model"], weights), check_images,
                                "lean graph")
    return LeanReport(out, counts, len(source.graph.node), len(lean.graph.node), comparisons)
