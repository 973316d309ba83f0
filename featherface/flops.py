"""FLOPs of a detector at one input size, counted once, the same way for every model here.

A multiply-accumulate counts as two FLOPs. Counted: convolutions, linear layers and each deformable conv as the
dense 3×3 convolution it applies (its offset/mask predictors are ordinary convolutions, counted as such).
Not counted: the deformable conv's bilinear sampling, activations, BN (folded at export), pooling and the
element-wise fusions — together a few percent of the total, the same omissions as the usual profilers.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from featherface.layers import DeformConv2d


@dataclass
class FlopCount:
    total: int
    by_type: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def _conv_flops(weight: torch.Tensor, out: torch.Tensor) -> int:
    """2 × (output elements) × (inputs per output: the weight's in_ch/groups × kh × kw)."""
    return 2 * out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]


def count_flops(model: nn.Module, height: int = 640, width: int | None = None) -> FlopCount:
    """FLOPs of one forward pass on a (1, 3, height, width) input (the model is run once, on zeros)."""
    count = FlopCount(0)

    def add(kind: str, flops: int) -> None:
        count.total += flops
        count.by_type[kind] = count.by_type.get(kind, 0) + flops

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, DeformConv2d):
            add("deform_conv", _conv_flops(module.regular_conv.weight, output))
        elif isinstance(module, nn.Conv2d):
            add("conv", _conv_flops(module.weight, output))
        elif isinstance(module, nn.Linear):
            add("linear", 2 * output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, DeformConv2d))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width or height))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return count
