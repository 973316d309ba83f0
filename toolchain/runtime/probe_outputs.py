"""Raw outputs and detections of a bundle's own runtime on some images, into one .npz (run on each architecture).

    python3 probe_outputs.py BUNDLE OUT.npz IMAGE [IMAGE ...]

Per image i: ``i/loc``, ``i/conf``, ``i/landms`` (the network on the runtime's prepared input), ``i/boxes``,
``i/scores``, ``i/landmarks`` (detections at score ≥ 0.02, the evaluation threshold), ``i/seconds``; and
``hwcap``/``hwcap2`` (the kernel's CPU capability words, as qemu emulates them: what ONNX Runtime's ARM kernels
are chosen by when /proc/cpuinfo is absent).
"""
import ctypes
import platform
import sys
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np

AT_HWCAP, AT_HWCAP2 = 16, 26


def probe(detector, images: List[str]) -> dict:
    """Per image: the raw outputs on the runtime's prepared input, the detections and the seconds taken."""
    arrays = {}
    for i, path in enumerate(images):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        start = time.perf_counter()
        x, scale = detector.prepare(image)
        outputs = detector.model.infer(x)  # once: the detections come from these very outputs
        for name, value in zip(("loc", "conf", "landms"), outputs):
            arrays["{}/{}".format(i, name)] = value
        boxes, scores, landmarks = detector.detections(outputs, x.shape[2:], scale, score_threshold=0.02)
        arrays["{}/seconds".format(i)] = np.float64(time.perf_counter() - start)
        arrays["{}/boxes".format(i)], arrays["{}/scores".format(i)] = boxes, scores
        arrays["{}/landmarks".format(i)] = landmarks
    return arrays


def main() -> int:
    bundle, out, images = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    sys.path.insert(0, str(bundle / "runtime"))
    from featherface_runtime import FaceDetector

    detector = FaceDetector(bundle, threads=1)
    arrays = {"machine": np.array(platform.machine())}
    if platform.machine() == "aarch64":
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        arrays["hwcap"], arrays["hwcap2"] = np.uint64(getauxval(AT_HWCAP)), np.uint64(getauxval(AT_HWCAP2))
    arrays.update(probe(detector, images))
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(str(tmp), **arrays)
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
