"""Latency measurement: warm-up, then timed rounds that interleave the variants being compared.

Interleaving matters on small shared machines whose clocks drift under sustained load: variants
timed in the same rounds see the same conditions, so their ratio is meaningful.
"""
import time
from typing import Callable

import numpy as np


def interleaved_latency(fns: dict[str, Callable[[], object]], runs: int = 20, warmup: int = 3) -> dict[str, np.ndarray]:
    """Milliseconds per call for each named function, ``runs`` samples each after ``warmup`` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(v) for name, v in samples.items()}
