"""ONNX Runtime runner: FP32, FP16 and Q/DQ INT8 graphs on the CPU (or any provider given).

A Q/DQ graph runs under one of two INT8 semantics (``INT8_SEMANTICS``):
* ``exact`` — every quantized convolution accumulated exactly in int32 (``calibration.exact``): what TensorRT,
  AVX-512/AVX VNNI and ARM compute, the same on every build host. Every verdict is measured this way.
* ``kernels`` — ONNX Runtime's fused integer kernels of this CPU: what a ``cpu`` bundle runs on this machine
  (on x86 without VNNI their 16-bit pair sums saturate). Used for timing and for the host-kernel figures.
"""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from calibration.exact import EXACT_DISABLED_OPTIMIZERS, EXACT_SESSION_CONFIG, has_qdq, integer_exact
from featherface.errors import ArtifactError, first_line
from toolchain.backends.base import OUTPUT_NAMES, Runner
from toolchain.building.metadata import get_metadata, load_onnx, priors_from
from toolchain.runtime.featherface_runtime import onnxruntime_session

INT8_SEMANTICS = ("exact", "kernels")


def session_options(threads: int | None = None, spin: bool = True,
                    config: dict[str, str] | None = None) -> ort.SessionOptions:
    """``spin=False`` stops idle worker threads from busy-waiting after a run: needed when several sessions
    (and PyTorch) are timed in turn, or each steals cores from the next."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def exact_session(model: onnx.ModelProto, threads: int | None = None, spin: bool = True,
                  providers: list[str] | None = None) -> ort.InferenceSession:
    """A session for a graph from ``integer_exact``, without the rewrites that would undo its exactness."""
    return onnxruntime_session(model.SerializeToString(), session_options(threads, spin, EXACT_SESSION_CONFIG),
                               providers or ["CPUExecutionProvider"], extra_disabled=EXACT_DISABLED_OPTIMIZERS)


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True, int8: str = "exact") -> None:
        """``int8``: the semantics of a Q/DQ graph (module docstring); graphs without Q/DQ ignore it."""
        if int8 not in INT8_SEMANTICS:
            raise ValueError(f"int8 semantics {int8!r} (use {', '.join(INT8_SEMANTICS)})")
        self.path = Path(path)
        model = load_onnx(self.path)
        self.metadata = get_metadata(model)
        self.priors = priors_from(self.metadata, self.path)
        self.precision = self.metadata.get("precision", "fp32")
        self.int8 = int8 if has_qdq(model) else None
        providers = providers or ["CPUExecutionProvider"]
        try:
            if self.int8 == "exact":
                self.session = exact_session(integer_exact(model, str(self.path)), threads, spin, providers)
            else:
                self.session = onnxruntime_session(model.SerializeToString(), session_options(threads, spin),
                                                   providers)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it ({first_line(exc)})") from None
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.session.run(list(OUTPUT_NAMES), {self.input_name: batch}))


def load_onnx_runner(path: str | Path, threads: int | None = None, int8: str = "exact") -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, threads, int8=int8)
