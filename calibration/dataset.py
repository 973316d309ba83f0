"""Calibration sets: a reproducible sample of images, preprocessed exactly as at inference, with a manifest."""
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from featherface.data.shifts import SHIFTS, apply_shift
from featherface.errors import FeatherFaceError, ImageError
from featherface.preprocess import list_images, preprocess, read_image
from toolchain.building.artifacts import sha256_file, write_json


@dataclass
class CalibrationSet:
    """Chosen image files and the (H, W) they are letterboxed to; ``skipped`` lists unreadable files.

    With ``shifts`` each file also appears once per shift, corrupted in memory (``featherface.data.shifts``,
    seeded by ``shift_seed`` — not the seed the shifted evaluation sets use), so the ranges and the noise rounds
    see what a camera unlike the calibration photos produces. Entries run file-major: all originals first.
    """

    root: Path
    files: list[Path]
    shape: tuple[int, int]
    seed: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    shifts: tuple[str, ...] = ()
    shift_seed: int = 1
    originals: bool = True  # False: only the shifted copies (one shift's noise judged on its own)

    def __len__(self) -> int:
        return len(self.files) * (int(self.originals) + len(self.shifts))

    def tensor(self, index: int) -> np.ndarray:
        copy, file = divmod(index, len(self.files))
        image = read_image(self.files[file])
        if self.originals and copy == 0:
            return letterbox(image, self.shape)
        key = self.files[file].relative_to(self.root).with_suffix("").as_posix()
        image, scale = apply_shift(self.shifts[copy - int(self.originals)], image, key, self.shift_seed)
        return letterbox(image, self.shape, upscale=scale == 1.0)  # a low-resolution copy stays small

    def subsets(self) -> list["CalibrationSet"]:
        """The originals and each shift's copies as separate sets (noise is judged per subset)."""
        plain = replace(self, shifts=())
        return [plain] + [replace(self, shifts=(shift,), originals=False) for shift in self.shifts]

    def manifest(self) -> dict:
        return {
            "root": str(self.root), "shape": list(self.shape), "seed": self.seed, "count": len(self.files),
            "shifts": list(self.shifts), "shift_seed": self.shift_seed,
            "files": [{"path": p.relative_to(self.root).as_posix(), "sha256": sha256_file(p)} for p in self.files],
            "skipped": [{"path": p.relative_to(self.root).as_posix(), "reason": r} for p, r in self.skipped],
        }

    def write_manifest(self, path: str | Path) -> None:
        write_json(path, self.manifest())


def letterbox(image_bgr: np.ndarray, shape: tuple[int, int], upscale: bool = True) -> np.ndarray:
    """Fit the image into (H, W) keeping its aspect ratio, pad with the mean colour, preprocess → (3, H, W).

    Faces keep their proportions, so activation ranges match those seen at inference; ``upscale=False``
    leaves a smaller image at its own size (padded).
    """
    height, width = shape
    scale = min(height / image_bgr.shape[0], width / image_bgr.shape[1])
    scale = scale if upscale else min(scale, 1.0)
    h, w = max(1, round(image_bgr.shape[0] * scale)), max(1, round(image_bgr.shape[1] * scale))
    out = np.zeros((3, height, width), np.float32)  # zero after mean subtraction = the mean colour
    out[:, :h, :w] = preprocess(cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def build_calibration_set(images_dir: str | Path, count: int | None = None, seed: int = 0,
                          shape: tuple[int, int] = (640, 640), min_images: int = 8,
                          shifts: tuple[str, ...] = ()) -> CalibrationSet:
    """Pick ``count`` images (all when None) with ``seed``; unreadable ones are skipped and counted; each
    picked image is also used once per name in ``shifts``.

    Raises when the folder is empty, a shift is unknown, or fewer than ``min_images`` readable images remain.
    """
    unknown = sorted(set(shifts) - set(SHIFTS))
    if unknown:
        raise FeatherFaceError(f"unknown shift(s) {', '.join(unknown)} (known: {', '.join(SHIFTS)})")
    root = Path(images_dir)
    if not root.is_dir():
        raise FeatherFaceError(f"{root}: calibration folder not found")
    candidates = list_images(root)
    if not candidates:
        raise FeatherFaceError(f"{root}: no images in the calibration folder")
    random.Random(seed).shuffle(candidates)
    files, skipped = [], []
    for path in candidates:
        if count is not None and len(files) == count:
            break
        try:
            read_image(path)
        except ImageError as exc:
            skipped.append((path, str(exc).split(": ", 1)[-1]))
        else:
            files.append(path)
    if len(files) < min_images:
        raise FeatherFaceError(f"{root}: only {len(files)} readable calibration images "
                               f"({len(skipped)} skipped), need at least {min_images}")
    return CalibrationSet(root, sorted(files), shape, seed, skipped, tuple(shifts))
