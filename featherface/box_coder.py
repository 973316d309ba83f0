"""SSD-style box and landmark decoding against priors (the inverse of the training-time encoding)."""
from typing import Sequence

import torch
from torch import Tensor


def decode_boxes(loc: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """(…, A, 4) offsets → normalised (x1, y1, x2, y2)."""
    centers = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    return torch.cat([top_left, top_left + sizes], dim=-1)


def decode_landmarks(pre: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """(…, A, 10) offsets → five normalised (x, y) points."""
    points = pre.unflatten(-1, (5, 2))
    decoded = priors[..., None, :2] + points * variances[0] * priors[..., None, 2:]
    return decoded.flatten(-2)


def encode_boxes(matched: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """Normalised corner boxes (A, 4) matched to priors → regression targets (inverse of ``decode_boxes``)."""
    centers = (matched[:, :2] + matched[:, 2:]) / 2
    sizes = (matched[:, 2:] - matched[:, :2]).clamp(min=1e-6)
    return torch.cat([(centers - priors[:, :2]) / (variances[0] * priors[:, 2:]),
                      torch.log(sizes / priors[:, 2:]) / variances[1]], dim=1)


def encode_landmarks(matched: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    """Normalised points (A, 10) → regression targets (inverse of ``decode_landmarks``)."""
    points = matched.unflatten(-1, (5, 2))
    return ((points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])).flatten(-2)
