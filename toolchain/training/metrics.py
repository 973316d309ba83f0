"""Per-epoch metrics: JSON lines + CSV + a PNG of the curves, rewritten atomically after every epoch."""
import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from toolchain.building.artifacts import write_bytes, write_text  # noqa: E402

COLUMNS = ("epoch", "loss", "loss_loc", "loss_conf", "loss_landm", "lr", "easy", "medium", "hard", "epoch_time_s",
           "images_per_s", "gpu_mem_peak_mb")


class MetricsTracker:
    def __init__(self, folder: Path, history: list[dict] | None = None) -> None:
        self.folder, self.history = folder, list(history or [])

    def add(self, row: dict) -> None:
        self.history.append({k: row.get(k) for k in COLUMNS})
        self.write()

    def write(self) -> None:
        write_text(self.folder / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in self.history)
        write_text(self.folder / "metrics.csv", buffer.getvalue())
        write_bytes(self.folder / "curves.png", self.plot())

    def plot(self) -> bytes:
        epochs = [r["epoch"] for r in self.history]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for key in ("loss", "loss_loc", "loss_conf", "loss_landm"):
            left.plot(epochs, [r[key] for r in self.history], label=key, marker=".")
        left.set_xlabel("epoch")
        left.set_title("training loss")
        left.legend()
        for key in ("easy", "medium", "hard"):
            points = [(r["epoch"], r[key]) for r in self.history if r[key] is not None]
            if points:
                right.plot(*zip(*points), label=key, marker="o")
        right.set_xlabel("epoch")
        right.set_title("val AP")
        right.set_ylim(0, 1)
        if right.lines:
            right.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return buffer.getvalue()
