"""The cpu bundle on ARM64 without ARM hardware: the bundle's own runtime in an emulated aarch64 Debian root
(qemu user mode, ``scripts/arm64_root.sh``) against the same runtime on this x86 host, image by image.

Both sides run ``toolchain/runtime/probe_outputs.py`` in their own process with one ONNX Runtime thread and
save the raw network outputs on the same prepared input and the detections; this module compares them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from featherface.errors import ArtifactError
from featherface.evaluation import evaluate, load_ground_truth
from featherface.postprocess import Detections
from featherface.preprocess import list_images
from toolchain.measuring.evaluate import wider_rows

PROBE = Path(__file__).resolve().parent.parent / "runtime" / "probe_outputs.py"
# qemu's CPU models (QEMU_CPU) and the boards they stand for. ONNX Runtime picks its ARM INT8 kernels by the
# dot-product capability (HWCAP_ASIMDDP): sdot on Neoverse-N1 / Cortex-A76, smull + sadalp on A72 and A57.
ARM_CPUS = {
    "cortex-a72": "Raspberry Pi 4, AWS Graviton 1",
    "neoverse-n1": "Raspberry Pi 5 (Cortex-A76), Graviton 2, Ampere Altra",
    "cortex-a57": "Jetson Nano, Jetson TX1",
}
HWCAP_ASIMDDP, HWCAP2_I8MM = 1 << 20, 1 << 13  # arch/arm64/include/uapi/asm/hwcap.h
OUTPUTS = ("loc", "conf", "landms")
COUNT_THRESHOLD = 0.5  # detections counted at the bundle's default score threshold
ROOT_PYTHON = "/opt/venv/bin/python"


def root_ready(root: Path) -> str | None:
    """None when ``root`` can run the emulated check here, else why not (for a skip or an error)."""
    if not (root / ROOT_PYTHON.lstrip("/")).exists():
        return f"{root}: no emulated aarch64 root (make arm64-check builds it)"
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        return "qemu-aarch64 is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support)"
    if shutil.which("chroot") is None or os.geteuid() != 0:
        return "chroot needs root"
    return None


def _run(argv: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ArtifactError(f"{what}: exit {result.returncode} ({lines[-1] if lines else 'no message'})")


def host_probe(bundle: Path, images: list[Path], out: Path, timeout: float = 600) -> dict:
    """The bundle's runtime on this host, in its own process."""
    _run([sys.executable, str(PROBE), str(bundle), str(out), *map(str, images)], f"{bundle}: host probe", timeout)
    return dict(np.load(out))


def stage_in_root(root: Path, bundle: Path, images: list[Path], folder: str = "check") -> list[str]:
    """Copy the bundle, the images and the probe into ``root/work/<folder>``; returns the images' paths inside."""
    work = root / "work" / folder
    shutil.rmtree(work, ignore_errors=True)
    (work / "images").mkdir(parents=True)
    shutil.copytree(bundle, work / "bundle")
    shutil.copyfile(PROBE, work / PROBE.name)
    inside = []
    for i, image in enumerate(images):
        shutil.copyfile(image, work / "images" / f"{i}{image.suffix}")
        inside.append(f"/work/{folder}/images/{i}{image.suffix}")
    return inside


def emulated_probe(root: Path, cpu: str, bundle: Path, images: list[Path], folder: str = "check",
                   timeout: float = 3600) -> dict:
    """The bundle's runtime in the aarch64 root under ``QEMU_CPU=cpu``, staged in ``root/work/<folder>`` (no /proc
    there: qemu does not emulate /proc/cpuinfo, and ONNX Runtime's CPU probe would read the host's x86 file)."""
    inside = stage_in_root(root, bundle, images, folder)
    argv = ["chroot", str(root), "/usr/bin/env", f"QEMU_CPU={cpu}", ROOT_PYTHON, f"/work/{folder}/{PROBE.name}",
            f"/work/{folder}/bundle", f"/work/{folder}/out.npz", *inside]
    _run(argv, f"{root}: emulated {cpu} probe", timeout)
    return dict(np.load(root / "work" / folder / "out.npz"))


def _detections(probe: dict, i: int) -> Detections:
    return Detections(probe[f"{i}/boxes"], probe[f"{i}/scores"], probe[f"{i}/landmarks"])


def compare(host: dict, arm: dict, keys: list[str], ground_truth: dict) -> dict:
    """Max |Δ| per raw output, detection counts and box/score differences at the default threshold, and AP on
    these images for both sides."""
    max_abs = {name: max(float(np.abs(host[f"{i}/{name}"].astype(np.float64) - arm[f"{i}/{name}"]).max())
                         for i in range(len(keys))) for name in OUTPUTS}
    counts, box_diff, score_diff = [], 0.0, 0.0
    for i in range(len(keys)):
        a, b = _detections(host, i), _detections(arm, i)
        keep_a, keep_b = a.scores >= COUNT_THRESHOLD, b.scores >= COUNT_THRESHOLD
        counts.append((int(keep_a.sum()), int(keep_b.sum())))
        if keep_a.sum() == keep_b.sum():
            box_diff = max(box_diff, float(np.abs(a.boxes[keep_a] - b.boxes[keep_b]).max(initial=0)))
            score_diff = max(score_diff, float(np.abs(a.scores[keep_a] - b.scores[keep_b]).max(initial=0)))
    gt = {k: ground_truth[k] for k in keys}
    ap = {side: evaluate({k: wider_rows(_detections(probe, i)) for i, k in enumerate(keys)}, gt).ap
          for side, probe in (("x86", host), ("arm64", arm))}
    hwcap, hwcap2 = int(arm.get("hwcap", 0)), int(arm.get("hwcap2", 0))
    return {"max_abs": max_abs, "counts": counts, "box_px": box_diff, "score": score_diff, "ap": ap,
            "dotprod": bool(hwcap & HWCAP_ASIMDDP), "i8mm": bool(hwcap2 & HWCAP2_I8MM),
            "seconds": {"x86": sum(float(host[f"{i}/seconds"]) for i in range(len(keys))),
                        "arm64": sum(float(arm[f"{i}/seconds"]) for i in range(len(keys)))}}


def val_images(val_dir: Path, count: int) -> tuple[list[Path], list[str], dict]:
    """The first ``count`` val images (name order), their WIDER keys and the ground truth."""
    images = list_images(val_dir / "images")[:count]
    keys = [p.relative_to(val_dir / "images").with_suffix("").as_posix() for p in images]
    return images, keys, load_ground_truth(val_dir / "ground_truth")


def table(rows: list[dict]) -> str:
    """One line per (precision, CPU): max |Δ| per output, detection counts x86 → arm64, AP both sides."""
    head = (f"{'bundle':<7}{'cpu (QEMU_CPU)':<14}{'sdot':>5}{'max|Δ| loc':>12}{'conf':>10}{'landms':>10}"
            f"{'box px':>9}{'score':>9}  {'faces x86→arm':<15}{'AP x86 e/m/h':<22}{'AP arm64 e/m/h':<22}{'s/img':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r["result"]
        ap = {side: "/".join(f"{c['ap'][side][k]:.4f}" for k in ("easy", "medium", "hard")) for side in c["ap"]}
        counts = " ".join(f"{a}→{b}" for a, b in c["counts"])
        lines.append(f"{r['precision']:<7}{r['cpu']:<14}{'yes' if c['dotprod'] else 'no':>5}"
                     f"{c['max_abs']['loc']:>12.2e}{c['max_abs']['conf']:>10.2e}{c['max_abs']['landms']:>10.2e}"
                     f"{c['box_px']:>9.2e}{c['score']:>9.2e}  {counts:<15}{ap['x86']:<22}{ap['arm64']:<22}"
                     f"{c['seconds']['arm64'] / len(c['counts']):>6.1f}")
    return "\n".join(lines)
