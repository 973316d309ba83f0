"""Which layers lose most to INT8: per-tensor quantization noise from ``onnxruntime.quantization.qdq_loss_debug``.

For every activation that the Q/DQ graph quantizes, the SQNR (dB) of the tensor before vs after its
own Q/DQ pair says how much that one rounding step destroys; convolutions next to the noisiest
tensors are the ones to keep in higher precision.

The Q/DQ graph runs with exact int32 accumulation (``calibration.exact``), the semantics every INT8 verdict uses,
and the SQNR is summed in float64 (``sqnr_db``), so which layers stay FP32 does not depend on the CPU the graph is
built on.
"""
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                      create_activation_matching,
                                                      modify_model_output_intermediate_tensors)

from calibration.dataset import CalibrationSet
from calibration.exact import integer_exact
from calibration.reader import CalibrationReader
from toolchain.building.metadata import load_onnx


@dataclass(frozen=True)
class TensorNoise:
    tensor: str
    op_type: str  # the op that produces the tensor
    local_db: float  # SQNR of this tensor's own quantization step
    accumulated_db: float  # SQNR against the FP32 model (error accumulated from the input)


def tensor_noise(fp32_path: str | Path, qdq_path: str | Path, calib: CalibrationSet) -> list[TensorNoise]:
    """Noise of each quantized activation over ``calib``, noisiest (lowest local SQNR) first."""
    with tempfile.TemporaryDirectory(prefix="featherface-qdq-debug-") as tmp:
        exact = Path(tmp) / "exact.onnx"
        onnx.save(integer_exact(load_onnx(qdq_path), str(qdq_path)), str(exact))
        activations = {}
        for name, path in (("fp32", fp32_path), ("qdq", exact)):  # collect_activations: no graph rewrites
            augmented = Path(tmp) / f"{name}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[name] = collect_activations(str(augmented), CalibrationReader(calib))
    errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["fp32"]), sqnr_db)
    producer = {out: node.op_type for node in load_onnx(fp32_path).graph.node for out in node.output}
    rows = [TensorNoise(t, producer.get(t, "?"), float(e["qdq_err"]), float(e["xmodel_err"]))
            for t, e in errors.items() if e.get("qdq_err") is not None]
    return sorted(rows, key=lambda r: r.local_db)


def sqnr_db(reference: list[np.ndarray], noisy: list[np.ndarray]) -> float:
    """10·log10(Σx² / Σ(x − y)²) over all batches, in float64 sums.

    Not ``qdq_loss_debug``'s own SQNR: its ``np.linalg.norm`` on float32 is a BLAS dot whose result depends on the
    CPU (3604.673 on AVX-512 vs 3604.523 on AVX2 for the same 13 M values here), which moved readings by up to
    3e-5 dB between hosts; numpy's float64 pairwise sum gave the same bits on both."""
    signal = sum(float(np.square(x.astype(np.float64)).sum()) for x in reference)
    noise = sum(float(np.square(x.astype(np.float64) - y.astype(np.float64)).sum()) for x, y in zip(reference, noisy))
    tiny = float(np.finfo(np.float64).tiny)
    return 10.0 * math.log10(max(signal, tiny) / max(noise, tiny))


def convs_touching(model: onnx.ModelProto, tensors: set[str]) -> list[str]:
    """Conv nodes that produce or consume any of ``tensors``."""
    return sorted(n.name for n in model.graph.node
                  if n.op_type == "Conv" and tensors & (set(n.input) | set(n.output)))


def worst_noise(per_subset: list[list[TensorNoise]]) -> list[TensorNoise]:
    """Per tensor, its noisiest reading over several calibration subsets (originals, each shift), noisiest
    first: a layer that breaks only under one shift still shows up."""
    worst: dict[str, TensorNoise] = {}
    for rows in per_subset:
        for row in rows:
            if row.tensor not in worst or row.local_db < worst[row.tensor].local_db:
                worst[row.tensor] = row
    return sorted(worst.values(), key=lambda r: r.local_db)
