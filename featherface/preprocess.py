"""Image reading and the network's input convention: BGR, minus (104, 117, 123), CHW float32."""
from pathlib import Path

import cv2
import numpy as np

from featherface.errors import ImageError

MEAN_BGR = (104.0, 117.0, 123.0)
CHANNEL_ORDER = "BGR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as BGR uint8 (H, W, 3); unreadable files raise ``ImageError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: cannot decode image")
    return image


def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8 → (3, H, W) float32 with the mean subtracted (no scaling, no resizing)."""
    x = image_bgr.astype(np.float32) - np.asarray(MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def list_images(folder: str | Path) -> list[Path]:
    """Images under ``folder`` (recursively), sorted for a reproducible order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
