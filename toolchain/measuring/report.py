"""Bench report: Markdown + a self-contained HTML page (PNG plots embedded) + the PNGs themselves."""
import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from toolchain.building.artifacts import write_bytes, write_text  # noqa: E402
from toolchain.measuring.bench import SETTINGS, StageResult, table  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def pr_curves(rows: list[StageResult]) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    for ax, setting in zip(axes, SETTINGS):
        for r in rows:
            if r.status == "ok" and setting in r.curves:
                recall, precision = r.curves[setting]
                ax.plot(recall, precision, label=f"{r.model} {r.name} ({getattr(r, setting):.3f})", lw=1.2)
        ax.set_title(f"WIDER {setting}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    axes[0].set_ylabel("precision")
    return _png(fig)


def accuracy_vs_latency(rows: list[StageResult]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in rows:
        if r.status == "ok" and r.p50_ms:
            mean_ap = (r.easy + r.medium + r.hard) / 3
            ax.scatter(r.p50_ms, mean_ap, s=40)
            ax.annotate(f"{r.model}\n{r.name}", (r.p50_ms, mean_ap), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log scale, first input size, batch 1)")
    ax.set_ylabel("mean of easy/medium/hard AP")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Accuracy vs latency")
    return _png(fig)


def write_report(rows: list[StageResult], env: dict, folder: str | Path) -> Path:
    """Writes ``report.md``, ``report.html`` (self-contained) and the two PNGs; returns the HTML path."""
    folder = Path(folder)
    plots = {"pr_curves.png": pr_curves(rows), "accuracy_latency.png": accuracy_vs_latency(rows)}
    for name, data in plots.items():
        write_bytes(folder / name, data)
    setup = ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)
    notes = [f"- **{r.model} {r.name}**: {r.status} — {r.skipped_reason or r.error}" for r in rows if r.status != "ok"]
    markdown = "\n".join([
        "# FeatherFace bench", "", f"Setup: {setup}.", "",
        "AP and ΔAP on the 0–1 scale; Δ, drift and F1 against each model's PyTorch FP32 reference; "
        "×ref = reference p50 / stage p50 (same run, interleaved).", "",
        "```", table(rows), "```", "", *notes, "",
        "![PR curves](pr_curves.png)", "", "![Accuracy vs latency](accuracy_latency.png)", ""])
    write_text(folder / "report.md", markdown)
    images = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" style="max-width:100%" '
                     f'src="data:image/png;base64,{base64.b64encode(plots[name]).decode()}">'
                     for name, title in (("pr_curves.png", "Precision–recall per stage"),
                                         ("accuracy_latency.png", "Accuracy vs latency")))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>FeatherFace bench</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}pre{{font-size:12px;background:#f6f6f6;padding:1em;"
            f"overflow-x:auto}}</style></head><body><h1>FeatherFace bench</h1><p>{html.escape(setup)}</p>"
            f"<pre>{html.escape(table(rows))}</pre><ul>"
            + "".join(f"<li>{html.escape(n[2:])}</li>" for n in notes)
            + f"</ul>{images}</body></html>\n")
    write_text(folder / "report.html", page)
    return folder / "report.html"
