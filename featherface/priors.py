"""Anchor (prior) boxes: two square anchors per cell on the stride-8/16/32 maps."""
import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PriorConfig:
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)

    def as_dict(self) -> dict:
        return {"min_sizes": [list(m) for m in self.min_sizes], "steps": list(self.steps), "variances": list(self.variances)}

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        return cls(tuple(tuple(int(v) for v in m) for m in d["min_sizes"]), tuple(int(s) for s in d["steps"]),
                   tuple(float(v) for v in d["variances"]))

    def num_priors(self, height: int, width: int) -> int:
        return sum(math.ceil(height / s) * math.ceil(width / s) * len(m) for s, m in zip(self.steps, self.min_sizes))


def prior_boxes(config: PriorConfig, height: int, width: int) -> Tensor:
    """(A, 4) priors as normalised (cx, cy, w, h), ordered level → row → column → size like the heads' outputs.

    Computed in float64 and rounded once, matching the reference values bit for bit.
    """
    levels = []
    for step, sizes in zip(config.steps, config.min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        n = len(sizes)
        sw = torch.tensor([s / width for s in sizes], dtype=torch.float64)
        sh = torch.tensor([s / height for s in sizes], dtype=torch.float64)
        level = torch.stack(
            [gx[..., None].expand(-1, -1, n), gy[..., None].expand(-1, -1, n),
             sw.expand(rows, cols, n), sh.expand(rows, cols, n)], dim=-1)
        levels.append(level.reshape(-1, 4))
    return torch.cat(levels).to(torch.float32)
