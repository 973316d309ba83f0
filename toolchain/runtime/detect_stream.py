"""Example: detect faces in a video file, an image folder (as a sequence) or a camera with this bundle.

    python3 runtime/detect_stream.py SOURCE [--threads N] [--video-out out.mp4] [--drop] [--sequential]

SOURCE: a video file, a folder of images, an OpenCV pattern ("frames/%05d.jpg") or a camera index ("0").
One JSON line per frame on stdout (frame, time, faces); frames/s and per-frame p50/p90 on stderr at the end.
Decoding runs on its own thread, with a bounded queue between it and the detector; --drop drops the oldest
waiting frame when the detector falls behind (cameras), otherwise every frame is detected (files).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from featherface_runtime import BundleError, FaceDetector
    from featherface_stream import StreamError, open_source, process_stream, summary_line
except ImportError as exc:  # a board without the bundle's packages: one line, not a traceback
    sys.exit("error: {} is not installed for {}: pip3 install -r {}".format(
        "opencv-python-headless" if exc.name == "cv2" else exc.name, sys.executable,
        Path(__file__).resolve().parent / "requirements.txt"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--queue", type=int, default=None,
                        help="frames waiting between decoder and detector (default 4, 1 with --drop)")
    parser.add_argument("--drop", action="store_true", help="drop the oldest waiting frame when behind")
    parser.add_argument("--sequential", action="store_true", help="decode and detect on one thread")
    parser.add_argument("--realtime", action="store_true", help="play a file at its frame rate, like a camera")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--video-out", type=Path, default=None, help="annotated video (.mp4 or .avi)")
    parser.add_argument("--summary", type=Path, default=None, help="write the run's summary as JSON")
    args = parser.parse_args()
    if args.queue is not None and args.queue < 1:
        parser.error("--queue must be at least 1")
    try:
        detector = FaceDetector(Path(__file__).resolve().parent.parent, args.threads)
        summary = process_stream(open_source(args.source, args.realtime), lambda frame: detector.detect(frame, args.score_threshold),
                                 sys.stdout, args.video_out, args.queue, args.drop, args.sequential, args.max_frames)
    except (BundleError, StreamError) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    summary["environment"] = detector.environment()
    print(summary_line(summary), file=sys.stderr)
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
