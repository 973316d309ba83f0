"""Engine stage: ONNX artifacts → what runs on the target, written into a bundle folder.

``onnxruntime`` targets get the ONNX of the chosen precision and its session settings. TensorRT targets
get a build kit (ONNX, calibration cache, ``build_config.json``, ``build_engine.py``, ``build_engine.sh``);
the engine is also built here with the kit's own builder only when this host is the target (same platform,
a TensorRT the target takes, a GPU). Every ONNX shipped passes ``toolchain lint`` for the target first.
"""
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.building.artifacts import write_json, write_text
from calibration.quantize import index_math_nodes
from featherface.errors import ArtifactError
from toolchain.backends.tensorrt_backend import ENGINE, build_config, build_script, host_builds
from toolchain.building.lint import errors, float_layers, lint_file
from toolchain.building.metadata import load_onnx
from toolchain.building.targets import Target
from toolchain.kit.build_engine import build
from toolchain.runtime.featherface_runtime import install_lines

KIT_DIR = Path(__file__).resolve().parent.parent / "kit"
KIT_ONNX = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx",
            "int8-fp16": "model.int8-fp16.onnx"}


@dataclass
class EngineResult:
    kind: str  # onnxruntime-model | tensorrt-engine | tensorrt-build-kit
    artifact: str  # the file the runtime loads, relative to the bundle
    onnx: str  # the ONNX that was shipped for this precision
    session: dict = field(default_factory=dict)
    engine_info: dict | None = None
    note: str = ""


def build_engine(target: Target, precision: str, onnx: dict[str, Path], out_dir: str | Path,
                 trt_cache: Path | None = None, threads: int | None = None) -> EngineResult:
    """``onnx`` maps fp32/fp16/int8 (and int8-fp16, lean) to ONNX files; only those the precision needs must exist."""
    out_dir = Path(out_dir)
    target.check_precision(precision)
    if not target.is_tensorrt:
        graph = shipped_onnx(onnx, precision)
        check_lint(graph, target)
        shutil.copyfile(graph, out_dir / "model.onnx")
        return EngineResult("onnxruntime-model", "model.onnx", "model.onnx", cpu_session(threads))
    source = load_onnx(onnx["fp32"])
    fp32_layers = float_layers(source, index_math_nodes(source)) if precision != "fp32" else None
    present = {key: name for key, name in KIT_ONNX.items() if key in onnx}
    config = build_config(target, precision, present, "calib.cache" if trt_cache else None, fp32_layers)
    needed = {plan["onnx"] for plan in (config["tensorrt10"], config["tensorrt11"]) if plan}
    for key, name in present.items():
        if name in needed:
            check_lint(onnx[key], target)
            shutil.copyfile(onnx[key], out_dir / name)
    if any(plan and plan.get("calibration_cache") for plan in (config["tensorrt10"], config["tensorrt11"])):
        shutil.copyfile(trt_cache, out_dir / "calib.cache")
    write_json(out_dir / "build_config.json", config)
    if target.platform == "jetson":
        write_text(out_dir / "INSTALL.txt", "\n".join(install_lines(target.min_runtime_version)) + "\n")
    shutil.copyfile(KIT_DIR / "build_engine.py", out_dir / "build_engine.py")
    write_text(out_dir / "build_engine.sh", build_script(config))
    (out_dir / "build_engine.sh").chmod(0o755)
    shipped = KIT_ONNX[precision] if KIT_ONNX[precision] in needed else KIT_ONNX["fp32"]
    refused = host_builds(target)
    if refused:
        return EngineResult("tensorrt-build-kit", ENGINE, shipped,
                            note=f"engine not built here: {refused}; run build_engine.sh on the target")
    info = build(config, out_dir)
    return EngineResult("tensorrt-engine", ENGINE, info["onnx"], engine_info=info)


def shipped_onnx(onnx: dict[str, Path], precision: str) -> Path:
    """The graph an ONNX Runtime bundle ships for ``precision``: the lean FP32 graph where one was built."""
    return onnx["lean"] if precision == "fp32" and "lean" in onnx else onnx[precision]


def cpu_session(threads: int | None) -> dict:
    """The ONNX Runtime settings a CPU bundle records — the ones ``toolchain bench`` times its row with."""
    return {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": threads or 0, "intra_op_allow_spinning": False}


def check_lint(path: Path, target: Target) -> None:
    """Refuse to pack a graph the target cannot take: the first violations, one line each."""
    found = errors(lint_file(path, target))
    if found:
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        raise ArtifactError(f"{path}: not accepted by target '{target.name}': "
                            + "; ".join(str(v) for v in found[:3]) + more)
