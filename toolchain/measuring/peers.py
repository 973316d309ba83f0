"""Peer detectors for side-by-side bench rows, each timed image → detections with its own pre- and
post-processing (FeatherFace's stage rows time the network only, its frontier rows image → detections too):

* YuNet (libfacedetection, Apache-2.0) through ``cv2.FaceDetectorYN``, which decodes and runs NMS inside OpenCV.
* SCRFD (InsightFace, MIT) through ONNX Runtime with InsightFace's own recipe: keep-ratio resize into 640×640,
  zero padding right/bottom, RGB, (x − 127.5) / 128, distance-to-box decoding on anchor centres (2 per cell,
  strides 8/16/32), NMS at IoU 0.4.
"""
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import shape_inference
from torchvision.ops import nms

from featherface.errors import ArtifactError, first_line
from featherface.postprocess import Detections
from toolchain.backends.onnxruntime_backend import session_options


def onnx_gflops(model: onnx.ModelProto, height: int = 640, width: int = 640) -> float:
    """GFLOPs of a peer's ONNX graph at one input size, counted as featherface.flops counts ours: 2 × MACs of
    every Conv (weights' in/groups × kh × kw per output element) and Gemm/MatMul."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, height, width
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.value_info) + list(inferred.output) + list(inferred.input)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            kernel = weights.get(node.input[1]) or shapes[node.input[1]]
            total += 2 * int(np.prod(shapes[node.output[0]])) * int(np.prod(kernel[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            inner = (weights.get(node.input[1]) or shapes[node.input[1]])[-2]
            total += 2 * int(np.prod(shapes[node.output[0]])) * inner
    return total / 1e9


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
        model = onnx.load(str(self.path))
        self.params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        self.gflops = onnx_gflops(model)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        self.detector.setInputSize((image_bgr.shape[1], image_bgr.shape[0]))
        _, faces = self.detector.detect(image_bgr)
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        order = np.argsort(-faces[:, 14], kind="stable")
        return Detections(boxes[order], faces[order, 14], faces[order, 4:14])


class SCRFD:
    """SCRFD with keypoints (``scrfd_*_kps.onnx``, static 1×3×640×640). The nine outputs are told apart by
    shape, not by position: the last dimension says scores (1), box distances (4) or keypoints (10), the rows
    say the stride (rows = 2 anchors × (640 / stride)²)."""

    backend, precision = "onnxruntime", "fp32"
    mean, std, anchors, strides = 127.5, 128.0, 2, (8, 16, 32)

    def __init__(self, path: str | Path, threads: int | None = None, score_threshold: float = 0.02,
                 nms_threshold: float = 0.4) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: SCRFD model not found")
        try:
            model = onnx.load(str(self.path))
            self.session = ort.InferenceSession(str(self.path), session_options(threads, spin=False),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx's DecodeError, ORT's Fail: one line naming the file
            raise ArtifactError(f"{self.path}: not a loadable SCRFD ONNX ({first_line(exc, 120)})") from None
        self.input = self.session.get_inputs()[0]
        self.size = tuple(self.input.shape[2:])
        if not all(isinstance(d, int) for d in self.size):
            raise ArtifactError(f"{self.path}: SCRFD needs a static input size, found {self.input.shape}")
        self.outputs = self._outputs()
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        self.gflops = onnx_gflops(model, *self.size)

    def _outputs(self) -> dict[int, dict[str, str]]:
        """stride → {"scores" | "boxes" | "kps": output name}, from each output's shape."""
        kinds = {1: "scores", 4: "boxes", 10: "kps"}
        height, width = self.size
        by_rows = {self.anchors * (height // s) * (width // s): s for s in self.strides}
        found: dict[int, dict[str, str]] = {s: {} for s in self.strides}
        for out in self.session.get_outputs():
            rows, last = out.shape[-2], out.shape[-1]
            if rows not in by_rows or last not in kinds:
                raise ArtifactError(f"{self.path}: output {out.name} {out.shape} is not an SCRFD head output")
            found[by_rows[rows]][kinds[last]] = out.name
        missing = [f"stride {s} {k}" for s in self.strides for k in kinds.values() if k not in found[s]]
        if missing:
            raise ArtifactError(f"{self.path}: no SCRFD output for {', '.join(missing)} (keypoint model needed)")
        return found

    def prepare(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """InsightFace's input: aspect kept, fitted into the input, padded right/bottom with zeros."""
        height, width = self.size
        if image_bgr.shape[0] / image_bgr.shape[1] > height / width:
            new_h = height
            new_w = int(new_h / (image_bgr.shape[0] / image_bgr.shape[1]))
        else:
            new_w = width
            new_h = int(new_w * image_bgr.shape[0] / image_bgr.shape[1])
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image_bgr, (new_w, new_h))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / self.std, (width, height), (self.mean,) * 3, swapRB=True)
        return blob, new_h / image_bgr.shape[0]

    def detect(self, image_bgr: np.ndarray) -> Detections:
        blob, scale = self.prepare(image_bgr)
        names = [self.outputs[s][k] for s in self.strides for k in ("scores", "boxes", "kps")]
        values = dict(zip(names, (v.reshape(v.shape[-2:]) for v in self.session.run(names, {self.input.name: blob}))))
        scores, boxes, points = [], [], []
        for stride in self.strides:
            out = {k: values[name] for k, name in self.outputs[stride].items()}
            rows, cols = self.size[0] // stride, self.size[1] // stride
            ys, xs = np.mgrid[:rows, :cols]
            centers = np.repeat(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride, self.anchors, 0)
            keep = np.nonzero(out["scores"][:, 0] >= self.score_threshold)[0]
            c, d, k = centers[keep], out["boxes"][keep] * stride, out["kps"][keep] * stride
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            points.append((np.tile(c, 5) + k))
            scores.append(out["scores"][keep, 0])
        boxes_all, scores_all = np.concatenate(boxes) / scale, np.concatenate(scores)
        points_all = np.concatenate(points) / scale
        keep = nms(torch.from_numpy(boxes_all), torch.from_numpy(scores_all), self.nms_threshold).numpy()
        return Detections(boxes_all[keep], scores_all[keep], points_all[keep])


def load_peer(path: str | Path, threads: int | None = None) -> "YuNet | SCRFD":
    """The peer a file holds, told by its outputs: SCRFD's nine head outputs (last dims 1, 4, 10), else YuNet."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: peer model not found")
    try:
        outputs = onnx.load(str(path), load_external_data=False).graph.output
    except Exception as exc:  # onnx's DecodeError
        raise ArtifactError(f"{path}: not an ONNX model ({first_line(exc, 120)})") from None
    last = sorted({o.type.tensor_type.shape.dim[-1].dim_value for o in outputs if o.type.tensor_type.shape.dim})
    return SCRFD(path, threads) if len(outputs) == 9 and last == [1, 4, 10] else YuNet(path)


DEFAULT_PEERS = ("yunet_n_dynamic.onnx", "scrfd_500m_kps.onnx", "scrfd_2.5g_kps.onnx")  # in $SHARED/weights/peers
