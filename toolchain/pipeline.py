"""The whole chain for one target, like make (it runs the stages, so it sits above them): weights → export → simplify → calibrate → quantize/FP16 →
engine → bundle. Each intermediate artifact is named by a hash of its inputs' contents and settings,
so an unchanged step is reused and a changed input rebuilds exactly what depends on it."""
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy
import onnx
import onnxruntime

import featherface
from calibration import exact as exact_module
from calibration import sensitivity
from featherface.errors import ArtifactError
from toolchain import __version__
from toolchain.backends.inference import detect_array, detect_in_profile
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.building.artifacts import model_dir, sha256_file, usual_mode
from toolchain.building.metadata import get_metadata, load_onnx
from toolchain.building.targets import Target
from toolchain.measuring.evaluate import evaluate_detector, evaluate_folder
from toolchain.measuring.robustness import BUDGET, shift_deltas
from toolchain.runtime.featherface_runtime import cpu_features
from toolchain.stages import lean as lean_module
from toolchain.stages.bundle import write_bundle
from toolchain.stages.calibrate import calibrate_onnx
from toolchain.stages.engine import build_engine, shipped_onnx
from toolchain.stages.export import export_onnx
from toolchain.stages.lean import lean_onnx
from toolchain.stages.opset import convert_opset
from toolchain.stages.quantize import fp16_onnx, quantize_onnx
from toolchain.stages.simplify import simplify_onnx

Echo = Callable[[str], None]
# What INT8 ranges and graphs still depend on besides their inputs: the libraries that compute them. Not the CPU —
# calibration and the exact-semantics noise rounds give the same bits on AVX2 and AVX-512 VNNI hosts (tests).
STACK = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": numpy.__version__}


@dataclass
class BuildResult:
    bundle: Path
    manifest: dict
    steps: list[tuple[str, str, Path]] = field(default_factory=list)  # (step, "built"/"reused", artifact)

    def summary(self) -> str:
        lines = [f"{'step':<11}{'status':<8}artifact"]
        lines += [f"{step:<11}{status:<8}{path}" for step, status, path in self.steps]
        files = self.manifest["files"]
        lines.append(f"bundle {self.bundle} ({self.manifest['kind']}, {self.manifest['precision']}):")
        lines += [f"  {name:<32}{entry['size'] / 1024:>9.1f} KiB" for name, entry in files.items()]
        acc = self.manifest.get("accuracy") or {}
        if acc.get("ap"):
            lines.append("  val AP " + "  ".join(f"{k} {acc['ap'][k]:.4f} ({acc['delta'][k]:+.4f})"
                                                  for k in ("easy", "medium", "hard"))
                         + f"  vs FP32 ONNX, on {acc['images']} images"
                         + (" (exact int32 INT8)" if acc.get("int8_semantics") else ""))
        if acc.get("host_kernels"):
            own = acc["host_kernels"]
            lines.append("  this CPU's INT8 kernels: ΔAP " + " / ".join(f"{own['delta'][k]:+.4f}"
                                                                        for k in ("easy", "medium", "hard"))
                         + f" ({own['cpu']['arch']}, {'exact' if own['cpu']['exact_int8'] else 'saturating'})")
        if self.manifest.get("note"):
            lines.append(f"  note: {self.manifest['note']}")
        return "\n".join(lines)


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Steps:
    def __init__(self, cache: Path, echo: Echo) -> None:
        self.cache, self.echo, self.done = cache, echo, []

    def file(self, step: str, parts: dict, suffix: str, produce: Callable[[Path], None]) -> Path:
        out = self.cache / f"{step}-{_key(parts)}{suffix}"
        if out.exists():
            self.done.append((step, "reused", out))
            self.echo(f"[{step}] up to date: {out}")
            return out
        self.echo(f"[{step}] building {out.name} ...")
        produce(out)
        self.done.append((step, "built", out))
        return out

    def folder(self, step: str, parts: dict, produce: Callable[[Path], None]) -> Path:
        """Like ``file`` for steps that write several files: built in a temp folder, then renamed."""

        def make(target: Path) -> None:
            tmp = usual_mode(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                produce(tmp)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return self.file(step, parts, "", make)


@dataclass
class Artifacts:
    """ONNX files by precision (``exported`` is the graph before onnxsim), with their provenance."""

    onnx: dict[str, Path]
    exported: Path
    sources: dict
    trt_cache: Path | None
    steps: list[tuple[str, str, Path]]


def prepare_artifacts(model: str, weights: Path, target: Target, precisions: tuple[str, ...], build_root: Path,
                      calib_dir: Path, echo: Echo = print) -> Artifacts:
    """Export, simplify and, as ``precisions`` ask, FP16 / calibrate / INT8 — each step reused when its
    inputs are unchanged."""
    featherface.default_weights_name(model)  # unknown model names fail here, before any work
    cache = build_root / model_dir(model) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    steps = _Steps(cache, echo)
    weights_sha = sha256_file(weights)
    channels = {"channels": sha256_file(model)} if featherface.registry.is_channel_file(model) else {}
    exported = steps.file("export", {"model": model, **channels, "weights": weights_sha, "opset": target.export_opset,
                                     "lowering": target.dcn_lowering, "toolchain": __version__}, ".onnx",
                          lambda out: export_onnx(model, weights, out, target.dcn_lowering, target.export_opset,
                                                  calib_dir / "images"))
    simplified = steps.file("simplify", {"onnx": sha256_file(exported)}, ".onnx",
                            lambda out: simplify_onnx(exported, out))
    if target.opset < target.export_opset:  # TensorRT 8.x parsers: the same graph at their opset
        source = simplified
        simplified = steps.file("opset", {"onnx": sha256_file(source), "opset": target.opset,
                                          "toolchain": __version__}, ".onnx",
                                lambda out: convert_opset(source, out, target.opset, weights, calib_dir / "images"))
    onnx = {"fp32": simplified}
    sources = {"weights": str(weights), "weights_sha256": weights_sha, "onnx_sha256": sha256_file(simplified)}
    if target.lean:
        rewrites = sha256_file(lean_module.__file__)  # any change to the rewrites rebuilds cached lean graphs
        onnx["lean"] = steps.file("lean", {"onnx": sources["onnx_sha256"], "rewrites": rewrites,
                                           "toolchain": __version__}, ".onnx",
                                  lambda out: lean_onnx(simplified, out, weights, calib_dir / "images"))
    trt_cache = None
    if "fp16" in precisions:
        onnx["fp16"] = steps.file("fp16", {"onnx": sources["onnx_sha256"], "toolchain": __version__}, ".onnx",
                                  lambda out: fp16_onnx(simplified, out))
    if "int8" in precisions:
        settings = target.int8
        images = calib_dir / "images"
        implicit = target.is_tensorrt and settings.mode == "calibrator"  # TensorRT picks INT8 per tensor
        calib_parts = {"onnx": sources["onnx_sha256"], "method": settings.method, "count": settings.images,
                       "stack": STACK, "all_tensors": implicit,
                       "symmetric": settings.activations == "s8", "trt": target.min_runtime_version,
                       "images": sorted((p.relative_to(images).as_posix(), sha256_file(p))
                                        for p in images.rglob("*") if p.is_file())}

        def calibrate_into(folder: Path) -> None:
            report = calibrate_onnx(simplified, images, folder, settings.method, settings.images,
                                    symmetric=settings.activations == "s8", trt_version=target.min_runtime_version,
                                    all_tensors=implicit,
                                    on_image=lambda i, n: echo(f"  calibrating {i}/{n}") if i % 10 == 0 or i == n
                                    else None)
            if report.skipped:
                echo(f"  skipped {len(report.skipped)} unreadable calibration image(s): "
                     + ", ".join(str(p) for p, _ in report.skipped[:3]))

        calib = steps.folder("calibrate", calib_parts, calibrate_into)
        trt_cache = calib / f"calib-{settings.method}.trt.cache"
        sources["calibration_manifest"] = json.loads((calib / f"calib-{settings.method}.manifest.json").read_text())
        if not implicit:
            cache_file = calib / f"calib-{settings.method}.json"
            onnx["int8"] = steps.file(
                "int8", {"onnx": sources["onnx_sha256"], "toolchain": __version__, "ranges": sha256_file(cache_file),
                         # the noise rounds' INT8 arithmetic and SQNR
                         "semantics": [sha256_file(exact_module.__file__), sha256_file(sensitivity.__file__)],
                         "stack": STACK,
                         "activations": settings.activations, "threshold": settings.noise_threshold_db,
                         "shifts": list(settings.shifts)}, ".onnx",
                lambda out: _quantize(simplified, cache_file, out, settings, images, echo))
            if target.is_tensorrt and target.platform == "x86_64":
                # TensorRT 11 (x86 only: it has no JetPack release) is strongly typed and would run everything
                # outside the Q/DQ convolutions in FP32 as written; its graph carries the float part in FP16.
                int8 = onnx["int8"]
                onnx["int8-fp16"] = steps.file("int8-fp16", {"onnx": sha256_file(int8), "toolchain": __version__},
                                               ".onnx", lambda out: fp16_onnx(int8, out))
    return Artifacts(onnx, exported, sources, trt_cache, steps.done)


def build_target(model: str, weights: Path, target: Target, precision: str, build_root: Path,
                 calib_dir: Path, val_dir: Path | None = None, threads: int | None = None,
                 echo: Echo = print, allow_shift_miss: bool = False, allow_policy_miss: bool = False) -> BuildResult:
    """Build ``build_root/<model>/<target>/`` (atomically replaced) and return what was done.

    An INT8 graph that misses the budget on a shift its target claims is refused (nothing written) unless
    ``allow_shift_miss``; so is a shipped graph that misses it under the runtime's input policy (the images fitted
    into the target's profile, as the board runs them) unless ``allow_policy_miss``. The manifest records either
    override."""
    target.check_precision(precision)
    artifacts = prepare_artifacts(model, weights, target, (precision,), build_root, calib_dir, echo)
    onnx, sources = artifacts.onnx, artifacts.sources
    bundle = build_root / model_dir(model) / target.name
    tmp = usual_mode(tempfile.mkdtemp(prefix=f".{target.name}.", dir=bundle.parent))
    try:
        echo(f"[engine] {target.name} ({target.runtime}, {precision})")
        engine = build_engine(target, precision, onnx, tmp, artifacts.trt_cache, threads)
        profile = {"min": target.profile.min, "opt": target.profile.opt, "max": target.profile.max}
        accuracy = (_accuracy(onnx, precision, engine.onnx, val_dir, profile, echo, not target.is_tensorrt)
                    if val_dir else None)
        if accuracy and "deployed" in accuracy:
            accuracy["policy_override"] = check_input_policy(accuracy["deployed"], target, allow_policy_miss)
        if precision == "int8" and target.int8.shifts:
            accuracy = dict(accuracy or {}, **check_shifts(onnx, target, val_dir, allow_shift_miss, echo))
        meta = get_metadata(load_onnx(onnx['fp32']))
        manifest = write_bundle(tmp, model, target, precision, engine, meta, sources, accuracy)
        old = bundle.with_name(f".{bundle.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if bundle.exists():
            os.replace(bundle, old)
        os.replace(tmp, bundle)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(bundle, manifest, artifacts.steps)


def _quantize(simplified: Path, cache: Path, out: Path, settings, images: Path, echo: Echo) -> None:
    report = quantize_onnx(simplified, cache, out, images, settings.activations,
                           settings.noise_threshold_db, shifts=settings.shifts,
                           on_round=lambda r, noisy: echo(f"  round {r}: {len(noisy)} activation(s) below "
                                                          f"{settings.noise_threshold_db:g} dB"))
    echo(f"  kept {len(report.kept_fp32)} of {report.convs} convolutions in FP32")


def _accuracy(onnx: dict[str, Path], precision: str, shipped: str, val_dir: Path, profile: dict,
              echo: Echo, host_kernels: bool = False) -> dict | None:
    """Val AP of the ONNX graph of ``precision`` (shipped as ``shipped``) vs the FP32 ONNX, in ONNX Runtime, at
    the images' own sizes and under the runtime's input policy for the target's ``profile``.

    INT8 is measured with exact int32 accumulation (``calibration.exact``: TensorRT's, VNNI's and ARM's
    arithmetic, the same on every build host). ``host_kernels`` also measures it with this CPU's own ONNX Runtime
    kernels (what an ONNX Runtime bundle runs here), recorded with the CPU's features but never a verdict.
    For TensorRT FP16 that is the FP16 graph TensorRT 11 builds (TensorRT ≤ 10 lowers the FP32 graph with
    --fp16). An implicit-INT8 TensorRT build has no INT8 graph to measure, so nothing is claimed.
    """

    if precision not in onnx:
        return None
    graph = shipped_onnx(onnx, precision)
    echo(f"[accuracy] {shipped} vs FP32 on {val_dir}")
    runner = OnnxRuntimeRunner(graph)
    ap = evaluate_folder(runner, val_dir)
    ref = evaluate_folder(OnnxRuntimeRunner(onnx["fp32"]), val_dir) if graph != onnx["fp32"] else ap
    result = {"ap": ap.ap, "delta": _delta(ap.ap, ref.ap), "reference": ref.ap,
              "images": ap.images, "graph": shipped, "backend": "onnxruntime-cpu"}
    if runner.int8:
        result["int8_semantics"] = "exact-int32"
    result["within_budget"] = all(result["delta"][k] >= BUDGET[k] for k in BUDGET)
    if not result["within_budget"]:
        echo(f"[accuracy] WARNING: {shipped} is outside the ΔAP budget on {val_dir}: "
             + " / ".join(f"{result['delta'][k]:+.4f}" for k in ("easy", "medium", "hard")))
    echo(f"[accuracy] {shipped} under the runtime's input policy (fitted into {profile['max']})")
    deployed = evaluate_detector(lambda image: detect_in_profile(runner, image, profile), val_dir)
    result["deployed"] = {"ap": deployed.ap, "delta": _delta(deployed.ap, ref.ap), "profile": profile}
    if runner.int8 and host_kernels:
        cpu = cpu_features()
        echo(f"[accuracy] {shipped} with this CPU's ONNX Runtime INT8 kernels ({cpu['arch']}: "
             f"{' '.join(cpu['flags'])}; {'exact' if cpu['exact_int8'] else 'saturating'})")
        own = evaluate_folder(OnnxRuntimeRunner(graph, int8="kernels"), val_dir)
        result["host_kernels"] = {"ap": own.ap, "delta": _delta(own.ap, ref.ap), "cpu": cpu}
    if "int8-fp16" in onnx and precision == "int8":  # what TensorRT 11 builds: the float part in FP16
        typed = evaluate_folder(OnnxRuntimeRunner(onnx["int8-fp16"]), val_dir)
        result["tensorrt11_graph"] = {"ap": typed.ap, "delta": _delta(typed.ap, ref.ap)}
    return result


def _delta(ap: dict, reference: dict) -> dict:
    return {k: ap[k] - reference[k] for k in ap}


def check_input_policy(deployed: dict, target: Target, allow_miss: bool) -> bool:
    """Whether the shipped graph under the runtime's input policy misses the ΔAP budget (then shipped only with
    ``allow_miss``; raises otherwise). The policy is part of what ships: a static DLA profile scales WIDER's ~1024-px
    images to 640 and loses the small faces."""
    missed = [k for k in BUDGET if deployed["delta"][k] < BUDGET[k]]
    if missed and not allow_miss:
        raise ArtifactError(f"{target.path}: under the runtime's input policy (images fitted into "
                            f"{deployed['profile']['max']}) the shipped graph misses the ΔAP budget: "
                            + " / ".join(f"{deployed['delta'][k]:+.4f}" for k in ("easy", "medium", "hard"))
                            + "; nothing written (--allow-policy-miss ships it anyway and records that in the "
                            "manifest)")
    return bool(missed)


def check_shifts(onnx: dict[str, Path], target: Target, val_dir: Path | None, allow_miss: bool, echo: Echo) -> dict:
    """The INT8 graph (exact int32 accumulation) against the FP32 graph on each shift the target claims, both on the
    same shifted val images (the FP32 graph equals PyTorch to the export tolerances). Raises on a miss unless
    ``allow_miss``."""
    shifts = target.int8.shifts
    if val_dir is None:
        if not allow_miss:
            raise ArtifactError(f"{target.path}: target claims shift(s) {', '.join(shifts)}, verified on the val "
                                "set: give --val (or --allow-shift-miss to ship unverified)")
        return {"shifts": None, "shift_override": "unverified"}
    echo(f"[shifts] INT8 vs FP32 on {val_dir} under {', '.join(shifts)}")
    int8, fp32 = OnnxRuntimeRunner(onnx["int8"], int8="exact"), OnnxRuntimeRunner(onnx["fp32"])
    result = shift_deltas(lambda image: detect_array(int8, image), lambda image: detect_array(fp32, image),
                          val_dir, shifts, echo=echo)
    missed = [s for s, r in result.items() if not r["within_budget"]]
    if missed and not allow_miss:
        detail = "; ".join(f"{s} " + " / ".join(f"{result[s]['delta'][k]:+.4f}" for k in ("easy", "medium", "hard"))
                           for s in missed)
        raise ArtifactError(f"{target.path}: INT8 graph misses the budget on claimed shift(s): {detail}; nothing "
                            "written (--allow-shift-miss ships it anyway and records that in the manifest)")
    return {"shifts": result, "shift_override": bool(missed)}
