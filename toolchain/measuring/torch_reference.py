"""The PyTorch FP32 reference timed the way a PyTorch user runs it: in its own process, with PyTorch's defaults
(OpenMP's default waiting, PyTorch's default thread count unless one is given) and nothing else running.

``toolchain bench`` also times the reference interleaved with the other stages, under passive OpenMP waiting so
that PyTorch's idle threads do not spin into the ONNX Runtime stages after it; that slows PyTorch itself, which
made ×ref look ~1.2× kinder to ONNX Runtime than it is. ×ref uses this process's figure.

    python -m toolchain.measuring.torch_reference --model M --weights W --images DIR --size 640 --runs 50
prints one JSON object: {"threads": N, "latency": {"640x640": {p50_ms, p90_ms, p99_ms, runs}, ...},
"batch8_ms": median ms of a batch of 8 at the first size}.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from featherface.errors import ArtifactError, FeatherFaceError
from toolchain.backends.torch_backend import load_torch_runner
from toolchain.measuring.timing import LatencyStats, interleaved_latency, timing_batch, timing_images

# Settings that make OpenMP's idle threads sleep at once: a user's PyTorch runs without them.
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def isolated_reference(model: str, weights: Path | None, images_dir: Path, sizes: tuple[tuple[int, int], ...],
                       runs: int, batch8_runs: int, threads: int | None = None) -> dict:
    """Run this module in a child process with OpenMP's waiting settings removed; returns its JSON."""
    argv = [sys.executable, "-m", "toolchain.measuring.torch_reference", "--model", model, "--images",
            str(images_dir), "--runs", str(runs), "--batch8-runs", str(batch8_runs)]
    argv += ["--weights", str(weights)] if weights else []
    argv += ["--threads", str(threads)] if threads else []
    for height, width in sizes:
        argv += ["--size", f"{height}x{width}"]
    env = {k: v for k, v in os.environ.items() if k not in WAIT_SETTINGS}
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ArtifactError(f"isolated PyTorch reference: exit {result.returncode} ({lines[-1] if lines else ''})")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--size", action="append", required=True, help="HxW, repeatable; the first gets batch 8")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--batch8-runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="default: PyTorch's own choice")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        runner = load_torch_runner(args.model, args.weights)
    except FeatherFaceError as exc:
        raise SystemExit(f"error: {exc}") from None
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.size]
    latency = {}
    for size in sizes:
        x = timing_batch(timing_images(args.images, size, 1))
        samples, errors = interleaved_latency({"torch": lambda x=x: runner.infer(x)}, args.runs)
        if errors:
            raise SystemExit(f"error: {errors['torch']}")
        stats = LatencyStats.of(samples["torch"])
        latency[f"{size[0]}x{size[1]}"] = {"p50_ms": stats.p50, "p90_ms": stats.p90, "p99_ms": stats.p99,
                                           "runs": stats.runs}
    x8 = timing_batch(timing_images(args.images, sizes[0], 8))
    samples, _ = interleaved_latency({"torch": lambda: runner.infer(x8)}, args.batch8_runs, warmup=2)
    print(json.dumps({"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "latency": latency,
                      "batch8_ms": float(sorted(samples["torch"])[len(samples["torch"]) // 2])}))


if __name__ == "__main__":
    main()
