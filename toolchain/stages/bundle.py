"""Bundle stage: the engine folder + the torch-free runtime + ``manifest.json`` (every file's sha256 and size,
versions, source hashes, preprocessing, priors), and ``verify_bundle`` that checks all of it."""
import importlib.metadata
import json
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path

from featherface.errors import ArtifactError
from featherface.postprocess import PostprocessConfig
from toolchain import __version__
from toolchain.building.artifacts import sha256_file, write_json
from toolchain.stages.engine import EngineResult
from toolchain.building.targets import Target, version_tuple
from toolchain.kit.build_engine import DEVICE_CACHE
from toolchain.backends.tensorrt_backend import tensorrt_missing
from toolchain.runtime.featherface_runtime import (EXACT_INT8_CPUS, BundleError, check_engine_info, cpu_features,
                                                   device_info, engine_files)

FORMAT = 1
RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"
RUNTIME_FILES = ("featherface_runtime.py", "featherface_stream.py", "detect_folder.py", "detect_stream.py",
                 "bench_engine.py", "requirements.txt")
# Written on the device by a kit's build_engine.sh; checked through engine_info.json instead.
DEVICE_BUILT = ("model.engine", "engine_info.json", "timing.cache", DEVICE_CACHE)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def file_table(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() not in skip
            and p.name != "manifest.json" and "__pycache__" not in p.parts}


def write_bundle(folder: Path, model: str, target: Target, precision: str, engine: EngineResult,
                 onnx_metadata: dict, sources: dict, accuracy: dict | None = None) -> dict:
    """Copy the runtime into ``folder`` and write its manifest; returns the manifest."""
    (folder / "runtime").mkdir(exist_ok=True)
    for name in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / name, folder / "runtime" / name)
    skip = DEVICE_BUILT if engine.kind == "tensorrt-build-kit" else ()
    manifest = {
        "format": FORMAT,
        "model": model, "target": target.name, "precision": precision, "runtime": target.runtime,
        "kind": engine.kind, "artifact": engine.artifact, "onnx": engine.onnx,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32",
                  "profile": {"min": target.profile.min, "opt": target.profile.opt, "max": target.profile.max}},
        "preprocess": onnx_metadata["preprocess"],
        "priors": onnx_metadata["priors"],
        "postprocess": {**PostprocessConfig(score_threshold=0.5).__dict__},
        "session": engine.session,
        "engine_info": engine.engine_info,
        "note": engine.note,
        "dcn_lowering": onnx_metadata.get("dcn_lowering"), "opset": onnx_metadata.get("opset"),
        "checked_on": list(target.checked_on_for(precision)),
        "sources": sources,
        "accuracy": accuracy,
        "int8": int8_record(accuracy) if precision == "int8" else None,
        "versions": {"toolchain": __version__, "python": platform.python_version(),
                     "torch": onnx_metadata.get("torch_version"), "onnx": _version("onnx"),
                     "onnxruntime": _version("onnxruntime"), "tensorrt": _version("tensorrt"),
                     "min_runtime": f"{target.runtime} {target.min_runtime_version}"},
        "files": file_table(folder, skip),
    }
    write_json(folder / "manifest.json", manifest)
    return manifest


def int8_record(accuracy: dict | None) -> dict:
    """How the INT8 figures were obtained: exact int32 accumulation (the verdict, valid on ``EXACT_INT8_CPUS`` and
    TensorRT), the build host's CPU, and its own kernels' figure — which, from a saturating host, the runtime quotes
    on CPUs that saturate too."""
    own = (accuracy or {}).get("host_kernels")
    record = {"semantics": "exact-int32", "exact_on": EXACT_INT8_CPUS, "build_host": cpu_features(),
              "host_kernels": own}
    if own and own["cpu"]["exact_int8"] is False:
        record["saturating_kernels"] = own
    return record


def verify_bundle(folder: str | Path) -> list[str]:
    """Check every hash and size, unexpected files, and the runtime version; returns the checks passed.

    Raises ``ArtifactError`` (one line naming the file) at the first failure.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        files, kind = manifest["files"], manifest["kind"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: missing or unreadable bundle manifest ({exc.__class__.__name__})") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: bundle format {manifest.get('format')!r} (this toolchain reads {FORMAT})")
    for name, entry in files.items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{file}: listed in manifest.json but missing")
        if file.stat().st_size != entry["size"] or sha256_file(file) != entry["sha256"]:
            raise ArtifactError(f"{file}: sha256/size does not match manifest.json (modified or corrupt)")
    allowed = set(DEVICE_BUILT) if kind == "tensorrt-build-kit" else set()
    extra = sorted(set(file_table(folder)) - set(files) - allowed)
    if extra:
        raise ArtifactError(f"{folder / extra[0]}: not listed in manifest.json")
    checks = [f"{len(files)} files match their sha256 and size"]
    runtime, minimum = manifest["versions"]["min_runtime"].split()
    if runtime == "onnxruntime":
        installed = _version("onnxruntime")
        if installed is None or version_tuple(installed) < version_tuple(minimum):
            raise ArtifactError(f"{path}: needs onnxruntime ≥ {minimum}, found {installed}")
        checks.append(f"onnxruntime {installed} ≥ {minimum}")
    elif kind == "tensorrt-build-kit" and not (folder / "model.engine").is_file():
        checks.append(f"TensorRT kit: engine not built yet (needs TensorRT ≥ {minimum} on the device)")
    else:
        checks.append(_check_engine(folder, manifest))
    return checks


def _check_engine(folder: Path, manifest: dict) -> str:
    try:
        _, info = engine_files(folder, manifest)
    except BundleError as exc:
        raise ArtifactError(str(exc)) from None
    missing = tensorrt_missing()
    if missing:
        return (f"engine hashes match; built with TensorRT {info['tensorrt_version']} on {info['gpu']} "
                f"(sm {info['compute_capability']}); not compared with this machine: {missing}")
    import tensorrt as trt

    try:
        check_engine_info(info, {"tensorrt_version": trt.__version__, **device_info()}, folder / "model.engine")
    except BundleError as exc:
        raise ArtifactError(str(exc)) from None
    return f"engine matches this machine (TensorRT {trt.__version__}, {info['gpu']})"
