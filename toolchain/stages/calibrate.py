"""Calibrate stage: FP32 ONNX + calibration images → activation ranges (ONNX Runtime cache, JSON), the
calibration-set manifest, and the same ranges as a TensorRT calibration cache."""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from calibration.dataset import build_calibration_set
from calibration.quantize import calibrate
from calibration.tensorrt_cache import scales_from_ranges, write_trt_cache


@dataclass
class CalibrationReport:
    cache: Path  # ONNX Runtime ranges
    manifest: Path  # the chosen files and their hashes
    trt_cache: Path  # the same ranges for TensorRT implicit INT8
    images: int
    skipped: list[tuple[Path, str]]


def calibrate_onnx(model: str | Path, images_dir: str | Path, out_dir: str | Path, method: str = "entropy",
                   count: int | None = None, seed: int = 0, shape: tuple[int, int] = (640, 640),
                   symmetric: bool = True, trt_version: str = "10.3",
                   on_image: Callable[[int, int], None] | None = None,
                   shifts: tuple[str, ...] = (), all_tensors: bool = False) -> CalibrationReport:
    """``shifts`` adds a shifted copy of every calibration image per named shift (shift-aware ranges);
    ``all_tensors`` ranges every float tensor (TensorRT implicit INT8), not only the convolutions' inputs."""
    out_dir = Path(out_dir)
    calib = build_calibration_set(images_dir, count, seed, shape, shifts=shifts)
    cache, manifest, trt_cache = (out_dir / f"calib-{method}{suffix}"
                                  for suffix in (".json", ".manifest.json", ".trt.cache"))
    ranges = calibrate(model, calib, method, cache, symmetric, on_image, all_tensors)
    calib.write_manifest(manifest)
    write_trt_cache(scales_from_ranges(ranges), trt_cache, trt_version)
    return CalibrationReport(cache, manifest, trt_cache, len(calib), calib.skipped)
