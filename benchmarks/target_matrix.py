"""Every target × each of its precisions through `toolchain engine`: bundle verified, every shipped ONNX linted,
val AP of the shipped graph vs the FP32 graph at the images' own sizes and under the runtime's input policy (INT8
with exact int32 accumulation); a build its budget refuses is a row that says why.

    python benchmarks/target_matrix.py [--targets cpu,jetson-nano,...] [--build-dir build] [--json OUT]

Prints a Markdown table (the README's); budgets: FP16 ±0.002, INT8 −0.005 / −0.005 / −0.010 (FP32: the
export check itself).
"""
import argparse
import json
from pathlib import Path

from featherface import paths
from featherface.errors import ArtifactError
from toolchain.pipeline import build_target
from toolchain.building.lint import errors, lint_file
from toolchain.building.targets import list_targets, load_target
from toolchain.stages.bundle import verify_bundle

BUDGET = {"fp16": {"easy": -0.002, "medium": -0.002, "hard": -0.002},
          "int8": {"easy": -0.005, "medium": -0.005, "hard": -0.010}}
SETTINGS = ("easy", "medium", "hard")


def _delta(entry: dict | None) -> str:
    return " / ".join(f"{entry['delta'][k]:+.4f}" for k in SETTINGS) if entry else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(t for t in list_targets() if t != "jetson"))
    parser.add_argument("--model", default="featherface-v1")
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    weights = paths.default_weights("featherface_v1.pth")
    rows, results = [], []
    for name in args.targets.split(","):
        target = load_target(name)
        for precision in target.precisions:
            try:
                result = build_target(args.model, weights, target, precision, args.build_dir,
                                      paths.default_calib_dir(), paths.default_val_dir(), echo=lambda m: None)
            except ArtifactError as exc:  # refused by its budget (shift claim, input policy): the row says why
                rows.append(f"| {name} | {precision} | refused: {exc} |")
                results.append({"target": name, "precision": precision, "refused": str(exc)})
                print(rows[-1], flush=True)
                continue
            manifest = result.manifest
            verified = verify_bundle(result.bundle)[0]
            shipped = [f for f in manifest["files"] if f.endswith(".onnx")]
            lint = sum(len(errors(lint_file(result.bundle / f, target))) for f in shipped)
            acc = manifest.get("accuracy") or {}
            budget = BUDGET.get(precision)
            within = (all(acc["delta"][k] >= budget[k] and (precision != "fp16" or acc["delta"][k] <= -budget[k])
                          for k in SETTINGS) if acc and budget else None)
            rows.append(f"| {name} | {precision} | {manifest['kind']} | {', '.join(shipped)} | "
                        f"opset {manifest['opset']}, {manifest['dcn_lowering']} | {_delta(acc)} | "
                        f"{_delta(acc.get('deployed'))} | {_delta(acc.get('tensorrt11_graph'))} | "
                        f"{'—' if within is None else ('yes' if within else 'NO')} | "
                        f"{'ok' if 'match' in verified else verified} / {lint} |")
            results.append({"target": name, "precision": precision, "manifest_accuracy": acc, "lint_errors": lint,
                            "files": shipped, "kind": manifest["kind"]})
            print(rows[-1], flush=True)
    print("\n| target | precision | bundle | shipped ONNX | graph | ΔAP vs FP32 (e/m/h) | ΔAP, runtime input "
          "policy | ΔAP, TensorRT 11 graph | in budget | verify / lint errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
