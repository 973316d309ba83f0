"""MultiBox loss for the detector family: box and landmark smooth-L1, confidence cross-entropy with hard
negative mining (the published recipe: 7 negatives per positive, box loss weighted ×2)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.matcher import MatchConfig, match


@dataclass(frozen=True)
class LossConfig:
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0
    match: MatchConfig = MatchConfig()


@dataclass
class LossParts:
    loc: Tensor
    conf: Tensor
    landmarks: Tensor
    total: Tensor


class MultiBoxLoss(nn.Module):
    def __init__(self, variances, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.variances, self.config = variances, config

    def forward(self, loc: Tensor, conf_logits: Tensor, landms: Tensor, priors: Tensor,
                targets: list[Tensor]) -> LossParts:
        """``targets``: per image (F, 15) = corners (4, normalised), points (10), label (1 or -1)."""
        matched = [match(t[:, :4], t[:, 4:14], t[:, 14].long(), priors, self.variances, self.config.match)
                   for t in targets]
        loc_t, landm_t, labels = (torch.stack(parts).to(loc.device) for parts in zip(*matched))
        with_points = labels > 0
        n_points = with_points.sum().clamp(min=1)
        loss_landm = F.smooth_l1_loss(landms[with_points].float(), landm_t[with_points], reduction="sum") / n_points
        positive = labels != 0
        n_pos = positive.sum().clamp(min=1)
        loss_loc = F.smooth_l1_loss(loc[positive].float(), loc_t[positive], reduction="sum") / n_pos
        logits = conf_logits.float()
        target = positive.long()
        per_prior = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        mining = per_prior.detach().masked_fill(positive, 0.0)  # hardest negatives: highest background loss
        rank = mining.argsort(dim=1, descending=True).argsort(dim=1)
        n_neg = (self.config.neg_pos_ratio * positive.sum(dim=1, keepdim=True)).clamp(max=positive.shape[1] - 1)
        chosen = positive | (rank < n_neg)
        loss_conf = per_prior[chosen].sum() / n_pos
        total = self.config.loc_weight * loss_loc + loss_conf + loss_landm
        return LossParts(loss_loc, loss_conf, loss_landm, total)
