"""Face detection on streams: a video file, an image sequence or a camera, decoded on one thread and
detected on another.

Shipped in every bundle beside ``featherface_runtime.py`` and used by ``toolchain detect``; Python 3.6 and
numpy + OpenCV only (no PyTorch). The two threads meet in a bounded queue, so memory never grows with the
stream: when the detector falls behind, the decoder waits (``drop=False``: every frame is detected, the
choice for files) or the oldest waiting frame is dropped (``drop=True``: the choice for live cameras, where a
stale frame is worth less than a late one). ``sequential=True`` decodes and detects on one thread, for
comparison.

    for result in run_stream(open_source("clip.mp4"), detector.detect):
        print(result.frame, result.boxes)
"""
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg")
Detect = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]


class StreamError(Exception):
    """A source that cannot be opened or that breaks off before its end; the message names it."""


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own messages (a camera index that does not exist, a truncated frame) off
    stderr: the error is ours, one line. FFmpeg's level is read when OpenCV first opens a capture."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    logging = getattr(cv2.utils, "logging", None)  # absent from the oldest JetPack's OpenCV
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


def file_backend() -> int:
    """FFmpeg for files where OpenCV has it: the fallback (OpenCV's own AVI reader) prints parser noise on a
    corrupt file before failing."""
    registry = getattr(cv2, "videoio_registry", None)  # OpenCV ≥ 4.2
    return cv2.CAP_FFMPEG if registry is not None and registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY


def is_stream_source(source: str) -> bool:
    """A camera index ("0"), a video file, or an OpenCV image-sequence pattern ("frames/%05d.jpg")."""
    return source.isdigit() or "%" in source or Path(source).suffix.lower() in VIDEO_SUFFIXES


class Source:
    """Frames of one source: ``read()`` gives (frame BGR, source time in seconds) or None at its end."""

    def __init__(self, name: str, fps: Optional[float], expected: Optional[int]) -> None:
        self.name, self.fps, self.expected = name, fps, expected
        self.dropped = 0  # frames the decoder dropped because the detector was behind (drop=True)
        self.realtime, self._started, self._delivered = False, None, 0

    def pace(self) -> None:
        """Before each ``read()``: with ``realtime``, wait until the source's own frame rate allows the next frame,
        so that a file or a folder plays like the camera it was recorded with (a live camera paces itself)."""
        if self.realtime and self.fps:
            if self._started is None:
                self._started = time.perf_counter()
            wait = self._started + self._delivered / self.fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        self._delivered += 1

    def read(self) -> Optional[Tuple[np.ndarray, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CaptureSource(Source):
    """A video file, an image-sequence pattern or a camera, through ``cv2.VideoCapture``."""

    def __init__(self, spec: str) -> None:
        quiet_opencv()
        camera = spec.isdigit()
        if not camera and "%" not in spec and not Path(spec).is_file():
            raise StreamError("{}: no such file".format(spec))
        self.capture = cv2.VideoCapture(int(spec)) if camera else cv2.VideoCapture(spec, file_backend())
        name = "camera {}".format(spec) if camera else spec
        if not self.capture.isOpened():
            raise StreamError("{}: cannot be opened{}".format(
                name, " (no such camera, or it is in use)" if camera else " as a video (corrupt or unknown format)"))
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        super().__init__(name, fps if fps and fps > 0 else None, None if camera or count <= 0 else count)
        self.camera, self.index = camera, 0

    def read(self) -> Optional[Tuple[np.ndarray, float]]:
        ok, frame = self.capture.read()
        if not ok or frame is None:
            if self.index == 0:
                raise StreamError("{}: no frame could be decoded".format(self.name))
            return None
        seconds = (time.time() if self.camera else
                   self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1e3 if self.fps is None else self.index / self.fps)
        self.index += 1
        return frame, seconds

    def close(self) -> None:
        self.capture.release()


class FolderSource(Source):
    """The images of a folder in name order, as frames (an unreadable image stops the stream by name)."""

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise StreamError("{}: no images (.jpg, .png, .bmp) in the folder".format(folder))
        super().__init__(str(folder), fps, len(self.paths))
        self.index = 0

    def read(self) -> Optional[Tuple[np.ndarray, float]]:
        if self.index == len(self.paths):
            return None
        path = self.paths[self.index]
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise StreamError("{}: cannot decode image".format(path))
        self.index += 1
        return frame, (self.index - 1) / self.fps


def open_source(spec: str, realtime: bool = False) -> Source:
    """A camera index, a video file, an image-sequence pattern, or a folder of images; ``realtime`` delivers a
    file's frames at its frame rate (25 fps for a folder), as a camera would."""
    source = FolderSource(Path(spec)) if not spec.isdigit() and Path(spec).is_dir() else CaptureSource(spec)
    source.realtime = realtime and not spec.isdigit()
    return source


class FrameResult:
    """One frame's detections and timings (``latency_ms``: decoded → detections out, queue wait included)."""

    __slots__ = ("frame", "seconds", "image", "boxes", "scores", "landmarks", "decode_ms", "detect_ms", "latency_ms")

    def __init__(self, frame, seconds, image, boxes, scores, landmarks, decode_ms, detect_ms, latency_ms) -> None:
        self.frame, self.seconds, self.image = frame, seconds, image
        self.boxes, self.scores, self.landmarks = boxes, scores, landmarks
        self.decode_ms, self.detect_ms, self.latency_ms = decode_ms, detect_ms, latency_ms

    def as_json(self) -> dict:
        return {"frame": self.frame, "time": round(self.seconds, 4), "faces": [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5),
             "landmarks": [round(float(v), 2) for v in lm]}
            for b, s, lm in zip(self.boxes, self.scores, self.landmarks)]}


_END = object()


def _decoder(source: Source, frames: "queue.Queue", drop: bool, stop: threading.Event, state: dict) -> None:
    """Decoder thread: frames into the bounded queue until the source ends, fails or ``stop`` is set."""
    try:
        while not stop.is_set():
            source.pace()
            start = time.perf_counter()
            item = source.read()
            if item is None:
                break
            decoded = time.perf_counter()
            entry = (state["decoded"], item[1], item[0], (decoded - start) * 1e3, decoded)
            state["decoded"] += 1
            if drop:
                while True:
                    try:
                        frames.put_nowait(entry)
                        break
                    except queue.Full:
                        try:
                            frames.get_nowait()
                            state["dropped"] += 1
                        except queue.Empty:
                            pass
            else:
                while not stop.is_set():
                    try:
                        frames.put(entry, timeout=0.1)
                        break
                    except queue.Full:
                        pass
    except Exception as exc:  # handed to the detecting thread, which raises it
        state["error"] = exc
    finally:
        while True:  # the end marker must get in even when the queue is full
            try:
                frames.put(_END, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set():
                    break


def _detected(entry, detect: Detect) -> FrameResult:
    index, seconds, image, decode_ms, decoded = entry
    start = time.perf_counter()
    boxes, scores, landmarks = detect(image)
    done = time.perf_counter()
    return FrameResult(index, seconds, image, boxes, scores, landmarks, decode_ms, (done - start) * 1e3,
                       (done - decoded) * 1e3)


def queue_length(queue_size: Optional[int], drop: bool) -> int:
    """The default queue: 1 frame when dropping (a live camera: the detector always gets the newest frame, so
    latency stays one detection plus at most one frame interval), 4 otherwise (a file: throughput)."""
    size = (1 if drop else 4) if queue_size is None else queue_size
    if size < 1:
        raise ValueError("queue_size must be at least 1")
    return size


def run_stream(source: Source, detect: Detect, queue_size: Optional[int] = None, drop: bool = False,
               sequential: bool = False, max_frames: Optional[int] = None) -> Iterator[FrameResult]:
    """Detections per frame, in order. Raises StreamError when the source breaks off: a file that ends before
    the frame count in its header, or a frame that cannot be decoded."""
    queue_size = queue_length(queue_size, drop)
    count = 0
    try:
        if sequential:
            while max_frames is None or count < max_frames:
                source.pace()
                start = time.perf_counter()
                item = source.read()
                if item is None:
                    break
                decoded = time.perf_counter()
                yield _detected((count, item[1], item[0], (decoded - start) * 1e3, decoded), detect)
                count += 1
        else:
            frames = queue.Queue(maxsize=queue_size)
            stop = threading.Event()
            state = {"decoded": 0, "dropped": 0, "error": None}
            thread = threading.Thread(target=_decoder, args=(source, frames, drop, stop, state), daemon=True)
            thread.start()
            try:
                while max_frames is None or count < max_frames:
                    entry = frames.get()
                    if entry is _END:
                        break
                    yield _detected(entry, detect)
                    count += 1
            finally:
                stop.set()
                thread.join()
            if state["error"] is not None:
                raise state["error"]
            source.dropped = state["dropped"]
    finally:
        source.close()
    if max_frames is None and source.expected is not None and count + source.dropped < source.expected:
        raise StreamError("{}: ended after {} of the {} frames its header announces (truncated or corrupt)".format(
            source.name, count + source.dropped, source.expected))


def percentile(values: List[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values), q)) if values else None


class StreamStats:
    """Throughput and per-frame timings of one run (wall clock from the first frame asked to the last out)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.frames, self.dropped = 0, 0
        self.latency, self.detect, self.decode = [], [], []

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.latency.append(result.latency_ms)
        self.detect.append(result.detect_ms)
        self.decode.append(result.decode_ms)

    def summary(self, mode: str) -> dict:
        wall = time.perf_counter() - self.start
        return {"mode": mode, "frames": self.frames, "dropped": self.dropped, "wall_s": round(wall, 3),
                "fps": round(self.frames / wall, 2) if wall > 0 else None,
                "latency_ms": {"p50": percentile(self.latency, 50), "p90": percentile(self.latency, 90)},
                "detect_ms": {"p50": percentile(self.detect, 50), "p90": percentile(self.detect, 90)},
                "decode_ms": {"p50": percentile(self.decode, 50), "p90": percentile(self.decode, 90)}}


def summary_line(summary: dict) -> str:
    return ("{mode}: {frames} frames ({dropped} dropped) in {wall_s:.2f} s = {fps:.1f} frames/s; per frame "
            "p50/p90: end-to-end {l50:.1f}/{l90:.1f} ms, detect {d50:.1f}/{d90:.1f} ms, decode {c50:.1f}/{c90:.1f} ms"
            .format(l50=summary["latency_ms"]["p50"] or 0, l90=summary["latency_ms"]["p90"] or 0,
                    d50=summary["detect_ms"]["p50"] or 0, d90=summary["detect_ms"]["p90"] or 0,
                    c50=summary["decode_ms"]["p50"] or 0, c90=summary["decode_ms"]["p90"] or 0, **summary))


def annotate(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of the image with boxes, scores and the five landmarks drawn."""
    out = image.copy()
    for box, score, points in zip(boxes, scores, landmarks):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(out, "{:.2f}".format(float(score)), (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 255, 0), 1)
        for x, y in np.asarray(points).reshape(5, 2):
            cv2.circle(out, (int(round(float(x))), int(round(float(y)))), 2, (0, 0, 255), -1)
    return out


class VideoOut:
    """An annotated video written to a temporary file beside ``path`` and renamed on ``close()``; ``abort()``
    removes it, so a failed run leaves no half-written video. The temporary name keeps the suffix, which
    chooses the container."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer = Path(path), fps, None
        self.temp = self.path.with_name(".{}.{}.tmp{}".format(self.path.stem, os.getpid(), self.path.suffix))

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
                                              else "MJPG"))
            self.writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise StreamError("{}: OpenCV cannot write this video format".format(self.path))
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is None:
            raise StreamError("{}: no frame to write".format(self.path))
        self.writer.release()
        os.replace(str(self.temp), str(self.path))

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.temp.exists():
            self.temp.unlink()


def process_stream(source: Source, detect: Detect, lines=None, video_out: Optional[Path] = None,
                   queue_size: Optional[int] = None, drop: bool = False, sequential: bool = False,
                   max_frames: Optional[int] = None) -> dict:
    """Run a stream to its end: one JSON line per frame to ``lines`` (a text file, or None), the annotated video
    to ``video_out``; returns the summary (frames/s, p50/p90 per frame)."""
    stats = StreamStats()
    writer = VideoOut(video_out, source.fps or 25.0) if video_out is not None else None
    try:
        for result in run_stream(source, detect, queue_size, drop, sequential, max_frames):
            stats.add(result)
            if lines is not None:
                lines.write(json.dumps(result.as_json()) + "\n")
            if writer is not None:
                writer.write(annotate(result.image, result.boxes, result.scores, result.landmarks))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    stats.dropped = source.dropped
    return stats.summary("sequential" if sequential else "overlapped (queue {}{})".format(
        queue_length(queue_size, drop), ", drop oldest" if drop else ""))
