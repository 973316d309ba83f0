"""Camera shifts: deterministic transforms, ground truth moved with the geometry, shifted evaluation end to end,
shift-aware calibration sets, and targets that refuse an INT8 graph missing the budget on a claimed shift."""
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from calibration.dataset import build_calibration_set
from featherface.data.shifts import SHIFTS, apply_shift
from featherface.errors import ArtifactError, ConfigError, FeatherFaceError
from featherface.evaluation import load_ground_truth
from featherface.postprocess import Detections
from featherface.preprocess import list_images, read_image
from toolchain.backends.inference import detect_array
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.pipeline import check_shifts
from toolchain.building.targets import TARGETS_DIR, load_target
from toolchain.cli import main
from toolchain.measuring.evaluate import evaluate_detector, evaluate_folder
from toolchain.measuring.robustness import shift_deltas

from .conftest import CALIB, VAL


@pytest.fixture(scope="module")
def image():
    return read_image(sorted((VAL / "images").rglob("*.jpg"))[0])


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_each_shift_is_deterministic_and_changes_the_image(image, name):
    a, scale = apply_shift(name, image, "0--Parade/x", seed=3)
    b, _ = apply_shift(name, image, "0--Parade/x", seed=3)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape[2] == 3
    assert a.shape[:2] == tuple(round(d * scale) for d in image.shape[:2])
    assert a.shape != image.shape or np.abs(a.astype(int) - image).mean() > 0.5


def test_random_shifts_vary_with_the_image_key(image):
    for name in ("low-light", "jpeg", "motion-blur"):
        assert not np.array_equal(apply_shift(name, image, "a", 0)[0], apply_shift(name, image, "b", 0)[0]), name
    gray, _ = apply_shift("grayscale", image, "a")
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    with pytest.raises(KeyError, match="unknown shift 'fog'"):
        apply_shift("fog", image, "a")


def test_half_resolution_moves_the_ground_truth_with_the_image(small_val):
    """A detector that returns the true faces at half scale scores perfectly only if the truth was halved."""
    truth = load_ground_truth(small_val / "ground_truth")
    keys = [p.relative_to(small_val / "images").with_suffix("").as_posix() for p in list_images(small_val / "images")]
    order = iter(keys)

    def oracle(shifted: np.ndarray) -> Detections:
        xywh = truth[next(order)].boxes * 0.5
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
        return Detections(boxes, np.ones(len(boxes), np.float32), np.zeros((len(boxes), 10), np.float32))

    result = evaluate_detector(oracle, small_val, shift="half-resolution")
    assert min(result.ap.values()) > 0.95


def test_a_shifted_set_evaluates_end_to_end(v1_onnx, small_val):
    runner = OnnxRuntimeRunner(v1_onnx.path)
    plain = evaluate_folder(runner, small_val).ap
    gray = evaluate_folder(runner, small_val, shift="grayscale").ap
    again = evaluate_folder(runner, small_val, shift="grayscale").ap
    assert gray == again and gray != plain and 0.3 < gray["easy"] <= 1.0
    same = shift_deltas(lambda im: detect_array(runner, im), lambda im: detect_array(runner, im), small_val,
                        ("low-light",))
    assert same["low-light"]["delta"] == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    assert same["low-light"]["within_budget"] and same["low-light"]["det_f1"] == 1.0


def test_shift_aware_calibration_set(tmp_path):
    calib = build_calibration_set(CALIB / "images", count=8, shifts=("grayscale", "half-resolution"))
    assert len(calib) == 24 and calib.manifest()["shifts"] == ["grayscale", "half-resolution"]
    original, gray, half = calib.tensor(0), calib.tensor(8), calib.tensor(16)
    assert original.shape == gray.shape == half.shape == (3, 640, 640) and not np.array_equal(original, gray)
    assert np.abs(half).sum(axis=0).astype(bool).sum() < np.abs(original).sum(axis=0).astype(bool).sum()  # not upscaled
    assert [len(s) for s in calib.subsets()] == [8, 8, 8]
    with pytest.raises(FeatherFaceError, match="unknown shift"):
        build_calibration_set(CALIB / "images", count=8, shifts=("fog",))


def _claiming(tmp_path, shifts: str):
    lines = [line for line in (TARGETS_DIR / "cpu.toml").read_text().splitlines() if not line.startswith("shifts")]
    text = "\n".join(lines).replace('activations = "s8"', f'activations = "s8"\nshifts = {shifts}')
    (tmp_path / "claims.toml").write_text(text)
    return load_target(tmp_path / "claims.toml")


def test_a_target_refuses_an_int8_graph_that_misses_a_claimed_shift(v1_onnx, small_val, tmp_path):
    target = _claiming(tmp_path, '["grayscale"]')
    assert target.int8.shifts == ("grayscale",)
    worse = onnx.load(str(v1_onnx.path))  # stands in for a bad INT8 graph: box regression halved
    for init in worse.graph.initializer:
        if init.name.startswith("BboxHead"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0.5, init.name))
    onnx.save(worse, str(tmp_path / "worse.onnx"))
    graphs = {"int8": tmp_path / "worse.onnx", "fp32": v1_onnx.path}
    with pytest.raises(ArtifactError, match="misses the budget on claimed shift\\(s\\): grayscale"):
        check_shifts(graphs, target, small_val, False, lambda m: None)
    record = check_shifts(graphs, target, small_val, True, lambda m: None)
    assert record["shift_override"] is True and not record["shifts"]["grayscale"]["within_budget"]
    fine = check_shifts({"int8": v1_onnx.path, "fp32": v1_onnx.path}, target, small_val, False, lambda m: None)
    assert fine["shift_override"] is False and fine["shifts"]["grayscale"]["within_budget"]
    with pytest.raises(ArtifactError, match="verified on the val set"):
        check_shifts(graphs, target, None, False, lambda m: None)


def test_bad_shift_claims_and_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown shift\\(s\\) fog"):
        _claiming(tmp_path, '["fog"]')
    text = (TARGETS_DIR / "jetson-xavier.toml").read_text() + 'shifts = ["grayscale"]\n'
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(ConfigError, match="needs mode \"qdq\""):
        load_target(tmp_path / "x.toml")
    result = CliRunner().invoke(main, ["bench", "--shifts", "fog"])
    assert result.exit_code == 2 and "unknown shift(s) fog" in result.output
