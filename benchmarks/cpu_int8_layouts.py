"""Does any INT8 layout make FeatherFace faster than the lean FP32 graph in ONNX Runtime on this CPU?

Latency only (ranges from 8 calibration images, MinMax: accuracy is not the question here): QDQ and QOperator,
Conv-only and all ops, with and without ``quant_pre_process``; uint8 activations, int8 per-channel weights (the
fast x86 layout). Interleaved p50 at 640×640, 2 threads, ratio to the lean FP32 graph in the same process.

    python benchmarks/cpu_int8_layouts.py LEAN.onnx      # e.g. build/featherface-v1/cache/lean-*.onnx
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from calibration.dataset import build_calibration_set
from calibration.reader import CalibrationReader
from featherface import paths
from toolchain.backends.onnxruntime_backend import onnxruntime_session, session_options

LAYOUTS = {  # name → (pre-processed, format, op types (None: all))
    "qdq-conv": (False, QuantFormat.QDQ, ["Conv"]), "qdq-all": (False, QuantFormat.QDQ, None),
    "qop-conv": (False, QuantFormat.QOperator, ["Conv"]), "qop-all": (False, QuantFormat.QOperator, None),
    "pre+qop-all": (True, QuantFormat.QOperator, None), "pre+qdq-all": (True, QuantFormat.QDQ, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lean", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    calib = build_calibration_set(paths.default_calib_dir() / "images", count=8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        static = onnx.load(str(args.lean))  # quant_pre_process needs static shapes
        for dim, value in zip(static.graph.input[0].type.tensor_type.shape.dim, (1, 3, 640, 640)):
            dim.dim_value = value
        onnx.save(static, str(tmp / "static.onnx"))
        quant_pre_process(str(tmp / "static.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
        graphs = {"lean-fp32": args.lean}
        for name, (pre, fmt, ops) in LAYOUTS.items():
            graphs[name] = tmp / f"{name}.onnx"
            quantize_static(str(tmp / ("pre.onnx" if pre else "static.onnx")), str(graphs[name]),
                            CalibrationReader(calib), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                            calibrate_method=CalibrationMethod.MinMax)
        x = np.random.default_rng(0).uniform(-120, 150, (1, 3, 640, 640)).astype(np.float32)
        sessions = {k: onnxruntime_session(str(p), session_options(2, spin=False), ["CPUExecutionProvider"])
                    for k, p in graphs.items()}
        times = {k: [] for k in sessions}
        for session in sessions.values():
            for _ in range(3):
                session.run(None, {"input": x})
        for _ in range(args.runs):
            for k, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"input": x})
                times[k].append(time.perf_counter() - start)
    base = np.median(times["lean-fp32"])
    for k, v in times.items():
        print(f"{k:<14} p50 {np.median(v) * 1e3:6.1f} ms   ×{base / np.median(v):.2f} vs lean FP32")


if __name__ == "__main__":
    main()
