"""From raw head outputs to final detections: decode, score threshold, top-k, NMS, keep-top-k."""
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from featherface.box_coder import decode_boxes, decode_landmarks
from featherface.priors import PriorConfig, prior_boxes


@dataclass(frozen=True)
class PostprocessConfig:
    """Defaults are the WIDER FACE evaluation settings of the reference code."""

    score_threshold: float = 0.02
    top_k: int = 5000
    nms_threshold: float = 0.4
    keep_top_k: int = 750


@dataclass
class Detections:
    """Pixel-space detections of one image, sorted by descending score."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    scores: np.ndarray  # (K,)
    landmarks: np.ndarray  # (K, 10) x, y for eyes, nose, mouth corners

    def __len__(self) -> int:
        return len(self.scores)


def postprocess(
    loc: torch.Tensor | np.ndarray,
    conf: torch.Tensor | np.ndarray,
    landms: torch.Tensor | np.ndarray,
    priors_config: PriorConfig,
    image_size: tuple[int, int],
    config: PostprocessConfig = PostprocessConfig(),
) -> list[Detections]:
    """Batched head outputs (N, A, ·) for inputs of ``image_size`` (H, W) → one ``Detections`` per image."""
    loc, conf, landms = (torch.as_tensor(t, dtype=torch.float32) for t in (loc, conf, landms))
    height, width = image_size
    priors = prior_boxes(priors_config, height, width)
    if priors.shape[0] != loc.shape[1]:
        raise ValueError(f"{loc.shape[1]} predictions but {priors.shape[0]} priors for a {height}×{width} input")
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(loc, priors, priors_config.variances) * scale.repeat(2)
    points = decode_landmarks(landms, priors, priors_config.variances) * scale.repeat(5)
    results = []
    for b in range(loc.shape[0]):
        scores = conf[b, :, 1]
        idx = torch.nonzero(scores > config.score_threshold).squeeze(1)
        idx = idx[torch.argsort(scores[idx], descending=True, stable=True)][: config.top_k]
        keep = batched_nms(boxes[b, idx], scores[idx], torch.zeros_like(idx), config.nms_threshold)
        idx = idx[keep[: config.keep_top_k]]
        results.append(Detections(boxes[b, idx].numpy(), scores[idx].numpy(), points[b, idx].numpy()))
    return results
