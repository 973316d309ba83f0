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


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 2.0
    confidence: float = 0.5  # anchors the teacher scores above this as a face get box/landmark targets
    weight: float = 1.0


def distillation_loss(student: tuple[Tensor, Tensor, Tensor], teacher: tuple[Tensor, Tensor, Tensor],
                      config: DistillConfig = DistillConfig(), loc_weight: float = 2.0) -> LossParts:
    """Soft targets on the anchors (Hinton et al. 2015, per anchor as in Chen et al. 2017's detector distillation).

    ``student``: training-mode outputs (loc, conf logits, landms); ``teacher``: eval-mode outputs (loc, conf
    probabilities, landms). Classification: KL(teacher ‖ student) at temperature T, scaled by T², summed over
    anchors; box and landmark regression: smooth-L1 toward the teacher's outputs on the anchors it is confident
    about. Both are normalised by that anchor count, like the MultiBox loss by its positives.
    """
    s_loc, s_logits, s_landms = student
    t_loc, t_prob, t_landms = (t.float() for t in teacher)
    temp = config.temperature
    # log p / T is a valid logit at temperature T: softmax is invariant to the per-anchor constant log Z.
    t_soft = F.softmax(torch.log(t_prob.clamp_min(1e-8)) / temp, dim=-1)
    kl = F.kl_div(F.log_softmax(s_logits.float() / temp, dim=-1), t_soft, reduction="none").sum(-1)
    confident = t_prob[..., 1] > config.confidence
    n = confident.sum().clamp(min=len(t_prob))  # at least one per image: a faceless batch does not blow up
    loss_conf = kl.sum() * temp ** 2 / n
    loss_loc = F.smooth_l1_loss(s_loc[confident].float(), t_loc[confident], reduction="sum") / n
    loss_landm = F.smooth_l1_loss(s_landms[confident].float(), t_landms[confident], reduction="sum") / n
    total = config.weight * (loc_weight * loss_loc + loss_conf + loss_landm)
    return LossParts(loss_loc, loss_conf, loss_landm, total)
