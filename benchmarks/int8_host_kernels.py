"""What a CPU without VNNI does to the `cpu` target's INT8 graph, and what 7-bit weights (reduce_range) cost.

    python benchmarks/int8_host_kernels.py SIMPLIFIED.onnx CALIB_CACHE.json SHIPPED_INT8.onnx [--images 3]

For the shipped graph and the same graph with 7-bit weights (same ranges, same FP32 layers): val AP with exact int32
INT8 and with this machine's ONNX Runtime kernels, then — where qemu-user is installed — the largest output
difference between ONNX Runtime's kernels on an emulated Haswell (AVX2, no VNNI) and the exact semantics on a few
val images. Prints one table.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calibration.quantize import quantize_int8  # noqa: E402
from featherface import paths  # noqa: E402
from featherface.preprocess import list_images, preprocess, read_image  # noqa: E402
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner  # noqa: E402
from toolchain.building.metadata import get_metadata, load_onnx  # noqa: E402
from toolchain.measuring.evaluate import evaluate_folder  # noqa: E402
from toolchain.runtime.featherface_runtime import cpu_features  # noqa: E402

PROBE = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from featherface.preprocess import list_images, preprocess, read_image
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
graph, images = {graph!r}, {images!r}
kernels, exact = OnnxRuntimeRunner(graph, 1, int8="kernels"), OnnxRuntimeRunner(graph, 1, int8="exact")
worst = {{"loc": 0.0, "conf": 0.0, "landms": 0.0}}
for path in images:
    x = preprocess(read_image(path))[None]
    for name, a, b in zip(("loc", "conf", "landms"), kernels.infer(x), exact.infer(x)):
        worst[name] = max(worst[name], float(np.abs(a - b).max()))
print(json.dumps(worst))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("simplified", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("shipped", type=Path)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    val = paths.shared_dir() / "data" / "widerface-val-mini" / "val"
    keep = get_metadata(load_onnx(args.shipped))["kept_fp32"]
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    images = [str(p) for p in list_images(val / "images")[: args.images]]
    reference = evaluate_folder(OnnxRuntimeRunner(args.simplified), val).ap
    with tempfile.TemporaryDirectory() as tmp:
        seven_bit = quantize_int8(args.simplified, args.cache, Path(tmp) / "rr.onnx", "s8", keep, reduce_range=True)
        print(f"this CPU: {cpu_features()}")
        for label, graph in (("shipped (8-bit weights)", args.shipped), ("reduce_range (7-bit weights)", seven_bit)):
            row = [label]
            for semantics in ("exact", "kernels"):
                ap = evaluate_folder(OnnxRuntimeRunner(graph, int8=semantics), val).ap
                row.append(" / ".join(f"{ap[k] - reference[k]:+.4f}" for k in ("easy", "medium", "hard")))
            if qemu:
                run = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-c",
                                      PROBE.format(root=str(ROOT), graph=str(graph), images=images)],
                                     capture_output=True, text=True, check=True)
                worst = json.loads(run.stdout.strip().splitlines()[-1])
                row.append(" / ".join(f"{worst[k]:.3g}" for k in ("loc", "conf", "landms")))
            print(" | ".join(row))


if __name__ == "__main__":
    main()
