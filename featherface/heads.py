"""Per-level 1×1 prediction heads and the shared output contract of every detector."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.priors import PriorConfig


class Head(nn.Module):
    """1×1 conv → (N, H·W·anchors, values); the flattening order matches the priors."""

    def __init__(self, in_ch: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_ch, anchors * values, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).flatten(1).unflatten(1, (-1, self.values))


def head_list(in_ch: int, anchors: int, values: int, levels: int = 3) -> nn.ModuleList:
    return nn.ModuleList(Head(in_ch, anchors, values) for _ in range(levels))


class Detector(nn.Module):
    """Base of all face detectors here.

    ``forward(input)`` returns ``loc (N, A, 4)``, ``conf (N, A, 2)`` and ``landms (N, A, 10)``;
    ``conf`` holds logits in training mode and softmax probabilities in eval mode.
    Subclasses build ``ClassHead``/``BboxHead``/``LandmarkHead`` and implement ``features``.
    """

    priors = PriorConfig()
    anchors_per_cell = 2
    expected_params: int | None = None
    params_tolerance = 0.0  # relative; a design target rather than a reproduced checkpoint allows slack

    def _make_heads(self, channels: int) -> None:
        self.ClassHead = head_list(channels, self.anchors_per_cell, 2)
        self.BboxHead = head_list(channels, self.anchors_per_cell, 4)
        self.LandmarkHead = head_list(channels, self.anchors_per_cell, 10)

    def features(self, x: Tensor) -> Sequence[Tensor]:
        raise NotImplementedError

    def forward(self, input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.features(input)
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landms


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
