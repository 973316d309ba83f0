"""TensorRT calibration caches (the text format ``trtexec --calib`` and ``IInt8Calibrator`` read and write).

Line one names the TensorRT version and algorithm (``TRT-8502-EntropyCalibration2``); each further line is
``tensor: <big-endian IEEE-754 float32 scale in hex>`` with scale = amax / 127 (symmetric INT8).
Writing one from ONNX Runtime's ranges lets an implicit-INT8 build on the device skip its own calibration.
"""
import struct
from pathlib import Path

import numpy as np

from featherface.errors import ArtifactError
from toolchain.building.artifacts import write_text
from toolchain.kit.build_engine import trt_version_tag

ALGORITHM = "EntropyCalibration2"


def encode_scale(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def decode_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def write_trt_cache(scales: dict[str, float], path: str | Path, trt_version: str) -> None:
    lines = [f"TRT-{trt_version_tag(trt_version)}-{ALGORITHM}"]
    lines += [f"{name}: {encode_scale(scale)}" for name, scale in sorted(scales.items())]
    write_text(path, "\n".join(lines) + "\n")


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}); a malformed file raises one line naming it and the line number."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read calibration cache ({exc.__class__.__name__})") from None
    if not lines or not lines[0].startswith("TRT-"):
        raise ArtifactError(f"{path}:1: not a TensorRT calibration cache (no 'TRT-<version>-<algorithm>' header)")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        try:
            scale = decode_scale(value.strip())
        except ValueError:
            scale = float("nan")
        if not sep or not name or not np.isfinite(scale) or scale < 0:
            raise ArtifactError(f"{path}:{number}: malformed cache line {line[:60]!r}")
        scales[name] = scale
    return lines[0], scales


def scales_from_ranges(ranges) -> dict[str, float]:
    """ONNX Runtime ``TensorsData`` → symmetric INT8 scales (amax / 127) per tensor."""
    out = {}
    for name, data in ranges.data.items():
        low, high = (float(np.max(np.abs(v))) for v in data.range_value)
        out[name] = max(low, high, 1e-8) / 127.0
    return out
