"""One row of ``toolchain bench``: what a stage measured, and how a person reads its verdict.

Kept apart from the bench that fills the rows so that the report (below the bench) can read them."""
from dataclasses import asdict, dataclass, field

from toolchain.measuring.robustness import BUDGET

SETTINGS = ("easy", "medium", "hard")


@dataclass
class StageResult:
    model: str
    name: str
    backend: str
    precision: str
    status: str = "ok"  # ok | skipped | failed
    skipped_reason: str | None = None
    error: str | None = None
    easy: float | None = None
    medium: float | None = None
    hard: float | None = None
    d_easy: float | None = None
    d_medium: float | None = None
    d_hard: float | None = None
    max_abs_diff: float | None = None
    cosine: float | None = None
    det_f1: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    speedup: float | None = None  # reference p50 / this p50, at the first size (the isolated figure if measured)
    latency: dict = field(default_factory=dict)  # "HxW" → {p50_ms, p90_ms, p99_ms, runs}, interleaved
    # The PyTorch reference in its own process with its defaults (toolchain/measuring/torch_reference.py):
    # {"threads", "latency": {"HxW": {...}}, "batch8_ms"}; the reference row only.
    isolated: dict | None = None
    fps_batch8: float | None = None
    size_bytes: int | None = None
    peak_rss_mb: float | None = None
    params: int | None = None
    gflops: float | None = None  # at 640², featherface.flops (2 FLOPs per multiply-accumulate)
    op_profile: list = field(default_factory=list)  # ONNX stages: time per op type (toolchain profile)
    robustness: dict = field(default_factory=dict)  # shift → AP, ΔAP vs the reference on the same images, F1
    curves: dict = field(default_factory=dict, repr=False)  # setting → (recall, precision); not in JSON

    peer: bool = False

    def as_json(self) -> dict:
        out = asdict(self)
        out.pop("curves")
        return out

    @property
    def label(self) -> str:
        """How a person reads the row: peers by their own name, marked as peers."""
        return f"{self.name.removeprefix('peer-')} (peer)" if self.peer else f"{self.model} {self.name}"

    def verdict(self, reference: bool) -> str:
        """'reference', 'within budget', 'outside budget' (any ΔAP below ``BUDGET``), 'peer', or the status."""
        if self.status != "ok":
            return self.status
        if self.peer:
            return "peer"
        if reference:
            return "reference"
        deltas = (self.d_easy, self.d_medium, self.d_hard)
        return "within budget" if all(d >= BUDGET[k] for d, k in zip(deltas, SETTINGS)) else "outside budget"
