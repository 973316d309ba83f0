"""Refit a pruned model toward the model it was pruned from, layer by layer, on calibration images.

Removing channels changes what every later layer sees. ThiNet (Luo et al., 2017) and channel pruning by
reconstruction (He et al., 2017) refit each consumer by least squares so that its output matches the original
network's on real images. Done in forward order with the pruned network's own inputs, each layer also absorbs
the error of the layers before it. Only weights, biases and BatchNorm means change; the widths stay as pruned.
Convolutions with groups > 1 have nothing to mix across channels and keep their weights.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from featherface.layers import DeformConv2d

FITTED = (nn.Conv2d, nn.Linear, DeformConv2d)


class _Stop(Exception):
    """Raised from a hook: the rest of the forward pass is not needed."""


@dataclass
class LayerFit:
    name: str
    inputs: int  # regression inputs (channels × kernel positions)
    error_before: float  # mean squared error against the original layer's output
    error_after: float


def weight_holder(layer: nn.Module) -> nn.Module:
    """The module holding ``layer``'s weight (and bias): a deformable conv keeps them in its dense conv."""
    return layer.regular_conv if isinstance(layer, DeformConv2d) else layer


def _fitted(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, DeformConv2d)) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def following_bn(model: nn.Module) -> dict[nn.Module, nn.BatchNorm2d]:
    """The BatchNorm that directly follows each conv (in a Sequential, or a conv/bn pair of attributes)."""
    after = {}
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            after.update({a: b for a, b in zip(module, list(module)[1:]) if isinstance(b, nn.BatchNorm2d)})
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            after[conv] = bn
    return after


def input_variances(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Variance of each input channel of every conv, linear and deformable conv over ``images``."""
    sums: dict[str, list] = {}
    names = {m: n for n, m in model.named_modules()}

    def record(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double()
        dims = [0, *range(2, x.dim())]
        acc = sums.setdefault(names[module], [0.0, 0.0, 0])
        acc[0] = acc[0] + x.sum(dims)
        acc[1] = acc[1] + (x * x).sum(dims)
        acc[2] += x.numel() // x.shape[1]

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, FITTED)]
    try:
        with torch.no_grad():
            for image in images:
                model(image[None])
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (squares / count - (total / count) ** 2).clamp(min=0).float()
            for name, (total, squares, count) in sums.items()}


def _fit_order(model: nn.Module, image: Tensor) -> list[str]:
    """Fitted layers in the order they run; a deformable conv after its offset/mask predictors."""
    seen: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: None if m in seen else seen.append(m))
             for m in model.modules() if _fitted(m)]
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        for hook in hooks:
            hook.remove()
    names = {m: n for n, m in model.named_modules()}
    order = [names[m] for m in seen]
    for module in seen:
        if isinstance(module, DeformConv2d):
            name = names[module]
            order.remove(name)
            order.insert(max(i for i, n in enumerate(order) if n.startswith(name + ".")) + 1, name)
    return order


def _columns(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's regression inputs, one row per output position: (rows, in_channels × kernel)."""
    if isinstance(layer, nn.Linear):
        return x
    if isinstance(layer, DeformConv2d):  # sampled columns: a per-channel deformable conv with one-hot kernels
        channels = x.shape[1]
        identity = torch.eye(9, dtype=x.dtype).repeat(channels, 1).view(channels * 9, 1, 3, 3)
        offset, mask = layer.offset_conv(x), 2.0 * torch.sigmoid(layer.modulator_conv(x))
        cols = torchvision.ops.deform_conv2d(x, offset, identity, None, (1, 1), (1, 1), (1, 1), mask)
        return cols.flatten(2).transpose(1, 2).flatten(0, 1)
    cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    return cols.transpose(1, 2).flatten(0, 1)


def _output(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's output without its bias, one row per output position."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight)
    y = layer.forward(x) if isinstance(layer, DeformConv2d) else \
        F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation)
    return y.flatten(2).transpose(1, 2).flatten(0, 1)


def _sample(rows: Tensor, samples: int, seed: int) -> Tensor:
    """At most ``samples`` rows, the same ones for the same row count and seed."""
    if len(rows) <= samples:
        return rows
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:samples]]


def _seed(seed: int, layer: int, image: int) -> int:
    return seed + 100_003 * layer + image


def _targets(base: nn.Module, names: list[str], images: Tensor, per_image: int, seed: int) -> dict[str, Tensor]:
    """Every fitted layer's bias-free output in one pass of the original model per image, sampled per image."""
    modules = dict(base.named_modules())
    rows: dict[str, list[Tensor]] = {name: [] for name in names}
    sampled: dict[str, list[Tensor]] = {name: [] for name in names}

    busy = []  # a deformable conv's output runs its predictors: those calls are not theirs to record

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not busy:
                busy.append(name)
                rows[name].append(_output(module, args[0]))
                busy.clear()
        return hook

    hooks = [modules[name].register_forward_pre_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            for k, image in enumerate(images):
                base(image[None])
                for i, name in enumerate(names):
                    sampled[name].append(_sample(torch.cat(rows[name]), per_image, _seed(seed, i, k)))
                    rows[name].clear()
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in sampled.items()}


def _inputs(model: nn.Module, name: str, index: int, images: Tensor, per_image: int, seed: int) -> Tensor:
    """Layer ``name``'s regression inputs per image, sampled like its targets (CBAM's MLP runs twice per image)."""
    layer = dict(model.named_modules())[name]
    rows: list[Tensor] = []
    sampled = []

    def hook(module: nn.Module, args: tuple) -> None:
        rows.append(_columns(module, args[0]))
        if not isinstance(module, nn.Linear):
            raise _Stop  # the rest of the network is not needed

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for k, image in enumerate(images):
                try:
                    model(image[None])
                except _Stop:
                    pass
                sampled.append(_sample(torch.cat(rows), per_image, _seed(seed, index, k)))
                rows.clear()
    finally:
        handle.remove()
    return torch.cat(sampled)


@torch.no_grad()
def reconstruct(pruned: nn.Module, base: nn.Module, images: Tensor, kept: dict[str, list[int]],
                samples: int = 20_000, ridge: float = 1e-2, seed: int = 0) -> list[LayerFit]:
    """Refit every fitted layer of ``pruned`` (in place) so its output matches ``base``'s on ``images``.

    ``kept`` maps a narrowed layer to the base output channels it keeps. Each fit is ridge-regularised least squares
    on at most ``samples`` output positions (spread evenly over the images) with an intercept (into the bias, or
    the following BatchNorm's mean); a fit that does not lower the error leaves the layer as it was.
    """
    pruned.eval()
    base.eval()
    pruned_modules, base_modules = dict(pruned.named_modules()), dict(base.named_modules())
    pruned_bn, base_bn = following_bn(pruned), following_bn(base)
    order = _fit_order(pruned, images[0])
    per_image = max(1, samples // len(images))
    targets = _targets(base, order, images, per_image, seed)
    fits = []
    for index, name in enumerate(order):
        layer, original = pruned_modules[name], base_modules[name]
        keep = kept.get(name, slice(None))
        target = targets.pop(name)[:, keep].double()
        inputs = _inputs(pruned, name, index, images, per_image, seed).double()
        weight_layer, base_layer = weight_holder(layer), weight_holder(original)
        bias, bn = getattr(weight_layer, "bias", None), pruned_bn.get(layer)
        if bias is None and bn is None:  # nowhere to put the intercept; none here (every conv has one or the other)
            continue
        if bias is not None:  # the current offset from the original bias / BatchNorm mean
            offset = (bias - base_layer.bias[keep]).double()
        else:
            offset = (base_bn[original].running_mean[keep] - bn.running_mean).double()
        weight = weight_layer.weight
        error_before = (target - inputs @ weight.double().reshape(len(weight), -1).T - offset).pow(2).mean()
        design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
        gram = design.T @ design
        gram += (ridge * gram.diagonal()[:-1].mean() + 1e-6) * torch.eye(len(gram), dtype=gram.dtype)
        solution = torch.linalg.solve(gram, design.T @ target)
        error_after = (target - design @ solution).pow(2).mean()
        fits.append(LayerFit(name, inputs.shape[1], error_before.item(), min(error_after, error_before).item()))
        if error_after >= error_before:
            continue
        weight.copy_(solution[:-1].T.reshape(weight.shape))
        intercept = solution[-1].float()
        if bias is not None:
            bias.copy_(base_layer.bias[keep] + intercept)
        else:
            bn.running_mean.copy_(base_bn[original].running_mean[keep] - intercept)
    return fits
