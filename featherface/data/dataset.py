"""Training data: folders with ``images/`` and a RetinaFace ``label.txt`` (boxes + 5 landmarks), an official
``wider_face_*_bbx_gt.txt`` or Pascal VOC ``annotations/*.xml`` (boxes only), augmented reproducibly per
(seed, epoch, index)."""
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from featherface.data.augment import train_transform
from featherface.data.voc import read_voc_folder
from featherface.data.wider import FaceRecord, read_retinaface_labels, read_wider_gt
from featherface.errors import LabelError
from featherface.preprocess import read_image


def find_labels(data_dir: str | Path) -> tuple[list[FaceRecord], Path]:
    """Records and the label file they came from; every listed image must exist under ``images/``."""
    data_dir = Path(data_dir)
    label_txt = data_dir / "label.txt"
    gt = sorted(data_dir.glob("wider_face_*_bbx_gt.txt"))
    if label_txt.is_file():
        path, records = label_txt, read_retinaface_labels(label_txt)
    elif gt:
        path, records = gt[0], read_wider_gt(gt[0])
    elif (data_dir / "annotations").is_dir():
        path = data_dir / "annotations"
        records = read_voc_folder(path, data_dir / "images")
    else:
        raise LabelError(f"{data_dir}: no label.txt, wider_face_*_bbx_gt.txt or annotations/*.xml training labels")
    for record in records:
        if not (data_dir / "images" / record.path).is_file():
            raise LabelError(f"{path}: lists '{record.path}', but {data_dir / 'images' / record.path} does not exist")
    records = [r for r in records if len(r.boxes)]
    if not records:
        raise LabelError(f"{path}: no image with at least one face")
    return records, path


class FaceDataset(Dataset):
    """One or more labelled folders as one set; items are (input, targets, index).

    ``views`` > 0 cycles through that many fixed augmentations per image (epoch e draws view e % views), so
    a teacher's outputs on each view can be computed once and reused; 0 draws new ones every epoch.
    """

    def __init__(self, data_dirs: str | Path | Sequence[str | Path], size: int, seed: int = 0, views: int = 0) -> None:
        dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
        self.items: list[tuple[Path, FaceRecord]] = []
        for data_dir in dirs:
            records, _ = find_labels(data_dir)
            self.items += [(Path(data_dir) / "images", r) for r in records]
        self.size, self.seed, self.views, self.epoch = size, seed, views, 0

    def set_epoch(self, epoch: int) -> None:
        """Each epoch draws new augmentations; the same (seed, epoch) draws the same ones (exact resume)."""
        self.epoch = epoch

    @property
    def view(self) -> int:
        return self.epoch % self.views if self.views else self.epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        root, record = self.items[index]
        image = read_image(root / record.path)
        keep = (record.boxes[:, 2] > 0) & (record.boxes[:, 3] > 0)
        boxes = record.boxes[keep].copy()
        boxes[:, 2:] += boxes[:, :2]
        landmarks = (record.landmarks[keep] if len(record.landmarks) else np.full((len(boxes), 10), -1, np.float32))
        labels = np.where((landmarks >= 0).all(axis=1), 1, -1)
        rng = np.random.default_rng((self.seed, self.view, index))
        return (*train_transform(image, boxes, landmarks.astype(np.float32), labels, self.size, rng), index)


def collate(batch: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    images, targets, indices = zip(*batch)
    return torch.from_numpy(np.stack(images)), [torch.from_numpy(t) for t in targets], torch.tensor(indices)
