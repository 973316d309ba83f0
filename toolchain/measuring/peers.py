"""Peer detectors for side-by-side bench rows: YuNet (libfacedetection, Apache-2.0) through OpenCV.

Its pre- and post-processing run inside ``cv2.FaceDetectorYN``, so its latency includes decoding and NMS,
which FeatherFace's stage latencies do not.
"""
from pathlib import Path

import cv2
import numpy as np
import onnx

from featherface.errors import ArtifactError, first_line
from featherface.postprocess import Detections


class YuNet:
    backend, precision = "opencv", "fp32"

    def __init__(self, path: str | Path, score_threshold: float = 0.02, nms_threshold: float = 0.45,
                 top_k: int = 5000) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: YuNet model not found")
        try:
            self.detector = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), score_threshold,
                                                      nms_threshold, top_k)
        except cv2.error as exc:
            raise ArtifactError(f"{self.path}: OpenCV cannot load it ({first_line(exc, 120)})") from None
        self.params = sum(int(np.prod(t.dims)) for t in onnx.load(str(self.path)).graph.initializer)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        self.detector.setInputSize((image_bgr.shape[1], image_bgr.shape[0]))
        _, faces = self.detector.detect(image_bgr)
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        order = np.argsort(-faces[:, 14], kind="stable")
        return Detections(boxes[order], faces[order, 14], faces[order, 4:14])
