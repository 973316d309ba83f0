"""Bench: the stage table's schema, that a broken stage shows as broken, crash isolation, latency statistics."""
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import featherface
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.backends.torch_backend import TorchRunner
from toolchain.bench import Skip, Stage, bench_model
from toolchain.cli import main
from toolchain.measuring.report import write_report
from toolchain.measuring.timing import LatencyStats, interleaved_latency

from .conftest import SHARED, V1_WEIGHTS

JSON_KEYS = {"name", "backend", "precision", "easy", "medium", "hard", "d_easy", "d_medium", "d_hard", "max_abs_diff",
             "cosine", "det_f1", "p50_ms", "p90_ms", "p99_ms", "fps_batch8", "size_bytes", "peak_rss_mb",
             "skipped_reason"}


class Crashing(OnnxRuntimeRunner):
    """A real ONNX Runtime runner that fails on a batch of 8 (as an engine with a too-small profile would)."""

    def infer(self, batch):
        if batch.shape[0] == 8:
            raise RuntimeError("batch 8 exceeds the profile")
        return super().infer(batch)


@pytest.fixture(scope="module")
def rows(v1_onnx, small_val):
    perturbed = featherface.load_model("featherface-v1", V1_WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3 * p.std().nan_to_num(0.0))

    def skip():
        raise Skip("no such accelerator here")

    stages = [
        Stage("torch-fp32", "torch", "fp32", lambda: TorchRunner(featherface.load_model("featherface-v1", V1_WEIGHTS)),
              V1_WEIGHTS),
        Stage("onnx-fp32", "onnxruntime", "fp32", lambda: OnnxRuntimeRunner(v1_onnx.path, 1), v1_onnx.path),
        Stage("torch-perturbed", "torch", "fp32", lambda: TorchRunner(perturbed)),
        Stage("absent", "tensorrt", "fp16", skip),
        Stage("broken-file", "onnxruntime", "fp32", lambda: OnnxRuntimeRunner(small_val / "missing.onnx")),
        Stage("crash-batch8", "onnxruntime", "fp32", lambda: Crashing(v1_onnx.path, 1)),
        Stage("accuracy-only", "onnxruntime", "fp32", lambda: OnnxRuntimeRunner(v1_onnx.path, 1), v1_onnx.path,
              timed=False),
    ]
    return bench_model("featherface-v1", stages, small_val, ((320, 320),), runs=3, batch8_runs=1, echo=lambda m: None)


def test_stage_rows_have_the_documented_schema(rows):
    for row in rows:
        assert JSON_KEYS <= set(row.as_json())
        json.dumps(row.as_json())  # serialisable
    ref, onnx = rows[0], rows[1]
    assert ref.status == "ok" and ref.d_easy == 0 and ref.det_f1 == 1.0 and ref.speedup == 1.0
    assert onnx.status == "ok" and abs(onnx.d_easy) < 0.01 and onnx.det_f1 > 0.95 and onnx.max_abs_diff < 1e-3
    assert onnx.p50_ms <= onnx.p90_ms <= onnx.p99_ms and onnx.latency["320x320"]["runs"] == 3
    assert onnx.fps_batch8 > 0 and onnx.peak_rss_mb > 50
    assert ref.size_bytes == os.path.getsize(V1_WEIGHTS) and onnx.size_bytes > 1_000_000


def test_a_broken_stage_is_visibly_broken(rows):
    perturbed = next(r for r in rows if r.name == "torch-perturbed")
    assert perturbed.status == "ok"
    assert perturbed.d_hard < -0.2 and perturbed.det_f1 < 0.5 and perturbed.cosine < 0.99


def test_an_untimed_stage_has_accuracy_but_no_latency(rows):
    row = next(r for r in rows if r.name == "accuracy-only")
    onnx_row = next(r for r in rows if r.name == "onnx-fp32")
    assert row.status == "ok" and row.easy == onnx_row.easy and row.det_f1 is not None
    assert row.p50_ms is None and row.fps_batch8 is None and row.latency == {} and row.op_profile == []
    assert onnx_row.p50_ms is not None


def test_skipped_and_failed_stages_are_listed_with_reasons(rows):
    by_name = {r.name: r for r in rows}
    assert by_name["absent"].status == "skipped" and by_name["absent"].skipped_reason == "no such accelerator here"
    assert by_name["broken-file"].status == "failed" and "missing.onnx: ONNX file not found" in by_name["broken-file"].error
    crash = by_name["crash-batch8"]
    assert crash.status == "failed" and "batch 8 exceeds the profile" in crash.error
    assert crash.easy is not None  # it evaluated before it crashed; the other stages kept running
    assert by_name["onnx-fp32"].fps_batch8 is not None


def test_report_writes_markdown_html_and_plots(rows, tmp_path):
    html = write_report(rows, {"threads": 1}, tmp_path)
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 2 and "torch-perturbed" in page and "no such accelerator" in page
    assert "<table>" in page and "<pre>" not in page and "<dt>ΔAP</dt>" in page
    assert "<td class='v outside-budget'>outside budget</td>" in page  # the perturbed weights lose > 0.2 AP
    assert "<td class='v reference'>reference</td>" in page and "class='reason'>skipped: no such accelerator" in page
    onnx_row = next(r for r in rows if r.name == "onnx-fp32")
    assert onnx_row.op_profile and abs(sum(p["share"] for p in onnx_row.op_profile) - 1) < 1e-6
    assert "Where the time goes" in page and "DeformConv" in page
    peer = rows[0].__class__("featherface-v1", "peer-yunet_n", "opencv", "fp32", peer=True)
    assert peer.label == "yunet_n (peer)" and peer.verdict(False) == "peer"
    for name in ("pr_curves.png", "accuracy_latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![PR curves](pr_curves.png)" in (tmp_path / "report.md").read_text()


def test_latency_statistics_on_a_stub_of_known_duration():
    """A fake clock advanced by known amounts: the percentiles must come out exactly."""
    now = [0.0]
    durations = iter([0.001] * 2 + [i / 1000 for i in range(1, 101)])  # 2 warm-up calls, then 1..100 ms

    def stub():
        now[0] += next(durations)

    samples, errors = interleaved_latency({"stub": stub}, runs=100, warmup=2, clock=lambda: now[0])
    assert not errors and np.allclose(samples["stub"], np.arange(1, 101))
    stats = LatencyStats.of(samples["stub"])
    assert stats.runs == 100 and stats.p50 == pytest.approx(50.5) and stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)


def test_a_crash_during_timing_drops_only_that_function():
    calls = {"ok": 0}

    def ok():
        calls["ok"] += 1

    def boom():
        raise ValueError("device lost")

    samples, errors = interleaved_latency({"ok": ok, "boom": boom}, runs=5, warmup=1)
    assert set(samples) == {"ok"} and len(samples["ok"]) == 5 and errors == {"boom": "ValueError: device lost"}


def test_bench_cli_rejects_unknown_stage():
    result = CliRunner().invoke(main, ["bench", "--stages", "onnx-fp64"])
    assert result.exit_code == 2 and "unknown stage(s) onnx-fp64" in result.output


def test_frontier_rows_compare_other_networks_end_to_end(v1_onnx, small_val, tmp_path):
    from types import SimpleNamespace

    from toolchain.building.targets import load_target
    from toolchain.bench import frontier_stages, model_size
    from toolchain.measuring.peers import YuNet
    from toolchain.measuring.report import html_table

    built = [SimpleNamespace(onnx={"fp32": v1_onnx.path})] * 2  # the same graph twice: ΔAP must be exactly 0
    stages = frontier_stages([("featherface-v1", V1_WEIGHTS), ("featherface-v2", None)], built, 1, load_target("cpu"))
    yunet = SHARED / "weights" / "peers" / "yunet_n_dynamic.onnx"
    stages.append(Stage("peer-yunet_n", "opencv", "fp32", lambda: YuNet(yunet), yunet, peer=True))
    rows = bench_model("featherface-v1", stages, small_val, ((320, 320),), runs=2, batch8_runs=1, echo=lambda m: None,
                       profile_runs=0, full_detect=True)
    assert [r.status for r in rows] == ["ok", "ok", "ok"] and [r.peer for r in rows] == [False, True, True]
    assert (rows[1].d_easy, rows[1].d_medium, rows[1].d_hard) == (0.0, 0.0, 0.0) and rows[1].det_f1 == 1.0
    assert all(r.p50_ms and r.fps_batch8 for r in rows) and rows[2].params > 50_000
    params, gflops = model_size("featherface-v2")
    assert params == featherface.count_parameters(featherface.create_model("featherface-v2")) and 0.8 < gflops < 1.0
    rows[0].params, rows[0].gflops = model_size("featherface-v1")
    assert "592 / 2.49" in html_table(rows)
