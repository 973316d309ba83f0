"""The official WIDER FACE easy/medium/hard protocol, restricted to the images actually evaluated.

Same computation as the official MATLAB/Python tools: scores normalised to [0, 1] over all
detections, a detection is a true positive at IoU ≥ 0.5 (pixel-inclusive, ``+1`` areas) with a
kept face, matches to faces outside the setting are ignored, precision/recall accumulated over
1000 score thresholds, then VOC AP.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torchvision.ops import box_iou

from featherface.errors import LabelError

SETTINGS = ("easy", "medium", "hard")
THRESHOLDS = 1000


@dataclass
class GroundTruth:
    """Faces of one image as (x, y, w, h) and, per setting, the 0-based indices of faces that count."""

    boxes: np.ndarray
    keep: dict[str, np.ndarray]


def load_ground_truth(gt_dir: str | Path) -> dict[str, GroundTruth]:
    """Read the official ``.mat`` files; keys are ``"<event>/<image name without .jpg>"``."""
    gt_dir = Path(gt_dir)

    def load(name: str) -> dict:
        path = gt_dir / name
        try:
            return scipy.io.loadmat(str(path))
        except (OSError, ValueError, TypeError) as exc:
            raise LabelError(f"{path}: cannot read ground truth ({exc.__class__.__name__})") from None

    face = load("wider_face_val.mat")
    per_setting = {s: load(f"wider_{s}_val.mat")["gt_list"] for s in SETTINGS}
    out: dict[str, GroundTruth] = {}
    for e, event in enumerate(face["event_list"]):
        event_name = str(event[0][0])
        for j, file in enumerate(face["file_list"][e][0]):
            keep = {s: per_setting[s][e][0][j][0].reshape(-1).astype(np.int64) - 1 for s in SETTINGS}
            boxes = face["face_bbx_list"][e][0][j][0].astype(np.float64).reshape(-1, 4)
            out[f"{event_name}/{file[0][0]}"] = GroundTruth(boxes, keep)
    return out


def _iou_inclusive(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """IoU with inclusive pixel ends ((x2 - x1 + 1) areas): plain IoU of boxes grown by one pixel."""

    def corners(b: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(b, dtype=torch.float64)
        return torch.cat([t[:, :2], t[:, :2] + t[:, 2:] + 1], dim=1)

    return box_iou(corners(a_xywh), corners(b_xywh)).numpy()


def _image_pr(pred: np.ndarray, gt: GroundTruth, setting: str, iou_thresh: float) -> np.ndarray:
    """(THRESHOLDS, 2) counts of [proposals, recalled faces] of one image at each normalised-score threshold."""
    ignore = np.ones(len(gt.boxes), bool)
    ignore[gt.keep[setting]] = False
    overlaps = _iou_inclusive(pred[:, :4], gt.boxes)
    best, best_gt = overlaps.max(axis=1), overlaps.argmax(axis=1)
    matched = best >= iou_thresh
    proposal = ~(matched & ignore[best_gt])  # detections of ignored faces are neither TP nor FP
    hits = matched & ~ignore[best_gt]
    first_hit = np.zeros(len(pred), bool)
    _, first = np.unique(np.where(hits, best_gt, -1), return_index=True)
    first_hit[first] = True
    first_hit &= hits
    recalled = np.cumsum(first_hit)
    proposals = np.cumsum(proposal)
    thresholds = 1 - (np.arange(THRESHOLDS) + 1) / THRESHOLDS
    last = np.searchsorted(-pred[:, 4], -thresholds, side="right") - 1  # last index with score >= t
    out = np.zeros((THRESHOLDS, 2))
    valid = last >= 0
    out[valid, 0] = proposals[last[valid]]
    out[valid, 1] = recalled[last[valid]]
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, summed where recall changes (VOC 2010+)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class EvalResult:
    ap: dict[str, float]
    images: int
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # setting → (recall, precision)

    def as_dict(self) -> dict:
        return {**self.ap, "images": self.images}


def evaluate(predictions: dict[str, np.ndarray], ground_truth: dict[str, GroundTruth],
             iou_thresh: float = 0.5) -> EvalResult:
    """Score ``predictions`` (key → (K, 5) ``x y w h score``) over exactly the keys given.

    Each key must exist in ``ground_truth``; faces of images without detections still count.
    """
    unknown = sorted(set(predictions) - set(ground_truth))
    if unknown:
        raise LabelError(f"{len(unknown)} evaluated images have no ground truth (e.g. {unknown[0]})")
    preds = {}
    for key, p in predictions.items():
        p = np.asarray(p, np.float64).reshape(-1, 5)
        preds[key] = p[np.argsort(-p[:, 4], kind="stable")]
    scores = np.concatenate([p[:, 4] for p in preds.values()]) if preds else np.zeros(0)
    if len(scores):
        lo, hi = min(scores.min(), 1.0), max(scores.max(), 0.0)
        span = hi - lo if hi > lo else 1.0
        for p in preds.values():
            p[:, 4] = (p[:, 4] - lo) / span
    ap, curves = {}, {}
    for setting in SETTINGS:
        pr = np.zeros((THRESHOLDS, 2))
        faces = 0
        for key, p in preds.items():
            gt = ground_truth[key]
            faces += len(gt.keep[setting])
            if len(gt.boxes) and len(p):
                pr += _image_pr(p, gt, setting, iou_thresh)
        precision = np.divide(pr[:, 1], pr[:, 0], out=np.zeros(THRESHOLDS), where=pr[:, 0] > 0)
        recall = pr[:, 1] / max(faces, 1)
        ap[setting] = voc_ap(recall, precision)
        curves[setting] = (recall, precision)
    return EvalResult(ap, len(preds), curves)
