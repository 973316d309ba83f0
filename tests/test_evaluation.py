import numpy as np
import pytest

from featherface.evaluation import GroundTruth, _iou_inclusive, evaluate, load_ground_truth, voc_ap
from tests.conftest import VAL


def _gt(boxes, keep_all=True, keep=None):
    keep = np.arange(len(boxes)) if keep_all else np.asarray(keep)
    return GroundTruth(np.asarray(boxes, float), {s: keep for s in ("easy", "medium", "hard")})


def test_perfect_detections_score_ap_one():
    gt = {"e/a": _gt([[10, 10, 40, 40], [100, 100, 30, 30]])}
    preds = {"e/a": np.array([[10, 10, 40, 40, 0.9], [100, 100, 30, 30, 0.8]])}
    assert evaluate(preds, gt).ap == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0})


def test_half_recall_with_perfect_precision_scores_half():
    gt = {"e/a": _gt([[10, 10, 40, 40], [100, 100, 30, 30]])}
    preds = {"e/a": np.array([[10, 10, 40, 40, 0.9], [300, 300, 20, 20, 0.1]])}  # one hit, then one false alarm
    assert evaluate(preds, gt).ap["easy"] == pytest.approx(0.5)


def test_false_alarm_ranked_first_halves_precision():
    gt = {"e/a": _gt([[10, 10, 40, 40]])}
    preds = {"e/a": np.array([[300, 300, 20, 20, 0.9], [10, 10, 40, 40, 0.5]])}
    # recall reaches 1 only at precision 1/2
    assert evaluate(preds, gt).ap["easy"] == pytest.approx(0.5)


def test_detection_of_an_ignored_face_is_neither_hit_nor_false_alarm():
    gt = {"e/a": _gt([[10, 10, 40, 40], [100, 100, 30, 30]], keep_all=False, keep=[0])}
    preds = {"e/a": np.array([[100, 100, 30, 30, 0.9], [10, 10, 40, 40, 0.5]])}
    assert evaluate(preds, gt).ap["easy"] == pytest.approx(1.0)


def test_images_without_detections_still_count_their_faces():
    gt = {"e/a": _gt([[10, 10, 40, 40]]), "e/b": _gt([[5, 5, 20, 20]])}
    preds = {"e/a": np.array([[10, 10, 40, 40, 0.9]]), "e/b": np.zeros((0, 5))}
    assert evaluate(preds, gt).ap["easy"] == pytest.approx(0.5)


def test_iou_uses_inclusive_pixels_and_voc_ap_envelope():
    iou = _iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 9], [5, 0, 9, 9]]))
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150])  # 10×10 boxes offset by 5 px: 5·10 / (100+100−50)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_official_ground_truth_restricted_to_present_images():
    gt = load_ground_truth(VAL / "ground_truth")
    assert len(gt) == 3226  # the .mat files cover all of WIDER val
    present = [p.relative_to(VAL / "images").with_suffix("").as_posix() for p in (VAL / "images").rglob("*.jpg")]
    assert len(present) == 80 and all(k in gt for k in present)
    assert sum(len(gt[k].boxes) for k in present) == 1233
