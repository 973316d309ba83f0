"""What each TensorRT generation's ONNX parser and Python API accept, kept as cited data.

Why data: the facts that broke deployment (an opset-18 ReduceMean reducing over the batch on 8.x, an INT32 bias
DequantizeLinear, DeformConv before 10.1, plugins no longer registered by the 10.x parser, FP16 index math, Python
API names that come and go) are properties of a release, not of our code. Keeping them as one table per generation,
each fact with the source it was read from, lets ``toolchain.building.lint`` check a model for a target on a CPU,
before a Jetson ever sees it, and lets a reviewer re-check a fact against its source instead of against memory.

Sources are ``repo@ref:path[:line]``. onnx/onnx-tensorrt refs are the ``parsers/onnx`` submodule commits of the
NVIDIA/TensorRT tags (``git ls-tree <tag> parsers/``), except "8.5", which uses release/8.5-GA (the 8.5.1
pointer) so that it is the floor of every 8.5.x. Python API names were scanned at the NVIDIA/TensorRT tag
(``python/src``; ``nptype``/``__version__`` in ``python/packaging``) with their class or enum as context.
Nothing here is read at run time from TensorRT: these are the facts a build machine would otherwise find out late.
"""
from dataclasses import dataclass, field

# onnx/onnx-tensorrt commits (parsers/onnx at the NVIDIA/TensorRT tag noted).
_P82 = "onnx/onnx-tensorrt@e9456d57605c883cdf985e634ab483e2c1500bb1"  # TensorRT 8.2.1
_P85 = "onnx/onnx-tensorrt@3b008c466bcb7375aaf5cabf51b289fd34d40c44"  # release/8.5-GA = TensorRT 8.5.1
_P852 = "onnx/onnx-tensorrt@7583da4c62475e84b7be31f4b8fb0c101873d434"  # TensorRT 8.5.2
_P86 = "onnx/onnx-tensorrt@6ba67d3428e05f690145373ca87fb8d32f98df45"  # TensorRT 8.6.1
_P100 = "onnx/onnx-tensorrt@eb43908b02a296ea0594432f06e9d3fac288d672"  # TensorRT 10.0.1
_P101 = "onnx/onnx-tensorrt@96e781103cfc4adf4a6bb557e94bac8e693f6f4c"  # TensorRT 10.1.0
_P111 = "onnx/onnx-tensorrt@7c51a63a719180eb5160c874c111746f3fb46a6b"  # TensorRT 11.1
_T = "NVIDIA/TensorRT@"


@dataclass(frozen=True)
class Generation:
    """One TensorRT generation: what its ONNX parser imports and which Python API names exist."""

    name: str
    max_opset: int  # docs/operators.md; the parser only logs a higher opset and applies its older rules
    onnx_ops: frozenset[str]  # rows marked Y in docs/operators.md
    reduce_axes_input: bool  # Reduce* (not ReduceSum) honour the opset-18 axes input; else they reduce ALL dims
    dq_input_types: frozenset[str]  # onnx.TensorProto type names TensorRT dequantizes
    deform_conv: bool  # ONNX DeformConv imported (as the ModulatedDeformConv2d plugin)
    registers_plugins: bool  # the parser calls initLibNvInferPlugins itself; from 10.0 the application must
    split_num_outputs: bool  # opset-18 Split num_outputs gives ONNX's ceil-sized chunks
    pad_axes_input: bool  # opset-18 Pad axes input (an initializer) is honoured
    resize_opset18_attributes: bool  # Resize antialias/keep_aspect_ratio_policy/axes are read, not ignored
    fp16_range: bool  # Range takes FP16 inputs (the docs say so; the importer rejects them)
    range_dynamic_float: bool  # a FLOAT Range whose inputs are not all initializers imports (8.2: INT32 only)
    int64_as_int32: bool  # the parser narrows every INT64 tensor to INT32 before an importer sees it (8.x)
    refused_input_types: dict[str, frozenset[str]]  # op → ONNX element types its importer refuses for data inputs
    python_api: frozenset[str]  # dotted for enum members ("BuilderFlag.FP16"), plain for methods/properties
    sources: dict[str, str] = field(default_factory=dict, compare=False)


_OPS_8_2 = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
    "GatherND", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GRU", "HardSigmoid", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsNaN", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM", "MatMul",
    "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "NonMaxSuppression", "Not", "Or", "Pad",
    "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomUniform", "RandomUniformLike", "Range",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN",
    "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Sigmoid",
    "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
    "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Unsqueeze",
    "Upsample", "Where",
})  # NonMaxSuppression is "Y [EXPERIMENTAL]" at 8.2
_OPS_8_5 = _OPS_8_2 | {"GridSample", "MeanVarianceNormalization", "NonZero", "RandomNormal", "RandomNormalLike",
                       "Reciprocal", "RoiAlign", "Shrink", "Trilu", "Xor"}
# 8.5.2's parser (_P852) adds HardSwish, Mod and OneHot; "8.5" stays at the 8.5.1 floor, 8.6 has them.
_OPS_8_6 = _OPS_8_5 | {"GroupNormalization", "HardSwish", "IsInf", "LayerNormalization", "Mod", "OneHot"}
_OPS_10_0 = _OPS_8_6 | {"CastLike", "Gelu", "Hardmax", "Mish"}
_OPS_10_1 = _OPS_10_0 | {"DeformConv"}
_OPS_10_3 = _OPS_10_1  # derived, not read: 10.2/10.3 changelogs add no operator
_OPS_11 = _OPS_10_1 | {"Attention", "BlackmanWindow", "HammingWindow", "HannWindow", "RMSNormalization",
                       "RotaryEmbedding", "STFT", "Swish", "TensorScatter"}  # read at 11.1 only

_FP8, _INT4, _FP4 = "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"

# Input types the importers refuse, for the ops FeatherFace's graphs use (checked on ONNX type inference by the lint).
# Element-wise ops go through elementwiseCheck: arithmetic, comparisons, Max/Min refuse BOOL (8.2: Equal too; from
# 8.5 "Equal supports all types"); And/Or/Xor take BOOL only (BOOL_ONLY, every generation).
_BOOL_REFUSED_8_2 = ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Max",
                     "Min")  # LessOrEqual/GreaterOrEqual are imported as LESS/GREATER or EQUAL
_BOOL_REFUSED_8_5 = tuple(op for op in _BOOL_REFUSED_8_2 if op != "Equal")
_TYPES_8_2 = {**{op: frozenset({"BOOL"}) for op in _BOOL_REFUSED_8_2},
              "Gather": frozenset({"BOOL"}), "GatherElements": frozenset({"BOOL"}),
              "Resize": frozenset({"INT32", "BOOL"}), "Where": frozenset({"BOOL"}),  # Where: its x and y
              "Floor": frozenset({"INT32", "BOOL"})}  # unary ops without an integer path
_TYPES_LATER = {op: frozenset({"BOOL"}) for op in _BOOL_REFUSED_8_5}
BOOL_ONLY = ("And", "Or", "Xor")

# Python API names by the tags they are present at (scan of python/src at 8.2.1 … v11.1).
_API_ALL = frozenset({
    "init_libnvinfer_plugins", "Logger", "Runtime", "deserialize_cuda_engine", "Builder", "create_network",
    "OnnxParser", "parse_from_file", "parse", "num_errors", "get_error", "create_builder_config", "set_flag",
    "BuilderFlag.GPU_FALLBACK", "create_optimization_profile", "set_shape", "add_optimization_profile",
    "default_device_type", "DeviceType.DLA", "DLA_core", "num_DLA_cores", "create_timing_cache",
    "set_timing_cache", "get_timing_cache", "serialize", "ICudaEngine.serialize", "build_serialized_network",
    "create_execution_context", "all_binding_shapes_specified", "execute_v2", "set_optimization_profile_async",
    "active_optimization_profile", "nptype", "get_input", "num_inputs", "__version__", "num_layers", "get_layer",
})
_API_BINDINGS = frozenset({  # 8.2.1–8.6.1; removed in 10.0
    "max_workspace_size", "build_engine", "num_bindings", "get_binding_index", "get_binding_name",
    "binding_is_input", "get_binding_shape", "get_binding_dtype", "set_binding_shape", "get_profile_shape",
    "execute_async_v2",
})
_API_IO_TENSORS = frozenset({  # from 8.5.2
    "set_memory_pool_limit", "MemoryPoolType.WORKSPACE", "num_io_tensors", "get_tensor_name", "get_tensor_mode",
    "TensorIOMode.INPUT", "get_tensor_shape", "get_tensor_dtype", "get_tensor_profile_shape", "set_input_shape",
    "set_tensor_address", "execute_async_v3",
})
_API_WEAK_TYPING = frozenset({  # 8.2.1–10.3.0; removed in 11 (strongly typed, calibrators gone)
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.FP16", "BuilderFlag.INT8", "int8_calibrator",
    "set_calibration_profile", "IInt8EntropyCalibrator2", "platform_has_fast_fp16", "platform_has_fast_int8",
    "precision", "set_output_type", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
})
_API_STRONG = frozenset({"NetworkDefinitionCreationFlag.STRONGLY_TYPED"})  # from 10.0


def _api_sources(tag: str, **pycore_lines: int) -> dict[str, str]:
    """``python_api`` → the scanned tree, ``python_api.<name>`` → its line in pyCore.cpp at ``tag``."""
    core = f"{_T}{tag}:python/src/infer/pyCore.cpp"
    lines = {f"python_api.{name}": f"{core}:{line}" for name, line in pycore_lines.items()}
    return {"python_api": f"{_T}{tag}:python/src"} | lines


TABLES: dict[str, Generation] = {
    "8.2": Generation(
        name="8.2", max_opset=13, onnx_ops=_OPS_8_2, reduce_axes_input=False, dq_input_types=frozenset({"INT8"}),
        deform_conv=False, registers_plugins=True, split_num_outputs=False, pad_axes_input=False,
        resize_opset18_attributes=False, fp16_range=False, range_dynamic_float=False, int64_as_int32=True, refused_input_types=_TYPES_8_2,
        python_api=_API_ALL | _API_BINDINGS | _API_WEAK_TYPING,
        sources={"max_opset": f"{_P82}:docs/operators.md:5", "onnx_ops": f"{_P82}:docs/operators.md",
                 "reduce_axes_input": f"{_P82}:builtin_op_importers.cpp:3445",
                 "dq_input_types": f"{_P82}:docs/operators.md:47",
                 "zero_point": f"{_P82}:builtin_op_importers.cpp:1169",
                 "deform_conv": f"{_P82}:docs/operators.md", "registers_plugins": f"{_P82}:ModelImporter.cpp:590",
                 "split_num_outputs": f"{_P82}:builtin_op_importers.cpp:4356",
                 "pad_axes_input": f"{_P82}:builtin_op_importers.cpp:3074",
                 "resize_opset18_attributes": f"{_P82}:builtin_op_importers.cpp:3492",
                 "fp16_range": f"{_P82}:builtin_op_importers.cpp:3351",
                 # float only when start, limit and delta are all initializers; else "For range operator with
                 # dynamic inputs, this version of TensorRT only supports INT32!" (INT64 arrives narrowed to INT32)
                 "range_dynamic_float": f"{_P82}:builtin_op_importers.cpp:3341",
                 "int64_as_int32": f"{_P82}:onnx2trt_utils.cpp:350",
                 "refused_input_types": f"{_P82}:onnx2trt_utils.cpp:825-848 (elementwiseCheck), :2026-2033 (unary); "
                                        "builtin_op_importers.cpp:1468 (Gather), :1486 (GatherElements), :3498 (Resize), "
                                        ":4706 (Where)"}
        | _api_sources("8.2.1", Logger=476, execute_async_v2=600)),
    "8.5": Generation(
        name="8.5", max_opset=17, onnx_ops=_OPS_8_5, reduce_axes_input=False, dq_input_types=frozenset({"INT8"}),
        deform_conv=False, registers_plugins=True, split_num_outputs=False, pad_axes_input=False,
        resize_opset18_attributes=False, fp16_range=False, range_dynamic_float=True, int64_as_int32=True, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_BINDINGS | _API_IO_TENSORS | _API_WEAK_TYPING,
        sources={"max_opset": f"{_P85}:docs/operators.md:5", "onnx_ops": f"{_P85}:docs/operators.md",
                 "onnx_ops.8.5.2": f"{_P852}:docs/operators.md",
                 "reduce_axes_input": f"{_P85}:builtin_op_importers.cpp:3638",
                 "dq_input_types": f"{_P85}:docs/operators.md:50",
                 "zero_point": f"{_P85}:builtin_op_importers.cpp:1227",
                 "deform_conv": f"{_P85}:docs/operators.md", "registers_plugins": f"{_P85}:ModelImporter.cpp:524",
                 "split_num_outputs": f"{_P85}:builtin_op_importers.cpp:4713",
                 "pad_axes_input": f"{_P85}:builtin_op_importers.cpp:3260",
                 "resize_opset18_attributes": f"{_P85}:builtin_op_importers.cpp:3685",
                 "fp16_range": f"{_P85}:builtin_op_importers.cpp:3530",
                 "range_dynamic_float": f"{_P85}:builtin_op_importers.cpp:3530",
                 "int64_as_int32": f"{_P85}:onnx2trt_utils.cpp:361",
                 "refused_input_types": f"{_P85}:onnx2trt_utils.cpp:857 (elementwiseCheck: 'Equal supports all types')"}
        | _api_sources("8.5.2", Logger=586, execute_async_v2=793, execute_async_v3=839)),
    "8.6": Generation(
        name="8.6", max_opset=17, onnx_ops=_OPS_8_6, reduce_axes_input=False, dq_input_types=frozenset({"INT8"}),
        deform_conv=False, registers_plugins=True, split_num_outputs=False, pad_axes_input=False,
        resize_opset18_attributes=False, fp16_range=False, range_dynamic_float=True, int64_as_int32=True, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_BINDINGS | _API_IO_TENSORS | _API_WEAK_TYPING,
        sources={"max_opset": f"{_P86}:docs/operators.md:5", "onnx_ops": f"{_P86}:docs/operators.md",
                 "reduce_axes_input": f"{_P86}:builtin_op_importers.cpp:3685",
                 "dq_input_types": f"{_P86}:docs/operators.md:50",
                 "zero_point": f"{_P86}:builtin_op_importers.cpp:1220",
                 "deform_conv": f"{_P86}:docs/operators.md", "registers_plugins": f"{_P86}:ModelImporter.cpp:552",
                 "split_num_outputs": f"{_P86}:builtin_op_importers.cpp:4693",
                 "pad_axes_input": f"{_P86}:builtin_op_importers.cpp:3312",
                 "resize_opset18_attributes": f"{_P86}:builtin_op_importers.cpp:3732",
                 "fp16_range": f"{_P86}:builtin_op_importers.cpp:3577",
                 "range_dynamic_float": f"{_P86}:builtin_op_importers.cpp:3577",
                 "int64_as_int32": f"{_P86}:onnx2trt_utils.cpp:358",
                 "refused_input_types": f"{_P86}:onnx2trt_utils.cpp:865 (elementwiseCheck)"}
        | _api_sources("v8.6.1", Logger=618, execute_async_v2=825, execute_async_v3=871)),
    "10.0": Generation(
        name="10.0", max_opset=20, onnx_ops=_OPS_10_0, reduce_axes_input=True, dq_input_types=frozenset({"INT8", _FP8, _INT4}),
        deform_conv=False, registers_plugins=False, split_num_outputs=True, pad_axes_input=True,
        resize_opset18_attributes=True, fp16_range=False, range_dynamic_float=True, int64_as_int32=False, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_IO_TENSORS | _API_WEAK_TYPING | _API_STRONG,
        sources={"max_opset": f"{_P100}:docs/operators.md:5", "onnx_ops": f"{_P100}:docs/operators.md",
                 "reduce_axes_input": f"{_P100}:onnxOpImporters.cpp:4307",
                 "dq_input_types": f"{_P100}:docs/operators.md:58",
                 "deform_conv": f"{_P100}:onnxOpCheckers.cpp:907",
                 "registers_plugins": f"{_P100}:ModelImporter.cpp",  # no initLibNvInferPlugins call left
                 "split_num_outputs": f"{_P100}:onnxOpImporters.cpp:5505",
                 "pad_axes_input": f"{_P100}:docs/operators.md:132",
                 "resize_opset18_attributes": f"{_P100}:onnxOpCheckers.cpp:584",
                 "fp16_range": f"{_P100}:onnxOpImporters.cpp:4159",
                 "range_dynamic_float": f"{_P100}:onnxOpImporters.cpp:4159",
                 "int64_as_int32": f"{_P100}:importerUtils.cpp:326",
                 "refused_input_types": f"{_P100}:importerUtils.cpp:534-550 (elementwise: 'with type BOOL')"}
        | _api_sources("v10.0.1", Logger=752, execute_async_v3=1067)),
    "10.1": Generation(
        name="10.1", max_opset=20, onnx_ops=_OPS_10_1, reduce_axes_input=True, dq_input_types=frozenset({"INT8", _FP8, _INT4}),
        deform_conv=True, registers_plugins=False, split_num_outputs=True, pad_axes_input=True,
        resize_opset18_attributes=True, fp16_range=False, range_dynamic_float=True, int64_as_int32=False, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_IO_TENSORS | _API_WEAK_TYPING | _API_STRONG,
        sources={"max_opset": f"{_P101}:docs/operators.md:5", "onnx_ops": f"{_P101}:docs/operators.md",
                 "reduce_axes_input": f"{_P101}:onnxOpImporters.cpp:4340",
                 "dq_input_types": f"{_P101}:docs/operators.md:61",
                 "deform_conv": f"{_P101}:onnxOpImporters.cpp:1208",
                 "deform_conv.plugin": f"{_P101}:importerUtils.cpp:1101",
                 "registers_plugins": f"{_P101}:importerUtils.cpp:878",  # registry lookup only
                 "split_num_outputs": f"{_P101}:onnxOpImporters.cpp:5542",
                 "pad_axes_input": f"{_P101}:docs/operators.md:135",
                 "resize_opset18_attributes": f"{_P101}:onnxOpCheckers.cpp:586",
                 "fp16_range": f"{_P101}:onnxOpImporters.cpp:4192",
                 "range_dynamic_float": f"{_P101}:onnxOpImporters.cpp:4192",
                 "int64_as_int32": f"{_P101}:importerUtils.cpp:326",
                 "refused_input_types": f"{_P101}:importerUtils.cpp:534-550 (elementwise: 'with type BOOL')"}
        | _api_sources("v10.1.0", Logger=757, execute_async_v3=1074)),
    # 10.3: parser commit 62bdde2a04fc (parsers/onnx at v10.3.0) is not mirrored: the 10.1 facts plus the
    # 10.2/10.3 changelog entries (no new operator, no opset bump; Slice takes tensor axes).
    "10.3": Generation(
        name="10.3", max_opset=20, onnx_ops=_OPS_10_3, reduce_axes_input=True, dq_input_types=frozenset({"INT8", _FP8, _INT4}),
        deform_conv=True, registers_plugins=False, split_num_outputs=True, pad_axes_input=True,
        resize_opset18_attributes=True, fp16_range=False, range_dynamic_float=True, int64_as_int32=False, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_IO_TENSORS | _API_WEAK_TYPING | _API_STRONG,
        sources={"derived_from": f"{_P101} + {_T}v10.3.0:CHANGELOG.md:13",
                 "max_opset": f"{_P101}:docs/operators.md:5", "onnx_ops": f"{_P101}:docs/operators.md",
                 "onnx_ops.changes": f"{_T}v10.3.0:CHANGELOG.md:13",
                 "reduce_axes_input": f"{_P101}:onnxOpImporters.cpp:4340",
                 "dq_input_types": f"{_P101}:docs/operators.md:61",
                 "deform_conv": f"{_T}v10.3.0:CHANGELOG.md:38",
                 "registers_plugins": f"{_P101}:importerUtils.cpp:878",
                 "split_num_outputs": f"{_P101}:onnxOpImporters.cpp:5542",
                 "pad_axes_input": f"{_P101}:docs/operators.md:135",
                 "resize_opset18_attributes": f"{_P101}:onnxOpCheckers.cpp:586",
                 "fp16_range": f"{_P101}:onnxOpImporters.cpp:4192",
                 "range_dynamic_float": f"{_P101}:onnxOpImporters.cpp:4192",
                 "int64_as_int32": f"{_P101}:importerUtils.cpp:326",
                 "refused_input_types": f"{_P101}:importerUtils.cpp:534-550 (elementwise: 'with type BOOL')"}
        | _api_sources("v10.3.0", Logger=757, execute_async_v3=1074)),
    # 11 = 11.0/11.1; facts read at 11.1 only (docs at 7c51a63; importer code seen only at the 10.15 era).
    "11": Generation(
        name="11", max_opset=24, onnx_ops=_OPS_11, reduce_axes_input=True, dq_input_types=frozenset({"INT8", _FP8, _FP4, _INT4}),
        deform_conv=True, registers_plugins=False, split_num_outputs=True, pad_axes_input=True,
        resize_opset18_attributes=True, fp16_range=False, range_dynamic_float=True, int64_as_int32=False, refused_input_types=_TYPES_LATER,
        python_api=_API_ALL | _API_IO_TENSORS | _API_STRONG,
        sources={"max_opset": f"{_P111}:docs/operators.md:5", "onnx_ops": f"{_P111}:docs/operators.md",
                 "reduce_axes_input": f"{_P111}:docs/operators.md",  # "`axes` must be an initializer" rows
                 "dq_input_types": f"{_P111}:docs/operators.md:62",
                 "deform_conv": f"{_P111}:docs/operators.md:60",
                 "registers_plugins": "onnx/onnx-tensorrt@fa5aa9f61e77:importerUtils.cpp",  # 10.15 era
                 "split_num_outputs": f"{_P111}:docs/operators.md",
                 "pad_axes_input": f"{_P111}:docs/operators.md",
                 "resize_opset18_attributes": f"{_P111}:docs/operators.md",
                 "fp16_range": "onnx/onnx-tensorrt@10.15-era(index id 4212186859):onnxOpImporters.cpp",
                 "range_dynamic_float": "onnx/onnx-tensorrt@10.15-era(index id 4212186859):onnxOpImporters.cpp",
                 "int64_as_int32": f"{_P101}:importerUtils.cpp (INT64 native from 10.0)",
                 "refused_input_types": f"{_P101}:importerUtils.cpp:534-550 (as 10.1)"}
        | _api_sources("v11.1", Logger=996, execute_async_v3=1333)),
}

# ONNX ops whose TensorRT layer can run on DLA, read conservatively: the rows of the layer table and the
# per-layer DLA notes of NvInfer.h. Left out on purpose: Div/Pow (NvInfer.h at v10.3.0 lists only
# SUM/PROD/MAX/MIN/SUB), GlobalAveragePool (imported as a Reduce AVG layer; DLA reduces only MAX),
# BatchNormalization/Identity/Reshape/Transpose/Flatten (Scale, Identity and Shuffle rows were not read).
# Softmax does not run on Xavier's DLA (NvInfer.h); Q/DQ are DLA layers per the parser-flags page.
DLA: frozenset[str] = frozenset({
    "Conv", "ConvTranspose", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool",
    "GlobalMaxPool", "Add", "Sub", "Mul", "Max", "Min", "Concat", "Resize", "Slice", "Softmax", "ReduceMax",
    "Abs", "PRelu", "LRN", "QuantizeLinear", "DequantizeLinear",
})
DLA_SOURCES: dict[str, str] = {
    "layers": "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html",
    "reduce": "https://docs.nvidia.com/deeplearning/tensorrt/operators/docs/Reduce.html",
    "quantize": "https://docs.nvidia.com/deeplearning/tensorrt/11.3.0/inference-library/dla-onnx-parser.html",
    "activation": f"{_T}v10.3.0:include/NvInfer.h:1347",
    "elementwise": f"{_T}v10.3.0:include/NvInfer.h:2470",
    "unary": f"{_T}v10.3.0:include/NvInfer.h:2808",
    "global_average_pool": f"{_P101}:onnxOpImporters.cpp:2085",
}


def _numbers(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.strip().split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def generation(version: str) -> Generation:
    """The table for a TensorRT version: the newest generation of the same major that is not newer than it
    ("8.5.2" → "8.5", "10.8" → "10.3", "11.1" → "11"). Older than 8.2 or an unknown major is a ValueError."""
    wanted = _numbers(version)
    if not wanted:
        raise ValueError(f"TensorRT version {version!r} is not a version number")
    wanted = (wanted + (0,))[: max(2, len(wanted))]
    fits = [key for key in TABLES
            if _numbers(key)[0] == wanted[0] and _numbers(key) <= wanted]
    if not fits:
        raise ValueError(f"TensorRT {version}: no parser facts for it (known: {', '.join(TABLES)})")
    return TABLES[max(fits, key=_numbers)]
