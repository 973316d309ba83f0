"""TensorRT: build plans per TensorRT generation, the ``trtexec`` command line, and a runner for engines.

Engines are not portable: each records the TensorRT version, GPU and compute capability it was built
with (``engine_info.json``) and is refused anywhere else. ``tensorrt`` and ``pycuda`` are optional;
everything here except building and running works without them.
"""
import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np

from featherface.errors import ArtifactError, first_line
from featherface.priors import PriorConfig
from toolchain.backends.base import Runner
from toolchain.building.targets import Target, version_tuple

ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"
INPUT_NAME = "input"


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot build or run here, or None when it can."""
    for module in ("tensorrt", "pycuda"):
        if importlib.util.find_spec(module) is None:
            return f"the '{module}' Python package is not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU is visible"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError kinds without a GPU driver
        return f"CUDA is not usable ({first_line(exc, 80)})"
    return None


def build_config(target: Target, precision: str, onnx_files: dict[str, str],
                 calibration_cache: str | None = None) -> dict:
    """The build plan for each TensorRT generation, with file names relative to the kit folder.

    ``onnx_files`` maps ``fp32``/``fp16``/``int8`` to the ONNX files present. TensorRT ≤ 10 is weakly typed
    (FP32 or Q/DQ ONNX + precision flags); TensorRT 11 is strongly typed (the ONNX carries the precision).
    """
    target.check_precision(precision)
    implicit = precision == "int8" and target.int8.mode == "calibrator"
    if precision == "fp32":
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": []}
        typed = {"onnx": onnx_files["fp32"], "builder_flags": []}
    elif precision == "fp16":
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": ["FP16"]}
        typed = {"onnx": onnx_files["fp16"], "builder_flags": []}
    elif implicit:
        if not calibration_cache:
            raise ArtifactError(f"{target.path}: implicit INT8 needs a calibration cache")
        legacy = {"onnx": onnx_files["fp32"], "builder_flags": ["INT8", "FP16"],
                  "calibration_cache": calibration_cache}
        typed = None  # TensorRT 11 has no calibrator
    else:
        legacy = {"onnx": onnx_files["int8"], "builder_flags": ["INT8", "FP16"]}
        typed = {"onnx": onnx_files["int8"], "builder_flags": []}
    return {
        "target": target.name, "precision": precision, "engine": ENGINE, "timing_cache": TIMING_CACHE,
        "input": INPUT_NAME, "workspace_mb": target.workspace_mb,
        "min_tensorrt": target.min_runtime_version,
        "profile": {k: [v[0], 3, v[1], v[2]] for k, v in
                    (("min", target.profile.min), ("opt", target.profile.opt), ("max", target.profile.max))},
        "dla_core": target.dla_core, "gpu_fallback": target.gpu_fallback,
        "tensorrt10": legacy, "tensorrt11": typed,
    }


def trtexec_argv(config: dict, generation: int) -> list[str]:
    """``trtexec`` argv for a TensorRT major version (≤ 10 or ≥ 11) from a build plan."""
    plan = config["tensorrt11"] if generation >= 11 else config["tensorrt10"]
    if plan is None:
        raise ArtifactError(f"target '{config['target']}': no TensorRT {generation} build (it uses a calibrator)")
    argv = ["trtexec", f"--onnx={plan['onnx']}", f"--saveEngine={config['engine']}"]
    for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        argv.append(f"{flag}={config['input']}:{'x'.join(str(d) for d in config['profile'][key])}")
    if generation < 11 and version_tuple(config["min_tensorrt"]) < (8, 4):
        argv.append(f"--workspace={config['workspace_mb']}")  # TensorRT 8.2 predates --memPoolSize
    else:
        argv.append(f"--memPoolSize=workspace:{config['workspace_mb']}M")
    argv.append(f"--timingCacheFile={config['timing_cache']}")
    argv += [f"--{flag.lower()}" for flag in plan["builder_flags"]]
    if plan.get("calibration_cache"):
        argv.append(f"--calib={plan['calibration_cache']}")
    if config["dla_core"] is not None:
        argv.append(f"--useDLACore={config['dla_core']}")
        if config["gpu_fallback"]:
            argv.append("--allowGPUFallback")
    return argv


def build_script(config: dict) -> str:
    """``build_engine.sh``: picks the argv for the installed TensorRT generation, then records engine_info."""
    branches = []
    for generation, test in ((11, '[ "$TRT_MAJOR" -ge 11 ]'), (10, "true")):
        plan = config["tensorrt11" if generation >= 11 else "tensorrt10"]
        if plan is None:
            body = f'  echo "target {config["target"]} needs TensorRT < 11 (calibrator)" >&2; exit 1'
        else:
            argv = trtexec_argv(config, generation)
            body = f"  args=({' '.join(shlex.quote(a) for a in argv[1:])})"
        branches.append((test, body))
    (test11, body11), (_, body10) = branches
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Build the {config['precision']} engine for target {config['target']} on the device itself.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "TRT_MAJOR=\"${TRT_MAJOR:-$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(\".\")[0])')}\"",
        'TRTEXEC="${TRTEXEC:-trtexec}"  # on Jetson: /usr/src/tensorrt/bin/trtexec',
        f"if {test11}; then", body11, "else", body10, "fi",
        '"$TRTEXEC" "${args[@]}"',
        "python3 build_engine.py --record-info",
        "",
    ])


class TensorRTRunner(Runner):
    """A serialized engine through the bundle runtime's TensorRT model (which checks engine_info.json)."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, priors: PriorConfig, precision: str) -> None:
        from toolchain.runtime.featherface_runtime import BundleError, TensorRTModel

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
