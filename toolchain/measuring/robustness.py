"""Accuracy under camera shifts: a stage against its reference on the same shifted images.

For each shift (``featherface.data.shifts``) both detectors see the same corrupted copy of every val image;
the row keeps each one's AP, the difference, whether it stays inside the INT8 budget, and how well the
stage's confident detections agree with the reference's (detection F1 at IoU 0.5, score ≥ 0.5).
"""
from pathlib import Path
from typing import Callable

import numpy as np

from featherface.evaluation import SETTINGS
from featherface.postprocess import Detections
from toolchain.measuring.compare import detection_f1
from toolchain.measuring.evaluate import evaluate_detector

BUDGET = {"easy": -0.005, "medium": -0.005, "hard": -0.010}  # ΔAP an INT8 graph may lose, per setting
CONFIDENT = 0.5

Detector = Callable[[np.ndarray], Detections]


def _recording(detect: Detector, store: list) -> Detector:
    def run(image: np.ndarray) -> Detections:
        dets = detect(image)
        keep = dets.scores >= CONFIDENT
        store.append(Detections(dets.boxes[keep], dets.scores[keep], dets.landmarks[keep]))
        return dets
    return run


def evaluate_shift(detect: Detector, data: Path, shift: str | None, seed: int = 0) -> tuple[dict, list[Detections]]:
    """AP on the shifted folder (``None``: unshifted) and the confident detections per image (folder order)."""
    store: list[Detections] = []
    result = evaluate_detector(_recording(detect, store), data, shift=shift, seed=seed)
    return result.ap, store


def compare_shift(reference: tuple[dict, list[Detections]], candidate: tuple[dict, list[Detections]]) -> dict:
    """ΔAP, budget verdict and detection agreement of ``candidate`` against ``reference`` (same images)."""
    ref_ap, ref_dets = reference
    ap, dets = candidate
    delta = {k: ap[k] - ref_ap[k] for k in SETTINGS}
    f1 = float(np.mean([detection_f1(r, d) for r, d in zip(ref_dets, dets)])) if dets else None
    return {"ap": ap, "reference": ref_ap, "delta": delta,
            "within_budget": all(delta[k] >= BUDGET[k] for k in SETTINGS), "det_f1": f1}


def shift_deltas(candidate: Detector, reference: Detector, data: Path, shifts: tuple[str, ...],
                 seed: int = 0, echo: Callable[[str], None] = lambda m: None) -> dict[str, dict]:
    """``compare_shift`` for each shift."""
    out = {}
    for shift in shifts:
        echo(f"  shift {shift}")
        out[shift] = compare_shift(evaluate_shift(reference, data, shift, seed),
                                   evaluate_shift(candidate, data, shift, seed))
    return out
