"""FeatherFace runtime for deployed bundles: numpy + onnxruntime (CPU) or tensorrt + pycuda (engines).

No PyTorch. Reads ``manifest.json`` beside it (one folder up), checks the model file's sha256 before
loading it, and reproduces the toolchain's decoding and NMS in numpy.

    detector = FaceDetector("path/to/bundle")
    boxes, scores, landmarks = detector.detect(image_bgr)
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np

OUTPUTS = ("loc", "conf", "landms")


class BundleError(Exception):
    """A bundle that is incomplete, tampered with, or built for another machine."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prior_boxes(priors: dict, height: int, width: int) -> np.ndarray:
    """(A, 4) normalised (cx, cy, w, h), level → row → column → anchor size, like the network outputs."""
    levels = []
    for step, sizes in zip(priors["steps"], priors["min_sizes"]):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        gy, gx = np.meshgrid(cy, cx, indexing="ij")
        n = len(sizes)
        level = np.empty((rows, cols, n, 4))
        level[..., 0], level[..., 1] = gx[..., None], gy[..., None]
        level[..., 2] = np.asarray(sizes, np.float64) / width
        level[..., 3] = np.asarray(sizes, np.float64) / height
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode(loc: np.ndarray, landms: np.ndarray, priors: np.ndarray, variances) -> tuple[np.ndarray, np.ndarray]:
    """Offsets → (A, 4) corner boxes and (A, 10) landmarks, normalised to [0, 1]."""
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    centers = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    corners = centers - sizes / 2
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    points = priors[:, None, :2] + landms.reshape(-1, 5, 2) * v0 * priors[:, None, 2:]
    return boxes, points.reshape(-1, 10)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS on score-sorted input (indices into ``boxes``), IoU with continuous areas like torchvision."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


class OnnxRuntimeModel:
    def __init__(self, path: Path, session: dict) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if session.get("intra_op_num_threads"):
            options.intra_op_num_threads = session["intra_op_num_threads"]
        self.session = ort.InferenceSession(str(path), options, providers=session.get("providers",
                                                                                      ["CPUExecutionProvider"]))
        self.input = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(OUTPUTS), {self.input: batch}))


def device_info() -> dict:
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return {"gpu": device.name(), "compute_capability": f"{major}.{minor}"}


def check_engine_info(recorded: dict, current: dict, where) -> None:
    """Refuse an engine built with another TensorRT version, GPU or compute capability."""
    for key in ("tensorrt_version", "gpu", "compute_capability"):
        if recorded.get(key) != current.get(key):
            raise BundleError(f"{where}: engine was built for {key.replace('_', ' ')} {recorded.get(key)!r}, "
                              f"this machine has {current.get(key)!r}; rebuild it here (build_engine.sh)")


class TensorRTModel:
    """A serialized engine run through pycuda buffers, after checking ``engine_info.json``."""

    def __init__(self, path: Path, info: dict) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
        import pycuda.driver as cuda
        import tensorrt as trt

        check_engine_info(info, {"tensorrt_version": trt.__version__, **device_info()}, path)
        self.cuda = cuda
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(f"{path}: TensorRT cannot deserialize this engine")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.input = self.engine.get_tensor_name(0)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        cuda = self.cuda
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.context.set_input_shape(self.input, batch.shape)
        buffers = {self.input: cuda.mem_alloc(batch.nbytes)}
        cuda.memcpy_htod_async(buffers[self.input], batch, self.stream)
        outputs = {}
        for name in OUTPUTS:
            outputs[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
            buffers[name] = cuda.mem_alloc(outputs[name].nbytes)
        for name, buffer in buffers.items():
            self.context.set_tensor_address(name, int(buffer))
        self.context.execute_async_v3(self.stream.handle)
        for name in OUTPUTS:
            cuda.memcpy_dtoh_async(outputs[name], buffers[name], self.stream)
        self.stream.synchronize()
        return tuple(outputs[name] for name in OUTPUTS)


def load_manifest(bundle: Path) -> dict:
    path = bundle / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the bundle manifest ({exc.__class__.__name__})") from None


def checked_file(bundle: Path, manifest: dict, name: str) -> Path:
    """``bundle/name`` after checking its sha256 against the manifest."""
    path = bundle / name
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise BundleError(f"{path}: not listed in manifest.json")
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    if sha256_file(path) != entry["sha256"]:
        raise BundleError(f"{path}: sha256 does not match manifest.json (modified or corrupt)")
    return path


def engine_files(bundle: Path, manifest: dict) -> tuple[Path, dict]:
    """The engine and its ``engine_info.json``, checked against the manifest.

    An engine built in the bundle is hashed in the manifest. A kit's engine is built on the device, so
    ``engine_info.json`` records the hashes of the engine and of the ONNX it came from, and that ONNX hash
    must be the manifest's.
    """
    if manifest.get("kind") != "tensorrt-build-kit":
        info = checked_file(bundle, manifest, "engine_info.json")
        return checked_file(bundle, manifest, manifest["artifact"]), json.loads(info.read_text())
    engine, info_path = bundle / manifest["artifact"], bundle / "engine_info.json"
    if not engine.is_file() or not info_path.is_file():
        raise BundleError(f"{bundle}: TensorRT build kit without an engine; run build_engine.sh on the device first")
    info = json.loads(info_path.read_text())
    if sha256_file(engine) != info.get("engine_sha256"):
        raise BundleError(f"{engine}: sha256 does not match engine_info.json (modified or corrupt)")
    listed = manifest.get("files", {}).get(info.get("onnx"), {}).get("sha256")
    if listed is None or listed != info.get("onnx_sha256"):
        raise BundleError(f"{info_path}: engine was not built from this bundle's ONNX ({info.get('onnx')})")
    return engine, info


class FaceDetector:
    def __init__(self, bundle: str | Path, threads: int | None = None) -> None:
        self.bundle = Path(bundle)
        self.manifest = load_manifest(self.bundle)
        if self.manifest.get("runtime") == "onnxruntime":
            session = dict(self.manifest.get("session", {}))
            if threads:
                session["intra_op_num_threads"] = threads
            self.model = OnnxRuntimeModel(checked_file(self.bundle, self.manifest, self.manifest["artifact"]), session)
        else:
            path, info = engine_files(self.bundle, self.manifest)
            self.model = TensorRTModel(path, info)
        self.preprocess = self.manifest["preprocess"]
        self.priors = self.manifest["priors"]
        self.defaults = self.manifest["postprocess"]

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.preprocess["mean"], np.float32)
        x = image_bgr.astype(np.float32) - mean
        return np.ascontiguousarray(x.transpose(2, 0, 1))[None]

    def detect(self, image_bgr: np.ndarray, score_threshold: float | None = None,
               nms_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, 4) x1 y1 x2 y2 pixels, (K,) scores, (K, 10) landmarks, best first."""
        score_threshold = self.defaults["score_threshold"] if score_threshold is None else score_threshold
        nms_threshold = self.defaults["nms_threshold"] if nms_threshold is None else nms_threshold
        height, width = image_bgr.shape[:2]
        loc, conf, landms = self.model.infer(self.prepare(image_bgr))
        priors = prior_boxes(self.priors, height, width)
        boxes, points = decode(loc[0], landms[0], priors, self.priors["variances"])
        scale = np.asarray([width, height], np.float32)
        boxes, points = boxes * np.tile(scale, 2), points * np.tile(scale, 5)
        scores = conf[0, :, 1]
        idx = np.nonzero(scores > score_threshold)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")][: self.defaults["top_k"]]
        keep = idx[nms(boxes[idx], scores[idx], nms_threshold)][: self.defaults["keep_top_k"]]
        return boxes[keep], scores[keep], points[keep]
