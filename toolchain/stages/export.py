"""Export stage: PyTorch weights → dynamic ONNX (N×3×H×W → loc, conf, landms), proven equal to PyTorch."""
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch.export import Dim

import featherface
from featherface import preprocess as pre
from featherface.errors import ArtifactError
from toolchain import __version__
from toolchain.building.artifacts import atomic_output, sha256_file
from toolchain.backends.base import OUTPUT_NAMES
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.measuring.compare import FP32_TOLERANCES, Comparison, compare_runners, sample_batches, worst_violation
from toolchain.building.lowering import dcn_lowering
from toolchain.building.metadata import set_metadata


@dataclass
class ExportReport:
    path: Path
    lowering: str
    opset: int
    comparisons: list[Comparison]


def export_onnx(model_name: str, weights: str | Path | None, out: str | Path, lowering: str = "native",
                opset: int = 20, check_images: str | Path | None = None) -> ExportReport:
    """Export ``model_name`` to ``out``; with ``check_images``, run ONNX Runtime against PyTorch on real
    images at several shapes and fail (leaving nothing at ``out``) when outputs drift beyond tolerance."""
    if not 18 <= opset <= 23:
        raise ArtifactError(f"{out}: opset {opset} is not supported (18–23)")
    if lowering == "native" and opset < 19:
        raise ArtifactError(f"{out}: the native DeformConv lowering needs opset ≥ 19 (asked for {opset})")
    out = Path(out)
    model = featherface.load_model(model_name, weights)
    example = torch.randn(2, 3, 320, 320)  # batch 2: export specialises dimensions of size 1
    with dcn_lowering(model, lowering), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, external_data=False, opset_version=opset, verbose=False,
            input_names=["input"], output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"input": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}},
        )
    proto = program.model_proto
    _name_dynamic_axes(proto)
    set_metadata(proto, {
        "model": model_name,
        "weights_sha256": sha256_file(weights) if weights else "random-init",
        "preprocess": {"channel_order": pre.CHANNEL_ORDER, "mean": list(pre.MEAN_BGR), "scale": 1.0,
                       "layout": "NCHW", "dtype": "float32", "resize": "none"},
        "priors": model.priors.as_dict(),
        "outputs": list(OUTPUT_NAMES),
        "conf": "softmax",
        "toolchain_version": __version__,
        "dcn_lowering": lowering,
        "opset": opset,
        "precision": "fp32",
        "torch_version": torch.__version__,
    })
    comparisons = write_checked(proto, out, lambda: model, check_images, "exported graph")
    return ExportReport(out, lowering, opset, comparisons)


def write_checked(proto: onnx.ModelProto, out: Path, reference: Callable[[], torch.nn.Module],
                  check_images: str | Path | None, what: str) -> list[Comparison]:
    """Write ``proto`` to ``out`` atomically; with ``check_images`` only if it equals the PyTorch model
    ``reference()`` (``check_against_pytorch``) — otherwise nothing is left at ``out``."""
    with atomic_output(out) as tmp:
        onnx.save(proto, str(tmp))
        if check_images is None:
            return []
        return check_against_pytorch(reference(), tmp, check_images, f"{out}: {what}")


def check_against_pytorch(model: torch.nn.Module, onnx_path: Path, images: str | Path, what: str) -> list[Comparison]:
    """ONNX Runtime on ``onnx_path`` against the PyTorch ``model`` (torchvision's deformable conv, whatever the
    graph's lowering) on real images at several shapes; raises ``ArtifactError`` ("<what> disagrees with
    PyTorch: …") beyond the FP32 tolerances. Every stage that rewrites a float graph is held to this check."""
    comparisons = compare_runners(TorchRunner(model), OnnxRuntimeRunner(onnx_path), sample_batches(images))
    problem = worst_violation(comparisons, FP32_TOLERANCES)
    if problem:
        raise ArtifactError(f"{what} disagrees with PyTorch: {problem}")
    return comparisons


def _name_dynamic_axes(proto: onnx.ModelProto) -> None:
    """Give the dynamic input/output axes readable names (batch, height, width, anchors)."""
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim, ("batch", None, "height", "width")):
        if name:
            dim.dim_param = name
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_param = "batch", "anchors"
