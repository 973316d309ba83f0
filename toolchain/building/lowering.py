"""Deformable-conv lowerings: how ``DeformConv2d`` blocks reach the ONNX graph.

* ``native``: ``torchvision.ops.deform_conv2d`` → ONNX ``DeformConv`` (opset ≥ 19). ONNX Runtime
  runs it; TensorRT parses it from 10.1 on.
* ``decomposed``: bilinear sampling written with ``GatherElements`` and elementwise ops, then one
  matmul — only ops that TensorRT 8.x (JetPack 4.6/5/6.0) and every other runtime accept. The
  exporter writes opset ≥ 18; older opsets need a conversion step that is not built yet.
"""
import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from featherface.layers import DeformConv2d

LOWERINGS = ("native", "decomposed")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _arange(n, like: Tensor) -> Tensor:
    """0 … n−1 in ``like``'s float type, counted in integers: TensorRT 8.2 imports a Range whose limit is not an
    initializer only in INT32 (INT64 arrives narrowed), not in FLOAT (onnx/onnx-tensorrt@e9456d57,
    builtin_op_importers.cpp:3341-3351; the lint's ``range_dynamic_float``)."""
    return torch.arange(n, dtype=torch.int64, device=like.device).to(like.dtype)


def deform_conv2d_decomposed(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                             stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask: Tensor | None = None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (one offset group, ``groups=1``) from standard ops.

    Each kernel tap samples the input at its offset position by bilinear interpolation with zero
    padding: corners outside the map contribute nothing, exactly as torchvision does. The sampled
    columns (N, C·K, Ho·Wo) are modulated by ``mask`` and multiplied with the flattened weight.
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_ch, in_ch, kh, kw = weight.shape
    taps = kh * kw
    height, width = input.shape[-2], input.shape[-1]
    out_h, out_w = offset.shape[-2], offset.shape[-1]

    # Sampling positions: output grid × kernel taps + learned offsets (torchvision layout: y, x per tap).
    ky, kx = torch.meshgrid(_arange(kh, input) * dh, _arange(kw, input) * dw, indexing="ij")
    base_y = _arange(out_h, input) * sh - ph
    base_x = _arange(out_w, input) * sw - pw
    off = offset.unflatten(1, (taps, 2))
    y = base_y[None, None, :, None] + ky.reshape(1, taps, 1, 1) + off[:, :, 0]  # (N, K, Ho, Wo)
    x = base_x[None, None, None, :] + kx.reshape(1, taps, 1, 1) + off[:, :, 1]

    y0, x0 = torch.floor(y), torch.floor(x)
    flat = input.flatten(2)  # (N, C, H·W)
    sampled = None
    for cy, cx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + cy, x0 + cx
        weight_c = (1 - (y - yy).abs()) * (1 - (x - xx).abs())
        inside = (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
        index = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).to(torch.int64)
        gathered = torch.gather(flat, 2, index.flatten(1).unsqueeze(1).expand(-1, in_ch, -1))
        term = gathered.unflatten(2, (taps, out_h, out_w)) * (weight_c * inside).unsqueeze(1)
        sampled = term if sampled is None else sampled + term
    if mask is not None:
        sampled = sampled * mask.unsqueeze(1)
    columns = sampled.flatten(1, 2).flatten(2)  # (N, C·K, Ho·Wo), channel-major like weight.flatten(1)
    out = torch.matmul(weight.flatten(1), columns).unflatten(2, (out_h, out_w))
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


@contextlib.contextmanager
def dcn_lowering(model: nn.Module, lowering: str) -> Iterator[nn.Module]:
    """Temporarily route every ``DeformConv2d`` in ``model`` through the chosen lowering."""
    if lowering not in LOWERINGS:
        raise ValueError(f"unknown DCN lowering '{lowering}' (choose from {', '.join(LOWERINGS)})")
    blocks = [m for m in model.modules() if isinstance(m, DeformConv2d)]
    saved = [b.deform_fn for b in blocks]
    try:
        if lowering == "decomposed":
            for b in blocks:
                b.deform_fn = deform_conv2d_decomposed
        yield model
    finally:
        for b, fn in zip(blocks, saved):
            b.deform_fn = fn
