"""Build a TensorRT engine from this kit on the device (needs the ``tensorrt`` Python package and a GPU).

    python3 build_engine.py [--config build_config.json]      # build with TensorRT's Python API
    python3 build_engine.py --prepare-cache                    # only write calib.device.cache (for trtexec)
    python3 build_engine.py --record-info                      # only write engine_info.json (after trtexec)
    python3 build_engine.py --check                            # only check this TensorRT against the kit

Reads ``build_config.json`` (written by the FeatherFace toolchain): the ONNX to parse, the optimisation
profile, workspace, DLA settings and how precision is set for each TensorRT generation. TensorRT 11 builds
the ONNX as typed (FP16 graph or Q/DQ INT8); TensorRT ≤ 10 sets builder flags, keeps the layers named in
``fp32_layers`` in FP32 and, for implicit INT8, reads the calibration cache re-headed for this TensorRT.
Writes the engine and ``engine_info.json`` (TensorRT version, GPU, compute capability) that the runtime
checks before loading. Runs on the device's system Python (3.6 on JetPack 4.6): no newer syntax here.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

# The runtime beside the kit (bundle/runtime/) or in the toolchain's source tree (toolchain/runtime/).
for _runtime in (Path(__file__).resolve().parent / "runtime", Path(__file__).resolve().parent.parent / "runtime"):
    if (_runtime / "featherface_runtime.py").is_file():
        sys.path.insert(0, str(_runtime))
        break
from featherface_runtime import BundleError, device_info, version_tuple  # noqa: E402

DEVICE_CACHE = "calib.device.cache"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".{}.".format(path.name), dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, str(path))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trt_version_tag(version: str) -> str:
    """'8.5.2' → '8502', '10.3.0' → '100300': NV_TENSORRT_VERSION, the number in calibration cache headers.

    major·1000 + minor·100 + patch up to 8.x (NVIDIA/TensorRT 8.5.2 include/NvInferRuntimeCommon.h),
    major·10000 + minor·100 + patch from 10.0 (v10.3.0 include/NvInferRuntimeBase.h).
    """
    major, minor, patch = (version_tuple(version) + (0, 0, 0))[:3]
    return str(major * (1000 if major < 10 else 10000) + minor * 100 + patch)


def plan_for(config: dict, version: tuple) -> dict:
    """The build plan for TensorRT ``version``, after checking it is one the kit's target promises."""
    minimum = config.get("min_tensorrt")
    if minimum and version < version_tuple(minimum):
        raise RuntimeError("TensorRT {} here; target {} needs TensorRT >= {} (another JetPack, or a kit built for "
                           "this board's target)".format(".".join(str(v) for v in version), config["target"],
                                                          minimum))
    plan = config["tensorrt11"] if version[0] >= 11 else config["tensorrt10"]
    if plan is None:
        raise RuntimeError("this target needs TensorRT < 11 (it uses a calibrator)")
    return plan


def prepare_cache(config: dict, root: Path, version: str) -> Path:
    """The shipped calibration cache with its header rewritten for the TensorRT on this device.

    TensorRT ignores a cache whose header names another version (JetPack 5.1's 8.5.2 expects TRT-8502-…),
    and the build would then have no INT8 scales; the scales themselves do not depend on the version.
    """
    source = root / plan_for(config, version_tuple(version))["calibration_cache"]
    lines = source.read_text().splitlines()
    algorithm = lines[0].split("-", 2)[2]
    out = root / DEVICE_CACHE
    _atomic_write(out, ("\n".join(["TRT-{}-{}".format(trt_version_tag(version), algorithm)] + lines[1:]) + "\n")
                  .encode())
    return out


def record_info(config: dict, root: Path) -> dict:
    import tensorrt as trt

    plan = plan_for(config, version_tuple(trt.__version__))
    info = dict(device_info(), tensorrt_version=trt.__version__, onnx=plan["onnx"],
                onnx_sha256=_sha256(root / plan["onnx"]), engine_sha256=_sha256(root / config["engine"]),
                builder_flags=plan["builder_flags"], dla_core=config.get("dla_core"))
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


def _keep_fp32(trt, network, config_obj, names: list) -> int:
    """Pin the named layers (the FP16 graph's FP32 index math) to FP32 and make the builder obey."""
    wanted, pinned = set(names), 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    if pinned:
        config_obj.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned


def build(config: dict, root: Path, calibrator=None) -> dict:
    """Build the engine described by ``config`` (paths relative to ``root``); returns the engine info."""
    import tensorrt as trt

    version = version_tuple(trt.__version__)
    plan = plan_for(config, version)
    logger = trt.Logger(trt.Logger.WARNING)
    # From TensorRT 10.0 the ONNX parser no longer registers NVIDIA's plugins itself (onnx-tensorrt 10.0-EA
    # dropped initLibNvInferPlugins from importModel); DeformConv is the ModulatedDeformConv2d plugin.
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    if version[0] < 10:  # explicit batch is the only mode from 10.0; the flag is gone in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = root / plan["onnx"]
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError("{}: TensorRT cannot parse it: {}".format(onnx_path, errors))
    cfg = builder.create_builder_config()
    if version >= (8, 5):
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config["workspace_mb"] << 20)
    else:  # TensorRT 8.2 (Jetson Nano) predates memory pools
        cfg.max_workspace_size = config["workspace_mb"] << 20
    for flag in plan["builder_flags"]:  # empty on TensorRT 11: precision comes from the ONNX
        cfg.set_flag(getattr(trt.BuilderFlag, flag))
    if version[0] < 11 and plan.get("fp32_layers"):  # TensorRT 11 is typed: the FP16 ONNX says it already
        _keep_fp32(trt, network, cfg, plan["fp32_layers"])
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shapes = config["profile"]
    profile.set_shape(name, *(tuple(shapes[k]) for k in ("min", "opt", "max")))
    cfg.add_optimization_profile(profile)
    if version[0] < 11 and plan.get("calibration_cache"):  # calibrators were removed in TensorRT 11
        if calibrator is None:  # serve the shipped scales; a live calibrator (tests, first build) writes its own
            calibrator = _CacheCalibrator.create(trt, prepare_cache(config, root, trt.__version__))
        cfg.int8_calibrator = calibrator
        cfg.set_calibration_profile(profile)
    if config.get("dla_core") is not None:
        if builder.num_DLA_cores <= config["dla_core"]:
            raise RuntimeError("DLA core {} requested, this device has {} DLA core(s)".format(
                config["dla_core"], builder.num_DLA_cores))
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config["dla_core"]
        if config.get("gpu_fallback"):
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_path = root / config["timing_cache"]
    timing = cfg.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    cfg.set_timing_cache(timing, False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise RuntimeError("{}: TensorRT failed to build an engine (see the log above)".format(onnx_path))
    _atomic_write(root / config["engine"], bytes(serialized))
    _atomic_write(timing_path, bytes(cfg.get_timing_cache().serialize()))
    return record_info(config, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("build_config.json")))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--record-info", action="store_true",
                       help="only write engine_info.json for an engine built by build_engine.sh (trtexec)")
    group.add_argument("--check", action="store_true",
                       help="only check that this TensorRT is one the kit's target takes")
    group.add_argument("--prepare-cache", action="store_true",
                       help="only write {} with this TensorRT's header (for trtexec --calib)".format(DEVICE_CACHE))
    args = parser.parse_args()
    config_path = Path(args.config)
    try:
        config = json.loads(config_path.read_text())
        root = config_path.parent
        if args.check:
            import tensorrt as trt

            plan_for(config, version_tuple(trt.__version__))
            return 0
        if args.prepare_cache:
            import tensorrt as trt

            print(prepare_cache(config, root, trt.__version__))
            return 0
        info = record_info(config, root) if args.record_info else build(config, root)
    except (OSError, RuntimeError, KeyError, ValueError, BundleError) as exc:
        print("error: {}: {}".format(config_path, exc), file=sys.stderr)
        return 1
    print("{}: TensorRT {} on {} (sm {})".format(root / config["engine"], info["tensorrt_version"], info["gpu"],
                                                 info["compute_capability"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
