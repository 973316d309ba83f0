"""Prune stage: structured channel pruning of a detector with torch-pruning's dependency graph.

torch-pruning follows the coupled channels (depthwise chains, BiFPN fusions and residual adds, CBAM gates,
concatenations) from the autograd graph. Three things it cannot see are told to it here:
* a deformable conv calls ``torchvision.ops.deform_conv2d`` with its weight: one pruner narrows the dense weight
  and the offset/mask predictors' inputs together, and never their 18/9 outputs (the 3×3 sampling grid);
* CBAM's spatial gate reduces over channels and multiplies back: channels pass through it unchanged;
* BiFPN fusion weights are one scalar per input, not per channel: never pruned.
The SSH outputs (channel-shuffled in a fixed (C/2, 2) view) and the heads' outputs (the anchor layout) keep
their widths; ``scope`` says which parts may be narrowed. The result is the same architecture narrower: a channel
config plus plain weights, refitted toward the original on calibration images when given
(``calibration.reconstruct``): on V1 that is the difference between a collapsed detector and a usable start for
fine-tuning.
"""
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

import featherface
from featherface.channels import FORMAT, channel_config
from featherface.errors import ConfigError
from featherface.flops import count_flops
from featherface.heads import Detector, count_parameters
from featherface.layers import SSH, ChannelGate, ChannelShuffle, DeformConv2d, SpatialGate
from calibration.dataset import build_calibration_set
from calibration.reconstruct import LayerFit, following_bn, input_variances, reconstruct, weight_holder
from toolchain.building.artifacts import write_json, write_weights

IMPORTANCE = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),  # Li et al. 2017, filter L1 norm
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn": lambda: tp.importance.BNScaleImportance(),  # Liu et al. 2017, network slimming
}
DATA_IMPORTANCE = ("variance",)  # measured on calibration images: needs layer statistics
TRACE_SIZE = 128  # the dependency graph only needs shapes; a small input traces in a fraction of a second
ROUND_TO = 4  # channel counts in multiples of 4: fine enough steps to meet a FLOPs target, still SIMD-friendly


class _DeformConvPruner(tp.pruner.BasePruningFunc):
    TARGET_MODULES = DeformConv2d

    def prune_out_channels(self, layer: DeformConv2d, idxs) -> DeformConv2d:
        tp.prune_conv_out_channels(layer.regular_conv, idxs)
        return layer

    def prune_in_channels(self, layer: DeformConv2d, idxs) -> DeformConv2d:
        tp.prune_conv_in_channels(layer.regular_conv, idxs)
        for predictor in (layer.offset_conv, layer.modulator_conv):
            if isinstance(predictor, nn.Conv2d):
                tp.prune_conv_in_channels(predictor, idxs)
            else:  # depthwise-separable predictor: depthwise channels, then the pointwise conv's inputs
                tp.prune_depthwise_conv_out_channels(predictor[0], idxs)
                tp.prune_conv_in_channels(predictor[1], idxs)
        return layer

    def get_out_channels(self, layer: DeformConv2d) -> int:
        return layer.regular_conv.out_channels

    def get_in_channels(self, layer: DeformConv2d) -> int:
        return layer.regular_conv.in_channels


class _PassThroughPruner(tp.pruner.BasePruningFunc):
    """Modules whose output channels are their input channels and that hold no per-channel weights."""

    TARGET_MODULES = (SpatialGate, ChannelShuffle)

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        if isinstance(layer, ChannelShuffle):
            raise ConfigError("a channel shuffle's input was pruned: keep the SSH outputs at full width")
        return layer

    prune_in_channels = prune_out_channels  # same function: torch-pruning couples the layer's in and out

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    def get_in_channels(self, layer: nn.Module) -> None:
        return None


class VarianceImportance(tp.importance.Importance):
    """A channel's variance on calibration images times the squared weights that read it (scaled by each reader's
    BatchNorm): the output error its removal leaves once its mean is refitted into the readers' biases — the part
    reconstruction cannot recover. Needs no labels."""

    def __init__(self, model: nn.Module, statistics: dict[str, torch.Tensor]) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.statistics = statistics
        self.bn = following_bn(model)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        total, found = torch.zeros(len(group[0].idxs)), False
        for i, (dep, idxs) in enumerate(group):
            layer, name = dep.layer, self.names.get(dep.layer)
            if dep.pruning_fn.__name__ != "prune_in_channels" or name not in self.statistics:
                continue
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:  # depthwise: the channel goes with its output
                continue
            weight = weight_holder(layer).weight
            bn = self.bn.get(layer)
            if bn is not None:
                weight = weight * (bn.weight / (bn.running_var + bn.eps).sqrt()).view(-1, 1, 1, 1)
            reads = weight.transpose(0, 1).flatten(1).pow(2).sum(1)
            total.scatter_add_(0, torch.as_tensor(group[i].root_idxs), (self.statistics[name] * reads)[idxs])
            found = True
        return total if found else None


def _out_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else weight_holder(layer).out_channels


SCOPES = ("body.stage2", "body.stage3", "bifpn", "ssh")  # what may be narrowed by default


def _kept_widths(model: Detector, scope: tuple[str, ...]) -> list:
    """Layers and parameters whose output width stays: the contract (see the module docstring), the layers
    outside ``scope``, and two kinds measured here to break V1 for almost no FLOPs (val, before fine-tuning):
    CBAM's 4–16-unit MLP bottlenecks and the channel-shuffle blocks that feed the heads (3 % of the FLOPs; 10 %
    of their channels cost −0.21 easy AP)."""
    kept: list = [head.conv1x1 for heads in (model.ClassHead, model.BboxHead, model.LandmarkHead) for head in heads]
    for name, module in model.named_modules():
        if isinstance(module, SSH):  # its concat feeds the shuffle
            kept += [module.conv3X3[0], module.conv5X5_2[0], module.conv7x7_3[0]]
        elif isinstance(module, ChannelGate):
            kept.append(module.mlp[1])
        elif isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], ChannelShuffle):
            kept += [m for m in module if isinstance(m, nn.Conv2d)]
        elif isinstance(module, (nn.Conv2d, DeformConv2d)) and not name.startswith(scope):
            kept.append(module)
    return kept + _fusion_weights(model)


def _fusion_weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1].startswith(("p3_w", "p4_w", "p5_w"))]


def prune_channels(model: Detector, ratio: float, importance: str = "l2", global_pruning: bool = False,
                   scope: tuple[str, ...] = SCOPES,
                   statistics: dict[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
    """Remove ``ratio`` of the channels of every prunable group within ``scope`` (module-name prefixes; in place).

    Returns, for each narrowed conv/linear, the original indices of the output channels it keeps.
    ``statistics`` (``input_variances`` on calibration images) is needed by the data-driven importances.
    """
    if importance not in (*IMPORTANCE, *DATA_IMPORTANCE):
        raise ConfigError(f"unknown importance '{importance}' (choose {', '.join((*IMPORTANCE, *DATA_IMPORTANCE))})")
    if importance in DATA_IMPORTANCE and statistics is None:
        raise ConfigError(f"importance '{importance}' is measured on calibration images: give some")
    model.eval()
    scorer = VarianceImportance(model, statistics) if importance == "variance" else IMPORTANCE[importance]()
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros(1, 3, TRACE_SIZE, TRACE_SIZE), importance=scorer, pruning_ratio=ratio,
        global_pruning=global_pruning, ignored_layers=_kept_widths(model, tuple(scope)), round_to=ROUND_TO,
        root_module_types=[nn.Conv2d, nn.Linear, DeformConv2d],
        unwrapped_parameters=[(p, 0) for p in _fusion_weights(model)],  # declared (and ignored above): no warning
        customized_pruners={DeformConv2d: _DeformConvPruner(), SpatialGate: _PassThroughPruner(),
                            ChannelShuffle: _PassThroughPruner()})
    names = {m: n for n, m in model.named_modules()}
    kept: dict[str, list[int]] = {}
    for group in pruner.step(interactive=True):  # groups come one at a time, indices relative to the layer now
        narrowed = set()
        for dep, idxs in group:
            layer = dep.layer
            if (isinstance(layer, (nn.Conv2d, nn.Linear, DeformConv2d)) and layer not in narrowed
                    and dep.pruning_fn.__name__ == "prune_out_channels"):
                narrowed.add(layer)  # a depthwise conv appears as its input and its output: once
                current, drop = kept.get(names[layer], range(_out_width(layer))), set(idxs)
                kept[names[layer]] = [c for i, c in enumerate(current) if i not in drop]
        group.prune()
    return kept


@dataclass
class PruneReport:
    channels: Path
    weights: Path
    channel_ratio: float
    flops: tuple[int, int]  # before, after (at 640²)
    params: tuple[int, int]
    fits: list[LayerFit]  # one per refitted layer; empty without calibration images


def prune_to_flops(make: Callable[[], Detector], flops_reduction: float, importance: str = "l2",
                   global_pruning: bool = False, size: int = 640, steps: int = 10, scope: tuple[str, ...] = SCOPES,
                   statistics: dict | None = None) -> tuple[Detector, float, dict[str, list[int]]]:
    """The smallest channel ratio whose pruned model removes at least ``flops_reduction`` of the FLOPs
    (bisection: FLOPs fall monotonically with the ratio, in steps set by ``ROUND_TO``); returns the model, the
    ratio and the kept output channels (``prune_channels``)."""
    if not 0 < flops_reduction < 0.9:
        raise ConfigError(f"FLOPs reduction {flops_reduction} must lie in (0, 0.9)")
    base = count_flops(make(), size).total
    low, high, best = 0.0, 0.9, None
    for _ in range(steps):
        ratio = (low + high) / 2
        model = make()
        kept = prune_channels(model, ratio, importance, global_pruning, scope, statistics)
        if 1 - count_flops(model, size).total / base >= flops_reduction:
            high, best = ratio, (model, ratio, kept)
        else:
            low = ratio
    if best is None:
        raise ConfigError(f"cannot remove {flops_reduction:.0%} of the FLOPs by pruning channels in "
                          f"{', '.join(scope)}")
    return best


def calibration_images(folder: str | Path, count: int, size: int) -> torch.Tensor:
    """``count`` calibration images letterboxed to ``size``², as inference sees them: (count, 3, size, size)."""
    calib = build_calibration_set(folder, count, shape=(size, size), min_images=1)
    return torch.stack([torch.from_numpy(calib.tensor(i)) for i in range(len(calib))])


def prune_model(model_name: str, weights: str | Path | None, out: str | Path, flops_reduction: float,
                importance: str = "l2", global_pruning: bool = False, scope: tuple[str, ...] = SCOPES,
                calib_images: str | Path | None = None, calib_count: int = 8, calib_size: int = 640,
                refit: bool = True) -> PruneReport:
    """Prune ``model_name`` to remove ``flops_reduction`` of its FLOPs at 640²; with ``calib_images``, refit the
    pruned layers toward the original on them (``refit``) and allow the data-driven importances. Writes ``out``
    (channel config, ``.json``) and the weights beside it (``.pth``), both atomically."""
    out = Path(out).with_suffix(".json")
    if featherface.registry.is_channel_file(model_name):
        raise ConfigError(f"{model_name}: prune the base model again with a larger reduction instead of a pruned one")
    if calib_images is None and importance in DATA_IMPORTANCE:
        raise ConfigError(f"importance '{importance}' is measured on calibration images: give a folder")
    base = featherface.load_model(model_name, weights).eval()  # read once; every bisection step prunes a copy
    needed = calib_images is not None and (refit or importance in DATA_IMPORTANCE)
    images = calibration_images(calib_images, calib_count, calib_size) if needed else None
    statistics = input_variances(base, images) if importance in DATA_IMPORTANCE else None
    model, ratio, kept = prune_to_flops(lambda: copy.deepcopy(base), flops_reduction, importance, global_pruning,
                                        scope=tuple(scope), statistics=statistics)
    fits = reconstruct(model, base, images, kept) if needed and refit else []
    flops = (count_flops(base).total, count_flops(model).total)
    params = (count_parameters(base), count_parameters(model))
    weights_out = out.with_suffix(".pth")
    write_weights(weights_out, model)
    write_json(out, {"format": FORMAT, "base": model_name, "pruned_from": str(weights) if weights else None,
                     "importance": importance, "global": global_pruning, "scope": list(scope),
                     "channel_ratio": round(ratio, 4),
                     "refit": {"images": str(calib_images), "count": len(images), "size": calib_size,
                               "layers": len(fits)} if fits else None,
                     "flops_640": flops[1], "base_flops_640": flops[0], "params": params[1],
                     "channels": channel_config(model, base)})
    return PruneReport(out, weights_out, ratio, flops, params, fits)
