"""Latency measurement: warm-up, then timed rounds that interleave the variants being compared.

Interleaving matters on small shared machines whose clocks drift under sustained load: variants
timed in the same rounds see the same conditions, so their ratio is meaningful.
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from featherface.errors import describe
from featherface.preprocess import list_images, preprocess, read_image


@dataclass(frozen=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    runs: int

    @classmethod
    def of(cls, samples_ms: np.ndarray) -> "LatencyStats":
        p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), len(samples_ms))


def interleaved_latency(fns: dict[str, Callable[[], object]], runs: int = 50, warmup: int = 5,
                        clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Milliseconds per call for each named function, ``runs`` samples each after ``warmup`` calls.

    A function that raises is dropped from the remaining rounds; the second dict holds its error.
    """
    live, errors = dict(fns), {}

    def call(name: str) -> float | None:
        start = clock()
        try:
            live[name]()
        except Exception as exc:  # a crashing stage is reported, the others keep running
            errors[name] = describe(exc)
            del live[name]
            return None
        return (clock() - start) * 1e3

    for name in list(live):
        for _ in range(warmup):
            if name in live:
                call(name)
    samples: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(runs):
        for name in list(live):
            ms = call(name)
            if ms is not None:
                samples[name].append(ms)
    return {name: np.asarray(v) for name, v in samples.items() if name in live}, errors


def timing_images(images_dir: Path, size: tuple[int, int], batch: int) -> list[np.ndarray]:
    """The first ``batch`` images of a folder resized to ``size`` (repeated when there are fewer): the inputs
    every timed stage gets, in this process or another."""
    paths = list_images(images_dir)[:batch]
    return [cv2.resize(read_image(p), (size[1], size[0])) for p in (paths * batch)[:batch]]


def timing_batch(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([preprocess(image) for image in images])
