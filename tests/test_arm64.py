"""The cpu bundle on ARM64: its own runtime in the emulated aarch64 root that `make arm64-check` builds.

Runs where that root exists (and qemu-aarch64 is registered, and chroot is allowed); skipped with the reason
elsewhere, CI included. Emulation is ~150× slower than native: one small val image.
"""
import subprocess

import pytest

from tests.conftest import ROOT, VAL
from toolchain.measuring import crossarch

ARM_ROOT = ROOT / "build" / "arm64-root"
WHY = crossarch.root_ready(ARM_ROOT)
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    """The smallest val image (pixels), so one emulated run takes seconds, not minutes."""
    import cv2

    images = sorted((VAL / "images").rglob("*.jpg"), key=lambda p: (cv2.imread(str(p)).size, p.name))
    return images[0]


def test_fp32_bundle_on_emulated_cortex_a72_matches_x86(cpu_bundle, small_image, tmp_path):
    _, result = cpu_bundle
    host = crossarch.host_probe(result.bundle, [small_image], tmp_path / "x86.npz")
    arm = crossarch.emulated_probe(ARM_ROOT, "cortex-a72", result.bundle, [small_image], "test")
    assert str(arm["machine"]) == "aarch64" and str(host["machine"]) == "x86_64"
    key = small_image.relative_to(VAL / "images").with_suffix("").as_posix()
    from featherface.evaluation import load_ground_truth

    c = crossarch.compare(host, arm, [key], load_ground_truth(VAL / "ground_truth"))
    assert c["max_abs"]["conf"] < 1e-4 and c["max_abs"]["loc"] < 1e-3 and c["max_abs"]["landms"] < 1e-3
    assert c["counts"][0][0] == c["counts"][0][1] and c["box_px"] < 0.05
    assert c["ap"]["x86"] == pytest.approx(c["ap"]["arm64"], abs=1e-9) and not c["dotprod"]


def test_an_arm_board_without_the_runtime_packages_gets_one_line(cpu_bundle, small_image):
    """Debian's own python3 in the root has numpy but neither OpenCV nor ONNX Runtime."""
    _, result = cpu_bundle
    crossarch.stage_in_root(ARM_ROOT, result.bundle, [small_image], "packages")
    run = subprocess.run(["chroot", str(ARM_ROOT), "/usr/bin/python3",
                          "/work/packages/bundle/runtime/detect_stream.py", "/work/packages/images/0.jpg"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("error: opencv-python-headless is not installed for /usr/bin/python3")
    script = ("import sys; sys.path.insert(0, '/work/packages/bundle/runtime'); "
              "from featherface_runtime import BundleError, FaceDetector\n"
              "try:\n    FaceDetector('/work/packages/bundle')\nexcept BundleError as exc:\n    print(exc)")
    run = subprocess.run(["chroot", str(ARM_ROOT), "/usr/bin/python3", "-c", script], capture_output=True, text=True)
    assert "onnxruntime is not installed for /usr/bin/python3 (aarch64" in run.stdout
