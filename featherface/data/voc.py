"""Pascal VOC XML annotations (one file per image) as face records.

Every object is taken as a face, whatever its class name (the face-mask set labels faces by mask state). Text
outside the tags that hold numbers — some published files carry stray paths inside ``<bndbox>`` — is ignored;
a file that is not well-formed XML, or a box without four numbers, is rejected with ``file:line``.
"""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from featherface.data.wider import FaceRecord
from featherface.errors import LabelError

_CORNERS = ("xmin", "ymin", "xmax", "ymax")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _box_line(text: str, k: int) -> int:
    """Line of the k-th ``<bndbox>`` (ElementTree keeps no source lines)."""
    at = -1
    for _ in range(k + 1):
        at = text.find("<bndbox", at + 1)
    return text.count("\n", 0, max(at, 0)) + 1


def read_voc_file(path: str | Path) -> FaceRecord:
    """One annotation file → a record whose boxes are (x, y, w, h) in pixels and whose path is ``<filename>``."""
    path = Path(path)
    try:
        text = path.read_text()
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise LabelError(f"{path}:{exc.position[0]}: not well-formed XML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise LabelError(f"{path}: no <filename>")
    boxes = []
    for k, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float((box.findtext(tag) or "").strip()) for tag in _CORNERS)
        except (AttributeError, ValueError):
            raise LabelError(f"{path}:{_box_line(text, k)}: object {k + 1} needs a <bndbox> with numeric "
                             f"{', '.join(_CORNERS)}") from None
        if x1 <= x0 or y1 <= y0:
            raise LabelError(f"{path}:{_box_line(text, k)}: empty box ({x0:g}, {y0:g}, {x1:g}, {y1:g})")
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    return FaceRecord(filename, np.asarray(boxes, np.float32).reshape(-1, 4))


def read_voc_folder(annotations: str | Path, images: str | Path) -> list[FaceRecord]:
    """Every ``*.xml`` in ``annotations``, sorted; each record points at its image in ``images`` — the file
    ``<filename>`` names, or one with its stem and another image suffix (sets get re-encoded)."""
    annotations, images = Path(annotations), Path(images)
    files = sorted(annotations.glob("*.xml"))
    if not files:
        raise LabelError(f"{annotations}: no *.xml annotation files")
    present = ({p.stem: p.name for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
               if images.is_dir() else {})
    records = []
    for f in files:
        record = read_voc_file(f)
        stem = Path(record.path).stem
        if not (images / record.path).is_file() and stem in present:
            record.path = present[stem]
        records.append(record)
    return records
