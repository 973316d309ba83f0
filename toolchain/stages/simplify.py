"""Simplify stage: onnxsim with dynamic shapes kept; the original graph is kept when simplification
fails or changes the outputs."""
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxsim

from featherface.errors import first_line
from toolchain.building.artifacts import atomic_output
from toolchain.backends.onnxruntime_backend import onnxruntime_session, session_options
from toolchain.measuring.compare import FP32_TOLERANCES, tensor_drift
from toolchain.building.metadata import load_onnx, set_metadata

CHECK_SHAPES = ((1, 3, 320, 320), (2, 3, 480, 640))


@dataclass
class SimplifyReport:
    path: Path
    before: Counter
    after: Counter
    simplified: bool
    reason: str

    def table(self) -> str:
        ops = sorted(set(self.before) | set(self.after), key=lambda op: (-self.before[op], op))
        rows = [f"{'op':<22}{'before':>8}{'after':>8}"] + [
            f"{op:<22}{self.before[op]:>8}{self.after[op]:>8}" for op in ops if self.before[op] or self.after[op]]
        rows.append(f"{'total':<22}{sum(self.before.values()):>8}{sum(self.after.values()):>8}")
        return "\n".join(rows)


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def _outputs(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    session = onnxruntime_session(model.SerializeToString(), session_options(), ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [tuple(session.run(None, {name: x})) for x in inputs]


def simplify_onnx(src: str | Path, out: str | Path) -> SimplifyReport:
    original = load_onnx(src)
    simplified, reason = original, "simplified; outputs unchanged within FP32 tolerance"
    try:
        candidate, ok = onnxsim.simplify(original)
    except Exception as exc:
        candidate, ok, reason = None, False, f"onnxsim failed ({first_line(exc)})"
    else:
        if not ok:
            reason = "onnxsim's own check rejected the result"
    if candidate is not None and ok:
        rng = np.random.default_rng(0)
        inputs = [(rng.standard_normal(s) * 60).astype(np.float32) for s in CHECK_SHAPES]
        for ref, new in zip(_outputs(original, inputs), _outputs(candidate, inputs)):
            bad = [d for d in tensor_drift(ref, new) if d.max_abs > FP32_TOLERANCES[d.output]]
            if bad:
                ok, reason = False, f"simplified graph changed '{bad[0].output}' by {bad[0].max_abs:.3g}"
                break
    if ok:
        simplified = candidate
    set_metadata(simplified, {"simplified": ok, "simplify_note": reason})
    with atomic_output(out) as tmp:
        onnx.save(simplified, str(tmp))
    return SimplifyReport(Path(out), op_counts(original), op_counts(simplified), ok, reason)
