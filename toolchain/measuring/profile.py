"""Where ONNX Runtime spends its time: per-op-type and per-node kernel time from its own profiler.

Like ``trtexec --dumpProfile`` for the CPU path: the graph ONNX Runtime actually runs (after its own fusions
and layout changes) is timed node by node over ``runs`` runs after ``warmup`` runs, so a user sees which ops
to optimise before changing the model.
"""
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.backends.onnxruntime_backend import onnxruntime_session, session_options
from toolchain.building.metadata import load_onnx


@dataclass
class NodeTime:
    name: str
    op_type: str
    ms: float  # mean kernel time per run


@dataclass
class ProfileReport:
    model: str
    shape: tuple[int, ...]
    threads: int
    runs: int
    nodes: list[NodeTime] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(n.ms for n in self.nodes)

    def by_op_type(self) -> list[tuple[str, float, int]]:
        """(op type, ms per run, node count), slowest first."""
        totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
        for node in self.nodes:
            totals[node.op_type][0] += node.ms
            totals[node.op_type][1] += 1
        return sorted(((op, ms, n) for op, (ms, n) in totals.items()), key=lambda row: -row[1])

    def table(self, top_nodes: int = 10) -> str:
        total = self.total_ms or 1.0
        lines = [f"{self.model}: input {'x'.join(map(str, self.shape))}, {self.threads} thread(s), "
                 f"{self.runs} runs; kernels {self.total_ms:.2f} ms per run",
                 f"{'op type':<24}{'ms/run':>9}{'share':>8}{'nodes':>7}"]
        lines += [f"{op:<24}{ms:>9.3f}{ms / total:>8.1%}{n:>7}" for op, ms, n in self.by_op_type()]
        lines.append(f"slowest {top_nodes} nodes:")
        lines += [f"  {n.name:<48}{n.op_type:<20}{n.ms:>8.3f} ms"
                  for n in sorted(self.nodes, key=lambda n: -n.ms)[:top_nodes]]
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"model": self.model, "shape": list(self.shape), "threads": self.threads, "runs": self.runs,
                "total_ms": self.total_ms,
                "op_types": [{"op_type": op, "ms": ms, "share": ms / (self.total_ms or 1.0), "nodes": n}
                             for op, ms, n in self.by_op_type()],
                "nodes": [n.__dict__ for n in self.nodes]}


def profile_onnx(path: str | Path, size: tuple[int, int] = (640, 640), batch: int = 1, threads: int | None = None,
                 runs: int = 20, warmup: int = 5) -> ProfileReport:
    """Mean kernel time per node over ``runs`` profiled runs (the ``warmup`` runs before them are left out)."""
    model = load_onnx(path)  # a file that is not ONNX fails here, in one line, before ONNX Runtime logs about it
    options = session_options(threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="featherface-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = onnxruntime_session(model.SerializeToString(), options, ["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(-120, 150, (batch, 3, *size)).astype(np.float32)
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first = run_starts[warmup] if len(run_starts) > warmup else 0
    totals: dict[str, list] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < first:
            continue
        name = event["name"][: -len("_kernel_time")]
        entry = totals.setdefault(name, [event.get("args", {}).get("op_name", "?"), 0.0])
        entry[1] += event["dur"] / 1000.0
    nodes = [NodeTime(name, op, ms / runs) for name, (op, ms) in totals.items()]
    return ProfileReport(Path(path).name, (batch, 3, *size), threads or 0, runs, nodes)
