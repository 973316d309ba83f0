"""A bundle on a video: decoding and detection overlapped (two threads, bounded queue) vs sequential, one run.

    python benchmarks/stream_overlap.py BUNDLE [--frames 150] [--size 1280x720] [--threads 2] [--rounds 3]
                                               [--video CLIP]

Writes a video from the val images (MPEG-4 Part 2, 25 fps) into a temporary folder, or takes ``--video`` (an H.264
clip, say, whose decoding costs more than OpenCV's own MPEG-4), then runs the bundle's own
stream code on it in rounds that alternate the modes — the file as fast as it decodes, overlapped (two threads,
queue 4) and sequential (one thread); and played at its 25 fps like a camera, overlapped with drop-oldest and a
queue of 1 (the default with drop) or 4 — and
prints the median of each: frames/s detected, frames dropped, end-to-end latency per frame (decoded → detections
out, queue wait included), detection and decoding time per frame, p50/p90.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featherface import paths  # noqa: E402
from featherface.preprocess import list_images, read_image  # noqa: E402
from toolchain.runtime.featherface_runtime import FaceDetector, cpu_features  # noqa: E402
from toolchain.runtime.featherface_stream import open_source, process_stream  # noqa: E402

MODES = {"file, overlapped, queue 4": ({}, False), "file, sequential": ({"sequential": True}, False),
         "25 fps live, drop, queue 1": ({"drop": True}, True), "25 fps live, drop, queue 4": ({"drop": True, "queue_size": 4}, True)}


def write_video(path: Path, frames: int, size: tuple[int, int]) -> None:
    images = list_images(paths.default_val_dir() / "images")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for i in range(frames):
        writer.write(cv2.resize(read_image(images[i % len(images)]), size, interpolation=cv2.INTER_AREA))
    writer.release()


def describe(video: Path) -> str:
    """Frames, size and codec as OpenCV reads them."""
    capture = cv2.VideoCapture(str(video))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\0")
    text = (f"{int(capture.get(cv2.CAP_PROP_FRAME_COUNT))} frames {int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x"
            f"{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))} {fourcc} at {capture.get(cv2.CAP_PROP_FPS):g} fps")
    capture.release()
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", default="1280x720", help="WxH of the video")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--video", type=Path, help="run on this video instead of writing one (--frames, --size unused)")
    args = parser.parse_args()
    detector = FaceDetector(args.bundle, args.threads)
    with tempfile.TemporaryDirectory() as folder:
        video = args.video or Path(folder) / "val.mp4"
        if args.video is None:
            write_video(video, args.frames, tuple(int(v) for v in args.size.split("x")))
        runs = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, (options, realtime) in MODES.items():
                runs[mode].append(process_stream(open_source(str(video), realtime), detector.detect, **options))
    cpu = cpu_features()
    print(f"{args.bundle} ({detector.manifest['precision']}), {describe(video)}, ONNX Runtime "
          f"{args.threads} threads; {cpu['arch']} {' '.join(cpu['flags'])}; median of {args.rounds} "
          "alternating rounds")
    print(f"{'mode':<28}{'frames/s':>9}{'dropped':>8}{'e2e p50':>9}{'e2e p90':>9}{'detect p50':>11}{'p90':>7}"
          f"{'decode p50':>11}")
    for mode, summaries in runs.items():
        med = lambda f: float(np.median([f(s) for s in summaries]))  # noqa: E731
        print(f"{mode:<28}{med(lambda s: s['fps']):>9.1f}{med(lambda s: s['dropped']):>8.0f}"
              f"{med(lambda s: s['latency_ms']['p50']):>9.1f}{med(lambda s: s['latency_ms']['p90']):>9.1f}"
              f"{med(lambda s: s['detect_ms']['p50']):>11.1f}{med(lambda s: s['detect_ms']['p90']):>7.1f}"
              f"{med(lambda s: s['decode_ms']['p50']):>11.1f}")


if __name__ == "__main__":
    main()
