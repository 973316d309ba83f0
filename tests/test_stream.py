"""Streams: a video written from val images, run by the bundle's runtime and by `toolchain detect`."""
import json
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from tests.conftest import VAL
from toolchain.runtime.featherface_runtime import FaceDetector
from toolchain.runtime.featherface_stream import (FolderSource, Source, StreamError, open_source, process_stream,
                                                  run_stream)

FRAMES, SIZE = 16, (320, 240)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """An MJPG AVI of the first val images resized to 320×240, a copy cut in the middle, and random bytes."""
    folder = tmp_path_factory.mktemp("video")
    images = sorted((VAL / "images").rglob("*.jpg"))[:FRAMES]
    path = folder / "val.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, SIZE)
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), SIZE))
    writer.release()
    truncated = folder / "truncated.avi"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path, truncated, corrupt


def _frames(path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


class Frames(Source):
    """Synthetic frames whose first pixel is their index: what the detecting side saw is readable back."""

    def __init__(self, count: int) -> None:
        super().__init__("synthetic", 25.0, count)
        self.count, self.read_at = count, []

    def read(self):
        if len(self.read_at) == self.count:
            return None
        self.read_at.append(time.perf_counter())
        frame = np.full((8, 8, 3), len(self.read_at) - 1, np.uint8)
        return frame, (len(self.read_at) - 1) / 25.0


def _index_of(frame):
    return np.zeros((1, 4)), np.array([float(frame[0, 0, 0])]), np.zeros((1, 10))


def test_every_frame_in_order_without_drop_and_a_bounded_queue_with_it():
    results = list(run_stream(Frames(40), _index_of, queue_size=2))
    assert [r.frame for r in results] == list(range(40)) and [r.scores[0] for r in results] == list(range(40))
    # The detector is slower than the decoder: frames are dropped, never queued without bound, order is kept.
    source = Frames(60)
    slow = lambda frame: (time.sleep(0.01), _index_of(frame))[1]  # noqa: E731
    seen = [int(r.scores[0]) for r in run_stream(source, slow, queue_size=2, drop=True)]
    assert seen == sorted(seen) and seen[-1] == 59
    assert source.dropped > 0 and len(seen) + source.dropped == 60


def test_decoding_runs_ahead_only_as_far_as_the_queue():
    source, held = Frames(30), threading.Event()

    def blocked(frame):
        held.wait(5)
        return _index_of(frame)

    stream = run_stream(source, blocked, queue_size=3)
    timer = threading.Timer(0.5, held.set)
    timer.start()
    first = next(stream)
    # While the first frame was held, the decoder filled the queue (3) plus the frame in hand, then waited.
    assert first.frame == 0 and len(source.read_at) <= 1 + 3 + 1
    assert len(list(stream)) == 29


def test_bundle_stream_matches_per_frame_detection(cpu_bundle, video, tmp_path):
    """The shipped detect_stream.py on a video: one JSON line per frame, the detections FaceDetector gives on the
    same decoded frames, an annotated video with every frame, and the run's frames/s and p50/p90."""
    _, result = cpu_bundle
    path, _, _ = video
    out_video, summary = tmp_path / "annotated.avi", tmp_path / "summary.json"
    run = subprocess.run([sys.executable, str(result.bundle / "runtime" / "detect_stream.py"), str(path),
                          "--threads", "2", "--video-out", str(out_video), "--summary", str(summary)],
                         capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["time"] for line in lines[:3]] == [0.0, 0.04, 0.08]
    detector = FaceDetector(result.bundle, threads=2)
    for line, frame in zip(lines, _frames(path)):
        boxes, scores, _ = detector.detect(frame)
        assert len(line["faces"]) == len(scores)
        np.testing.assert_allclose(np.reshape([f["box"] for f in line["faces"]], (-1, 4)), boxes, atol=0.01)
    assert sum(len(line["faces"]) for line in lines) > FRAMES  # val images hold faces
    assert len(_frames(out_video)) == FRAMES and _frames(out_video)[0].shape[:2] == SIZE[::-1]
    stats = json.loads(summary.read_text())
    assert stats["frames"] == FRAMES and stats["fps"] > 0 and stats["environment"]["arch"] == "x86_64"
    assert stats["latency_ms"]["p50"] <= stats["latency_ms"]["p90"]
    assert "frames/s" in run.stderr and "p50/p90" in run.stderr


def test_overlapped_and_sequential_give_the_same_detections(cpu_bundle, video):
    _, result = cpu_bundle
    detector = FaceDetector(result.bundle, threads=1)
    runs = {}
    for sequential in (False, True):
        runs[sequential] = [r.boxes for r in run_stream(open_source(str(video[0])), detector.detect,
                                                        sequential=sequential)]
    assert len(runs[False]) == FRAMES
    for a, b in zip(runs[False], runs[True]):
        np.testing.assert_array_equal(a, b)


def test_toolchain_detect_streams_a_video_and_an_image_folder(cpu_bundle, video, tmp_path):
    onnx_model = cpu_bundle[1].bundle / "model.onnx"
    lines = tmp_path / "frames.jsonl"
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "detect", str(video[0]), "--backend", "onnxruntime",
                          "--onnx", str(onnx_model), "--jsonl", str(lines), "--sequential", "--max-frames", "5"],
                         capture_output=True, text=True, check=True)
    assert [json.loads(line)["frame"] for line in lines.read_text().splitlines()] == list(range(5))
    assert "sequential: 5 frames" in run.stderr
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate(_frames(video[0])[:3]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "detect", str(folder), "--stream", "--backend",
                          "onnxruntime", "--onnx", str(onnx_model)], capture_output=True, text=True, check=True)
    assert [json.loads(line)["frame"] for line in run.stdout.splitlines()] == [0, 1, 2]


def test_bad_streams_are_one_line_errors_and_leave_nothing(cpu_bundle, video, tmp_path):
    _, result = cpu_bundle
    _, truncated, corrupt = video
    script = str(result.bundle / "runtime" / "detect_stream.py")
    cases = {str(truncated): "ended after", str(corrupt): "cannot be opened as a video", "9": "camera 9: cannot be opened",
             str(tmp_path / "missing.mp4"): "no such file"}
    for source, message in cases.items():
        out_video = tmp_path / "out.avi"
        run = subprocess.run([sys.executable, script, source, "--video-out", str(out_video)], capture_output=True,
                             text=True)
        assert run.returncode == 1 and run.stderr.count("\n") == 1 and message in run.stderr, (source, run.stderr)
        assert run.stderr.startswith("error: ") and (source in run.stderr or source == "9")
        assert not list(tmp_path.glob("*out*")), "a failed stream left a video behind"
    lines = tmp_path / "frames.jsonl"
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "detect", str(truncated), "--backend", "onnxruntime",
                          "--onnx", str(result.bundle / "model.onnx"), "--jsonl", str(lines)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("Error: ") and run.stderr.count("\n") == 1
    assert not lines.exists() and not list(tmp_path.glob(".frames*"))
    with pytest.raises(StreamError, match="no images"):
        FolderSource(tmp_path)


def test_a_bundle_on_a_machine_without_onnxruntime_says_so_in_one_line(cpu_bundle, video):
    _, result = cpu_bundle
    script = ("import runpy, sys; sys.modules['onnxruntime'] = None; "
              f"sys.argv = ['detect_stream.py', {str(video[0])!r}]; "
              f"runpy.run_path({str(result.bundle / 'runtime' / 'detect_stream.py')!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert "onnxruntime is not installed for" in run.stderr and "requirements.txt" in run.stderr
    for missing in ("cv2", "numpy"):
        script = (f"import runpy, sys; sys.modules[{missing!r}] = None; sys.argv = ['detect_stream.py', '0']; "
                  f"runpy.run_path({str(result.bundle / 'runtime' / 'detect_stream.py')!r}, run_name='__main__')")
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        package = "opencv-python-headless" if missing == "cv2" else missing
        assert run.returncode == 1 and run.stderr.strip().startswith(f"error: {package} is not installed")
