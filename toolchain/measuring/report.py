"""Bench report: Markdown + a self-contained HTML page (PNG plots embedded) + the PNGs themselves.

The main table is a real table a person can scan: one row per stage, its budget verdict (ΔAP against the
model's PyTorch FP32 reference outside −0.005 / −0.005 / −0.010 is marked), skipped and failed stages with
their reason, peers labelled as peers, and a legend for the columns.
"""
import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from toolchain.building.artifacts import write_bytes, write_text  # noqa: E402
from toolchain.measuring.results import SETTINGS, StageResult  # noqa: E402
from toolchain.measuring.robustness import BUDGET  # noqa: E402

COLUMNS = (
    ("stage", "model and stage; peers are other detectors run on the same images"),
    ("verdict", f"ΔAP against the model's PyTorch FP32 reference within −{-BUDGET['easy']:g} / "
                f"−{-BUDGET['medium']:g} / −{-BUDGET['hard']:g} (easy / medium / hard) or not"),
    ("easy / medium / hard", "WIDER FACE AP, 0–1 scale, official protocol on the val folder"),
    ("ΔAP", "AP minus the reference's (for a peer: minus the first model's reference)"),
    ("max |Δ|, cos", "largest absolute output difference and lowest cosine against the reference, same inputs"),
    ("F1", "detection agreement with the reference at IoU 0.5 (score ≥ 0.5)"),
    ("p50 / p99 ms", "latency percentiles at the first input size, batch 1, interleaved with every stage (the PyTorch "
                     "reference: alone, see ×ref)"),
    ("×ref", "reference p50 / this stage's p50, same run; a PyTorch reference is timed alone, in its own process "
             "with PyTorch's defaults (its row shows that figure; its interleaved one is in the JSON)"),
    ("fps@8", "images per second at batch 8"),
    ("MB", "model file size"),
    ("params / GFLOPs", "parameters (thousands) and GFLOPs at 640×640 (2 per multiply-accumulate, featherface.flops; "
                        "peers: their ONNX graph's convolutions counted the same way)"),
    ("RSS MB", "process peak resident memory while the stage loaded and ran"),
)


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
                ax.plot(recall, precision, label=f"{r.label} ({getattr(r, setting):.3f})", lw=1.2,
                        ls="--" if r.peer else "-")
        ax.set_title(f"WIDER {setting}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    axes[0].set_ylabel("precision")
    return _png(fig)


def accuracy_vs_latency(rows: list[StageResult]) -> bytes:
    """One marker per stage, named in a legend beside the axes: stages of one model sit close together, so
    labels written next to the points would overlap."""
    fig, ax = plt.subplots(figsize=(10, 5))
    points = [(r, r.p50_ms, (r.easy + r.medium + r.hard) / 3) for r in rows if r.status == "ok" and r.p50_ms]
    markers = "osv^<>ph*"
    for i, (r, ms, ap) in enumerate(points):
        ax.scatter(ms, ap, s=52, marker="D" if r.peer else markers[i % len(markers)], zorder=3,
                   label=f"{r.label}: {ms:.1f} ms, AP {ap:.4f}")
    if points:
        aps = [ap for _, _, ap in points]
        span = max(max(aps) - min(aps), 0.01)
        ax.set_ylim(min(aps) - 0.15 * span, max(aps) + 0.15 * span)
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, 30, 40 rather than 2×10¹, 3×10¹
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("p50 latency, ms (log scale, first input size, batch 1)")
    ax.set_ylabel("mean of easy / medium / hard AP")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Accuracy vs latency (◆ = peer)", pad=12)
    return _png(fig)


def _budget_units(entry: dict) -> float:
    """The worst of easy/medium/hard ΔAP as a fraction of its budget: −1 is exactly at the budget."""
    return min(entry["delta"][k] / -BUDGET[k] for k in SETTINGS)


def robustness_plot(rows: list[StageResult]) -> bytes | None:
    """Grouped bars: per shift, each compressed stage's worst ΔAP in budget units, the budget drawn at −1.

    Peers (another network, far outside any budget) and stages identical to the reference stay in the table only;
    bars beyond the axis are clipped and labelled with their value."""
    shown = [r for r in rows if r.robustness and not r.peer and not all(
        e["delta"][k] == 0 for e in r.robustness.values() for k in SETTINGS)]
    if not shown:
        return None
    shifts = list(shown[0].robustness)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(shifts) + 3), 4.8))
    width = 0.8 / len(shown)
    floor, clipped = -6.0, False
    for i, r in enumerate(shown):
        values = [_budget_units(r.robustness[s]) if s in r.robustness else 0 for s in shifts]
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(shifts))]
        ax.bar(xs, [max(v, floor) for v in values], width, label=r.label)
        for x, v in zip(xs, values):
            if v < floor:
                clipped = True
                ax.annotate(f"{v:.0f}", (x, floor), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
    if clipped:
        ax.set_ylim(bottom=floor - 0.5)
    ax.axhline(-1, color="crimson", lw=1.2, ls="--", label="budget (−0.005 / −0.005 / −0.010)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(shifts)), shifts, rotation=20)
    ax.set_ylabel("worst ΔAP vs reference, in budget units")
    ax.set_title("Accuracy under camera shifts (below the dashed line = outside budget)", pad=12)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _png(fig)


def robustness_cells(rows: list[StageResult]) -> tuple[list[str], list[tuple[str, list[tuple[str, bool]]]]]:
    """(shift names, [(stage label, [(ΔAP e/m/h text, within budget)] per shift)])."""
    shifts = next((list(r.robustness) for r in rows if r.robustness), [])
    body = []
    for r in rows:
        if r.robustness:
            body.append((r.label, [(" / ".join(f"{r.robustness[s]['delta'][k]:+.4f}" for k in SETTINGS)
                                    + (f", F1 {r.robustness[s]['det_f1']:.2f}" if r.robustness[s]['det_f1'] is not None
                                       else ""), r.robustness[s]["within_budget"]) for s in shifts]))
    return shifts, body


def _f(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _cells(row: StageResult, reference: bool) -> list[str]:
    if row.status != "ok":
        return [row.label, row.verdict(reference), f"{row.status}: {row.skipped_reason or row.error}"]
    return [row.label, row.verdict(reference),
            " / ".join(_f(getattr(row, k), ".4f") for k in SETTINGS),
            " / ".join(_f(getattr(row, f"d_{k}"), "+.4f") for k in SETTINGS),
            f"{_f(row.max_abs_diff, '.1e')}, {_f(row.cosine, '.5f')}", _f(row.det_f1, ".3f"),
            f"{_f(row.p50_ms, '.1f')} / {_f(row.p99_ms, '.1f')}", _f(row.speedup, ".2f"), _f(row.fps_batch8, ".1f"),
            _f(row.size_bytes / 1e6 if row.size_bytes else None, ".2f"),
            f"{_f(row.params / 1e3 if row.params else None, '.0f')} / {_f(row.gflops, '.2f')}",
            _f(row.peak_rss_mb, ".0f")]


def _with_reference(rows: list[StageResult]):
    seen = set()
    for row in rows:
        yield row, row.model not in seen and not row.peer
        if not row.peer:
            seen.add(row.model)


def markdown_table(rows: list[StageResult]) -> str:
    names = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row, reference in _with_reference(rows):
        cells = _cells(row, reference)
        lines.append("| " + " | ".join(cells + [""] * (len(names) - len(cells))) + " |")
    return "\n".join(lines)


def html_table(rows: list[StageResult]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in COLUMNS)
    body = []
    for row, reference in _with_reference(rows):
        cells = _cells(row, reference)
        verdict = row.verdict(reference).replace(" ", "-")
        tds = [f"<td>{html.escape(cells[0])}</td>", f"<td class='v {verdict}'>{html.escape(cells[1])}</td>"]
        if row.status != "ok":
            tds.append(f"<td colspan='{len(COLUMNS) - 2}' class='reason'>{html.escape(cells[2])}</td>")
        else:
            tds += [f"<td class='n'>{html.escape(c)}</td>" for c in cells[2:]]
        body.append(f"<tr class='{'peer' if row.peer else row.status}'>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def profile_table(rows: list[StageResult], top: int = 5) -> list[list[str]]:
    """Per ONNX Runtime stage: its ``top`` op types by share of kernel time (the bench's profile)."""
    return [[row.label] + [f"{p['op_type']} {p['share']:.0%}" for p in row.op_profile[:top]]
            for row in rows if row.op_profile]


STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}"
         "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f0f0f0}"
         "td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
         "tr.peer td{background:#f7f7fb;font-style:italic}tr.skipped td,tr.failed td{color:#777}"
         ".v.within-budget{background:#e3f4e3}.v.outside-budget{background:#fbe0e0;font-weight:bold}"
         "td.within-budget{background:#eef8ee}td.outside-budget{background:#fbe0e0;font-weight:bold}"
         ".v.reference{background:#eef}.v.failed{background:#fbe0e0}dl{font-size:13px}dt{font-weight:bold}"
         "dd{margin:0 0 .4em 1.5em}")


def write_report(rows: list[StageResult], env: dict, folder: str | Path) -> Path:
    """Writes ``report.md``, ``report.html`` (self-contained) and the two PNGs; returns the HTML path."""
    folder = Path(folder)
    plots = {"pr_curves.png": pr_curves(rows), "accuracy_latency.png": accuracy_vs_latency(rows)}
    shift_plot = robustness_plot(rows)
    if shift_plot:
        plots["robustness.png"] = shift_plot
    shifts, shift_rows = robustness_cells(rows)
    robustness_md = (["## Robustness: ΔAP (easy / medium / hard) vs the reference on the same shifted images", "",
                      "| stage | " + " | ".join(shifts) + " |", "|---|" + "---|" * len(shifts),
                      *("| " + label + " | " + " | ".join(t if ok else f"**{t}** ✗" for t, ok in cells) + " |"
                        for label, cells in shift_rows), "", "![Robustness](robustness.png)", ""]
                     if shift_rows else [])
    for name, data in plots.items():
        write_bytes(folder / name, data)
    setup = ", ".join(f"{k} {v}" for k, v in env.items() if v is not None)
    legend = [f"- **{name}**: {meaning}" for name, meaning in COLUMNS]
    profiles = profile_table(rows)
    where = (["## Where the time goes (ONNX Runtime profile, first input size: top op types by kernel time)", "",
              "| stage | 1st | 2nd | 3rd | 4th | 5th |", "|---|---|---|---|---|---|",
              *("| " + " | ".join(cells) + " |" for cells in profiles), ""] if profiles else [])
    markdown = "\n".join(["# FeatherFace bench", "", f"Setup: {setup}.", "", markdown_table(rows), "", *legend, "",
                          *where, *robustness_md, "![PR curves](pr_curves.png)", "",
                          "![Accuracy vs latency](accuracy_latency.png)", ""])
    write_text(folder / "report.md", markdown)
    images = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" style="max-width:100%" '
                     f'src="data:image/png;base64,{base64.b64encode(plots[name]).decode()}">'
                     for name, title in (("pr_curves.png", "Precision–recall per stage"),
                                         ("accuracy_latency.png", "Accuracy vs latency")))
    robustness_html = ("<h2>Robustness under camera shifts</h2><p>ΔAP easy / medium / hard against the reference on "
                       "the same shifted images, and detection F1 with it; red = outside the budget.</p><table><thead>"
                       "<tr><th>stage</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in shifts) + "</tr></thead>"
                       "<tbody>" + "".join("<tr><td>" + html.escape(label) + "</td>" + "".join(
                           f"<td class='n {'within-budget' if ok else 'outside-budget'}'>{html.escape(t)}</td>"
                           for t, ok in cells) + "</tr>" for label, cells in shift_rows) + "</tbody></table>"
                       + (f'<img alt="robustness" style="max-width:100%" '
                          f'src="data:image/png;base64,{base64.b64encode(plots["robustness.png"]).decode()}">'
                          if shift_plot else "")) if shift_rows else ""
    definitions = "".join(f"<dt>{html.escape(n)}</dt><dd>{html.escape(m)}</dd>" for n, m in COLUMNS)
    where_html = ("<h2>Where the time goes</h2><p>ONNX Runtime's profiler at the first input size: the top op types "
                  "by share of kernel time (<code>toolchain profile</code> lists every node).</p><table><tbody>"
                  + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                            for cells in profiles) + "</tbody></table>") if profiles else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>FeatherFace bench</title>"
            f"<style>{STYLE}</style></head><body><h1>FeatherFace bench</h1><p>{html.escape(setup)}</p>"
            f"{html_table(rows)}<h2>Columns</h2><dl>{definitions}</dl>{robustness_html}{where_html}{images}"
            f"</body></html>\n")
    write_text(folder / "report.html", page)
    return folder / "report.html"
