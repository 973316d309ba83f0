import os
from pathlib import Path

import pytest

from featherface import paths

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get(paths.ENV_VAR, ROOT.parent / "shared")).resolve()
os.environ[paths.ENV_VAR] = str(SHARED)  # the CLI under test reads the same folder
VAL = SHARED / "data" / "widerface-val-mini" / "val"
CALIB = SHARED / "data" / "widerface-val-mini" / "calib"
WEIGHTS = SHARED / "weights"
V1_WEIGHTS = WEIGHTS / "featherface_v1.pth"
RF_WEIGHTS = WEIGHTS / "retinaface_mobilenet0.25.pth"

# Reference AP on val measured with the public reference code (../shared/README.md).
REFERENCE_AP = {
    "featherface-v1": {"easy": 0.8603, "medium": 0.8152, "hard": 0.7108},  # FeatherFace's script, top 5000 / keep 750
    "retinaface-mnet0.25": {"easy": 0.8376, "medium": 0.7983, "hard": 0.6812},
}

if not V1_WEIGHTS.is_file():
    raise RuntimeError(f"{SHARED}: shared data/weights not found; set {paths.ENV_VAR}")


@pytest.fixture(scope="session")
def v1_model():
    import featherface

    return featherface.load_model("featherface-v1", V1_WEIGHTS)


@pytest.fixture(scope="session")
def v1_onnx(tmp_path_factory):
    """FeatherFace V1 exported once (native DeformConv) with the stage's own numeric check."""
    from toolchain.stages.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "v1.onnx"
    return export_onnx("featherface-v1", V1_WEIGHTS, out, "native", 20, CALIB / "images")


@pytest.fixture(scope="session")
def small_val(tmp_path_factory):
    """12 val images (links) with the official ground truth: a WIDER folder small enough to evaluate often."""
    root = tmp_path_factory.mktemp("val12")
    for path in sorted((VAL / "images").rglob("*.jpg"))[:12]:
        target = root / "images" / path.relative_to(VAL / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    os.symlink(VAL / "ground_truth", root / "ground_truth")
    return root


@pytest.fixture(scope="session")
def minmax(v1_onnx, tmp_path_factory):
    """MinMax ranges over 8 calib images and the plain Q/DQ graph (stem and heads FP32, no noise rounds)."""
    from toolchain.stages.calibrate import calibrate_onnx
    from toolchain.stages.quantize import quantize_onnx

    out = tmp_path_factory.mktemp("minmax")
    report = calibrate_onnx(v1_onnx.path, CALIB / "images", out, "minmax", count=8, shape=(320, 320))
    quantize_onnx(v1_onnx.path, report.cache, out / "int8.onnx", CALIB / "images", "s8", threshold_db=0)
    return report, out / "int8.onnx"


@pytest.fixture(scope="session")
def minmax_int8(minmax):
    return minmax[1]


@pytest.fixture(scope="session")
def cpu_bundle(tmp_path_factory):
    """V1's cpu bundle (lean FP32) built once by the real chain: (build root, BuildResult)."""
    from toolchain.building.targets import load_target
    from toolchain.pipeline import build_target

    root = tmp_path_factory.mktemp("build")
    return root, build_target("featherface-v1", V1_WEIGHTS, load_target("cpu"), "fp32", root, CALIB,
                              echo=lambda m: None)
