"""FP16 and INT8 under camera shifts: ΔAP vs PyTorch FP32 on the same shifted val images, per shift.

Stages: FP16, INT8 as calibrated on the plain calibration images (today's recipe), INT8 whose noise rounds also
judge each layer on shifted copies of the calibration images (ranges from the originals: what a target's
``[int8] shifts`` builds), and INT8 with the shifted copies in the ranges too. Also how many
convolutions each INT8 graph keeps in FP32 and its CPU latency next to FP32 (interleaved, 640×640).
Calibration and every decision use the calib folder only; val is only measured.

    python benchmarks/shift_int8.py [--shifts all|grayscale,low-light,...] [--json OUT]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import featherface
from featherface import paths
from featherface.data.shifts import SHIFTS
from toolchain.backends.inference import detect_array
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.measuring.robustness import compare_shift, evaluate_shift
from toolchain.stages.calibrate import calibrate_onnx
from toolchain.stages.export import export_onnx
from toolchain.stages.quantize import fp16_onnx, quantize_onnx
from toolchain.stages.simplify import simplify_onnx


def latency_ms(paths_: dict[str, Path], runs: int = 20) -> dict[str, float]:
    """p50 per graph, interleaved round by round so load drift hits all alike."""
    x = np.random.default_rng(0).uniform(-120, 150, (1, 3, 640, 640)).astype(np.float32)
    runners = {k: OnnxRuntimeRunner(p, 2, spin=False) for k, p in paths_.items()}
    for r in runners.values():
        r.infer(x)
    samples = {k: [] for k in runners}
    for _ in range(runs):
        for k, r in runners.items():
            start = time.perf_counter()
            r.infer(x)
            samples[k].append((time.perf_counter() - start) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", default="all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shifts = tuple(SHIFTS) if args.shifts == "all" else tuple(args.shifts.split(","))
    weights = paths.default_weights("featherface_v1.pth")
    calib, val = paths.default_calib_dir() / "images", paths.default_val_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx("featherface-v1", weights, tmp / "fp32.onnx", "native", 20, None)
        simplify_onnx(tmp / "fp32.onnx", tmp / "sim.onnx")
        graphs = {"fp16": fp16_onnx(tmp / "sim.onnx", tmp / "fp16.onnx")}
        kept = {}
        # (name, shifted copies in the ranges, shifted copies in the noise rounds)
        for name, range_shifts, noise_shifts in (("int8", (), ()), ("int8-shift-noise", (), shifts),
                                                 ("int8-shift-ranges+noise", shifts, shifts)):
            report = calibrate_onnx(tmp / "sim.onnx", calib, tmp / name, "entropy", shifts=range_shifts)
            q = quantize_onnx(tmp / "sim.onnx", report.cache, tmp / f"{name}.onnx", calib, "s8", 25.0,
                              shifts=noise_shifts)
            graphs[name], kept[name] = tmp / f"{name}.onnx", f"{len(q.kept_fp32)}/{q.convs}"
            print(f"{name}: {kept[name]} convolutions kept in FP32", flush=True)
        latency = latency_ms({"fp32": tmp / "sim.onnx", **graphs})
        torch_ref = TorchRunner(featherface.load_model("featherface-v1", weights))
        runners = {k: OnnxRuntimeRunner(p) for k, p in graphs.items()}
        rows = {k: {} for k in graphs}
        for shift in (None, *shifts):
            label = shift or "none"
            reference = evaluate_shift(lambda im: detect_array(torch_ref, im), val, shift)
            for name, runner in runners.items():
                measured = evaluate_shift(lambda im, r=runner: detect_array(r, im), val, shift)
                rows[name][label] = compare_shift(reference, measured)
                d = rows[name][label]["delta"]
                print(f"{label:<16}{name:<18}" + " / ".join(f"{d[k]:+.4f}" for k in ("easy", "medium", "hard"))
                      + ("" if rows[name][label]["within_budget"] else "  OUTSIDE BUDGET"), flush=True)
    print(f"latency p50 ms (640x640, 2 threads): {latency}")
    print(f"convolutions kept in FP32: {kept}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "latency_ms": latency, "kept_fp32": kept}, indent=2) + "\n")


if __name__ == "__main__":
    main()
