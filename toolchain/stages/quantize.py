"""Quantize stage: FP32 ONNX + calibration ranges → INT8 Q/DQ ONNX, and FP32 ONNX → FP16 ONNX.

INT8 keeps the stem and head convolutions in FP32, then measures the quantization noise of every
activation on calibration images and keeps the convolutions next to the noisiest ones in FP32 too,
round after round, until none is noisier than the threshold (decided on calibration data only).
"""
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from calibration.dataset import build_calibration_set
from calibration.quantize import convert_fp16, quantize_int8, read_ranges, sensitive_nodes
from calibration.sensitivity import TensorNoise, convs_touching, tensor_noise, worst_noise
from toolchain.building.artifacts import atomic_output
from toolchain.building.metadata import load_onnx

NOISE_IMAGES = 8


@dataclass
class QuantizeReport:
    path: Path
    kept_fp32: list[str]
    convs: int
    rounds: list[list[TensorNoise]] = field(default_factory=list)  # the noisy tensors found each round


def quantize_onnx(model: str | Path, cache: str | Path, out: str | Path, images_dir: str | Path,
                  activations: str = "s8", threshold_db: float = 25.0, max_rounds: int = 4,
                  on_round: Callable[[int, list[TensorNoise]], None] | None = None,
                  shifts: tuple[str, ...] = ()) -> QuantizeReport:
    """With ``shifts`` the noise of each activation is its worst over the calibration images and over each
    shift's copies of them, so convolutions that only break under a shift are kept in FP32 too."""
    read_ranges(cache)  # a bad cache fails before any work
    fp32 = load_onnx(model)
    keep = sensitive_nodes(fp32)
    calib = build_calibration_set(images_dir, count=NOISE_IMAGES, min_images=1, shifts=shifts)
    report = QuantizeReport(Path(out), keep, sum(n.op_type == "Conv" for n in fp32.graph.node))
    with tempfile.TemporaryDirectory(prefix="featherface-rounds-") as tmp:
        work = Path(tmp) / "round.onnx"  # rounds stay out of ``out``: only the final graph may appear there
        for round_ in range(max_rounds + 1):
            quantize_int8(model, cache, work, activations, keep)
            if round_ == max_rounds or threshold_db <= 0:
                break
            noise = worst_noise([tensor_noise(model, work, subset) for subset in calib.subsets()])
            noisy = [n for n in noise if n.local_db < threshold_db]
            more = sorted(set(convs_touching(fp32, {n.tensor for n in noisy})) - set(keep))
            report.rounds.append(noisy)
            if on_round:
                on_round(round_ + 1, noisy)
            if not more:
                break
            keep = sorted(set(keep) | set(more))
        with atomic_output(out) as tmp_out:
            shutil.copyfile(work, tmp_out)
    report.kept_fp32 = keep
    return report


def fp16_onnx(model: str | Path, out: str | Path) -> Path:
    return convert_fp16(model, out)
