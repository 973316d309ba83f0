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

from calibration.exact import integer_exact
from featherface.errors import ArtifactError
from featherface.evaluation import evaluate, load_ground_truth
from featherface.postprocess import Detections
from featherface.preprocess import list_images
from toolchain.backends.onnxruntime_backend import exact_session
from toolchain.building.metadata import load_onnx
from toolchain.measuring.compare import matched_pairs
from toolchain.measuring.evaluate import wider_rows
from toolchain.runtime.featherface_runtime import FaceDetector
from toolchain.runtime.probe_outputs import probe

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


def exact_probe(bundle: Path, images: list[Path]) -> dict:
    """The bundle's runtime on this host with its Q/DQ convolutions in the verdicts' arithmetic (exact int32, then
    scale and bias each rounded once: ``calibration.exact``) instead of ONNX Runtime's fused integer kernels — what
    each architecture's kernels are measured against. A graph without Q/DQ runs unchanged."""
    detector = FaceDetector(bundle, threads=1)
    detector.model.session = exact_session(integer_exact(load_onnx(bundle / detector.manifest["artifact"])), 1)
    return {"machine": np.array("exact"), **probe(detector, [str(p) for p in images])}


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


def _detections(outputs: dict, i: int, threshold: float = 0.0) -> Detections:
    keep = outputs[f"{i}/scores"] >= threshold
    return Detections(outputs[f"{i}/boxes"][keep], outputs[f"{i}/scores"][keep], outputs[f"{i}/landmarks"][keep])


def compare(host: dict, arm: dict, keys: list[str], ground_truth: dict,
            sides: tuple[str, str] = ("x86", "arm64")) -> dict:
    """Max |Δ| per raw output; at the default threshold, detection counts, faces matched across the two sides
    (IoU ≥ 0.5, one to one) and the largest box/score difference between matched faces; AP on these images for
    both sides (keyed by ``sides``)."""
    max_abs = {name: max(float(np.abs(host[f"{i}/{name}"].astype(np.float64) - arm[f"{i}/{name}"]).max())
                         for i in range(len(keys))) for name in OUTPUTS}
    counts, lost, gained, box_diff, score_diff = [], 0, 0, 0.0, 0.0
    for i in range(len(keys)):
        a, b = _detections(host, i, COUNT_THRESHOLD), _detections(arm, i, COUNT_THRESHOLD)
        pairs = matched_pairs(a, b)
        counts.append((len(a), len(b)))
        lost, gained = lost + len(a) - len(pairs), gained + len(b) - len(pairs)
        for j, k in pairs:
            box_diff = max(box_diff, float(np.abs(a.boxes[j] - b.boxes[k]).max()))
            score_diff = max(score_diff, abs(float(a.scores[j]) - float(b.scores[k])))
    gt = {k: ground_truth[k] for k in keys}
    ap = {side: evaluate({k: wider_rows(_detections(outputs, i)) for i, k in enumerate(keys)}, gt).ap
          for side, outputs in zip(sides, (host, arm))}
    hwcap, hwcap2 = (int(arm[k]) if k in arm else None for k in ("hwcap", "hwcap2"))
    return {"max_abs": max_abs, "counts": counts, "lost": lost, "gained": gained, "box_px": box_diff,
            "score": score_diff, "ap": ap, "dotprod": None if hwcap is None else bool(hwcap & HWCAP_ASIMDDP),
            "i8mm": None if hwcap2 is None else bool(hwcap2 & HWCAP2_I8MM),
            "seconds": {side: sum(float(outputs[f"{i}/seconds"]) for i in range(len(keys)))
                        for side, outputs in zip(sides, (host, arm))}}


def val_images(val_dir: Path, count: int) -> tuple[list[Path], list[str], dict]:
    """The first ``count`` val images (name order), their WIDER keys and the ground truth."""
    images = list_images(val_dir / "images")[:count]
    keys = [p.relative_to(val_dir / "images").with_suffix("").as_posix() for p in images]
    return images, keys, load_ground_truth(val_dir / "ground_truth")


def faces_column(counts: list[tuple[int, int]]) -> str:
    """Faces per side: per image for a few images, else the totals and how many images differ."""
    if len(counts) <= 4:
        return " ".join(f"{a}→{b}" for a, b in counts)
    differ = sum(a != b for a, b in counts)
    return f"{sum(a for a, _ in counts)}→{sum(b for _, b in counts)} ({differ}/{len(counts)} img differ)"


def table(rows: list[dict], sides: tuple[str, str] = ("x86", "arm64")) -> str:
    """One line per (precision, CPU) from ``compare(..., sides=sides)``: max |Δ| per output, faces on each side and
    the unmatched ones, the largest box/score difference between matched faces, AP on both sides."""
    first, second = sides
    results = [r["result"] for r in rows]
    faces = f"faces {first}→{second}"
    width = max(len(text) + 2 for text in [faces] + [faces_column(c["counts"]) for c in results])
    head = (f"{'bundle':<7}{'cpu (QEMU_CPU)':<15}{'sdot':>5}{'max|Δ| loc':>12}{'conf':>10}{'landms':>10}  "
            f"{faces:<{width}}{'lost/new':>9}{'box px':>9}{'score':>9}  "
            f"{f'AP {first} e/m/h':<22}{f'AP {second} e/m/h':<22}{'s/img':>6}")
    lines = [head, "-" * len(head)]
    for r, c in zip(rows, results):
        ap = {side: "/".join(f"{c['ap'][side][k]:.4f}" for k in ("easy", "medium", "hard")) for side in c["ap"]}
        sdot = {None: "—", True: "yes", False: "no"}[c["dotprod"]]
        lines.append(f"{r['precision']:<7}{r['cpu']:<15}{sdot:>5}"
                     f"{c['max_abs']['loc']:>12.2e}{c['max_abs']['conf']:>10.2e}{c['max_abs']['landms']:>10.2e}  "
                     f"{faces_column(c['counts']):<{width}}{str(c['lost']) + '/' + str(c['gained']):>9}"
                     f"{c['box_px']:>9.2e}{c['score']:>9.2e}  {ap[first]:<22}{ap[second]:<22}"
                     f"{c['seconds'][second] / len(c['counts']):>6.1f}")
    return "\n".join(lines)
