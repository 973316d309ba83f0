"""Build a TensorRT engine from this kit (needs only the ``tensorrt`` Python package and a GPU).

    python3 build_engine.py [--config build_config.json]

Reads ``build_config.json`` (written by the FeatherFace toolchain): the ONNX to parse, the optimisation
profile, workspace, DLA settings and how precision is set for each TensorRT generation. TensorRT 11 builds
the ONNX as typed (FP16 graph or Q/DQ INT8); TensorRT ≤ 10 sets builder flags and, for implicit INT8,
reads the calibration cache. The timing cache is reused and updated across builds. Writes the engine and
``engine_info.json`` (TensorRT version, GPU, compute capability) that the runtime checks before loading.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def device_info() -> dict:
    """GPU name and compute capability (pycuda): an engine only runs where these and TensorRT match."""
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return {"gpu": device.name(), "compute_capability": f"{major}.{minor}"}


def record_info(config: dict, root: Path) -> dict:
    import tensorrt as trt

    plan = config["tensorrt11"] if trt_major(trt) >= 11 else config["tensorrt10"]
    info = {"tensorrt_version": trt.__version__, **device_info(), "onnx": plan["onnx"],
            "onnx_sha256": _sha256(root / plan["onnx"]), "engine_sha256": _sha256(root / config["engine"]),
            "builder_flags": plan["builder_flags"], "dla_core": config.get("dla_core")}
    _atomic_write(root / "engine_info.json", (json.dumps(info, indent=2) + "\n").encode())
    return info


class _CacheCalibrator:
    """Factory for a calibrator that only serves an existing cache (implicit INT8 without images)."""

    @staticmethod
    def create(trt, cache: Path):
        class CacheOnly(trt.IInt8EntropyCalibrator2):
            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                return None

            def read_calibration_cache(self):
                return cache.read_bytes()

            def write_calibration_cache(self, data):
                return None

        return CacheOnly()


def build(config: dict, root: Path, calibrator=None) -> dict:
    """Build the engine described by ``config`` (paths relative to ``root``); returns the engine info."""
    import tensorrt as trt

    major = trt_major(trt)
    plan = config["tensorrt11"] if major >= 11 else config["tensorrt10"]
    if plan is None:
        raise RuntimeError(f"this target needs TensorRT < 11 (found {trt.__version__}): it uses a calibrator")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = root / plan["onnx"]
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    cfg = builder.create_builder_config()
    if hasattr(cfg, "set_memory_pool_limit"):
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config["workspace_mb"] << 20)
    else:  # TensorRT 8.2 (Jetson Nano) predates memory pools
        cfg.max_workspace_size = config["workspace_mb"] << 20
    for flag in plan["builder_flags"]:  # empty on TensorRT 11: precision comes from the ONNX
        cfg.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shapes = config["profile"]
    profile.set_shape(name, *(tuple(shapes[k]) for k in ("min", "opt", "max")))
    cfg.add_optimization_profile(profile)
    if plan.get("calibration_cache"):
        cfg.int8_calibrator = calibrator or _CacheCalibrator.create(trt, root / plan["calibration_cache"])
        cfg.set_calibration_profile(profile)
    if config.get("dla_core") is not None:
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config["dla_core"]
        if config.get("gpu_fallback"):
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_path = root / config["timing_cache"]
    timing = cfg.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    cfg.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    _atomic_write(root / config["engine"], bytes(serialized))
    _atomic_write(timing_path, bytes(cfg.get_timing_cache().serialize()))
    return record_info(config, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("build_config.json")))
    parser.add_argument("--record-info", action="store_true",
                        help="only write engine_info.json for an engine built by build_engine.sh (trtexec)")
    args = parser.parse_args()
    config_path = Path(args.config)
    try:
        config = json.loads(config_path.read_text())
        root = config_path.parent
        info = record_info(config, root) if args.record_info else build(config, root)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        print(f"error: {config_path}: {exc}", file=sys.stderr)
        return 1
    print(f"{root / config['engine']}: TensorRT {info['tensorrt_version']} on {info['gpu']} "
          f"(sm {info['compute_capability']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
