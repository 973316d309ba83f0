"""Example: detect faces in every image of a folder with this bundle; prints one JSON line per image.

    python3 runtime/detect_folder.py IMAGES_DIR [--threads N] [--score-threshold 0.5]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import cv2
    from featherface_runtime import BundleError, FaceDetector
except ImportError as exc:  # a board without the bundle's packages: one line, not a traceback
    sys.exit("error: {} is not installed for {}: pip3 install -r {}".format(
        "opencv-python-headless" if exc.name == "cv2" else exc.name, sys.executable,
        Path(__file__).resolve().parent / "requirements.txt"))

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    args = parser.parse_args()
    try:
        detector = FaceDetector(Path(__file__).resolve().parent.parent, args.threads)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    for path in sorted(p for p in args.images.rglob("*") if p.suffix.lower() in SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"error: {path}: cannot decode image", file=sys.stderr)
            status = 1
            continue
        boxes, scores, landmarks = detector.detect(image, args.score_threshold)
        print(json.dumps({"image": str(path), "faces": [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5),
             "landmarks": [round(float(v), 2) for v in lm]} for b, s, lm in zip(boxes, scores, landmarks)]}))
    return status


if __name__ == "__main__":
    sys.exit(main())
