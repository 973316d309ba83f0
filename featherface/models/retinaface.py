"""RetinaFace with a MobileNetV1-0.25 backbone: FPN (64 ch) → SSH → heads (the classic 426,608-parameter baseline)."""
from torch import Tensor, nn

from featherface.heads import Detector
from featherface.layers import SSH, MobileNetV1, conv_bn, plain_conv_bn, upsample_to
from featherface.registry import register_model


class FPN(nn.Module):
    """Top-down FPN: 1×1 laterals, nearest upsampling + add, 3×3 merge convs (LeakyReLU 0.1 at 64 ch)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        leaky = 0.1 if channels <= 64 else 0.0
        self.output1 = conv_bn(in_channels[0], channels, 1, 1, leaky)
        self.output2 = conv_bn(in_channels[1], channels, 1, 1, leaky)
        self.output3 = conv_bn(in_channels[2], channels, 1, 1, leaky)
        self.merge1 = conv_bn(channels, channels, 3, 1, leaky)
        self.merge2 = conv_bn(channels, channels, 3, 1, leaky)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + upsample_to(o3, o2))
        o1 = self.merge1(o1 + upsample_to(o2, o1))
        return [o1, o2, o3]


class RetinaFaceMobileNet(Detector):
    expected_params = 426_608

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.body = MobileNetV1()
        self.fpn = FPN(self.body.out_channels, channels)
        self.ssh1 = SSH(channels, channels, plain_conv_bn)
        self.ssh2 = SSH(channels, channels, plain_conv_bn)
        self.ssh3 = SSH(channels, channels, plain_conv_bn)
        self._make_heads(channels)

    def features(self, x: Tensor) -> list[Tensor]:
        feats = self.fpn(self.body(x))
        return [ssh(f) for ssh, f in zip([self.ssh1, self.ssh2, self.ssh3], feats)]


@register_model("retinaface-mnet0.25", default_weights="retinaface_mobilenet0.25.pth")
def retinaface_mnet025() -> RetinaFaceMobileNet:
    return RetinaFaceMobileNet()
