"""PyTorch FP32 vs ONNX Runtime FP32 latency of one model at 640×640, batch 1, in one run.

Reports medians of interleaved timed runs after warm-up and the speed ratio to PyTorch. Not a test:
timings are printed, never asserted.

    python benchmarks/latency.py [--model featherface-v1] [--onnx FILE] [--runs 20] [--threads 2]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import featherface
from featherface import paths
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.stages.export import export_onnx
from toolchain.timing import interleaved_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="featherface-v1")
    parser.add_argument("--onnx", type=Path, help="exported model (default: export now)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    name = featherface.default_weights_name(args.model)
    weights = paths.default_weights(name) if name else None
    onnx_path = args.onnx
    if onnx_path is None:
        onnx_path = Path(tempfile.mkdtemp()) / f"{args.model}.onnx"
        export_onnx(args.model, weights, onnx_path)
    torch_runner = TorchRunner(featherface.load_model(args.model, weights))
    ort_runner = OnnxRuntimeRunner(onnx_path, threads=args.threads)
    x = np.random.default_rng(0).normal(0, 60, (1, 3, args.size, args.size)).astype(np.float32)
    times = interleaved_latency({"pytorch-fp32": lambda: torch_runner.infer(x),
                                 "onnxruntime-fp32": lambda: ort_runner.infer(x)}, runs=args.runs)
    ref = np.median(times["pytorch-fp32"])
    print(f"{args.model} {args.size}x{args.size} batch 1, {args.threads} threads, {args.runs} interleaved runs")
    for label, t in times.items():
        print(f"  {label:<18} median {np.median(t):8.2f} ms   speed vs PyTorch {ref / np.median(t):5.2f}x")


if __name__ == "__main__":
    main()
