"""INT8 (explicit Q/DQ) and FP16 ONNX from an FP32 ONNX, with ``onnxruntime.quantization``.

The Q/DQ layout is what TensorRT wants (symmetric INT8, per-channel weights, per-tensor activations);
ONNX Runtime runs the same graph on the CPU, so the artifact that ships is the one that is measured.
"""
import contextlib
import io
import logging
import tempfile
from collections import deque
from pathlib import Path
from typing import Callable

import onnx
import onnx_ir
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, load_tensors_data, save_tensors_data
from onnxruntime.transformers.float16 import convert_float_to_float16

from calibration.dataset import CalibrationSet
from calibration.reader import CalibrationReader
from featherface.errors import ArtifactError
from toolchain.building.artifacts import atomic_output
from toolchain.building.graph_edit import GraphEdit
from toolchain.building.metadata import get_metadata, load_onnx, set_metadata

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
# Histogram settings are not passed through quantize_static, so the calibrator is run here directly.
METHOD_OPTIONS = {"minmax": {}, "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
                  "percentile": {"num_bins": 2048, "percentile": 99.999}}
# Images per collect_data call: the calibrator holds all intermediate outputs of a call in memory (40 full-size
# images ≈ a few GB for V1); histograms carry over between calls.
COLLECT_CHUNK = 40
# "s8": symmetric signed activations (TensorRT's layout); "u8": asymmetric unsigned (ONNX Runtime on x86).
ACTIVATIONS = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
# Q/DQ only in front of convolutions, as TensorRT recommends: the attention and fusion arithmetic
# (CBAM gates, BiFPN weighted sums) stays in float, where quantizing it cost 2-3 AP for no speed.
QUANTIZED_OPS = ["Conv"]
# Numerically sensitive ops left in FP32 in the FP16 graph (softmax probabilities, sampling offsets).
FP16_KEEP_FP32_OPS = ["Softmax", "DeformConv", "GatherElements", "ReduceMax"]
SHAPE_ONLY_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Expand", "Identity"}


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger at WARNING on every call; keep it off the console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibrate(model_path: str | Path, calib: CalibrationSet, method: str, cache_out: str | Path,
              symmetric: bool = True, on_image: Callable[[int, int], None] | None = None,
              all_tensors: bool = False) -> TensorsData:
    """Collect activation ranges over ``calib`` and write them as an ONNX Runtime calibration cache (JSON).

    ``method`` ranges the tensors around convolutions (what the Q/DQ graph quantizes). ``all_tensors`` adds MinMax
    ranges for every other float tensor, for TensorRT's implicit INT8, which keeps any tensor without a range out of
    INT8 (the BiFPN and CBAM element-wise ops included); entropy over all ~700 tensors took over 10 minutes here."""
    if method not in METHODS:
        raise ArtifactError(f"{cache_out}: unknown calibration method '{method}' (use {', '.join(METHODS)})")
    ranges = _collect(model_path, calib, method, QUANTIZED_OPS, symmetric, on_image)
    if all_tensors:
        rest = _collect(model_path, calib, "minmax", [], symmetric, None)
        ranges = TensorsData(ranges.calibration_method, {**rest.data, **ranges.data})
    # ONNX Runtime collects the tensors in a set, whose order changes from one process to the next: sorted, the
    # same ranges are the same bytes (and the INT8 step's cache key, a hash of this file, stays put).
    ranges = TensorsData(ranges.calibration_method, dict(sorted(ranges.data.items())))
    cache_out = Path(cache_out)
    with atomic_output(cache_out) as tmp_path:
        save_tensors_data(ranges, tmp_path)
    return ranges


def _collect(model_path: str | Path, calib: CalibrationSet, method: str, op_types: list[str], symmetric: bool,
             on_image: Callable[[int, int], None] | None) -> TensorsData:
    """One calibrator pass over ``calib`` for the tensors next to ``op_types`` (all float tensors when empty)."""
    model = load_onnx(model_path)
    with tempfile.TemporaryDirectory(prefix="featherface-calib-") as tmp:
        options = dict(METHOD_OPTIONS[method], symmetric=symmetric)
        calibrator = create_calibrator(Path(model_path), op_types,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[method], extra_options=options)
        reader = CalibrationReader(calib, model.graph.input[0].name, on_image)
        chunk = COLLECT_CHUNK if op_types else COLLECT_CHUNK // 5  # every tensor: ~5x more held per image
        for start in range(0, len(calib), chunk):  # ORT keeps every output of a call in memory
            reader.set_range(start, start + chunk)
            calibrator.collect_data(reader)
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress to stdout
            return calibrator.compute_data()


def read_ranges(cache: str | Path) -> TensorsData:
    try:
        return load_tensors_data(cache)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{cache}: not a readable calibration cache ({exc.__class__.__name__})") from None


def sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """The first convolution (it sees raw pixels) and the convolutions of the output heads.

    These are kept in FP32 by default: the stem has a wide, skewed input range and the heads'
    small regression offsets lose most to INT8 rounding.
    """
    edit = GraphEdit(model)
    graph, producer, consumers = model.graph, edit.producer, edit.consumers
    stem = [n.name for n in consumers.get(graph.input[0].name, []) if n.op_type == "Conv"][:1]
    heads, queue, seen = [], deque(o.name for o in graph.output), set()
    while queue:  # walk back from the outputs through shape ops until the convolutions that feed them
        node = producer.get(queue.popleft())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            heads.append(node.name)
        elif node.op_type in {"Reshape", "Transpose", "Concat", "Softmax", "Flatten", "Identity", "Cast"}:
            queue.extend(node.input[:1] if node.op_type != "Concat" else node.input)
    return stem + sorted(heads)


def quantize_int8(model_path: str | Path, cache: str | Path, out: str | Path, activations: str = "s8",
                  keep_fp32: list[str] | None = None, reduce_range: bool = False) -> Path:
    """Q/DQ INT8 ONNX from ``model_path`` using calibration ranges from ``cache``.

    Weights are symmetric INT8 per output channel; activations per tensor. Nodes named in
    ``keep_fp32`` (default: ``sensitive_nodes``) stay in FP32. ``reduce_range``: 7-bit weights, which x86
    kernels without VNNI cannot saturate (2 · 255 · 64 < 2^15); measured in benchmarks/int8_host_kernels.py.
    """
    out = Path(out)
    model = load_onnx(model_path)
    ranges = read_ranges(cache)
    keep = sensitive_nodes(model) if keep_fp32 is None else list(keep_fp32)
    unknown = sorted(set(keep) - {n.name for n in model.graph.node})
    if unknown:
        raise ArtifactError(f"{model_path}: no node(s) named {', '.join(unknown[:3])} to keep in FP32")
    with tempfile.TemporaryDirectory(prefix="featherface-quant-") as tmp, _quiet_root_logger():
        raw = Path(tmp) / "int8.onnx"
        quantize_static(  # a proto, not a path: ORT would write a scratch file beside the input
            model, str(raw), None, quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
            activation_type=ACTIVATIONS[activations], weight_type=QuantType.QInt8, nodes_to_exclude=keep,
            op_types_to_quantize=QUANTIZED_OPS,
            calibrate_method=ranges.calibration_method, calibration_cache_path=str(cache),
            # QuantizeBias=False: biases stay float. TensorRT's IDequantizeLayer takes INT8/FP8/INT4 input only,
            # so an INT32 bias behind a DequantizeLinear fails to parse (onnx/onnx-tensorrt#850).
            extra_options={"ActivationSymmetric": activations == "s8", "WeightSymmetric": True,
                           "QuantizeBias": False},
        )
        quantized = onnx.load(str(raw))
    set_metadata(quantized, dict(get_metadata(model), precision="int8",
                                 calibration=ranges.calibration_method.name.lower(),
                                 int8_activations=activations, kept_fp32=keep))
    with atomic_output(out) as tmp_path:
        onnx.save(quantized, str(tmp_path))
    return out


def index_math_nodes(model: onnx.ModelProto) -> list[str]:
    """Float nodes that compute sampling positions and gather indices (the decomposed DCN lowering).

    They start at a float ``Range`` (pixel coordinates) and run until the values are bounded: an integer
    ``Cast`` (gather index) or a product with sampled data. FP16 holds integers exactly only up to 2048 and
    ONNX Runtime has no FP16 ``Range``, so these stay FP32; the sampled data and the matmul go FP16.
    """
    graph, consumers = model.graph, GraphEdit(model).consumers
    gathered = {o for n in graph.node if n.op_type == "GatherElements" for o in n.output}
    queue = deque(gathered)
    while queue:  # sampled data, through shape-only ops, up to the product with the bilinear weights
        for node in consumers.get(queue.popleft(), []):
            if node.op_type in SHAPE_ONLY_OPS and node.output[0] not in gathered:
                gathered.add(node.output[0])
                queue.append(node.output[0])
    seeds = [n for n in graph.node if n.op_type == "Range"]
    keep, queue = {n.name for n in seeds}, deque(o for n in seeds for o in n.output)
    while queue:
        for node in consumers.get(queue.popleft(), []):
            if node.name in keep or node.op_type in ("GatherElements", "MatMul") or gathered & set(node.input):
                continue
            keep.add(node.name)
            queue.extend(node.output)
    return [n.name for n in graph.node if n.name in keep]


def _drop_round_trips(model: onnx.ModelProto, fp32_nodes: set[str], fp32_ops: list[str]) -> onnx.ModelProto:
    """Wire FP32 → FP16 → FP32 cast pairs back to the FP32 tensor.

    The converter casts every output of a blocked node (``fp32_nodes``, ``fp32_ops``) to FP16 and back in front
    of the next blocked one, which would round index math to FP16 between two FP32 nodes.
    """
    fp32 = {o for n in model.graph.node if n.name in fp32_nodes or n.op_type in fp32_ops for o in n.output}
    fp32 |= {v.name for v in model.graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producer = GraphEdit(model).producer
    cast_to = {node.name: next((a.i for a in node.attribute if a.name == "to"), None)
               for node in model.graph.node if node.op_type == "Cast"}
    replace = {}
    for node in model.graph.node:
        if cast_to.get(node.name) != onnx.TensorProto.FLOAT:
            continue
        half = producer.get(node.input[0])
        if half is not None and cast_to.get(half.name) == onnx.TensorProto.FLOAT16 and half.input[0] in fp32:
            replace[node.output[0]] = half.input[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    outputs = {o.name for o in model.graph.output}
    used = {name for node in model.graph.node for name in node.input} | outputs
    while True:  # drop the casts nothing reads any more
        dead = [n for n in model.graph.node if n.op_type == "Cast" and not set(n.output) & used]
        if not dead:
            return model
        for node in dead:
            model.graph.node.remove(node)
        used = {name for node in model.graph.node for name in node.input} | outputs


def convert_fp16(model_path: str | Path, out: str | Path) -> Path:
    """FP16 weights and activations with FP32 inputs/outputs; sensitive ops and index math stay FP32 behind
    casts (their node names are recorded as ``fp32_nodes`` so TensorRT ≤ 10 can be told the same)."""
    model = load_onnx(model_path)
    meta = get_metadata(model)
    index_nodes = index_math_nodes(model)
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FP32_OPS,
                                    node_block_list=index_nodes)
    half = _drop_round_trips(half, set(index_nodes), FP16_KEEP_FP32_OPS)
    half_ir = onnx_ir.from_proto(half)
    half_ir.graph.sort()  # the converter appends its input casts after their consumers
    half = onnx_ir.to_proto(half_ir)
    set_metadata(half, dict(meta, precision="fp16", fp32_ops=FP16_KEEP_FP32_OPS, fp32_nodes=index_nodes))
    with atomic_output(out) as tmp_path:
        onnx.save(half, str(tmp_path))
    return Path(out)
