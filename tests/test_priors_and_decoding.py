import math

import numpy as np
import torch

from featherface.box_coder import decode_boxes, decode_landmarks
from featherface.postprocess import PostprocessConfig, postprocess
from featherface.priors import PriorConfig, prior_boxes


def test_priors_hand_computed_for_a_64x32_image():
    cfg = PriorConfig()
    priors = prior_boxes(cfg, height=32, width=64)
    # stride 8: 4×8 cells, stride 16: 2×4, stride 32: 1×2, two sizes each
    assert priors.shape == (4 * 8 * 2 + 2 * 4 * 2 + 1 * 2 * 2, 4) == (cfg.num_priors(32, 64), 4)
    torch.testing.assert_close(priors[0], torch.tensor([4 / 64, 4 / 32, 16 / 64, 16 / 32]))
    torch.testing.assert_close(priors[1], torch.tensor([4 / 64, 4 / 32, 32 / 64, 32 / 32]))
    torch.testing.assert_close(priors[2], torch.tensor([12 / 64, 4 / 32, 16 / 64, 16 / 32]))  # next column
    torch.testing.assert_close(priors[16], torch.tensor([4 / 64, 12 / 32, 16 / 64, 16 / 32]))  # next row
    torch.testing.assert_close(priors[64], torch.tensor([8 / 64, 8 / 32, 64 / 64, 64 / 32]))  # first stride-16 prior
    torch.testing.assert_close(priors[-1], torch.tensor([48 / 64, 16 / 32, 512 / 64, 512 / 32]))


def test_priors_follow_ceil_feature_sizes_for_odd_images():
    cfg = PriorConfig()
    assert cfg.num_priors(33, 65) == 2 * (5 * 9 + 3 * 5 + 2 * 3)
    assert prior_boxes(cfg, 33, 65).shape[0] == cfg.num_priors(33, 65)


def test_decode_boxes_by_hand():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    var = (0.1, 0.2)
    torch.testing.assert_close(decode_boxes(torch.zeros(1, 4), priors, var), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    loc = torch.tensor([[1.0, -1.0, math.log(2) / 0.2, 0.0]])  # shift by 0.1·w, −0.1·h; double width
    expected = torch.tensor([[0.52 - 0.2, 0.46 - 0.2, 0.52 + 0.2, 0.46 + 0.2]])
    torch.testing.assert_close(decode_boxes(loc, priors, var), expected)


def test_decode_landmarks_by_hand():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    pre = torch.zeros(1, 10)
    pre[0, 2:4] = torch.tensor([1.0, 2.0])
    out = decode_landmarks(pre, priors, (0.1, 0.2))
    assert out.shape == (1, 10)
    torch.testing.assert_close(out[0, :2], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out[0, 2:4], torch.tensor([0.5 + 0.02, 0.5 + 0.08]))


def _outputs_for(height: int, width: int, boxes_scores: dict[int, float]):
    """Head outputs where prior i has score s (others 0) and zero offsets (box = prior)."""
    n = PriorConfig().num_priors(height, width)
    loc, landms = np.zeros((1, n, 4), np.float32), np.zeros((1, n, 10), np.float32)
    conf = np.zeros((1, n, 2), np.float32)
    conf[0, :, 0] = 1
    for i, s in boxes_scores.items():
        conf[0, i] = [1 - s, s]
    return loc, conf, landms


def test_postprocess_threshold_nms_and_keep_top_k():
    cfg = PriorConfig()
    # priors 0 and 1 share a centre (16 px and 32 px boxes: IoU 0.25 < 0.4, both kept);
    # priors 0 and 2 are neighbours 8 px apart with 16 px boxes: IoU 1/3, kept;
    # prior 64 is the 64 px box at the first stride-16 cell, overlapping nothing above 0.4.
    loc, conf, landms = _outputs_for(64, 64, {0: 0.9, 1: 0.8, 2: 0.01, 64: 0.7})
    dets = postprocess(loc, conf, landms, cfg, (64, 64))[0]
    np.testing.assert_allclose(dets.scores, [0.9, 0.8, 0.7], rtol=1e-6)  # 0.01 < 0.02 dropped, sorted
    np.testing.assert_allclose(dets.boxes[0], [-4, -4, 12, 12])
    np.testing.assert_allclose(dets.landmarks[0], [4, 4] * 5)
    few = postprocess(loc, conf, landms, cfg, (64, 64), PostprocessConfig(keep_top_k=2))[0]
    assert len(few) == 2


def test_postprocess_suppresses_overlapping_box():
    cfg = PriorConfig()
    loc, conf, landms = _outputs_for(64, 64, {0: 0.9, 2: 0.6})
    loc[0, 2, 0] = -8 / 64 / (0.1 * 16 / 64)  # move prior 2's box 8 px left, onto prior 0's box
    dets = postprocess(loc, conf, landms, cfg, (64, 64))[0]
    assert len(dets) == 1 and dets.scores[0] == np.float32(0.9)
