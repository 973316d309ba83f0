"""ONNX Runtime runner: FP32, FP16 and Q/DQ INT8 graphs on the CPU (or any provider given)."""
from pathlib import Path

import numpy as np
import onnxruntime as ort

from featherface.errors import ArtifactError, first_line
from toolchain.backends.base import OUTPUT_NAMES, Runner
from toolchain.building.metadata import get_metadata, load_onnx, priors_from
from toolchain.runtime.featherface_runtime import onnxruntime_session


def session_options(threads: int | None = None, spin: bool = True) -> ort.SessionOptions:
    """``spin=False`` stops idle worker threads from busy-waiting after a run: needed when several sessions
    (and PyTorch) are timed in turn, or each steals cores from the next."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True) -> None:
        self.path = Path(path)
        model = load_onnx(self.path)
        self.metadata = get_metadata(model)
        self.priors = priors_from(self.metadata, self.path)
        self.precision = self.metadata.get("precision", "fp32")
        try:
            self.session = onnxruntime_session(model.SerializeToString(), session_options(threads, spin),
                                               providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it ({first_line(exc)})") from None
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.session.run(list(OUTPUT_NAMES), {self.input_name: batch}))


def load_onnx_runner(path: str | Path, threads: int | None = None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, threads)
