"""FeatherFace V1: MobileNetV1-0.25 → CBAM → 3×BiFPN (64 ch) → CBAM → deformable SSH → channel shuffle → heads.

Reproduces the public FeatherFace training (592,371 parameters) so its checkpoint loads strictly.
The attribute names (including the checkpoint's ``bacbkbone`` spelling) are the checkpoint's keys.
"""
from torch import Tensor, nn

from featherface.heads import Detector
from featherface.layers import CBAM, SSH, BiFPNCell, MobileNetV1, dcn_bn, residual_attention, shuffle_block
from featherface.registry import register_model


class FeatherFaceV1(Detector):
    expected_params = 592_371

    def __init__(self, channels: int = 64, bifpn_cells: int = 3) -> None:
        super().__init__()
        self.body = MobileNetV1()
        c3, c4, c5 = self.body.out_channels
        self.bacbkbone_0_cbam = CBAM(c3)
        self.bacbkbone_1_cbam = CBAM(c4)
        self.bacbkbone_2_cbam = CBAM(c5)
        self.bifpn = nn.Sequential(
            *[BiFPNCell(channels, self.body.out_channels if i == 0 else None) for i in range(bifpn_cells)]
        )
        self.bif_cbam_0 = CBAM(channels)
        self.bif_cbam_1 = CBAM(channels)
        self.bif_cbam_2 = CBAM(channels)
        self.ssh1 = SSH(channels, channels, dcn_bn)
        self.ssh2 = SSH(channels, channels, dcn_bn)
        self.ssh3 = SSH(channels, channels, dcn_bn)
        self.ssh1_cs = shuffle_block(channels)
        self.ssh2_cs = shuffle_block(channels)
        self.ssh3_cs = shuffle_block(channels)
        self._make_heads(channels)

    def features(self, x: Tensor) -> list[Tensor]:
        feats = residual_attention([self.bacbkbone_0_cbam, self.bacbkbone_1_cbam, self.bacbkbone_2_cbam], self.body(x))
        feats = self.bifpn(feats)
        feats = residual_attention([self.bif_cbam_0, self.bif_cbam_1, self.bif_cbam_2], feats)
        return [
            cs(ssh(f))
            for ssh, cs, f in zip([self.ssh1, self.ssh2, self.ssh3], [self.ssh1_cs, self.ssh2_cs, self.ssh3_cs], feats)
        ]


@register_model("featherface-v1", default_weights="featherface_v1.pth")
def featherface_v1() -> FeatherFaceV1:
    return FeatherFaceV1()
