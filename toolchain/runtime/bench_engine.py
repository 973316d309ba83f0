"""On-device benchmark of this bundle: the model alone and the full detect(), no PyTorch needed.

    python3 runtime/bench_engine.py [IMAGES_DIR] [--runs 200] [--warmup 20] [--json OUT]

Times (1) the engine (or ONNX Runtime model) alone at the profile's opt shape and (2) detect() — letterbox,
inference, decoding, NMS — on each image of IMAGES_DIR (or a synthetic image at the opt shape), after
warm-up; reports p50/p90/p99 latency and images/s, with the device's power mode and clocks when it can
read them. Run ``sudo nvpmodel -m 0 && sudo jetson_clocks`` first for the board's maximum, stable figures.
"""
import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featherface_runtime import BundleError, FaceDetector  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def percentiles(seconds: list) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "images_per_s": round(float(1000.0 / np.median(ms)), 2),
            "runs": len(seconds)}


def timed(fn, runs: int, warmup: int) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _read(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


# The GPU's own devfreq node per board (L4T device trees): the first node in sorted order is often another engine's
# (VIC, NVDLA, NVENC sort before the GPU on Xavier and Orin).
GPU_DEVFREQ = ("17000000.ga10b",  # Orin (Ampere), JetPack 5
               "17000000.gpu",  # Orin, JetPack 6
               "17000000.gv11b",  # Xavier (Volta)
               "57000000.gpu",  # Nano / TX1 (Maxwell)
               "17000000.gp10b")  # TX2 (Pascal)


def gpu_devfreq(root: str = "/sys/class/devfreq"):
    """The GPU's devfreq folder (a Path), or None where no known GPU node exists."""
    for name in GPU_DEVFREQ:
        node = Path(root) / name
        if (node / "cur_freq").is_file():
            return node
    return None


def device_state() -> dict:
    """Power mode (nvpmodel) and current GPU/CPU clocks where the board exposes them; None elsewhere."""
    state = {"machine": platform.machine(), "python": platform.python_version(),
             "jetson_release": _read("/etc/nv_tegra_release")}
    try:
        query = subprocess.run(["nvpmodel", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True, timeout=10)
        state["nvpmodel"] = query.stdout.strip().splitlines()[0] if query.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        state["nvpmodel"] = None
    gpu = gpu_devfreq()
    state["gpu_devfreq"] = gpu.name if gpu else None
    state["gpu_cur_freq_hz"] = _read(str(gpu / "cur_freq")) if gpu else None
    state["cpu0_cur_freq_khz"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (CPU bundles)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        detector = FaceDetector(Path(__file__).resolve().parent.parent, args.threads)
    except BundleError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    _, height, width = detector.profile["opt"][-3:]
    batch = np.zeros((1, 3, height, width), np.float32)
    model = detector.model
    model.infer(batch)  # sets the shape; a TensorRT model now holds the input on the device
    # TensorRT: the engine alone on device-resident buffers (a synchronise after each run, no host copies);
    # ONNX Runtime: the session's run, which is what the model alone is on a CPU.
    resident = hasattr(model, "execute_resident")
    alone = model.execute_resident if resident else (lambda: model.infer(batch))
    report = {"bundle": detector.manifest.get("target"), "precision": detector.manifest.get("precision"),
              "device": device_state(),
              "model_at_opt_shape": dict(percentiles(timed(alone, args.runs, args.warmup)),
                                         shape=[1, 3, height, width],
                                         what="engine on device buffers" if resident else "session run")}
    if args.images is not None:
        import cv2

        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in SUFFIXES)
        images = [im for im in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths) if im is not None]
        if not images:
            print("error: {}: no readable images".format(args.images), file=sys.stderr)
            return 1
        for image in images[: args.warmup]:
            detector.detect(image)
        seconds = []
        for i in range(max(args.runs, len(images))):
            image = images[i % len(images)]
            start = time.perf_counter()
            detector.detect(image)
            seconds.append(time.perf_counter() - start)
        report["detect_on_folder"] = dict(percentiles(seconds), images=len(images))
    else:
        image = np.full((height, width, 3), 128, np.uint8)
        report["detect_at_opt_shape"] = percentiles(timed(lambda: detector.detect(image), args.runs, args.warmup))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
