"""One comparator for every stage: tensor drift and detection agreement against a reference runner."""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from featherface.errors import FeatherFaceError
from featherface.postprocess import Detections, PostprocessConfig, postprocess
from featherface.preprocess import list_images, preprocess, read_image
from toolchain.backends.base import OUTPUT_NAMES, Runner

# Exported FP32 graphs must match PyTorch this closely (probabilities vs. regression offsets).
FP32_TOLERANCES = {"loc": 1e-3, "conf": 1e-4, "landms": 1e-3}
CHECK_SHAPES = ((1, 320, 320), (1, 480, 640), (4, 640, 640), (1, 1024, 768))


@dataclass
class Drift:
    output: str
    max_abs: float
    cosine: float


def tensor_drift(reference: tuple[np.ndarray, ...], candidate: tuple[np.ndarray, ...]) -> list[Drift]:
    out = []
    for name, a, b in zip(OUTPUT_NAMES, reference, candidate):
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        denom = np.linalg.norm(a64) * np.linalg.norm(b64)
        out.append(Drift(name, float(np.abs(a64 - b64).max()), float(a64 @ b64 / denom) if denom else 1.0))
    return out


def matched_pairs(reference: Detections, candidate: Detections, iou: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matches at ``iou`` as (reference index, candidate index), candidates in score order."""
    if len(reference) == 0 or len(candidate) == 0:
        return []
    overlaps = box_iou(torch.as_tensor(candidate.boxes), torch.as_tensor(reference.boxes)).numpy()
    taken = np.zeros(len(reference), bool)
    pairs = []
    for i, row in enumerate(overlaps):  # candidates are sorted by score
        row = np.where(taken, -1.0, row)
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
            pairs.append((j, i))
    return pairs


def detection_f1(reference: Detections, candidate: Detections, iou: float = 0.5) -> float:
    """F1 of ``candidate`` against ``reference`` with greedy one-to-one matching at ``iou``."""
    if len(reference) == 0 and len(candidate) == 0:
        return 1.0
    return 2 * len(matched_pairs(reference, candidate, iou)) / (len(reference) + len(candidate))


def sample_batches(images_dir: str | Path, shapes=CHECK_SHAPES) -> list[np.ndarray]:
    """Real images resized to each (batch, H, W) in ``shapes``, preprocessed: inputs for numeric checks."""
    paths = list_images(images_dir)
    if not paths:
        raise FeatherFaceError(f"{images_dir}: no images for the numeric check")
    batches = []
    for i, (batch, height, width) in enumerate(shapes):
        picks = [paths[(i * 4 + j) % len(paths)] for j in range(batch)]
        batches.append(np.stack([preprocess(cv2.resize(read_image(p), (width, height))) for p in picks]))
    return batches


@dataclass
class Comparison:
    shape: tuple[int, ...]
    drift: list[Drift]
    det_f1: float


def compare_runners(reference: Runner, candidate: Runner, batches: list[np.ndarray],
                    config: PostprocessConfig = PostprocessConfig(score_threshold=0.5)) -> list[Comparison]:
    results = []
    for batch in batches:
        ref, cand = reference.infer(batch), candidate.infer(batch)
        size = batch.shape[2:]
        ref_dets = postprocess(*ref, reference.priors, size, config)
        cand_dets = postprocess(*cand, candidate.priors, size, config)
        f1 = float(np.mean([detection_f1(r, c) for r, c in zip(ref_dets, cand_dets)]))
        results.append(Comparison(batch.shape, tensor_drift(ref, cand), f1))
    return results


def worst_violation(comparisons: list[Comparison], tolerances: dict[str, float],
                    min_f1: float = 0.95) -> str | None:
    """A one-line description of the worst breach of ``tolerances`` (ratio to its limit), or None."""
    worst, message = 1.0, None
    for c in comparisons:
        for d in c.drift:
            ratio = d.max_abs / tolerances[d.output]
            if ratio > worst:
                worst, message = ratio, (f"output '{d.output}' differs by {d.max_abs:.3g} "
                                         f"(limit {tolerances[d.output]:g}) at input {c.shape}")
        if message is None and c.det_f1 < min_f1:
            message = f"detections agree only at F1 {c.det_f1:.3f} (< {min_f1}) at input {c.shape}"
    return message
