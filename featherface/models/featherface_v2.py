"""FeatherFace V2: the lighter variant (about 256K parameters) with V1's heads, priors and outputs.

Where V1's 592K parameters go, and what V2 does instead:

* Backbone — kept: MobileNetV1-0.25 (213K) is already the floor for a useful ImageNet trunk, and
  the shared pretrained checkpoint initialises it.
* Neck width 64 → 32 channels: every neck/head conv shrinks ~4×. One 1×1 projection per level
  (V1's first BiFPN cell projects P4/P5 twice) and two BiFPN cells instead of three.
* Attention: residual CBAM only after the BiFPN (32 ch, reduction 8); the three backbone CBAMs
  cost 11.6K parameters in V1 at 64–256 channels.
* Context: SSH keeps the deformable 3×3 branch (DCN is what helps on pose and occlusion), but its
  offset/mask predictors are depthwise-separable, and the 5×5/7×7 branches are depthwise-separable
  convs. The channel-shuffle block is kept (1.3K per level at 32 ch).
* Heads: identical 2-anchor class/box/landmark heads at 32 channels, so export, calibration,
  post-processing and evaluation treat V2 exactly like V1.
"""
from torch import Tensor, nn

from featherface.heads import Detector
from featherface.layers import (CBAM, SSH, BiFPNCell, MobileNetV1, conv_bn, light_dcn_bn, residual_attention,
                                separable_conv_bn, shuffle_block)
from featherface.registry import register_model


class FeatherFaceV2(Detector):
    expected_params = 256_000  # design target
    params_tolerance = 0.10

    def __init__(self, channels: int = 32, bifpn_cells: int = 2) -> None:
        super().__init__()
        self.body = MobileNetV1()
        self.lateral = nn.ModuleList(conv_bn(c, channels, 1, 1, None) for c in self.body.out_channels)
        self.bifpn = nn.Sequential(*[BiFPNCell(channels) for _ in range(bifpn_cells)])
        self.attention = nn.ModuleList(CBAM(channels, reduction=8) for _ in range(3))
        self.context = nn.ModuleList(SSH(channels, channels, light_dcn_bn, separable_conv_bn) for _ in range(3))
        self.shuffle = nn.ModuleList(shuffle_block(channels) for _ in range(3))
        self._make_heads(channels)

    def features(self, x: Tensor) -> list[Tensor]:
        feats = self.bifpn([lat(f) for lat, f in zip(self.lateral, self.body(x))])
        feats = residual_attention(self.attention, feats)
        return [cs(ssh(f)) for ssh, cs, f in zip(self.context, self.shuffle, feats)]


@register_model("featherface-v2")
def featherface_v2() -> FeatherFaceV2:
    return FeatherFaceV2()
