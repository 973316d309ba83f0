"""The ``toolchain`` command line."""
import sys
from pathlib import Path

import click
import cv2
import numpy as np

import featherface
from featherface import paths
from featherface.data.shifts import SHIFTS
from featherface.errors import FeatherFaceError, first_line
from featherface.postprocess import Detections, PostprocessConfig
from featherface.preprocess import list_images
from toolchain import __version__
from toolchain.building.artifacts import atomic_output, write_bytes, write_json
from toolchain.backends.base import Runner
from toolchain.runtime.featherface_stream import (Source, StreamError, annotate, is_stream_source, open_source,
                                                  process_stream, summary_line)


class _Group(click.Group):
    """Turns bad-input errors into one ``Error: …`` line and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (FeatherFaceError, StreamError) as exc:  # StreamError: the torch-free stream code's own
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a folder that cannot be created, a disk that is full: the path and the reason
            where = exc.filename if exc.filename is not None else "error"
            raise click.ClickException(f"{where}: {exc.strerror or exc}") from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="toolchain")
def main() -> None:
    """FeatherFace edge toolchain."""


def _weights_for(model: str, weights: Path | None) -> Path | None:
    if weights is not None:
        return weights
    name = featherface.default_weights_name(model)
    return paths.default_weights(name) if name else None


class ModelSpec(click.ParamType):
    """A registered model name, or the channel config (``.json``) that ``toolchain prune`` writes."""

    name = "model"

    def convert(self, value, param, ctx):
        if featherface.registry.is_channel_file(value):
            if not Path(value).is_file():
                self.fail(f"{value}: channel config not found", param, ctx)
            return str(Path(value).resolve())  # recorded in artifacts, read back from any working directory
        if value not in featherface.list_models():
            self.fail(f"'{value}' is not a model ({', '.join(featherface.list_models())}) or a channel config "
                      f"(*.json)", param, ctx)
        return value

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(featherface.list_models())}|PRUNED.json]"


model_option = click.option("--model", "model", default="featherface-v1", show_default=True, type=ModelSpec(),
                            help="Detector architecture, or a pruned model's channel config.")
weights_option = click.option("--weights", type=click.Path(path_type=Path),
                              help="Checkpoint (default: the model's file under $FEATHERFACE_SHARED/weights).")


def _runner(model: str, weights: Path | None, backend: str, onnx: Path | None, threads: int | None) -> Runner:
    if backend == "torch":
        from toolchain.backends.torch_backend import load_torch_runner

        return load_torch_runner(model, _weights_for(model, weights))
    if onnx is None:
        raise click.UsageError("--backend onnxruntime needs --onnx FILE")
    from toolchain.backends.onnxruntime_backend import load_onnx_runner

    return load_onnx_runner(onnx, threads=threads)


backend_options = [
    click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True),
    click.option("--onnx", type=click.Path(path_type=Path), help="ONNX model for --backend onnxruntime."),
    click.option("--threads", type=int, default=None, help="Intra-op threads for ONNX Runtime (default: all cores)."),
]


def _add(options):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f

    return wrap


@main.command("eval")
@model_option
@weights_option
@_add(backend_options)
@click.option("--data", type=click.Path(path_type=Path), help="WIDER folder with images/ and ground_truth/.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the APs as JSON.")
@click.option("--save-preds", type=click.Path(path_type=Path), help="Write WIDER submission files here.")
def eval_cmd(model, weights, backend, onnx, threads, data, json_out, save_preds) -> None:
    """WIDER FACE easy/medium/hard AP on a folder (official protocol, original image sizes)."""
    from toolchain.measuring.evaluate import evaluate_folder

    runner = _runner(model, weights, backend, onnx, threads)
    data = data or paths.default_val_dir()
    with click.progressbar(length=len(list_images(data / "images")), label=f"eval {runner}", file=sys.stderr) as bar:
        result = evaluate_folder(runner, data, save_preds=save_preds, on_image=lambda i, n: bar.update(1))
    click.echo(f"easy {result.ap['easy']:.4f}  medium {result.ap['medium']:.4f}  hard {result.ap['hard']:.4f}"
               f"  ({result.images} images)")
    if json_out:
        write_json(json_out, result.as_dict())


def _detections_json(path: Path, shape: tuple[int, ...], dets: Detections) -> dict:
    return {
        "image": str(path), "height": shape[0], "width": shape[1],
        "detections": [
            {"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
             "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in lm.reshape(5, 2)]}
            for box, score, lm in zip(dets.boxes, dets.scores, dets.landmarks)
        ],
    }


@main.command("detect")
@model_option
@weights_option
@_add(backend_options)
@click.argument("source")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (images: <name>.json + annotated .jpg).")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--nms-threshold", type=click.FloatRange(0, 1), default=0.4, show_default=True)
@click.option("--fail-fast", is_flag=True, help="Stop at the first image that cannot be read.")
@click.option("--stream", is_flag=True, help="Treat a folder of images as one frame sequence (a stream).")
@click.option("--jsonl", type=click.Path(path_type=Path, allow_dash=True), default="-", show_default=True,
              help="Streams: one JSON line per frame here ('-': stdout).")
@click.option("--video-out", type=click.Path(path_type=Path), help="Streams: write the annotated video (.mp4, .avi).")
@click.option("--queue", "queue_size", type=click.IntRange(1, 256), default=None,
              help="Streams: frames waiting between the decoding and the detecting thread (default 4; 1 with --drop).")
@click.option("--drop", is_flag=True, help="Streams: drop the oldest waiting frame when detection falls behind "
                                           "(live cameras); otherwise every frame is detected.")
@click.option("--sequential", is_flag=True, help="Streams: decode and detect on one thread (for comparison).")
@click.option("--realtime", is_flag=True, help="Streams: play a file at its own frame rate, as a camera delivers.")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Streams: stop after this many frames.")
@click.option("--summary", type=click.Path(path_type=Path), help="Streams: write frames/s and p50/p90 as JSON.")
def detect_cmd(model, weights, backend, onnx, threads, source, out, score_threshold, nms_threshold,
               fail_fast, stream, jsonl, video_out, queue_size, drop, sequential, realtime, max_frames, summary) -> None:
    """Detect faces in an image, a folder of images, a video file, an image sequence or a camera.

    Images: <name>.json and an annotated <name>.jpg per image in --out; an image that cannot be read is one error
    line and the others are still processed; the exit code is 1 when any failed (--fail-fast stops at the first).
    Streams (a video file, "frames/%05d.jpg", a camera index such as 0, or a folder with --stream): decoded on one
    thread and detected on another, one JSON line per frame, frames/s and per-frame p50/p90 at the end."""
    from toolchain.backends.inference import detect_array

    config = PostprocessConfig(score_threshold=score_threshold, nms_threshold=nms_threshold)
    streaming = stream or is_stream_source(source)
    if not streaming and not Path(source).exists():
        raise FeatherFaceError(f"{source}: no such file or folder")
    if not streaming and out is None:
        raise click.UsageError("images need --out FOLDER")
    opened = open_source(source, realtime) if streaming else None  # a bad source fails before a model loads
    runner = _runner(model, weights, backend, onnx, threads)
    detect = lambda frame: detect_array(runner, frame, config)  # noqa: E731
    if streaming:
        _detect_stream(opened, lambda frame: _faces(detect(frame)), jsonl, video_out, queue_size, drop, sequential,
                       max_frames, summary)
    else:
        _detect_images(detect, Path(source), out, fail_fast)


def _faces(dets: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return dets.boxes, dets.scores, dets.landmarks


def _detect_stream(opened: Source, detect, jsonl: Path, video_out: Path | None, queue_size: int | None, drop: bool,
                   sequential: bool, max_frames: int | None, summary: Path | None) -> None:
    if str(jsonl) == "-":
        result = process_stream(opened, detect, sys.stdout, video_out, queue_size, drop, sequential, max_frames)
    else:
        with atomic_output(jsonl) as tmp, open(tmp, "w") as lines:
            result = process_stream(opened, detect, lines, video_out, queue_size, drop, sequential, max_frames)
    click.echo(summary_line(result), err=True)
    if summary:
        write_json(summary, result)


def _detect_images(detect, source: Path, out: Path, fail_fast: bool) -> None:
    from featherface.preprocess import read_image

    images = [source] if source.is_file() else list_images(source)
    if not images:
        raise FeatherFaceError(f"{source}: no images found")
    failed = []
    for path in images:
        try:
            image = read_image(path)
        except FeatherFaceError as exc:
            if fail_fast or source.is_file():
                raise
            click.echo(f"error: {exc}", err=True)
            failed.append(path)
            continue
        dets = detect(image)
        rel = path.name if source.is_file() else path.relative_to(source).as_posix()
        target = out / rel
        write_json(target.with_suffix(".json"), _detections_json(path, image.shape, dets))
        ok, encoded = cv2.imencode(".jpg", annotate(image, *_faces(dets)))
        write_bytes(target.with_suffix(".jpg"), encoded.tobytes())
        click.echo(f"{path}: {len(dets)} faces")
    if failed:
        raise FeatherFaceError(f"{source}: {len(failed)} of {len(images)} image(s) could not be read "
                               f"(first: {failed[0].name})")


@main.command("validate")
@model_option
@click.option("--weights", type=click.Path(path_type=Path), help="Optional checkpoint to load first.")
@click.option("--sizes", default="320,640,1024", show_default=True, help="Square input sizes.")
@click.option("--batches", default="1,4", show_default=True)
def validate_cmd(model, weights, sizes, batches) -> None:
    """Parameter count, forward at several sizes/batches, gradient flow; exit 1 on any failure."""
    from toolchain.measuring.validate import validate_model

    report = validate_model(model, weights, tuple(int(s) for s in sizes.split(",")),
                            tuple(int(b) for b in batches.split(",")))
    expected = report.expected_params
    tol = f" ±{report.tolerance:.0%}" if report.tolerance else ""
    mark = "ok" if report.params_ok else "MISMATCH"
    click.echo(f"{model}: {report.params:,} parameters (expected {expected:,}{tol}) {mark}")
    for batch, size, ok, detail in report.forwards:
        click.echo(f"  forward batch {batch} {size}x{size}: {'ok' if ok else 'FAIL'} ({detail})")
    if report.params_without_grad:
        click.echo(f"  gradient flow: FAIL, no gradient for {', '.join(report.params_without_grad[:5])}")
    else:
        click.echo("  gradient flow: ok (every trainable parameter gets a gradient)")
    if not report.ok:
        raise click.ClickException(f"{model}: validation failed")


@main.command("export")
@model_option
@weights_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .onnx file.")
@click.option("--target", default=None, help="Target profile (name or TOML path): sets opset and DCN lowering.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the target's, else 20).")
@click.option("--lowering", type=click.Choice(["native", "decomposed"]), default=None,
              help="Deformable-conv lowering (default: the target's, else native).")
@click.option("--check-images", type=click.Path(path_type=Path), default=None,
              help="Images for the built-in ONNX Runtime vs PyTorch check (default: the shared calib set).")
@click.option("--no-check", is_flag=True, help="Skip the numeric check (not recommended).")
def export_cmd(model, weights, out, target, opset, lowering, check_images, no_check) -> None:
    """Export to dynamic ONNX and prove it equal to PyTorch on real images at several shapes."""
    from toolchain.stages.export import export_onnx
    from toolchain.building.targets import load_target

    profile = load_target(target) if target else None
    opset = opset or (profile.export_opset if profile else 20)
    lowering = lowering or (profile.dcn_lowering if profile else "native")
    images = None if no_check else (check_images or paths.default_calib_dir() / "images")
    report = export_onnx(model, _weights_for(model, weights), out, lowering, opset, images)
    for c in report.comparisons:
        drift = "  ".join(f"{d.output} max|Δ| {d.max_abs:.2e} cos {d.cosine:.7f}" for d in c.drift)
        click.echo(f"  {tuple(c.shape)}: {drift}  det F1 {c.det_f1:.3f}")
    click.echo(f"wrote {out} (opset {opset}, DCN lowering {lowering})")
    if profile and profile.opset < opset:
        click.echo(f"target '{profile.name}' reads opset {profile.opset}: run `toolchain simplify`, then "
                   f"`toolchain opset --to {profile.opset}` (or `toolchain engine --target {profile.name}`)")


@main.command("simplify")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
def simplify_cmd(src, out) -> None:
    """onnxsim with dynamic shapes kept; keeps the original graph if simplification fails or drifts."""
    from toolchain.stages.simplify import simplify_onnx

    report = simplify_onnx(src, out)
    click.echo(report.table())
    click.echo(f"wrote {out}: {report.reason}")


def _shift_list(names: str | None) -> tuple[str, ...]:
    """'all' or comma-separated shift names; unknown names are a usage error."""
    shifts = tuple(SHIFTS) if names == "all" else tuple(n.strip() for n in (names or "").split(",") if n.strip())
    unknown = sorted(set(shifts) - set(SHIFTS))
    if unknown:
        raise click.UsageError(f"unknown shift(s) {', '.join(unknown)} (known: {', '.join(SHIFTS)})")
    return shifts


@main.command("calibrate")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Calibration images (default: the shared calib set).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="entropy", show_default=True)
@click.option("--count", type=int, default=None, help="Number of images (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=int, default=640, show_default=True, help="Square input size for calibration.")
@click.option("--asymmetric", is_flag=True, help="Asymmetric ranges (for uint8 activations in ONNX Runtime).")
@click.option("--shifts", "shift_names", default="", help="Also calibrate on shifted copies: comma-separated ("
              + ", ".join(SHIFTS) + ").")
def calibrate_cmd(src, images, out, method, count, seed, size, asymmetric, shift_names) -> None:
    """Activation ranges over calibration images: ONNX Runtime cache, TensorRT cache, file manifest."""
    from toolchain.stages.calibrate import calibrate_onnx

    images = images or paths.default_calib_dir() / "images"
    shifts = _shift_list(shift_names)
    with click.progressbar(length=(count or len(list_images(images))) * (1 + len(shifts)),
                           label=f"calibrate ({method})", file=sys.stderr) as bar:
        report = calibrate_onnx(src, images, out, method, count, seed, (size, size), not asymmetric,
                                on_image=lambda i, n: bar.update(1), shifts=shifts)
    for path, reason in report.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(f"{report.images} images → {report.cache}, {report.trt_cache}, {report.manifest}")


@main.command("quantize")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--precision", type=click.Choice(["int8", "fp16"]), default="int8", show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), help="Calibration cache from `toolchain calibrate` (INT8).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images for the per-layer noise rounds (default: the shared calib set).")
@click.option("--activations", type=click.Choice(["s8", "u8"]), default="s8", show_default=True)
@click.option("--threshold-db", type=float, default=25.0, show_default=True,
              help="Keep convolutions next to activations noisier than this in FP32 (0: no rounds).")
def quantize_cmd(src, out, precision, cache, images, activations, threshold_db) -> None:
    """INT8 Q/DQ ONNX (per-channel weights, per-tensor activations) or FP16 ONNX (FP32 I/O)."""
    from toolchain.stages.quantize import fp16_onnx, quantize_onnx

    if precision == "fp16":
        fp16_onnx(src, out)
        click.echo(f"wrote {out}")
        return
    if cache is None:
        raise click.UsageError("--precision int8 needs --cache (run `toolchain calibrate` first)")
    report = quantize_onnx(src, cache, out, images or paths.default_calib_dir() / "images", activations,
                           threshold_db, on_round=lambda r, noisy: click.echo(
                               f"round {r}: " + ", ".join(f"{n.tensor} {n.local_db:.1f} dB" for n in noisy[:6])
                               + (" …" if len(noisy) > 6 else "")))
    click.echo(f"wrote {out}: {len(report.kept_fp32)} of {report.convs} convolutions kept in FP32")


def _target_help(prefix: str) -> str:
    from toolchain.building.targets import describe_targets

    return f"{prefix} Profiles: {describe_targets()}."


@main.command("engine")
@model_option
@weights_option
@click.option("--target", default="cpu", show_default=True,
              help=_target_help("Target profile (name or TOML path); 'jetson' is the current JetPack's board."))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Default: the target's default precision.")
@click.option("--build-dir", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration folder with images/ (default: the shared calib set).")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Measure the shipped graph's AP here (default: the shared val set; 'none' to skip).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads recorded in the bundle.")
@click.option("--allow-shift-miss", is_flag=True,
              help="Ship an INT8 graph that misses the budget on a shift its target claims (recorded in the manifest).")
@click.option("--allow-policy-miss", is_flag=True,
              help="Ship a graph that misses the budget under the runtime's input policy (the target's profile; "
                   "recorded in the manifest).")
def engine_cmd(model, weights, target, precision, build_dir, calib, val, threads, allow_shift_miss,
               allow_policy_miss) -> None:
    """The whole chain for a target: export → simplify → calibrate → quantize → engine → bundle."""
    from toolchain.pipeline import build_target
    from toolchain.building.targets import load_target

    profile = load_target(target)
    weights = _weights_for(model, weights)
    if weights is None:
        raise click.UsageError(f"{model} has no default weights; pass --weights")
    val_dir = None if val is not None and str(val).lower() == "none" else (val or paths.default_val_dir())
    result = build_target(model, weights, profile, precision or profile.default_precision, build_dir,
                          calib or paths.default_calib_dir(), val_dir, threads, echo=lambda m: click.echo(m, err=True),
                          allow_shift_miss=allow_shift_miss, allow_policy_miss=allow_policy_miss)
    click.echo(result.summary())


@main.command("lint")
@click.option("--target", required=True, help=_target_help("Target profile (name or TOML path)."))
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
def lint_cmd(target, model_path) -> None:
    """Can the target's runtime take this graph? One line per violation (node, op, TensorRT version); exit 1."""
    from toolchain.building.lint import errors, lint_file
    from toolchain.building.targets import load_target

    profile = load_target(target)
    found = lint_file(model_path, profile)
    for violation in found:
        click.echo(f"{model_path}: {violation}", err=True)
    if errors(found):
        raise click.ClickException(f"{model_path}: {len(errors(found))} violation(s) for target '{profile.name}'")
    click.echo(f"{model_path}: ok for target '{profile.name}' ({profile.runtime} ≥ {profile.min_runtime_version})")


@main.command("opset")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--to", "opset", type=click.IntRange(13, 17), required=True, help="Older opset to convert to.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@weights_option
@click.option("--check-images", type=click.Path(path_type=Path), default=None,
              help="Images for the check against PyTorch (default: the shared calib set).")
def opset_cmd(src, opset, out, weights, check_images) -> None:
    """Convert a simplified graph to an older opset (TensorRT 8.x) and prove it equal to PyTorch."""
    from toolchain.building.metadata import get_metadata, load_onnx
    from toolchain.stages.opset import convert_opset

    model = get_metadata(load_onnx(src)).get("model", "featherface-v1")
    report = convert_opset(src, out, opset, _weights_for(model, weights),
                           check_images or paths.default_calib_dir() / "images")
    click.echo(f"wrote {out} (opset {opset}; {len(report.comparisons)} shapes checked against PyTorch)")


@main.command("profile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--size", type=click.IntRange(32, 4096), default=640, show_default=True, help="Square input size.")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(0, 256), default=None, help="Intra-op threads (default: ORT's).")
@click.option("--runs", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--top", type=click.IntRange(0, 1000), default=10, show_default=True, help="Slowest nodes to list.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Every node, as JSON.")
def profile_cmd(model_path, size, batch, threads, runs, top, json_out) -> None:
    """Per-op-type and per-node kernel time in ONNX Runtime (its own profiler), like trtexec --dumpProfile."""
    from toolchain.measuring.profile import profile_onnx

    try:
        report = profile_onnx(model_path, (size, size), batch, threads, runs)
    except FeatherFaceError:
        raise
    except Exception as exc:  # onnxruntime's own exception types for a file it cannot load or run
        raise click.ClickException(f"{model_path}: ONNX Runtime cannot profile it ({first_line(exc)})") from None
    click.echo(report.table(top))
    if json_out:
        write_json(json_out, report.as_json())


@main.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
def verify_cmd(bundle) -> None:
    """Check a bundle: every file's sha256 and size, no unlisted files, runtime/engine versions."""
    from toolchain.stages.bundle import verify_bundle

    for line in verify_bundle(bundle):
        click.echo(f"ok  {line}")
    click.echo(f"{bundle}: verified")


@main.command("prune")
@model_option
@weights_option
@click.option("--flops-reduction", type=click.FloatRange(0.01, 0.89), required=True,
              help="Fraction of the FLOPs at 640² to remove (e.g. 0.3).")
@click.option("--importance", type=click.Choice(["variance", "l1", "l2", "bn"]), default="variance", show_default=True,
              help="Channel importance: activation variance × the weights that read it (on the calibration images), "
                   "filter L1/L2 norm (Li et al. 2017) or BN scale (Liu et al. 2017).")
@click.option("--global-pruning", is_flag=True, help="Rank channels across layers instead of the same ratio per layer.")
@click.option("--scope", default="body.stage2,body.stage3,bifpn,ssh", show_default=True,
              help="Comma-separated module-name prefixes that may be narrowed ('ssh': the context modules only).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration folder with images/ (default: the shared calib set).")
@click.option("--calib-count", type=click.IntRange(1), default=8, show_default=True,
              help="Calibration images for the statistics and the refit.")
@click.option("--calib-size", type=click.IntRange(32), default=640, show_default=True,
              help="Square size the calibration images are letterboxed to (the size the model runs at).")
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Refit the pruned layers toward the original by least squares on the calibration images.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Channel config to write (NAME.json; the weights go to NAME.pth beside it).")
def prune_cmd(model, weights, flops_reduction, importance, global_pruning, scope, calib, calib_count, calib_size,
              refit, out) -> None:
    """Structured channel pruning (torch-pruning) and a least-squares refit on calibration images; then fine-tune
    it with `toolchain distill --student NAME.json`."""
    from toolchain.stages.prune import prune_model

    scope = tuple(s.strip() for s in scope.split(",") if s.strip())
    images = (calib or paths.default_calib_dir()) / "images"
    report = prune_model(model, _weights_for(model, weights), out, flops_reduction, importance, global_pruning, scope,
                         images, calib_count, calib_size, refit)
    before, after = report.flops
    click.echo(f"{report.channels} + {report.weights}: {after / 1e9:.2f} GFLOPs at 640² ({1 - after / before:.1%} "
               f"fewer than {before / 1e9:.2f}), {report.params[1]:,} parameters ({report.params[0]:,}), "
               f"channel ratio {report.channel_ratio:.3f}")
    if report.fits:
        gain = sum(f.error_before for f in report.fits) / max(sum(f.error_after for f in report.fits), 1e-12)
        click.echo(f"refitted {len(report.fits)} layers on {calib_count} calibration images at {calib_size}²: "
                   f"summed output error {gain:.1f}× lower")


training_options = [
    click.option("--data", type=click.Path(path_type=Path), required=True, multiple=True,
                 help="Folder with images/ and label.txt (RetinaFace), wider_face_*_bbx_gt.txt or annotations/*.xml "
                      "(Pascal VOC); repeat to train on several."),
    click.option("--val", type=click.Path(path_type=Path), default=None,
                 help="WIDER folder for val AP every K epochs."),
    click.option("--config", type=click.Path(path_type=Path), default=None,
                 help="TOML overriding the recipe defaults."),
    click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True),
    click.option("--resume", type=click.Path(path_type=Path), default=None,
                 help="Continue from a last.pth checkpoint."),
    click.option("--weights", type=click.Path(path_type=Path), default=None,
                 help="Start from a full checkpoint (default: a pruned model's own weights, else the ImageNet "
                      "backbone from the shared weights)."),
    click.option("--backbone", type=click.Path(path_type=Path), default=None,
                 help="MobileNetV1-0.25 backbone (default: $FEATHERFACE_SHARED/weights/"
                      "mobilenetV1X0.25_pretrain.tar)."),
    click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None, help="Default: cuda when available."),
    click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA (default: on)."),
    click.option("--epochs", type=int, default=None),
    click.option("--batch-size", type=int, default=None),
    click.option("--image-size", type=int, default=None),
    click.option("--lr", type=float, default=None),
    click.option("--workers", type=int, default=None),
    click.option("--eval-every", type=int, default=None),
    click.option("--max-steps-per-epoch", type=int, default=None),
]


@main.command("train")
@model_option
@_add(training_options)
def train_cmd(model, **options) -> None:
    """Train or fine-tune (CPU, one GPU, or torchrun DDP with the same command line)."""
    _run_training(model, None, **options)


@main.command("distill")
@click.option("--teacher", type=ModelSpec(), default="featherface-v1", show_default=True, help="Teacher model.")
@click.option("--teacher-weights", type=click.Path(path_type=Path), default=None,
              help="Teacher checkpoint (default: the teacher's file under $FEATHERFACE_SHARED/weights).")
@click.option("--student", type=ModelSpec(), required=True,
              help="Student: a pruned model's channel config (starts from its pruned weights) or a registered "
                   "model (starts from the ImageNet backbone).")
@_add(training_options)
def distill_cmd(teacher, teacher_weights, student, **options) -> None:
    """Train a student toward a teacher's outputs (soft targets on the anchors) plus the labels' MultiBox loss."""
    _run_training(student, (teacher, _weights_for(teacher, teacher_weights)), **options)


def _run_training(model, teacher, data, val, config, out, resume, weights, backbone, device, amp, epochs, batch_size,
                  image_size, lr, workers, eval_every, max_steps_per_epoch) -> None:
    import torch

    from toolchain.training.config import load_config
    from toolchain.training.trainer import train

    cfg = load_config(config, {"epochs": epochs, "batch_size": batch_size, "image_size": image_size, "lr": lr,
                               "workers": workers, "eval_every": eval_every,
                               "max_steps_per_epoch": max_steps_per_epoch,
                               "amp": None if amp is None else ("auto" if amp else "off")})
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is visible")
    if weights is None and resume is None and backbone is None:
        if featherface.registry.is_channel_file(model):
            weights = _weights_for(model, None)
            if weights is None:
                raise click.UsageError(f"{model}: no weights beside the channel config; pass --weights")
        else:
            backbone = paths.default_weights("mobilenetV1X0.25_pretrain.tar")
    result = train(model, cfg, list(data), out, val, device, weights, backbone, resume,
                   echo=lambda m: click.echo(m, err=True), teacher=teacher)
    if result.interrupted:
        raise click.ClickException(f"interrupted after epoch {result.epochs_done}; resume with "
                                   f"--resume {out / 'last.pth'}")
    click.echo(f"trained {result.epochs_done} epochs → {out / 'last.pth'}"
               + (f", best {out / 'best.pth'}" if (out / "best.pth").is_file() else ""))


@main.command("train-profile")
@model_option
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--image-size", type=int, default=640, show_default=True)
@click.option("--amp", type=click.Choice(["fp16", "bf16", "off"]), default="fp16", show_default=True)
@click.option("--find-batch-size", is_flag=True, help="Also search the largest batch that fits (×0.9 margin).")
def train_profile_cmd(model, batch_size, image_size, amp, find_batch_size) -> None:
    """CUDA: images/s, step time and peak memory of training steps; optionally the largest batch that fits."""
    from toolchain.training.gpu import find_batch_size as finder, profile_step

    p = profile_step(model, batch_size, image_size, amp)
    click.echo(f"{model} batch {p.batch} @ {p.image_size}px amp {p.amp}: {p.images_per_s:.0f} images/s, "
               f"{p.step_ms:.1f} ms/step, peak memory {p.peak_memory_mb:.0f} MiB")
    if find_batch_size:
        click.echo(f"largest batch that fits (×0.9 margin): {finder(model, image_size, amp)}")


def _frontier_entry(text: str) -> tuple[str, Path | None]:
    model, _, weights = text.partition("=")
    model = ModelSpec().convert(model, None, None)
    return model, (Path(weights) if weights else _weights_for(model, None))


@main.command("bench")
@click.option("--model", "models", multiple=True, default=("featherface-v1",), show_default=True,
              type=ModelSpec(), help="Repeat to bench peers in the same run.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (only with a single --model).")
@click.option("--data", type=click.Path(path_type=Path), help="WIDER folder (default: the shared val set).")
@click.option("--stages", default=None, help="Comma-separated subset of: " + ", ".join(
    ["torch-fp32", "torch-cuda-fp16", "onnx-fp32", "onnx-simplified", "cpu-target", "onnx-fp16", "onnx-int8",
     "onnx-int8-exact", "tensorrt-fp16", "tensorrt-int8"]) + " (the reference torch-fp32 always runs; onnx-int8 runs "
    "this CPU's INT8 kernels, onnx-int8-exact the same graph with exact int32 accumulation, as TensorRT: AP only).")
@click.option("--target", default="cpu", show_default=True,
              help="Target whose INT8 settings the INT8 stage uses and whose shipped graph is the cpu-target row.")
@click.option("--sizes", default="640,320", show_default=True, help="Square input sizes for latency.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per stage and size.")
@click.option("--threads", type=int, default=None, help="Threads for PyTorch and ONNX Runtime (default: all cores).")
@click.option("--build-dir", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--calib", type=click.Path(path_type=Path), default=None, help="Calibration folder (default: shared).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="One JSON object per stage.")
@click.option("--report", type=click.Path(path_type=Path), help="Write Markdown + HTML report with plots here.")
@click.option("--peer", "peers", multiple=True, type=click.Path(path_type=Path),
              help="Peer detector ONNX (YuNet or SCRFD with keypoints), timed with the first model (default: the shared "
                   "YuNet-n, SCRFD-500M and SCRFD-2.5G).")
@click.option("--no-peers", is_flag=True)
@click.option("--frontier", "frontier", multiple=True, metavar="MODEL[=WEIGHTS]",
              help="Accuracy–speed frontier instead of the stage rows: the first --model and each of these (a pruned "
                   "model's channel config, featherface-v2, retinaface-mnet0.25, ...) through the --target's shipped "
                   "graph, timed image → detections like the peers, ΔAP against the first model.")
@click.option("--shifts", default=None,
              help="Also evaluate every stage on shifted copies of the val images: comma-separated names or 'all' ("
                   + ", ".join(SHIFTS) + ").")
def bench_cmd(models, weights, data, stages, target, sizes, runs, threads, build_dir, calib, json_out, report,
              peers, no_peers, frontier, shifts) -> None:
    """Every stage side by side against PyTorch FP32: AP, drift, agreement, latency, size, memory."""
    import os

    import torch

    import cv2

    from toolchain.bench import (STAGES, Stage, bench_model, default_stages, environment, frontier_stages,
                                           model_size, table)
    from toolchain.measuring.peers import DEFAULT_PEERS, load_peer
    from toolchain.measuring.torch_reference import isolated_reference
    from toolchain.building.artifacts import model_dir
    from toolchain.pipeline import prepare_artifacts
    from toolchain.building.targets import load_target

    if weights is not None and len(models) > 1:
        raise click.UsageError("--weights goes with a single --model")
    shift_names = _shift_list(shifts)
    wanted = STAGES if stages is None else ("torch-fp32", *[s.strip() for s in stages.split(",") if s.strip()])
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        raise click.UsageError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
    threads_given, threads = threads, threads or os.cpu_count()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    profile = load_target(target)
    if not peers and not no_peers:
        peers = tuple(p for p in (paths.shared_dir() / "weights" / "peers" / name for name in DEFAULT_PEERS)
                      if p.is_file())
    loaded = {p: load_peer(p, threads) for p in peers} if not no_peers else {}
    peer_stages = [Stage(f"peer-{p.stem.removesuffix('_dynamic')}", peer.backend, peer.precision,
                         lambda peer=peer: peer, p, peer=True) for p, peer in loaded.items()]
    data = data or paths.default_val_dir()
    square = tuple((int(s), int(s)) for s in sizes.split(","))
    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    rows = []
    calib = calib or paths.default_calib_dir()
    if frontier:
        if profile.is_tensorrt:
            raise click.UsageError("--frontier times ONNX Runtime graphs: use an ONNX Runtime --target (cpu)")
        entries = [(models[0], _weights_for(models[0], weights))] + [_frontier_entry(e) for e in frontier]
        built = [prepare_artifacts(m, w, profile, (), build_dir, calib, echo) for m, w in entries]
        rows = bench_model(models[0], frontier_stages(entries, built, threads, profile) + peer_stages, data, square,
                           runs, echo=echo, threads=threads, shifts=shift_names, full_detect=True, profile_runs=0)
        for row, (model, _) in zip(rows, entries):
            row.params, row.gflops = model_size(model)
    else:
        for model in models:
            model_weights = _weights_for(model, weights)
            precisions = tuple(p for p in ("fp16", "int8") if f"onnx-{p}" in wanted or f"tensorrt-{p}" in wanted
                               or (p == profile.default_precision and "cpu-target" in wanted))
            artifacts = prepare_artifacts(model, model_weights, profile, precisions, build_dir, calib, echo)
            chosen = [s for s in default_stages(model, model_weights, artifacts, threads,
                                                build_dir / model_dir(model) / "bench-trt",
                                                profile) if s.name in wanted]
            if model == models[0]:
                chosen += peer_stages
            size = model_size(model)
            alone = None
            if chosen and chosen[0].backend == "torch":
                alone = (lambda sizes, n, n8, m=model, w=model_weights:
                         isolated_reference(m, w, data / "images", sizes, n, n8, threads_given))
            for row in bench_model(model, chosen, data, square, runs, echo=echo, threads=threads, shifts=shift_names,
                                   isolated=alone):
                if not row.peer:
                    row.params, row.gflops = size
                rows.append(row)
    env = environment(threads)
    click.echo(table(rows))
    click.echo("setup: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)
               + f"; latency: {runs} interleaved runs after warm-up, batch 1, at {sizes}; "
               + ("×ref = the first model's p50 / p50, every row image → detections" if frontier else
                  "×ref = PyTorch p50 / p50, PyTorch timed alone in its own process with its defaults (interleaved "
                  "figure in the JSON)"))
    if json_out:
        write_json(json_out, {"environment": env, "stages": [r.as_json() for r in rows]})
    if report:
        from toolchain.measuring.report import write_report

        click.echo(f"report: {write_report(rows, env, report)}")


if __name__ == "__main__":
    main()
