"""Camera shifts: deterministic image corruptions applied in memory to any WIDER folder (nothing stored).

The set follows the corruption benchmarks for classification and detection — Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019, ImageNet-C:
noise, blur, contrast, JPEG, pixelation) and Michaelis et al., "Benchmarking Robustness in Object Detection"
(2019, COCO-C / Pascal-C) — plus what edge face cameras do that those leave out: grayscale/IR sensors, low light
(dark gamma with sensor noise, as in the ExDark low-light set, Loh & Chan, CVIU 2019) and low resolution.
Each shift is seeded per image (seed + image key), so a shifted set is the same in every run; a shift that
changes geometry reports its ``scale`` and the ground truth is scaled with it.
"""
import zlib
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np


@dataclass(frozen=True)
class Shift:
    name: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    scale: float = 1.0  # image (and ground-truth) scale factor
    description: str = ""


def _grayscale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _low_light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure cut to ~25–35 %, gamma 1.5 (darker shadows), then read noise σ = 6 grey levels."""
    x = image.astype(np.float32) / 255.0
    dark = np.power(x * rng.uniform(0.25, 0.35), 1.5) * 255.0
    return np.clip(dark + rng.normal(0.0, 6.0, image.shape), 0, 255).astype(np.uint8)


def _motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 9-pixel line kernel at a random angle (camera shake)."""
    length = 9
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(image, -1, kernel / kernel.sum())


def _defocus_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A disk of radius 3 (ImageNet-C defocus, severity ~2)."""
    radius = 3
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (x * x + y * y <= radius * radius).astype(np.float32)
    return cv2.filter2D(image, -1, disk / disk.sum())


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(20, 31))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast cut to 40 % around the mean (ImageNet-C contrast, haze)."""
    mean = image.reshape(-1, 3).mean(axis=0)
    return np.clip((image.astype(np.float32) - mean) * 0.4 + mean, 0, 255).astype(np.uint8)


def _half_resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * 0.5)), max(1, round(h * 0.5))), interpolation=cv2.INTER_AREA)


SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("grayscale", _grayscale, description="3-channel grayscale (monochrome / IR sensors)"),
    Shift("low-light", _low_light, description="25–35 % exposure, gamma 1.5, read noise σ 6"),
    Shift("motion-blur", _motion_blur, description="9 px line kernel, random angle"),
    Shift("defocus-blur", _defocus_blur, description="disk kernel, radius 3 px"),
    Shift("jpeg", _jpeg, description="JPEG quality 20–30"),
    Shift("contrast", _contrast, description="contrast ×0.4 around the mean"),
    Shift("half-resolution", _half_resolution, scale=0.5, description="half width and height (boxes scaled)"),
)}


def shift_rng(key: str, seed: int) -> np.random.Generator:
    """The per-image generator: the same image and seed always get the same corruption."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def apply_shift(name: str, image_bgr: np.ndarray, key: str, seed: int = 0) -> tuple[np.ndarray, float]:
    """(shifted image, scale); unknown names raise ``KeyError`` listing the known ones."""
    if name not in SHIFTS:
        raise KeyError(f"unknown shift '{name}' (known: {', '.join(SHIFTS)})")
    shift = SHIFTS[name]
    return shift.apply(image_bgr, shift_rng(key, seed)), shift.scale
