import numpy as np
import onnx
import pytest
import torch
import torchvision

import featherface
from featherface.errors import ArtifactError
from tests.conftest import CALIB, RF_WEIGHTS, V1_WEIGHTS
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.measuring.compare import FP32_TOLERANCES, compare_runners, sample_batches, worst_violation
from toolchain.building.lowering import deform_conv2d_decomposed
from toolchain.building.metadata import get_metadata
from toolchain.stages.export import export_onnx
from toolchain.stages.simplify import simplify_onnx


@pytest.mark.parametrize("n,c,h,w,out,stride,pad,dil", [
    (2, 5, 9, 11, 7, 1, 1, 1), (1, 4, 6, 5, 3, 2, 1, 1), (1, 3, 8, 8, 4, 1, 2, 2), (3, 2, 1, 1, 2, 1, 1, 1)])
def test_decomposed_deform_conv_matches_torchvision(n, c, h, w, out, stride, pad, dil):
    g = torch.Generator().manual_seed(h * 31 + w)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(out, c, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(out, generator=g, dtype=torch.float64)
    ho, wo = (h + 2 * pad - 2 * dil - 1) // stride + 1, (w + 2 * pad - 2 * dil - 1) // stride + 1
    offset = torch.randn(n, 18, ho, wo, generator=g, dtype=torch.float64) * 6  # many taps land outside the map
    offset[0, 0, 0, 0] = -1.0  # exactly on the border
    mask = torch.rand(n, 9, ho, wo, generator=g, dtype=torch.float64) * 2
    args = (x, offset, weight, bias, (stride, stride), (pad, pad), (dil, dil), mask)
    torch.testing.assert_close(deform_conv2d_decomposed(*args), torchvision.ops.deform_conv2d(*args),
                               rtol=0, atol=1e-12)


def test_v1_native_export_agrees_with_pytorch_at_every_check_shape(v1_onnx):
    shapes = {tuple(c.shape) for c in v1_onnx.comparisons}
    assert shapes == {(1, 3, 320, 320), (1, 3, 480, 640), (4, 3, 640, 640), (1, 3, 1024, 768)}
    for c in v1_onnx.comparisons:
        for d in c.drift:
            assert d.max_abs <= FP32_TOLERANCES[d.output] and d.cosine > 0.99999
        assert c.det_f1 == 1.0
    ops = {n.op_type for n in onnx.load(str(v1_onnx.path)).graph.node}
    assert "DeformConv" in ops


def test_metadata_round_trip(v1_onnx):
    meta = get_metadata(onnx.load(str(v1_onnx.path)))
    assert meta["model"] == "featherface-v1" and meta["dcn_lowering"] == "native" and meta["opset"] == 20
    assert meta["preprocess"]["mean"] == [104.0, 117.0, 123.0] and meta["preprocess"]["channel_order"] == "BGR"
    assert meta["priors"] == featherface.create_model("featherface-v1").priors.as_dict()
    assert meta["outputs"] == ["loc", "conf", "landms"] and len(meta["weights_sha256"]) == 64
    assert OnnxRuntimeRunner(v1_onnx.path).priors == featherface.create_model("featherface-v1").priors


def test_decomposed_lowering_exports_without_deformconv(tmp_path, v1_model):
    report = export_onnx("featherface-v1", V1_WEIGHTS, tmp_path / "dec.onnx", "decomposed", 18)
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "DeformConv" not in ops and "GatherElements" in ops
    comparisons = compare_runners(TorchRunner(v1_model), OnnxRuntimeRunner(report.path),
                                  sample_batches(CALIB / "images", ((2, 256, 384),)))
    assert worst_violation(comparisons, FP32_TOLERANCES) is None
    # the lowering is scoped to the export: the model keeps torchvision's kernel afterwards
    assert all(m.deform_fn is torchvision.ops.deform_conv2d for m in v1_model.modules() if hasattr(m, "deform_fn"))


@pytest.mark.parametrize("name,weights,lowering,opset", [
    ("retinaface-mnet0.25", RF_WEIGHTS, "native", 20), ("featherface-v2", None, "decomposed", 18)])
def test_other_models_export_and_match(tmp_path, name, weights, lowering, opset):
    min_f1 = 0.95
    if weights is None:  # no trained V2 yet: export a fixed random initialisation
        weights = tmp_path / "init.pth"
        torch.manual_seed(0)
        torch.save(featherface.create_model(name).state_dict(), weights)
        min_f1 = 0.0  # untrained scores sit near 0.5, where 1e-6 drifts flip detections: judge the tensors
    report = export_onnx(name, weights, tmp_path / "m.onnx", lowering, opset)
    torch_runner = TorchRunner(featherface.load_model(name, weights))
    comparisons = compare_runners(torch_runner, OnnxRuntimeRunner(report.path),
                                  sample_batches(CALIB / "images", ((1, 320, 320), (2, 480, 640))))
    assert worst_violation(comparisons, FP32_TOLERANCES, min_f1) is None


def test_check_failure_leaves_no_file(tmp_path, monkeypatch):
    """A graph that disagrees with PyTorch fails the stage and nothing is left at the output path."""
    import toolchain.stages.export as stage

    monkeypatch.setattr(stage, "FP32_TOLERANCES", {"loc": 1e-12, "conf": 1e-12, "landms": 1e-12})
    out = tmp_path / "strict.onnx"
    with pytest.raises(ArtifactError, match=r"strict.onnx: exported graph disagrees with PyTorch: output '"):
        stage.export_onnx("retinaface-mnet0.25", RF_WEIGHTS, out, "native", 20, CALIB / "images")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_simplify_keeps_outputs_and_dynamic_shapes(v1_onnx, tmp_path):
    report = simplify_onnx(v1_onnx.path, tmp_path / "sim.onnx")
    assert report.simplified and sum(report.after.values()) < sum(report.before.values())
    assert report.after["DeformConv"] == report.before["DeformConv"] == 15
    a, b = OnnxRuntimeRunner(v1_onnx.path), OnnxRuntimeRunner(report.path)
    x = sample_batches(CALIB / "images", ((3, 288, 416),))[0]
    for p, q in zip(a.infer(x), b.infer(x)):
        assert np.abs(p - q).max() < 1e-4
    assert get_metadata(onnx.load(str(report.path)))["simplified"] is True


def test_corrupt_and_truncated_onnx_give_one_line_errors(v1_onnx, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(v1_onnx.path.read_bytes()[:4096])
    with pytest.raises(ArtifactError, match=r"truncated.onnx: not a valid ONNX model"):
        OnnxRuntimeRunner(truncated)
    with pytest.raises(ArtifactError, match=r"missing.onnx: ONNX file not found"):
        simplify_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
