"""FeatherFace runtime for deployed bundles: numpy + onnxruntime (CPU) or a TensorRT engine (Jetson, GPUs).

No PyTorch. Runs on the oldest supported device Python (JetPack 4.6: Python 3.6), so no ``X | None`` or
``tuple[...]`` annotations and no dataclasses. Reads ``manifest.json`` one folder up, checks the model's
sha256 before loading it, fits each image into the engine's optimisation profile (letterbox; exact shape
for static engines such as DLA) and maps the boxes back, then decodes and runs NMS in numpy.

    detector = FaceDetector("path/to/bundle")
    boxes, scores, landmarks = detector.detect(image_bgr)

TensorRT API by generation (names checked per tag by tests/test_tensorrt_api.py):
* ``BindingIO`` — TensorRT 8.2 (JetPack 4.6): the binding API, ``execute_async_v2``.
* ``TensorIO`` — TensorRT ≥ 8.5 (JetPack 5, 6, x86): name-based tensors, ``execute_async_v3``.
CUDA memory through cuda-python (what NVIDIA's own samples use from TensorRT 8.6) or pycuda.
"""
import ctypes
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

OUTPUTS = ("loc", "conf", "landms")
# Generations by TensorRT version: (first version, class name). tests/test_tensorrt_api.py walks each class
# and checks that it calls only names its generations have (NVIDIA/TensorRT python/src at each tag).
TENSORRT_IO = ((8, 2), "BindingIO"), ((8, 5), "TensorIO")


# ONNX Runtime's x86 INT8 kernels (MLAS) multiply u8 × s8 with vpmaddubsw on AVX2 and AVX-512BW, which sums two
# products in a saturating 16-bit lane; with AVX-512 VNNI or AVX-VNNI (vpdpbusd) and AMX (tdpbusd) they accumulate
# in int32 exactly (onnxruntime/core/mlas/lib/platform.cpp, x86_64/QgemmU8X8KernelAvx2.S,
# QgemmU8X8KernelAvx512Core.S, read at 1.30). aarch64 is exact: sdot/udot, or smull + sadalp, which wraps only
# on (−128)·(−128) pairs that symmetric weights in [−127, 127] never form (QgemmS8S8KernelNeon.S).
EXACT_INT8_X86 = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")
CPU_FLAGS_ENV = "FEATHERFACE_CPU_FLAGS"  # space-separated flags that replace /proc/cpuinfo's (tests, what-ifs)
EXACT_INT8_CPUS = "x86 with AVX-512 VNNI, AVX-VNNI or AMX, or ARM64"


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """Architecture, the flags that decide 8-bit dot products, and whether ONNX Runtime's INT8 kernels
    accumulate exactly on this CPU (None: an architecture not known here)."""
    arch = platform.machine().lower()
    override = os.environ.get(CPU_FLAGS_ENV)
    flags = set()
    if override is not None:
        flags = set(override.split())
    else:
        try:
            with open(cpuinfo) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in ("flags", "Features"):
                        flags = set(value.split())
                        break
        except OSError:
            pass
    if arch in ("aarch64", "arm64"):
        exact = True
    elif arch in ("x86_64", "amd64"):
        exact = bool(flags & set(EXACT_INT8_X86))
    else:
        exact = None
    return {"arch": arch, "flags": sorted(flags & set(INT8_FLAGS)), "exact_int8": exact}


def int8_warning(manifest: dict, cpu: dict) -> Optional[str]:
    """One line when an INT8 ONNX Runtime bundle, verified with exact int32 accumulation, runs on a CPU whose
    kernels saturate instead; None when the bundle is not INT8 or this CPU computes what was verified."""
    if manifest.get("runtime") != "onnxruntime" or manifest.get("precision") != "int8" or cpu["exact_int8"]:
        return None
    measured = (manifest.get("int8") or {}).get("saturating_kernels")
    figure = (" (measured on such a CPU: ΔAP " + " / ".join("{:+.4f}".format(measured["delta"][k])
                                                             for k in ("easy", "medium", "hard")) + ")"
              if measured else "")
    return ("INT8 bundle verified with exact int32 accumulation ({}); this CPU ({}, {}) saturates ONNX Runtime's "
            "8-bit products, so its accuracy can fall below manifest.json's{}; the fp32 bundle is exact here"
            .format(EXACT_INT8_CPUS, cpu["arch"], " ".join(cpu["flags"]) or "no 8-bit dot-product flags", figure))


def architecture_warning(manifest: dict, cpu: dict) -> Optional[str]:
    """One line when this CPU's architecture is not one a bundle of this precision was checked on (an INT8
    bundle's list can be shorter: each architecture's integer kernels round differently)."""
    checked = manifest.get("checked_on") or []
    if not checked or cpu["arch"] in checked or {"amd64": "x86_64", "arm64": "aarch64"}.get(cpu["arch"]) in checked:
        return None
    bundle = "this {} bundle".format(manifest["precision"]) if manifest.get("precision") else "this bundle"
    return "{} was checked on {} only; {} is not among them".format(bundle, ", ".join(checked), cpu["arch"])


class BundleError(Exception):
    """A bundle that is incomplete, tampered with, or built for another machine."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(str(path), "rb") as f:
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


def decode(loc: np.ndarray, landms: np.ndarray, priors: np.ndarray, variances) -> Tuple[np.ndarray, np.ndarray]:
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
    order = np.argsort(-scores, kind="mergesort")  # stable; "stable" needs numpy >= 1.15
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


def fit_to_profile(height: int, width: int, profile: dict) -> Tuple[float, int, int]:
    """(scale, padded height, padded width) that put an image into an optimisation profile.

    Images inside [min, max] keep their size (what the toolchain evaluates); larger ones are scaled down
    with their aspect ratio kept; smaller ones are padded (bottom/right) up to the minimum. A static
    profile (min == max, e.g. DLA) always gets exactly that shape.
    """
    (_, min_h, min_w), (_, max_h, max_w) = profile["min"][-3:], profile["max"][-3:]
    scale = min(1.0, max_h / height, max_w / width)
    new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    return scale, max(new_h, min_h), max(new_w, min_w)


def letterbox(image_bgr: np.ndarray, mean, profile: dict) -> Tuple[np.ndarray, float]:
    """NCHW float32 input (mean-subtracted, zero padding = the mean colour) and the scale applied."""
    height, width = image_bgr.shape[:2]
    scale, out_h, out_w = fit_to_profile(height, width, profile)
    if scale != 1.0:
        import cv2

        image_bgr = cv2.resize(image_bgr, (max(1, int(round(width * scale))), max(1, int(round(height * scale)))),
                               interpolation=cv2.INTER_AREA)
    x = np.zeros((1, 3, out_h, out_w), np.float32)
    h, w = image_bgr.shape[:2]
    x[0, :, :h, :w] = (image_bgr.astype(np.float32) - np.asarray(mean, np.float32)).transpose(2, 0, 1)
    return x, scale


# ONNX Runtime before 1.32 folds a zero Pad into the MaxPool after it (rewrite rule "Pad_Fusion"), whose padding
# is -inf: BiFPN's 'same' max pool then differs wherever a window's values are all negative (V1's landmarks by up to
# 0.53 on ONNX Runtime 1.25.0 to 1.31.1, −0.0003 / −0.0005 / −0.0004 AP; 1.32.0 gives PyTorch's outputs).
PAD_FUSION_FIXED = (1, 32)


def disabled_optimizers(onnxruntime_version: str) -> List[str]:
    """The ONNX Runtime rewrite rules that change FeatherFace's outputs in this version."""
    return ["Pad_Fusion"] if version_tuple(onnxruntime_version) < PAD_FUSION_FIXED else []


def import_onnxruntime():
    """onnxruntime, or a one-line BundleError that says how to install it for this Python."""
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("onnxruntime is not installed for {} ({}, Python {}): pip3 install -r {}".format(
            sys.executable, platform.machine(), platform.python_version(),
            Path(__file__).resolve().parent / "requirements.txt")) from None
    return onnxruntime


def onnxruntime_session(model: Union[str, bytes], options, providers: List[str], extra_disabled=()):
    """An ONNX Runtime session (``model``: a path or serialized bytes) without this version's faulty rewrites
    (and without ``extra_disabled`` rules)."""
    ort = import_onnxruntime()

    disabled = disabled_optimizers(ort.__version__) + list(extra_disabled)
    return ort.InferenceSession(model, options, providers=providers, disabled_optimizers=disabled or None)


class OnnxRuntimeModel:
    def __init__(self, path: Path, session: dict) -> None:
        ort = import_onnxruntime()
        self.version = ort.__version__
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if session.get("intra_op_num_threads"):
            options.intra_op_num_threads = session["intra_op_num_threads"]
        if session.get("intra_op_allow_spinning") is False:  # idle workers sleep: the benchmarked setting
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime_session(str(path), options, session.get("providers", ["CPUExecutionProvider"]))
        self.input = self.session.get_inputs()[0].name
        self.profile = None  # the manifest's profile applies

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(OUTPUTS), {self.input: batch}))


# --- CUDA: device facts from the driver library (no Python CUDA package needed), memory via a package ---

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75  # CUdevice_attribute values from cuda.h (CUDA ≥ 5)
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def device_info() -> dict:
    """GPU name and compute capability of device 0 through libcuda's driver API (stable C ABI).

    JetPack ships no pycuda; libcuda.so.1 is always there where a GPU is, on Jetson and x86 alike.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise BundleError("libcuda.so.1 not found: no NVIDIA driver on this machine") from None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    for call, args in ((cuda.cuInit, (0,)), (cuda.cuDeviceGet, (ctypes.byref(device), 0)),
                       (cuda.cuDeviceGetName, (name, 256, device)),
                       (cuda.cuDeviceGetAttribute, (ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                                    device)),
                       (cuda.cuDeviceGetAttribute, (ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                                    device))):
        status = call(*args)
        if status != 0:
            raise BundleError("CUDA driver call {} failed with CUresult {}".format(call.__name__, status))
    return {"gpu": name.value.decode(), "compute_capability": "{}.{}".format(major.value, minor.value)}


def cuda_memory_backend() -> str:
    """'cuda-python' when installed (NVIDIA's samples from TensorRT 8.6 on), else 'pycuda', else an error."""
    for module, backend in (("cuda", "cuda-python"), ("pycuda", "pycuda")):
        if importlib.util.find_spec(module) is not None:
            return backend
    raise BundleError("neither cuda-python nor pycuda is installed (INSTALL.txt in the kit names the one for "
                      "this JetPack)")


def cuda_memory():
    """Device memory through cuda-python where its first call works on this driver, else through pycuda.

    cuda-python's runtime must not be newer than the driver's CUDA (an unpinned ``pip install cuda-python`` brings
    CUDA 12/13 to a JetPack 5 board whose driver is CUDA 11.4): its first call then fails, and pycuda, built
    against the board's own CUDA, is tried instead. One line names every failure when neither works."""
    failures = []
    for backend, make in (("cuda-python", CudaPython), ("pycuda", PyCuda)):
        try:
            return make()
        except ImportError:
            failures.append("{} not installed".format(backend))
        except Exception as exc:  # a binding whose runtime this driver cannot run fails here, not later
            failures.append("{}: {}".format(backend, str(exc).strip().splitlines()[0] if str(exc).strip()
                                            else exc.__class__.__name__))
    raise BundleError("no CUDA memory binding works here ({}); install the one INSTALL.txt names for this "
                      "JetPack".format("; ".join(failures)))


# The board software a Jetson kit meets, per JetPack (NVIDIA's JetPack/L4T release notes; Python and numpy are that
# Ubuntu's python3 and python3-numpy). "memory" is what pip installs for device memory there: cuda-python's
# major.minor follows CUDA's and needs a driver at least that new (an unpinned install fails on JetPack 5's CUDA
# 11.4), cp38 aarch64 wheels stop at 11.8.2 (later 11.8.x need cuda-bindings, which has none); JetPack 4.6's CUDA
# 10.2 has no cuda-python, only pycuda (built from source). JetPack ships OpenCV with Python bindings: never
# pip-install opencv there (pip 9 on Ubuntu 18.04 cannot take manylinux2014 wheels and builds it from source).
JETPACKS = (
    {"jetpack": "4.6.1", "l4t": (32, 7), "ubuntu": "18.04", "python": "3.6", "cuda": "10.2", "tensorrt": "8.2.1",
     "numpy": "1.13.3", "opencv": "4.1.1", "memory": "pycuda>=2021.1,<2022.2"},
    {"jetpack": "5.1", "l4t": (35, 2), "ubuntu": "20.04", "python": "3.8", "cuda": "11.4", "tensorrt": "8.5.2",
     "numpy": "1.17.4", "opencv": "4.5.4", "memory": "cuda-python>=11.5,<=11.8.2"},
    {"jetpack": "6.0", "l4t": (36, 3), "ubuntu": "22.04", "python": "3.10", "cuda": "12.2", "tensorrt": "8.6.2",
     "numpy": "1.21.5", "opencv": "4.8.0", "memory": "cuda-python>=12.2,<12.3"},
    {"jetpack": "6.1", "l4t": (36, 4), "ubuntu": "22.04", "python": "3.10", "cuda": "12.6", "tensorrt": "10.3.0",
     "numpy": "1.21.5", "opencv": "4.8.0", "memory": "cuda-python>=12.6,<12.7"},
)
NUMPY_FLOOR = (1, 13)  # JetPack 4.6's python3-numpy (toolchain/building/numpy_floor.py)


def jetpack_for(l4t: Tuple[int, ...]) -> Optional[dict]:
    """The newest JETPACKS row whose L4T release this board's is at least (None: older than every row)."""
    rows = [row for row in JETPACKS if l4t >= row["l4t"] and l4t[0] == row["l4t"][0]]
    return rows[-1] if rows else None


def install_lines(min_tensorrt: str) -> List[str]:
    """INSTALL.txt of a kit: per JetPack whose TensorRT the target takes, the commands that set up its runtime."""
    lines = ["# The bundle runtime on the board: TensorRT and OpenCV come with JetPack; add the CUDA memory binding.",
             "# Check the JetPack first: cat /etc/nv_tegra_release  (R32.7 = 4.6.1, R35 = 5.1, R36.3 = 6.0, "
             "R36.4 = 6.1/6.2)"]
    for row in JETPACKS:
        if version_tuple(row["tensorrt"]) < version_tuple(min_tensorrt):
            continue
        extra = (" && export PATH=/usr/local/cuda/bin:$PATH  # pycuda builds against the board's CUDA"
                 if row["memory"].startswith("pycuda") else "")
        lines.append("JetPack {jetpack} (L4T R{l4t[0]}.{l4t[1]}, Python {python}, CUDA {cuda}, TensorRT {tensorrt}, "
                     "numpy {numpy}):".format(**row))
        lines.append("  sudo apt-get install -y python3-pip python3-numpy{}".format(extra))
        lines.append("  python3 -m pip install --user '{}'".format(row["memory"]))
    return lines


def check_numpy(version: str) -> None:
    if version_tuple(version) < NUMPY_FLOOR:
        raise BundleError("numpy {} is older than {}.{}, the oldest this runtime supports (JetPack 4.6's); "
                          "sudo apt-get install python3-numpy".format(version, *NUMPY_FLOOR))


class CudaPython:
    """Device buffers and a stream through cuda-python's runtime API; every call's error code is checked."""

    def __init__(self) -> None:
        try:  # cuda-python >= 12.6 moved the modules
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _check(self, result, what: str):
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise BundleError("{} failed: {}".format(what, err))
        return rest[0] if len(rest) == 1 else None

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))

    def host(self, shape: tuple, dtype) -> np.ndarray:
        """A page-locked host array (copies to and from it run asynchronously, without a staging copy)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = int(self._check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(pointer))
        return raw.view(dtype).reshape(shape)

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, self.stream),
                    "cudaMemcpyAsync")

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, self.stream),
                    "cudaMemcpyAsync")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


class PyCuda:
    """The same through pycuda (raises its own errors)."""

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
        import pycuda.driver as cuda

        self.cuda, self.stream, self.buffers = cuda, cuda.Stream(), {}

    def alloc(self, nbytes: int) -> int:
        buffer = self.cuda.mem_alloc(nbytes)
        self.buffers[int(buffer)] = buffer
        return int(buffer)

    def host(self, shape: tuple, dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(pointer, array, self.stream)

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        self.cuda.memcpy_dtoh_async(array, pointer, self.stream)

    @property
    def handle(self) -> int:
        return self.stream.handle

    def synchronize(self) -> None:
        self.stream.synchronize()


def check_engine_info(recorded: dict, current: dict, where) -> None:
    """Refuse an engine built with another TensorRT version, GPU or compute capability."""
    for key in ("tensorrt_version", "gpu", "compute_capability"):
        if recorded.get(key) != current.get(key):
            raise BundleError("{}: engine was built for {} {!r}, this machine has {!r}; rebuild it here "
                              "(build_engine.sh)".format(where, key.replace("_", " "), recorded.get(key),
                                                         current.get(key)))


def version_tuple(version: str) -> Tuple[int, ...]:
    """'10.3.0' → (10, 3, 0), '8.5.2.2' → (8, 5, 2, 2); non-numeric parts end the tuple."""
    out = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


# TensorRT data types by name → numpy. Not trt.nptype: TensorRT 8.5.1/8.5.2 map BOOL to np.bool, which numpy 1.24
# removed, so the call raises AttributeError on JetPack 5 with a current numpy (NVIDIA/TensorRT@8.5.2
# python/packaging/tensorrt/__init__.py:166; np.bool_ from 8.5.3).
TRT_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
             "BOOL": "bool", "UINT8": "uint8", "BF16": None, "FP8": None, "INT4": None}


def numpy_dtype(trt_dtype) -> np.dtype:
    """The numpy dtype of a ``tensorrt.DataType`` (its enum name), or a BundleError for a type numpy lacks."""
    name = str(trt_dtype).rsplit(".", 1)[-1]
    if TRT_NUMPY.get(name) is None:
        raise BundleError("TensorRT tensor type {} has no numpy equivalent".format(name))
    return np.dtype(TRT_NUMPY[name])


class BindingIO:
    """TensorRT 8.2 (JetPack 4.6): bindings by index, ``set_binding_shape``, ``execute_async_v2``."""

    def __init__(self, trt, engine, context) -> None:
        self.engine, self.context = engine, context
        self.input = next(i for i in range(engine.num_bindings) if engine.binding_is_input(i))
        self.name = engine.get_binding_name(self.input)
        self.outputs = [engine.get_binding_index(name) for name in OUTPUTS]
        self.dtypes = {i: numpy_dtype(engine.get_binding_dtype(i)) for i in range(engine.num_bindings)}
        self.profile = {k: tuple(s) for k, s in zip(("min", "opt", "max"), engine.get_profile_shape(0, self.input))}

    def set_shape(self, shape: tuple) -> Dict[str, tuple]:
        if not self.context.set_binding_shape(self.input, shape) or not self.context.all_binding_shapes_specified:
            raise BundleError("TensorRT refused input shape {} (profile {})".format(shape, self.profile))
        return {name: tuple(self.context.get_binding_shape(i)) for name, i in zip(OUTPUTS, self.outputs)}

    def output_dtype(self, name: str) -> np.dtype:
        return self.dtypes[self.outputs[OUTPUTS.index(name)]]

    def execute(self, addresses: Dict[str, int], stream_handle: int) -> None:
        bindings = [0] * self.engine.num_bindings
        bindings[self.input] = addresses["input"]
        for name, i in zip(OUTPUTS, self.outputs):
            bindings[i] = addresses[name]
        if not self.context.execute_async_v2(bindings, stream_handle):
            raise BundleError("TensorRT execute_async_v2 failed")


class TensorIO:
    """TensorRT ≥ 8.5: tensors by name, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``."""

    def __init__(self, trt, engine, context) -> None:
        self.engine, self.context = engine, context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.dtypes = {n: numpy_dtype(engine.get_tensor_dtype(n)) for n in names}
        shapes = engine.get_tensor_profile_shape(self.name, 0)
        self.profile = {k: tuple(s) for k, s in zip(("min", "opt", "max"), shapes)}

    def set_shape(self, shape: tuple) -> Dict[str, tuple]:
        if not self.context.set_input_shape(self.name, shape):
            raise BundleError("TensorRT refused input shape {} (profile {})".format(shape, self.profile))
        return {name: tuple(self.context.get_tensor_shape(name)) for name in OUTPUTS}

    def output_dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def execute(self, addresses: Dict[str, int], stream_handle: int) -> None:
        for name, address in addresses.items():
            if not self.context.set_tensor_address(self.name if name == "input" else name, address):
                raise BundleError("TensorRT set_tensor_address failed for '{}'".format(name))
        if not self.context.execute_async_v3(stream_handle):
            raise BundleError("TensorRT execute_async_v3 failed")


def io_class(version: Tuple[int, ...]):
    """The API class for a TensorRT version (the newest generation not newer than it)."""
    chosen = None
    for first, name in TENSORRT_IO:
        if version >= first:
            chosen = name
    if chosen is None:
        raise BundleError("TensorRT {} is older than 8.2, the oldest supported".format(".".join(map(str, version))))
    return globals()[chosen]


class TensorRTModel:
    """A serialized engine, after checking ``engine_info.json``; buffers allocated once for the profile's largest
    input."""

    def __init__(self, path: Path, info: dict) -> None:
        import tensorrt as trt

        check_engine_info(info, dict(device_info(), tensorrt_version=trt.__version__), path)
        self.version = trt.__version__
        check_numpy(np.__version__)
        self.cuda = cuda_memory()
        logger = trt.Logger(trt.Logger.WARNING)
        # Since TensorRT 10.0 the ONNX parser no longer registers NVIDIA's plugins (the native DeformConv is the
        # ModulatedDeformConv2d plugin): an engine holding one deserializes only after this call.
        trt.init_libnvinfer_plugins(logger, "")
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BundleError("{}: TensorRT cannot deserialize this engine".format(path))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BundleError("{}: TensorRT could not create an execution context".format(path))
        self.io = io_class(version_tuple(trt.__version__))(trt, self.engine, self.context)
        self.profile = self.io.profile
        # Device buffers and page-locked host buffers once, for the largest input the profile takes: a new image
        # size only sets the input shape, and no copy goes through pageable memory.
        largest = tuple(self.profile["max"])
        self.output_shapes = self._set_shape(largest)
        self.host = {"input": self.cuda.host(largest, np.float32)}
        self.host.update({name: self.cuda.host(shape, self.io.output_dtype(name))
                          for name, shape in self.output_shapes.items()})
        self.buffers = {name: self.cuda.alloc(array.nbytes) for name, array in self.host.items()}
        self.shape = largest

    def _set_shape(self, shape: tuple) -> Dict[str, tuple]:
        output_shapes = self.io.set_shape(shape)
        for name, out_shape in output_shapes.items():
            if any(d < 0 for d in out_shape):
                raise BundleError("TensorRT left output '{}' unresolved {} for input {}".format(name, out_shape, shape))
        return output_shapes

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        shape = tuple(batch.shape)
        if shape != self.shape:
            self.output_shapes, self.shape = self._set_shape(shape), shape
        staged = _leading(self.host["input"], shape)
        staged[...] = batch
        self.cuda.to_device(self.buffers["input"], staged)
        self.io.execute(self.buffers, self.cuda.handle)
        outputs = [_leading(self.host[name], self.output_shapes[name]) for name in OUTPUTS]
        for name, array in zip(OUTPUTS, outputs):
            self.cuda.to_host(array, self.buffers[name])
        self.cuda.synchronize()
        return tuple(array.astype(np.float32) for array in outputs)  # copies: the host buffers are reused

    def execute_resident(self) -> None:
        """One run on the buffers already on the device at the current shape, synchronised: the engine alone,
        without host copies (``bench_engine.py``)."""
        self.io.execute(self.buffers, self.cuda.handle)
        self.cuda.synchronize()


def _leading(buffer: np.ndarray, shape: tuple) -> np.ndarray:
    """The first prod(shape) elements of a flat-allocated buffer, as a contiguous array of ``shape``."""
    return buffer.reshape(-1)[: int(np.prod(shape))].reshape(shape)


def load_manifest(bundle: Path) -> dict:
    path = bundle / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError("{}: cannot read the bundle manifest ({})".format(path, exc.__class__.__name__)) from None


def checked_file(bundle: Path, manifest: dict, name: str) -> Path:
    """``bundle/name`` after checking its sha256 against the manifest."""
    path = bundle / name
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise BundleError("{}: not listed in manifest.json".format(path))
    if not path.is_file():
        raise BundleError("{}: missing from the bundle".format(path))
    if sha256_file(path) != entry["sha256"]:
        raise BundleError("{}: sha256 does not match manifest.json (modified or corrupt)".format(path))
    return path


def engine_files(bundle: Path, manifest: dict) -> Tuple[Path, dict]:
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
        raise BundleError("{}: TensorRT build kit without an engine; run build_engine.sh on the device first"
                          .format(bundle))
    info = json.loads(info_path.read_text())
    if sha256_file(engine) != info.get("engine_sha256"):
        raise BundleError("{}: sha256 does not match engine_info.json (modified or corrupt)".format(engine))
    listed = manifest.get("files", {}).get(info.get("onnx"), {}).get("sha256")
    if listed is None or listed != info.get("onnx_sha256"):
        raise BundleError("{}: engine was not built from this bundle's ONNX ({})".format(info_path, info.get("onnx")))
    return engine, info


class FaceDetector:
    def __init__(self, bundle, threads: Optional[int] = None) -> None:
        self.bundle = Path(bundle)
        self.manifest = load_manifest(self.bundle)
        self.warnings = []
        if self.manifest.get("runtime") == "onnxruntime":
            cpu = cpu_features()
            for warning in (int8_warning(self.manifest, cpu), architecture_warning(self.manifest, cpu)):
                if warning:
                    self.warnings.append(warning)
                    print("warning: {}: {}".format(self.bundle, warning), file=sys.stderr)
            session = dict(self.manifest.get("session", {}))
            if threads:
                session["intra_op_num_threads"] = threads
            self.model = OnnxRuntimeModel(checked_file(self.bundle, self.manifest, self.manifest["artifact"]), session)
        else:
            path, info = engine_files(self.bundle, self.manifest)
            self.model = TensorRTModel(path, info)
        # The engine's own profile wins over the manifest's (they agree unless the kit was edited).
        self.profile = self.model.profile or self.manifest["input"]["profile"]
        self.preprocess = self.manifest["preprocess"]
        self.priors = self.manifest["priors"]
        self.defaults = self.manifest["postprocess"]

    def environment(self) -> dict:
        """Where this detector runs: architecture, Python, numpy, the runtime's version, the INT8 flags."""
        cpu = cpu_features()
        return {"arch": cpu["arch"], "python": platform.python_version(), "numpy": np.__version__,
                self.manifest["runtime"]: self.model.version, "cpu_flags": cpu["flags"],
                "exact_int8": cpu["exact_int8"]}

    def prepare(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, float]:
        """The network input for one image under the bundle's input policy, and the scale applied."""
        return letterbox(image_bgr, self.preprocess["mean"], self.profile)

    def detect(self, image_bgr: np.ndarray, score_threshold: Optional[float] = None,
               nms_threshold: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, 4) x1 y1 x2 y2 pixels of the original image, (K,) scores, (K, 10) landmarks, best first."""
        x, scale = self.prepare(image_bgr)
        return self.detections(self.model.infer(x), x.shape[2:], scale, score_threshold, nms_threshold)

    def detections(self, outputs: Tuple[np.ndarray, ...], input_size: Tuple[int, int], scale: float,
                   score_threshold: Optional[float] = None,
                   nms_threshold: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``detect`` after the network: detections from its outputs on an input of ``input_size`` (H, W) prepared
        at ``scale``, for callers that keep the raw outputs of the same run."""
        score_threshold = self.defaults["score_threshold"] if score_threshold is None else score_threshold
        nms_threshold = self.defaults["nms_threshold"] if nms_threshold is None else nms_threshold
        height, width = input_size
        loc, conf, landms = outputs
        priors = prior_boxes(self.priors, height, width)
        boxes, points = decode(loc[0], landms[0], priors, self.priors["variances"])
        size = np.asarray([width, height], np.float32) / np.float32(scale)
        boxes, points = boxes * np.tile(size, 2), points * np.tile(size, 5)
        scores = conf[0, :, 1]
        idx = np.nonzero(scores > score_threshold)[0]
        idx = idx[np.argsort(-scores[idx], kind="mergesort")][: self.defaults["top_k"]]
        keep = idx[nms(boxes[idx], scores[idx], nms_threshold)][: self.defaults["keep_top_k"]]
        return boxes[keep], scores[keep], points[keep]
