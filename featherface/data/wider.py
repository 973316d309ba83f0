"""Readers for WIDER FACE annotations.

* the official split format (``wider_face_*_bbx_gt.txt``): image path, face count, then one line per
  face ``x y w h blur expression illumination invalid occlusion pose``;
* the RetinaFace training format (``label.txt``): ``# path`` then one line per face
  ``x y w h`` + five ``(x, y, visibility)`` landmarks + a score, with ``-1`` for absent landmarks.

Both skip blank lines and accept short attribute lists, and both reject malformed numbers with
``file:line`` in the message.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featherface.errors import LabelError


@dataclass
class FaceRecord:
    """Annotations of one image; boxes are (x, y, w, h) in pixels."""

    path: str
    boxes: np.ndarray
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 10), np.float32))
    attributes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int64))

    @property
    def has_landmarks(self) -> np.ndarray:
        return (self.landmarks >= 0).any(axis=1) if len(self.landmarks) else np.zeros(len(self.boxes), bool)


def _numbers(path: Path, lineno: int, text: str, minimum: int) -> list[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise LabelError(f"{path}:{lineno}: malformed number in '{text.strip()[:80]}'") from None
    if len(values) < minimum:
        raise LabelError(f"{path}:{lineno}: expected at least {minimum} numbers, got {len(values)}")
    return values


def _lines(path: Path) -> list[tuple[int, str]]:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read label file ({exc.__class__.__name__})") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if line.strip()]


def read_wider_gt(path: str | Path) -> list[FaceRecord]:
    """Parse an official ``wider_face_*_bbx_gt.txt``; images with 0 faces carry one all-zero line, skipped."""
    path = Path(path)
    lines = _lines(path)
    records, i = [], 0
    while i < len(lines):
        lineno, name = lines[i]
        if i + 1 >= len(lines):
            raise LabelError(f"{path}:{lineno}: image '{name}' has no face count")
        count_no, count_text = lines[i + 1]
        if not count_text.isdigit():
            raise LabelError(f"{path}:{count_no}: expected a face count for '{name}', got '{count_text[:40]}'")
        count = int(count_text)
        rows = lines[i + 2 : i + 2 + max(count, 1)]
        if len(rows) < max(count, 1):
            raise LabelError(f"{path}:{count_no}: '{name}' announces {count} faces, file ends early")
        boxes, attrs = [], []
        for row_no, row in rows[:count]:
            values = _numbers(path, row_no, row, 4)
            boxes.append(values[:4])
            attrs.append((values[4:10] + [0.0] * 6)[:6])
        records.append(FaceRecord(name, np.asarray(boxes, np.float32).reshape(-1, 4),
                                  attributes=np.asarray(attrs, np.int64).reshape(-1, 6)))
        i += 2 + max(count, 1)
    return records


def read_retinaface_labels(path: str | Path) -> list[FaceRecord]:
    """Parse a RetinaFace ``label.txt``; landmarks come back as (n, 10) with -1 where absent."""
    path = Path(path)
    records: list[FaceRecord] = []
    boxes: list[list[float]] = []
    points: list[list[float]] = []

    def close() -> None:
        if records:
            records[-1].boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            records[-1].landmarks = np.asarray(points, np.float32).reshape(-1, 10)

    for lineno, line in _lines(path):
        if line.startswith("#"):
            close()
            boxes, points = [], []
            records.append(FaceRecord(line[1:].strip(), np.zeros((0, 4), np.float32)))
            continue
        if not records:
            raise LabelError(f"{path}:{lineno}: face line before any '# image' line")
        values = _numbers(path, lineno, line, 4)
        boxes.append(values[:4])
        if len(values) >= 18:
            lm = [values[4 + 3 * k + j] for k in range(5) for j in (0, 1)]
            points.append(lm if all(v >= 0 for v in lm) else [-1.0] * 10)
        else:
            points.append([-1.0] * 10)
    close()
    return records
