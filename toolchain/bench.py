"""``toolchain bench``: every stage of the chain side by side against the PyTorch FP32 reference, in one run.

Per stage: WIDER easy/medium/hard AP and ΔAP, tensor drift and detection agreement against the reference on
the same inputs, latency percentiles (interleaved with the reference, threads pinned), batch-8 throughput,
model file size and the process's peak RSS while the stage loads and evaluates. Stages that cannot run here
are listed as skipped with the reason; a stage that crashes is listed as failed with its error.
"""
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

import featherface
from featherface.errors import describe
from featherface.flops import count_flops
from featherface.postprocess import Detections, PostprocessConfig
from toolchain.backends.base import Runner
from toolchain.backends.inference import detect_array
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.tensorrt_backend import TensorRTRunner, tensorrt_missing
from toolchain.backends.torch_backend import TorchRunner
from toolchain.building.artifacts import model_dir
from toolchain.building.targets import load_target
from toolchain.measuring.compare import compare_runners, detection_f1
from toolchain.measuring.evaluate import evaluate_detector, evaluate_folder
from toolchain.measuring.profile import profile_onnx
from toolchain.measuring.results import SETTINGS, StageResult
from toolchain.measuring.robustness import compare_shift, evaluate_shift
from toolchain.measuring.timing import LatencyStats, interleaved_latency, timing_batch, timing_images
from toolchain.runtime.featherface_runtime import cpu_features
from toolchain.stages.engine import build_engine, shipped_onnx

STAGES = ("torch-fp32", "torch-cuda-fp16", "onnx-fp32", "onnx-simplified", "cpu-target", "onnx-fp16", "onnx-int8",
          "onnx-int8-exact", "tensorrt-fp16", "tensorrt-int8")

AGREEMENT = PostprocessConfig(score_threshold=0.5)
Echo = Callable[[str], None]


class Skip(Exception):
    """A stage that cannot run on this machine; the message says why."""


@dataclass
class Stage:
    """A runner stage (``make`` returns a ``Runner``), or a peer detector (``peer``: ``make`` returns an object
    with ``detect(image_bgr) -> Detections`` and its own pre/post-processing)."""

    name: str
    backend: str
    precision: str
    make: Callable[[], object]  # raises Skip when the stage cannot run here
    file: Path | None = None
    peer: bool = False
    timed: bool = True  # False: accuracy only (a semantics proxy whose speed means nothing)


def reset_peak_rss() -> None:
    """Reset the kernel's resident-set high-water mark so the next reading covers one stage only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gpu_stage(make: Callable[[], Runner]) -> Callable[[], Runner]:
    def checked() -> Runner:
        if not torch.cuda.is_available():
            raise Skip("no CUDA device visible to PyTorch")
        return make()

    return checked


def default_stages(model: str, weights: Path, artifacts, threads: int, trt_dir: Path, target=None) -> list[Stage]:
    """The chain's stages for one model; ``artifacts`` comes from ``toolchain.pipeline.prepare_artifacts``
    for ``target``, whose shipped graph (an ONNX Runtime target's) is the ``cpu-target`` row."""

    def onnx(key: str, int8: str = "kernels") -> Callable[[], Runner]:
        def make() -> Runner:
            path = artifacts.exported if key == "exported" else artifacts.onnx.get(key)
            if path is None:
                raise Skip(f"no {key} ONNX was built")
            return OnnxRuntimeRunner(path, threads, spin=False, int8=int8)
        return make

    def tensorrt(precision: str) -> Callable[[], Runner]:
        def make() -> Runner:
            missing = tensorrt_missing()
            if missing:
                raise Skip(f"TensorRT: {missing}")

            folder = trt_dir / precision
            folder.mkdir(parents=True, exist_ok=True)
            build_engine(load_target("x86-cuda"), precision, artifacts.onnx, folder)
            priors = featherface.load_model(model, weights).priors
            return TensorRTRunner(folder / "model.engine", priors, precision)
        return make


    onnxruntime_target = target is not None and not target.is_tensorrt
    default_graph = (shipped_onnx(artifacts.onnx, target.default_precision)
                     if onnxruntime_target and target.default_precision in artifacts.onnx else None)

    def shipped() -> Runner:
        if not onnxruntime_target:
            raise Skip("the --target is not an ONNX Runtime target")
        if default_graph is None:
            raise Skip(f"no {target.default_precision} ONNX was built")
        return OnnxRuntimeRunner(default_graph, threads, spin=False, int8="kernels")
    return [
        Stage("torch-fp32", "torch", "fp32", lambda: TorchRunner(featherface.load_model(model, weights)), weights),
        Stage("torch-cuda-fp16", "torch", "fp16", _gpu_stage(lambda: TorchRunner(
            featherface.load_model(model, weights), "cuda", half=True)), weights),
        Stage("onnx-fp32", "onnxruntime", "fp32", onnx("exported"), artifacts.exported),
        Stage("onnx-simplified", "onnxruntime", "fp32", onnx("fp32"), artifacts.onnx["fp32"]),
        Stage("cpu-target", "onnxruntime", target.default_precision if target else "fp32", shipped, default_graph),
        Stage("onnx-fp16", "onnxruntime", "fp16", onnx("fp16"), artifacts.onnx.get("fp16")),
        # ONNX Runtime's INT8 kernels of this CPU (what a cpu bundle runs here: AP and speed depend on the CPU), and
        # the same graph with exact int32 accumulation (TensorRT's, VNNI's and ARM's arithmetic: the verdicts' AP).
        Stage("onnx-int8", "onnxruntime", "int8", onnx("int8"), artifacts.onnx.get("int8")),
        Stage("onnx-int8-exact", "onnxruntime", "int8", onnx("int8", "exact"), artifacts.onnx.get("int8"),
              timed=False),
        Stage("tensorrt-fp16", "tensorrt", "fp16", tensorrt("fp16")),
        Stage("tensorrt-int8", "tensorrt", "int8", tensorrt("int8")),
    ]


class ModelPeer:
    """Another FeatherFace-family network as a peer row: its own runner behind ``detect(image)``."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def detect(self, image_bgr: np.ndarray) -> Detections:
        return detect_array(self.runner, image_bgr)


def model_size(model: str) -> tuple[int, float]:
    """Parameters and GFLOPs at 640² of a registered model or channel config."""

    net = featherface.create_model(model)
    return featherface.count_parameters(net), count_flops(net, 640).gflops


def frontier_stages(entries: list[tuple[str, Path | None]], artifacts: list, threads: int, target) -> list[Stage]:
    """The accuracy–speed frontier: each model's shipped graph for ``target`` (an ONNX Runtime target), the
    first as the reference and the others as peers of it (ΔAP against the first model, not against themselves)."""

    stages = []
    for i, ((model, _), built) in enumerate(zip(entries, artifacts)):
        graph = shipped_onnx(built.onnx, target.default_precision)
        label = model_dir(model)
        make = ((lambda g=graph: OnnxRuntimeRunner(g, threads, spin=False, int8="kernels")) if i == 0 else
                (lambda g=graph: ModelPeer(OnnxRuntimeRunner(g, threads, spin=False, int8="kernels"))))
        stages.append(Stage("cpu-target" if i == 0 else f"peer-{label} cpu-target", "onnxruntime",
                            target.default_precision, make, graph, peer=i > 0))
    return stages


def _peer_agreement(reference: Runner, peer, images: list[list[np.ndarray]]) -> float:
    """Detection F1 of a peer against the reference's detections (score ≥ 0.5) on the same images."""
    scores = []
    for group in images:
        for image in group:
            ref = detect_array(reference, image, AGREEMENT)
            mine = peer.detect(image)
            keep = mine.scores >= AGREEMENT.score_threshold
            scores.append(detection_f1(ref, Detections(mine.boxes[keep], mine.scores[keep], mine.landmarks[keep])))
    return float(np.mean(scores))


def bench_model(model: str, stages: list[Stage], data: Path, sizes: tuple[tuple[int, int], ...] = ((640, 640), (320, 320)),
                runs: int = 50, batch8_runs: int = 10, echo: Echo = print, threads: int | None = None,
                profile_runs: int = 10, shifts: tuple[str, ...] = (), full_detect: bool = False,
                isolated: Callable[[tuple, int, int], dict] | None = None) -> list[StageResult]:
    """Run ``stages`` (the first is the reference) on ``data``; returns one result per stage. ONNX Runtime
    stages are also profiled per op type at the first size (``profile_runs`` runs; 0 skips it); with
    ``shifts`` every stage is also evaluated on each shifted copy of ``data`` against the reference's AP there.
    ``full_detect`` times every row image → detections (pre-processing, network, decoding, NMS), as a peer's
    own detector is timed: the frontier compares different networks end to end. ``isolated(sizes, runs,
    batch8_runs)`` times the reference alone the way its users run it (its own process, its defaults); ×ref then
    divides that figure, and the interleaved one stays in the reference row's ``latency``."""
    shifted_reference: dict[str, tuple] = {}
    results = []
    timed: dict[str, Callable[[list[np.ndarray], np.ndarray], object]] = {}  # stage → call on (images, batch)
    check_images = [timing_images(data / "images", size, 1) for size in sizes] + [
        timing_images(data / "images", sizes[0], 2)]
    check = [timing_batch(group) for group in check_images]
    reference = None
    for stage in stages:
        row = StageResult(model, stage.name, stage.backend, stage.precision, peer=stage.peer)
        row.size_bytes = stage.file.stat().st_size if stage.file and stage.file.is_file() else None
        results.append(row)
        reset_peak_rss()
        try:
            runner = stage.make()
            row.params = getattr(runner, "params", None)  # a peer that knows its size (YuNet, SCRFD)
            row.gflops = getattr(runner, "gflops", None)
            echo(f"[{model}] {stage.name}: evaluating on {data}")
            ev = evaluate_detector(runner.detect, data) if stage.peer else evaluate_folder(runner, data)
            row.easy, row.medium, row.hard = (ev.ap[k] for k in SETTINGS)
            row.curves = ev.curves
            detect = runner.detect if stage.peer else (lambda image, r=runner: detect_array(r, image))
            for shift in shifts:
                echo(f"[{model}] {stage.name}: evaluating under {shift}")
                measured = evaluate_shift(detect, data, shift)
                shifted_reference.setdefault(shift, measured)
                row.robustness[shift] = compare_shift(shifted_reference[shift], measured)
            if reference is None:
                reference = (row, runner)
            ref_row, ref_runner = reference
            row.d_easy, row.d_medium, row.d_hard = (getattr(row, k) - getattr(ref_row, k) for k in SETTINGS)
            if stage.peer:  # another network: no tensors to compare, only detections; it takes BGR images
                row.det_f1 = _peer_agreement(ref_runner, runner, check_images)
                timed[stage.name] = lambda images, batch, peer=runner: [peer.detect(image) for image in images]
            else:
                comparisons = compare_runners(ref_runner, runner, check)
                row.max_abs_diff = max(d.max_abs for c in comparisons for d in c.drift)
                row.cosine = min(d.cosine for c in comparisons for d in c.drift)
                row.det_f1 = float(np.mean([c.det_f1 for c in comparisons]))
                if stage.timed:
                    timed[stage.name] = ((lambda images, batch, r=runner: [detect_array(r, image) for image in images])
                                         if full_detect else (lambda images, batch, r=runner: r.infer(batch)))
        except Skip as exc:
            row.status, row.skipped_reason = "skipped", str(exc)
            echo(f"[{model}] {stage.name}: skipped ({exc})")
        except Exception as exc:  # one broken stage must not hide the others
            row.status, row.error = "failed", describe(exc)
            echo(f"[{model}] {stage.name}: FAILED ({row.error})")
        row.peak_rss_mb = peak_rss_mb()
        if reference is None and row.status != "ok":
            raise RuntimeError(f"{model}: the reference stage {stage.name} did not run ({row.error or row.skipped_reason})")
    by_name = {r.name: r for r in results}
    if profile_runs:

        for stage in stages:
            row = by_name[stage.name]
            if stage.backend == "onnxruntime" and row.status == "ok" and stage.file and stage.timed:
                echo(f"[{model}] {stage.name}: ONNX Runtime profile at {sizes[0][0]}x{sizes[0][1]}")
                report = profile_onnx(stage.file, sizes[0], threads=threads, runs=profile_runs, warmup=3)
                row.op_profile = report.as_json()["op_types"]
    for i, size in enumerate(sizes):
        echo(f"[{model}] latency at {size[0]}x{size[1]}, batch 1: {runs} interleaved runs per stage")
        images, x = check_images[i], check[i]
        samples, errors = interleaved_latency({n: (lambda f=f: f(images, x)) for n, f in timed.items()}, runs)
        _fail(by_name, timed, errors)
        for name, ms in samples.items():
            stats = LatencyStats.of(ms)
            by_name[name].latency[f"{size[0]}x{size[1]}"] = {"p50_ms": stats.p50, "p90_ms": stats.p90,
                                                            "p99_ms": stats.p99, "runs": stats.runs}
    echo(f"[{model}] throughput at {sizes[0][0]}x{sizes[0][1]}, batch 8")
    images8 = timing_images(data / "images", sizes[0], 8)
    x8 = timing_batch(images8)
    samples, errors = interleaved_latency({n: (lambda f=f: f(images8, x8)) for n, f in timed.items()},
                                          batch8_runs, warmup=2)
    _fail(by_name, timed, errors)
    first = f"{sizes[0][0]}x{sizes[0][1]}"
    ref_p50 = results[0].latency.get(first, {}).get("p50_ms")
    if isolated is not None and results[0].status == "ok":
        echo(f"[{model}] {results[0].name} alone, in its own process with its defaults: {runs} runs per size")
        results[0].isolated = isolated(sizes, runs, batch8_runs)
        ref_p50 = results[0].isolated["latency"][first]["p50_ms"]
    for name in timed:
        row = by_name[name]
        row.fps_batch8 = 8e3 / float(np.median(samples[name])) if name in samples else None
        if first in row.latency:
            row.p50_ms, row.p90_ms, row.p99_ms = (row.latency[first][k] for k in ("p50_ms", "p90_ms", "p99_ms"))
            row.speedup = ref_p50 / row.p50_ms if ref_p50 else None
    if results[0].isolated is not None:  # the reference row shows what its users see; interleaved stays in latency
        ref, alone = results[0], results[0].isolated
        ref.p50_ms, ref.p90_ms, ref.p99_ms = (alone["latency"][first][k] for k in ("p50_ms", "p90_ms", "p99_ms"))
        ref.speedup, ref.fps_batch8 = 1.0, 8e3 / alone["batch8_ms"]
    return results


def _fail(by_name: dict, timed: dict, errors: dict[str, str]) -> None:
    for name, error in errors.items():
        by_name[name].status, by_name[name].error = "failed", error
        timed.pop(name, None)


def cpu_model() -> str:
    """The processor's marketing name (``/proc/cpuinfo``), not just its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_kernels(cpu: dict) -> str:
    """How ONNX Runtime's INT8 kernels add up here, for the report header: 'exact (avx2 avx512_vnni)'."""
    kind = {True: "exact", False: "saturating", None: "unknown"}[cpu["exact_int8"]]
    return f"{kind} ({' '.join(cpu['flags']) or 'no 8-bit dot-product flags'})"


def environment(threads: int) -> dict:
    import onnxruntime

    return {"threads": threads, "cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
            "int8_kernels": int8_kernels(cpu_features()),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table(rows: list[StageResult]) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    head = (f"{'stage':<37}{'easy':>7}{'medium':>7}{'hard':>7}{'Δeasy':>8}{'Δmed':>8}{'Δhard':>8}"
            f"{'max|Δ|':>9}{'cos':>9}{'F1':>6}{'p50ms':>8}{'p99ms':>8}{'×ref':>6}{'fps@8':>7}{'MB':>6}"
            f"{'kpar':>6}{'GF':>6}"
            f"{'RSS':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.status != "ok":
            lines.append(f"{r.label:<37}{r.status}: {r.skipped_reason or r.error}")
            continue
        lines.append(
            f"{r.label:<37}{f(r.easy, '.4f'):>7}{f(r.medium, '.4f'):>7}{f(r.hard, '.4f'):>7}"
            f"{f(r.d_easy, '+.4f'):>8}{f(r.d_medium, '+.4f'):>8}{f(r.d_hard, '+.4f'):>8}{f(r.max_abs_diff, '.2e'):>9}"
            f"{f(r.cosine, '.5f'):>9}{f(r.det_f1, '.3f'):>6}{f(r.p50_ms, '.1f'):>8}{f(r.p99_ms, '.1f'):>8}"
            f"{f(r.speedup, '.2f'):>6}{f(r.fps_batch8, '.1f'):>7}"
            f"{f(r.size_bytes / 1e6 if r.size_bytes else None, '.2f'):>6}"
            f"{f(r.params / 1e3 if r.params else None, '.0f'):>6}"
            f"{f(r.gflops, '.2f'):>6}{f(r.peak_rss_mb, '.0f'):>6}")
    return "\n".join(lines)
