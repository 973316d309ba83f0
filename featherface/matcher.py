"""Anchor matching for training: which prior regresses which face (the RetinaFace rule)."""
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from featherface.box_coder import encode_boxes, encode_landmarks


@dataclass(frozen=True)
class MatchConfig:
    """Published settings: IoU 0.35 for a positive, and every face with a prior at IoU ≥ 0.2 gets its best one."""

    iou_threshold: float = 0.35
    min_best_iou: float = 0.2


def match(boxes: Tensor, landmarks: Tensor, labels: Tensor, priors: Tensor, variances, config: MatchConfig = MatchConfig()
          ) -> tuple[Tensor, Tensor, Tensor]:
    """One image: faces (F, 4) corners, (F, 10) points, (F,) labels (1: has landmarks, -1: boxes only) →
    per-prior box targets (A, 4), landmark targets (A, 10) and labels (A,) with 0 for background."""
    num = priors.shape[0]
    overlaps = box_iou(boxes, box_convert(priors, "cxcywh", "xyxy"))  # (F, A)
    best_prior_iou, best_prior = overlaps.max(dim=1)
    valid = best_prior_iou >= config.min_best_iou
    if not valid.any():  # also no faces at all
        return priors.new_zeros(num, 4), priors.new_zeros(num, 10), torch.zeros(num, dtype=torch.long)
    best_truth_iou, best_truth = overlaps.max(dim=0)
    best_truth_iou[best_prior[valid]] = 2.0  # a face's best prior stays positive whatever its IoU
    for face in torch.nonzero(valid).squeeze(1).tolist():  # and regresses that face
        best_truth[best_prior[face]] = face
    target_labels = labels[best_truth].clone()
    target_labels[best_truth_iou < config.iou_threshold] = 0
    return (encode_boxes(boxes[best_truth], priors, variances),
            encode_landmarks(landmarks[best_truth], priors, variances), target_labels)
