"""TensorRT: build plans per TensorRT generation, the ``trtexec`` command line, and a runner for engines.

Engines are not portable: each records the TensorRT version, GPU and compute capability it was built
with (``engine_info.json``) and is refused anywhere else. ``tensorrt`` and a CUDA package are optional;
everything here except building and running works without them.
"""
import importlib.util
import json
import platform
import shlex
from pathlib import Path

import numpy as np

from featherface.errors import ArtifactError
from featherface.priors import PriorConfig
from toolchain.backends.base import Runner
from toolchain.building.targets import Target, version_tuple
from toolchain.kit.build_engine import DEVICE_CACHE
from toolchain.runtime.featherface_runtime import BundleError, TensorRTModel, cuda_memory_backend, device_info

ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"
INPUT_NAME = "input"


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot build or run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the 'tensorrt' Python package is not installed"
    try:
        cuda_memory_backend()
        device_info()
    except BundleError as exc:
        return str(exc)
    return None


def host_builds(target: Target) -> str | None:
    """Why this host must not build the target's engine (None when it may): engines only run on the kind of
    machine, TensorRT generation and accelerator they were built on, so a Jetson bundle built on an x86 GPU
    would ship an engine the board refuses."""
    missing = tensorrt_missing()
    if missing:
        return missing
    import tensorrt as trt

    jetson = Path("/etc/nv_tegra_release").is_file() and platform.machine() == "aarch64"
    host = "jetson" if jetson else platform.machine()
    if host != target.platform:
        return f"this host is {host}, target '{target.name}' is {target.platform}"
    installed = version_tuple(trt.__version__)
    if installed < version_tuple(target.min_runtime_version):
        return f"TensorRT {trt.__version__} here, target '{target.name}' needs ≥ {target.min_runtime_version}"
    if target.int8.mode == "calibrator" and installed >= (11,):
        return f"TensorRT {trt.__version__} has no calibrators, target '{target.name}' uses one"
    return None


def build_config(target: Target, precision: str, onnx_files: dict[str, str],
                 calibration_cache: str | None = None, fp32_layers: list[str] | None = None) -> dict:
    """The build plan for each TensorRT generation, with file names relative to the kit folder.

    ``onnx_files`` maps ``fp32``/``fp16``/``int8`` to the ONNX files present. TensorRT ≤ 10 is weakly typed
    (FP32 or Q/DQ ONNX + precision flags; ``fp32_layers`` — the FP16 graph's FP32 index math — pinned to
    FP32); TensorRT 11 is strongly typed (the ONNX carries the precision).
    """
    target.check_precision(precision)
    implicit = precision == "int8" and target.int8.mode == "calibrator"
    pinned = {"fp32_layers": list(fp32_layers)} if fp32_layers else {}
    if precision == "fp32":
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": []}
        typed = {"onnx": onnx_files["fp32"], "builder_flags": []}
    elif precision == "fp16":
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": ["FP16"], **pinned}
        typed = {"onnx": onnx_files["fp16"], "builder_flags": []}
    elif implicit:
        if not calibration_cache:
            raise ArtifactError(f"{target.path}: implicit INT8 needs a calibration cache")
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": ["INT8", "FP16"],
                  "calibration_cache": calibration_cache, **pinned}
        typed = None  # TensorRT 11 has no calibrator
    else:
        legacy = {"onnx": onnx_files["int8"], "builder_flags": ["INT8", "FP16"], **pinned}
        # TensorRT 11 runs the typed graph as written: its float part ships in FP16 (int8-fp16 graph).
        typed = {"onnx": onnx_files.get("int8-fp16", onnx_files["int8"]), "builder_flags": []}
    return {
        "target": target.name, "precision": precision, "engine": ENGINE, "timing_cache": TIMING_CACHE,
        "input": INPUT_NAME, "workspace_mb": target.workspace_mb,
        "min_tensorrt": target.min_runtime_version,
        "profile": {k: [v[0], 3, v[1], v[2]] for k, v in
                    (("min", target.profile.min), ("opt", target.profile.opt), ("max", target.profile.max))},
        "dla_core": target.dla_core, "gpu_fallback": target.gpu_fallback,
        "tensorrt10": legacy, "tensorrt11": typed,
    }


# trtexec flags by version (NVIDIA/TensorRT samples/common/sampleOptions.cpp): --memPoolSize and
# --layerPrecisions/--layerOutputTypes are at 8.4.1 and absent at 8.2.1 (which has --workspace);
# --precisionConstraints is at 8.2.1.
LAYER_PRECISIONS_SINCE = (8, 4)


def trtexec_argv(config: dict, version: tuple[int, ...]) -> list[str]:
    """``trtexec`` argv for an installed TensorRT version from a build plan."""
    plan = config["tensorrt11"] if version >= (11,) else config["tensorrt10"]
    if plan is None:
        raise ArtifactError(f"target '{config['target']}': no TensorRT {version[0]} build (it uses a calibrator)")
    if plan.get("fp32_layers") and version < LAYER_PRECISIONS_SINCE:
        raise ArtifactError(f"target '{config['target']}': trtexec before 8.4 cannot pin layers to FP32; "
                            "use build_engine.py")
    argv = ["trtexec", f"--onnx={plan['onnx']}", f"--saveEngine={config['engine']}"]
    for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        argv.append(f"{flag}={config['input']}:{'x'.join(str(d) for d in config['profile'][key])}")
    if version < (8, 4):
        argv.append(f"--workspace={config['workspace_mb']}")  # TensorRT 8.2 predates --memPoolSize
    else:
        argv.append(f"--memPoolSize=workspace:{config['workspace_mb']}M")
    argv.append(f"--timingCacheFile={config['timing_cache']}")
    argv += [f"--{flag.lower()}" for flag in plan["builder_flags"]]
    if plan.get("fp32_layers"):
        layers = ",".join(f"{name}:fp32" for name in plan["fp32_layers"])
        argv += [f"--layerPrecisions={layers}", f"--layerOutputTypes={layers}", "--precisionConstraints=obey"]
    if plan.get("calibration_cache"):
        argv.append(f"--calib={DEVICE_CACHE}")  # the shipped cache re-headed for the device's TensorRT
    # Build only, no benchmark after it: --buildOnly up to 9.x (8.6 deprecates it for --skipInference), only
    # --skipInference from 10.0 (NVIDIA/TensorRT@8.5.2 samples/common/sampleOptions.cpp:849,
    # @v8.6.1 :964-968, @v10.3.0 :1259).
    argv.append("--skipInference" if version >= (10,) else "--buildOnly")
    if config["dla_core"] is not None:
        argv.append(f"--useDLACore={config['dla_core']}")
        if config["gpu_fallback"]:
            argv.append("--allowGPUFallback")
    return argv


# One branch per TensorRT generation the script can meet, newest first: (shell test, version it stands for).
SCRIPT_GENERATIONS = (('[ "$TRT_MAJOR" -ge 11 ]', (11, 0)), ('[ "$TRT_MAJOR" -ge 10 ]', (10, 0)),
                      ('[ "$TRT_VERSION" -ge 804 ]', (8, 4)), ("true", (8, 2)))


def build_script(config: dict) -> str:
    """``build_engine.sh``: picks the argv for the installed TensorRT generation, then records engine_info.

    Where trtexec cannot express the plan (TensorRT 8.2 with layers pinned to FP32) it builds with
    build_engine.py instead. trtexec is looked up on PATH, then where JetPack installs it.
    """
    lines = [
        "#!/usr/bin/env bash",
        f"# Build the {config['precision']} engine for target {config['target']} on the device itself.",
        "# Needs TensorRT with its Python bindings (JetPack ships both) and trtexec; TRTEXEC=path overrides.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "TRT_FULL=\"$(python3 -c 'import tensorrt; print(tensorrt.__version__)')\"",
        'TRT_MAJOR="${TRT_FULL%%.*}"',
        "TRT_MINOR=\"$(echo \"$TRT_FULL\" | cut -d. -f2)\"",
        'TRT_VERSION=$((TRT_MAJOR * 100 + TRT_MINOR))',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        'use_python=0',
        "python3 build_engine.py --check  # this TensorRT against the kit's min_tensorrt, one line if not",
    ]
    keyword = "if"
    for test, version in SCRIPT_GENERATIONS:
        plan = config["tensorrt11" if version >= (11,) else "tensorrt10"]
        if plan is None:
            body = f'  echo "target {config["target"]} needs TensorRT < 11 (calibrator)" >&2; exit 1'
        elif plan.get("fp32_layers") and version < LAYER_PRECISIONS_SINCE:
            body = "  use_python=1"
        else:
            argv = trtexec_argv(config, version)
            body = f"  args=({' '.join(shlex.quote(a) for a in argv[1:])})"
        lines += [f"{keyword} {test}; then", body]
        keyword = "elif"
    lines += ["fi",
              'if [ "$use_python" = 1 ]; then exec python3 build_engine.py; fi',
              '[ -x "$TRTEXEC" ] || { echo "trtexec not found (looked on PATH and in /usr/src/tensorrt/bin); '
              'set TRTEXEC=/path/to/trtexec" >&2; exit 1; }']
    if config["tensorrt10"] and config["tensorrt10"].get("calibration_cache"):
        lines.append("python3 build_engine.py --prepare-cache")
    lines += ['"$TRTEXEC" "${args[@]}"', "python3 build_engine.py --record-info", ""]
    return "\n".join(lines)


class TensorRTRunner(Runner):
    """A serialized engine through the bundle runtime's TensorRT model (which checks engine_info.json)."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, priors: PriorConfig, precision: str) -> None:
        path = Path(engine_path)
        info_path = path.with_name("engine_info.json")
        if not info_path.is_file():
            raise ArtifactError(f"{info_path}: missing; cannot tell which TensorRT/GPU built {path.name}")
        try:
            self.model = TensorRTModel(path, json.loads(info_path.read_text()))
        except BundleError as exc:
            raise ArtifactError(str(exc)) from None
        self.priors, self.precision = priors, precision

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.model.infer(batch)
