"""INT8 accuracy by calibration method: ΔAP on the val set vs the PyTorch reference, calibrated on calib.

For each method and activation type: plain Q/DQ (stem and heads kept FP32) and Q/DQ after the noise rounds
that keep the convolutions next to noisy activations in FP32. Prints a table and writes JSON.

    python benchmarks/int8_methods.py [--model featherface-v1] [--methods minmax,entropy,percentile]
                                      [--activations s8,u8] [--json OUT]
"""
import argparse
import json
import tempfile
from pathlib import Path

import featherface
from featherface import paths
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.measuring.evaluate import evaluate_folder
from toolchain.stages.calibrate import calibrate_onnx
from toolchain.stages.export import export_onnx
from toolchain.stages.quantize import quantize_onnx
from toolchain.stages.simplify import simplify_onnx

TARGET = {"easy": 0.005, "medium": 0.005, "hard": 0.010}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="featherface-v1")
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    parser.add_argument("--activations", default="s8,u8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    weights = paths.default_weights(featherface.default_weights_name(args.model))
    calib, val = paths.default_calib_dir() / "images", paths.default_val_dir()
    reference = evaluate_folder(TorchRunner(featherface.load_model(args.model, weights)), val).ap
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(args.model, weights, tmp / "fp32.onnx", "native", 20, None)
        simplify_onnx(tmp / "fp32.onnx", tmp / "simplified.onnx")
        for method in args.methods.split(","):
            for act in args.activations.split(","):
                report = calibrate_onnx(tmp / "simplified.onnx", calib, tmp / f"{method}-{act}", method,
                                        symmetric=act == "s8")
                for threshold in (0.0, 25.0):
                    out = tmp / f"{method}-{act}-{threshold:g}.onnx"
                    q = quantize_onnx(tmp / "simplified.onnx", report.cache, out, calib, act, threshold)
                    ap = evaluate_folder(OnnxRuntimeRunner(out), val).ap
                    delta = {k: ap[k] - reference[k] for k in ap}
                    rows.append({"method": method, "activations": act, "noise_rounds": threshold > 0,
                                 "kept_fp32": len(q.kept_fp32), "convs": q.convs, **ap,
                                 **{f"d_{k}": v for k, v in delta.items()},
                                 "meets_target": all(-delta[k] <= TARGET[k] for k in TARGET)})
                    r = rows[-1]
                    print(f"{method:<11}{act:<4}{'rounds' if threshold else 'plain':<8}"
                          f"kept {r['kept_fp32']:>3}/{r['convs']}  "
                          + "  ".join(f"{k} {ap[k]:.4f} ({delta[k]:+.4f})" for k in ("easy", "medium", "hard"))
                          + ("  ok" if r["meets_target"] else "  MISSES"), flush=True)
    print("reference (PyTorch FP32): " + "  ".join(f"{k} {v:.4f}" for k, v in reference.items()))
    if args.json:
        args.json.write_text(json.dumps({"reference": reference, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
