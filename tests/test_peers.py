"""Peers beside FeatherFace: SCRFD with InsightFace's recipe, YuNet, their FLOPs, and the isolated PyTorch reference."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from featherface.errors import ArtifactError
from featherface.flops import count_flops
from featherface.preprocess import read_image
from toolchain.measuring.evaluate import evaluate_detector
from toolchain.measuring.peers import SCRFD, YuNet, load_peer, onnx_gflops
from toolchain.measuring.torch_reference import isolated_reference

from .conftest import SHARED, VAL

PEERS = SHARED / "weights" / "peers"


def test_onnx_flops_count_as_featherface_counts(tmp_path):
    """The ONNX count of a peer and featherface.flops agree on the same network (dense, strided, depthwise, 1×1)."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 4, 1),
                        nn.Conv2d(4, 6, 5, 2, 2, bias=False)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 160, 128),), str(path), input_names=["input"])
    assert onnx_gflops(onnx.load(str(path)), 160, 128) == pytest.approx(count_flops(net, 160, 128).gflops, rel=1e-12)


def test_scrfd_tells_outputs_apart_by_shape_not_order(tmp_path):
    """The same graph with its nine outputs reversed gives the same detections."""
    path = PEERS / "scrfd_500m_kps.onnx"
    model = onnx.load(str(path))
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend(reversed(outputs))
    shuffled = tmp_path / "shuffled.onnx"
    onnx.save(model, str(shuffled))
    image = read_image(sorted((VAL / "images").rglob("*.jpg"))[0])
    a, b = SCRFD(path, 1).detect(image), SCRFD(shuffled, 1).detect(image)
    assert len(a) > 3
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_scrfd_decodes_into_the_original_pixels():
    """Letterboxed into 640² and mapped back: on a portrait and a landscape crop of one photo the same faces come
    out at the same places (the scale and the right/bottom padding undone), landmarks inside their boxes."""
    image = read_image(sorted((VAL / "images").rglob("*.jpg"))[0])
    detector = SCRFD(PEERS / "scrfd_2.5g_kps.onnx", 1, score_threshold=0.5)
    full = detector.detect(image)
    assert len(full) > 3
    points = full.landmarks.reshape(-1, 5, 2)
    inside = ((points >= full.boxes[:, None, :2] - 2) & (points <= full.boxes[:, None, 2:] + 2)).all(axis=(1, 2))
    assert inside.mean() > 0.9
    h, w = image.shape[:2]
    padded = np.zeros((h * 2, w, 3), np.uint8)  # taller than wide: scaled by height, padded on the right
    padded[:h] = image
    tall = detector.detect(padded)
    best = tall.boxes[np.argmax(tall.scores)]
    assert np.abs(full.boxes - best).sum(axis=1).min() < 0.1 * (best[2] - best[0]) * 4


@pytest.mark.parametrize("name, easy_floor", [("scrfd_500m_kps.onnx", 0.75), ("scrfd_2.5g_kps.onnx", 0.8)])
def test_scrfd_accuracy_on_val_is_in_its_class(name, easy_floor, small_val):
    peer = SCRFD(PEERS / name, 1)
    ap = evaluate_detector(peer.detect, small_val).ap
    assert ap["easy"] > easy_floor and ap["hard"] > 0.5
    assert peer.params > 500_000 and 0.9 < peer.gflops < 6


def test_load_peer_picks_the_detector_by_its_outputs(tmp_path):
    assert isinstance(load_peer(PEERS / "scrfd_500m_kps.onnx"), SCRFD)
    assert isinstance(load_peer(PEERS / "yunet_n_dynamic.onnx"), YuNet)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="bad.onnx: not an ONNX model"):
        load_peer(bad)
    with pytest.raises(ArtifactError, match="yunet_n_dynamic.onnx: SCRFD needs a static input size"):
        SCRFD(PEERS / "yunet_n_dynamic.onnx")
    with pytest.raises(ArtifactError, match="missing.onnx: peer model not found"):
        load_peer(tmp_path / "missing.onnx")


def test_isolated_reference_runs_pytorch_alone_with_its_defaults(monkeypatch):
    """Its own process, OpenMP's waiting settings removed from its environment, one figure per size."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    result = isolated_reference("featherface-v1", SHARED / "weights" / "featherface_v1.pth", VAL / "images",
                                ((64, 64), (32, 48)), runs=3, batch8_runs=1)
    assert set(result["latency"]) == {"64x64", "32x48"} and result["latency"]["64x64"]["runs"] == 3
    assert result["omp_wait_policy"] is None and result["threads"] >= 1 and result["batch8_ms"] > 0
    with pytest.raises(ArtifactError, match="isolated PyTorch reference: .*scrfd_500m_kps.onnx"):
        isolated_reference("featherface-v1", PEERS / "scrfd_500m_kps.onnx", VAL / "images", ((64, 64),), 1, 1)
