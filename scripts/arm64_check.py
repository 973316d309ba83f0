"""`make arm64-check`: the cpu bundle (FP32 and INT8) run by its own runtime on emulated ARM64 CPUs, against x86.

Builds or reuses the emulated aarch64 root (scripts/arm64_root.sh; needs root, debootstrap, qemu-user-static),
builds the cpu bundles with the toolchain, runs the bundle runtime on the first val images on this host and under
each emulated CPU, and prints one table: max |Δ| per raw output, detection counts and AP on those images.
Emulation is about 150× slower than native: a few images, not the whole val set.
"""
import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from featherface import paths
from featherface.errors import FeatherFaceError
from toolchain.building.artifacts import model_dir, write_json
from toolchain.building.targets import load_target
from toolchain.measuring import crossarch
from toolchain.pipeline import build_target

REPO = Path(__file__).resolve().parent.parent
EXACT_SIDES = ("exact", "kernels")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "build" / "arm64-root")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build")
    parser.add_argument("--model", default="featherface-v1")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--cpus", default=",".join(crossarch.ARM_CPUS))
    parser.add_argument("--images", type=int, default=3, help="first N val images (name order)")
    args = parser.parse_args()
    start = time.monotonic()
    subprocess.run(["sh", str(REPO / "scripts" / "arm64_root.sh"), str(args.root), sys.executable], check=True)
    why = crossarch.root_ready(args.root)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    target, weights = load_target("cpu"), paths.default_weights("featherface_v1.pth")
    images, keys, ground_truth = crossarch.val_images(paths.default_val_dir(), args.images)
    out_dir = args.build_dir / "arm64-check"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, exact_rows = [], []
    for precision in args.precisions.split(","):
        # The graph is what is compared: no val evaluation here (toolchain engine does it for shipping).
        build_target(args.model, weights, target, precision, args.build_dir, paths.default_calib_dir(),
                     echo=lambda m: print(m, file=sys.stderr), allow_shift_miss=True)
        bundle = out_dir / precision
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.copytree(args.build_dir / model_dir(args.model) / target.name, bundle)
        host = crossarch.host_probe(bundle, images, out_dir / f"{precision}-x86.npz")
        # INT8: each architecture's ONNX Runtime kernels against the arithmetic the verdicts used.
        exact = crossarch.exact_probe(bundle, images) if precision == "int8" else None
        if exact is not None:
            exact_rows.append({"precision": precision, "cpu": "x86_64 (host)",
                               "result": crossarch.compare(exact, host, keys, ground_truth, EXACT_SIDES)})
        for cpu in args.cpus.split(","):
            print(f"[arm64] {precision} on emulated {cpu} ({crossarch.ARM_CPUS.get(cpu, '?')}): {len(images)} images",
                  file=sys.stderr)
            arm = crossarch.emulated_probe(args.root, cpu, bundle, images)
            rows.append({"precision": precision, "cpu": cpu, "boards": crossarch.ARM_CPUS.get(cpu),
                         "result": crossarch.compare(host, arm, keys, ground_truth)})
            if exact is not None:
                exact_rows.append({"precision": precision, "cpu": cpu,
                                   "result": crossarch.compare(exact, arm, keys, ground_truth, EXACT_SIDES)})
    print(crossarch.table(rows))
    if exact_rows:
        print("\nINT8: ONNX Runtime's kernels on each architecture against the verdicts' arithmetic (exact int32, "
              "calibration/exact.py), same inputs")
        print(crossarch.table(exact_rows, EXACT_SIDES))
    minutes = (time.monotonic() - start) / 60
    shown = ", ".join(keys) if len(keys) <= 4 else f"the first {len(keys)} val images (name order)"
    print(f"images: {shown}; counts at score ≥ {crossarch.COUNT_THRESHOLD}; 1 ONNX Runtime thread "
          f"per side; {minutes:.1f} min in all")
    write_json(out_dir / "report.json", {"images": keys, "rows": rows, "exact_rows": exact_rows, "minutes": minutes})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FeatherFaceError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
