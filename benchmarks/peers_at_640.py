"""WIDER AP of FeatherFace and its peers with every image fitted to 640 px (longest side, aspect kept): SCRFD's own
input recipe, so that all rows see the same pixels. `toolchain bench` scores FeatherFace, RetinaFace and YuNet at
each image's original size (up to 1024 px here), which SCRFD's static 640×640 graph cannot take.

    python benchmarks/peers_at_640.py [--build-dir build]

FeatherFace and RetinaFace: the `cpu` target's lean graph (built by `toolchain engine` / `toolchain bench`), through
the runtime's input policy with a 640×640 profile. YuNet: the image resized (INTER_AREA) and the detections scaled
back. SCRFD: InsightFace's recipe (toolchain/measuring/peers.py).
"""
import argparse
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featherface import paths  # noqa: E402
from featherface.postprocess import Detections  # noqa: E402
from toolchain.backends.inference import detect_in_profile  # noqa: E402
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner  # noqa: E402
from toolchain.building.artifacts import model_dir  # noqa: E402
from toolchain.measuring.evaluate import evaluate_detector  # noqa: E402
from toolchain.measuring.peers import SCRFD, YuNet  # noqa: E402

SIDE = 640
PROFILE = {"min": [1, 32, 32], "opt": [1, SIDE, SIDE], "max": [1, SIDE, SIDE]}


def resized(detect):
    """A detector that sees the image with its longest side at most SIDE, its boxes mapped back."""
    def run(image):
        scale = min(1.0, SIDE / max(image.shape[:2]))
        small = image if scale == 1.0 else cv2.resize(
            image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        dets = detect(small)
        return Detections(dets.boxes / scale, dets.scores, dets.landmarks / scale)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build")
    args = parser.parse_args()
    peers = paths.shared_dir() / "weights" / "peers"
    rows = {}
    for model in ("featherface-v1", "retinaface-mnet0.25"):
        graphs = sorted((args.build_dir / model_dir(model) / "cache").glob("lean-*.onnx"), key=lambda p: p.stat().st_mtime)
        if not graphs:
            raise SystemExit(f"error: no lean graph of {model} under {args.build_dir}; run toolchain engine first")
        runner = OnnxRuntimeRunner(graphs[-1], 2)
        rows[model] = lambda image, r=runner: detect_in_profile(r, image, PROFILE)
    rows["yunet-n"] = resized(YuNet(peers / "yunet_n_dynamic.onnx").detect)
    for name in ("scrfd_500m_kps", "scrfd_2.5g_kps"):
        rows[name] = SCRFD(peers / f"{name}.onnx", 2).detect
    print(f"WIDER AP, val images fitted to {SIDE} px (longest side)")
    for name, detect in rows.items():
        ap = evaluate_detector(detect, paths.default_val_dir()).ap
        print(f"{name:<22}" + " / ".join(f"{ap[k]:.4f}" for k in ("easy", "medium", "hard")))


if __name__ == "__main__":
    main()
