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
    if _truncated_jpeg(path):
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker after its last scan)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies the EXIF orientation: pixels as displayed
    if image is None or image.size == 0:
        raise ImageError(f"{path}: cannot decode image")
    return image


def _truncated_jpeg(path: Path) -> bool:
    """A JPEG whose last scan (SOS marker) has no end-of-image marker after it: OpenCV would decode the part that is
    there and fill the rest with grey, silently. Markers cannot occur inside scan data (0xFF is stuffed), and data a
    camera appends after the end-of-image marker does not count as truncation."""
    data = path.read_bytes()
    if data[:2] != b"\xff\xd8":
        return False
    return data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 0)) < 0


def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8 → (3, H, W) float32 with the mean subtracted (no scaling, no resizing)."""
    x = image_bgr.astype(np.float32) - np.asarray(MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def list_images(folder: str | Path) -> list[Path]:
    """Images under ``folder`` (recursively), sorted for a reproducible order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
