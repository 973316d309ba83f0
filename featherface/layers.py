"""Building blocks shared by the detectors.

Attribute names follow the state-dict layout of the public checkpoints, so they load with strict
key matching. Every block is written to trace symbolically: no Python ints read from tensor shapes,
no in-place activations.
"""
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision.ops
from torch import Tensor, nn

DeformFn = Callable[..., Tensor]
Block = Callable[[int, int, "float | None"], nn.Module]


def conv_bn(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, leaky: float | None = 0.0, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias) → BN → LeakyReLU(leaky); ``leaky=None`` leaves the activation out."""
    return _with_activation(
        [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch)],
        leaky)


def conv_dw(in_ch: int, out_ch: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3×3 → BN → act → pointwise 1×1 → BN → act (MobileNetV1 block)."""
    return nn.Sequential(*conv_bn(in_ch, in_ch, 3, stride, leaky, groups=in_ch), *conv_bn(in_ch, out_ch, 1, 1, leaky))


class MobileNetV1(nn.Module):
    """MobileNetV1 ×0.25 trunk; returns the stride-8/16/32 maps (64/128/256 channels)."""

    out_channels = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 3, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP over global average and global max pooling."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        # Global pooling as reductions (not pooling with a kernel of the input's size) keeps H, W symbolic.
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7×7 conv + BN over the channel max and mean."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _ConvBN(2, 1, 7)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class _ConvBN(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


def residual_attention(blocks: Sequence[nn.Module], feats: Sequence[Tensor]) -> list[Tensor]:
    """relu(x + block(x)) per level, the way FeatherFace wraps each CBAM."""
    return [F.relu(x + block(x)) for block, x in zip(blocks, feats)]


class SameConv2d(nn.Module):
    """Stride-1 conv with 'same' padding; for odd kernels that is the static padding k//2."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SeparableConvBlock(nn.Module):
    """Depthwise 3×3 (no bias) → pointwise 1×1 (bias) → BN(eps=1e-3), no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = SameConv2d(channels, channels, 3, groups=channels, bias=False)
        self.pointwise_conv = SameConv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def same_max_pool_3x3_s2(x: Tensor) -> Tensor:
    """3×3/2 max pool with TensorFlow 'same' zero padding, written without reading the input size.

    'Same' padding puts ``size % 2`` zeros before and one after, so the windows are centred on
    ``size-1, size-3, ...`` counted from the end. Flipping, padding one zero on each side, pooling
    and flipping back gives exactly those windows for odd and even sizes alike.
    """
    flipped = F.pad(x.flip((-2, -1)), (1, 1, 1, 1))
    return F.max_pool2d(flipped, 3, 2).flip((-2, -1))


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Nearest-neighbour resize of ``x`` to ``ref``'s spatial size (sizes stay symbolic under export)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


def _fuse(weights: Tensor, inputs: Sequence[Tensor], eps: float) -> Tensor:
    """BiFPN fast normalised fusion; the normaliser sums every weight, used or not (as trained)."""
    w = F.relu(weights)
    w = w / (w.sum() + eps)
    out = w[0] * inputs[0]
    for i in range(1, len(inputs)):
        out = out + w[i] * inputs[i]
    return out * torch.sigmoid(out)  # swish


def _down_channel(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(SameConv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch, momentum=0.01, eps=1e-3))


class BiFPNCell(nn.Module):
    """One three-level BiFPN cell (EfficientDet's P3–P5 subset) with fast attention fusion.

    The first cell projects the backbone maps to ``channels``; it projects P4 and P5 twice, once
    for the top-down and once for the bottom-up path, as the checkpoint was trained.
    """

    def __init__(self, channels: int, in_channels: Sequence[int] | None = None, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.first = in_channels is not None
        self.conv4_up = SeparableConvBlock(channels)
        self.conv3_up = SeparableConvBlock(channels)
        self.conv4_down = SeparableConvBlock(channels)
        self.conv5_down = SeparableConvBlock(channels)
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p5_down_channel = _down_channel(c5, channels)
            self.p4_down_channel = _down_channel(c4, channels)
            self.p3_down_channel = _down_channel(c3, channels)
            self.p4_down_channel_2 = _down_channel(c4, channels)
            self.p5_down_channel_2 = _down_channel(c5, channels)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        p3, p4, p5 = feats
        if self.first:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5
        p4_up = self.conv4_up(_fuse(self.p4_w1, [p4_in, upsample_to(p5_in, p4_in)], self.eps))
        p3_out = self.conv3_up(_fuse(self.p3_w1, [p3_in, upsample_to(p4_up, p3_in)], self.eps))
        if self.first:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        p4_out = self.conv4_down(_fuse(self.p4_w2, [p4_in, p4_up, same_max_pool_3x3_s2(p3_out)], self.eps))
        p5_out = self.conv5_down(_fuse(self.p5_w2, [p5_in, same_max_pool_3x3_s2(p4_out)], self.eps))
        return [p3_out, p4_out, p5_out]


class DeformConv2d(nn.Module):
    """Modulated deformable 3×3 conv (DCNv2): offsets and a 2·sigmoid mask predicted by plain convs.

    ``deform_fn`` is the kernel that samples and convolves; it defaults to
    ``torchvision.ops.deform_conv2d`` and can be swapped for another implementation with the same
    signature (an exporter does this to choose a lowering).
    """

    def __init__(self, in_ch: int, out_ch: int, separable_predictors: bool = False) -> None:
        super().__init__()
        self.offset_conv = _predictor(in_ch, 18, separable_predictors)
        self.modulator_conv = _predictor(in_ch, 9, separable_predictors)
        self.regular_conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.deform_fn: DeformFn = torchvision.ops.deform_conv2d

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return self.deform_fn(x, offset, self.regular_conv.weight, None, (1, 1), (1, 1), (1, 1), mask)


def _predictor(in_ch: int, out_ch: int, separable: bool) -> nn.Module:
    """Offset/mask predictor initialised so training starts from a regular conv (offsets ≈ 0, mask ≈ 1).

    The separable form gets tiny random pointwise weights instead of zeros: zeros would cut the
    depthwise conv off from any gradient.
    """
    if separable:
        last = nn.Conv2d(in_ch, out_ch, 1)
        nn.init.normal_(last.weight, std=1e-3)
        layers: nn.Module = nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False), last)
    else:
        last = layers = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return layers


def _with_activation(layers: list[nn.Module], leaky: float | None) -> nn.Sequential:
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky))
    return nn.Sequential(*layers)


def dcn_bn(in_ch: int, out_ch: int, leaky: float | None) -> nn.Sequential:
    return _with_activation([DeformConv2d(in_ch, out_ch), nn.BatchNorm2d(out_ch)], leaky)


def light_dcn_bn(in_ch: int, out_ch: int, leaky: float | None) -> nn.Sequential:
    """Deformable conv whose offset/mask predictors are depthwise-separable (a third of the parameters)."""
    return _with_activation([DeformConv2d(in_ch, out_ch, separable_predictors=True), nn.BatchNorm2d(out_ch)], leaky)


def separable_conv_bn(in_ch: int, out_ch: int, leaky: float | None) -> nn.Sequential:
    """Depthwise 3×3 → pointwise 1×1 → BN (+ act)."""
    return _with_activation(
        [nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False), nn.Conv2d(in_ch, out_ch, 1, bias=False),
         nn.BatchNorm2d(out_ch)], leaky)


class SSH(nn.Module):
    """SSH context module: 3×3, 5×5 (two 3×3) and 7×7 (three 3×3) branches concatenated, then ReLU.

    ``block(in, out, leaky)`` makes each 3×3 conv+BN(+act): plain for RetinaFace, deformable for FeatherFace;
    ``context_block`` (default: ``block``) makes the four convs of the 5×5 and 7×7 branches.
    """

    def __init__(self, in_ch: int, out_ch: int, block: Block, context_block: Block | None = None) -> None:
        super().__init__()
        leaky = 0.1 if out_ch <= 64 else 0.0
        ctx = context_block or block
        self.conv3X3 = block(in_ch, out_ch // 2, None)
        self.conv5X5_1 = ctx(in_ch, out_ch // 4, leaky)
        self.conv5X5_2 = ctx(out_ch // 4, out_ch // 4, None)
        self.conv7X7_2 = ctx(out_ch // 4, out_ch // 4, leaky)
        self.conv7x7_3 = ctx(out_ch // 4, out_ch // 4, None)

    def forward(self, x: Tensor) -> Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], dim=1)
        return F.relu(out)


def plain_conv_bn(in_ch: int, out_ch: int, leaky: float | None) -> nn.Sequential:
    return conv_bn(in_ch, out_ch, 3, 1, leaky)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle, in the (channels/groups, groups) view FeatherFace was trained with."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.split = (channels // groups, groups)

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(1, self.split).transpose(1, 2).flatten(1, 2)


def shuffle_block(channels: int) -> nn.Sequential:
    """Channel shuffle → 1×1 squeeze → depthwise 3×3 → 1×1 expand, BN after each conv, final ReLU."""
    half = channels // 2
    return nn.Sequential(
        ChannelShuffle(channels, 2),
        nn.Conv2d(channels, half, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )
