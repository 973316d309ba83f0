import pytest
import torch
import torch.nn.functional as F

import featherface
from featherface.errors import WeightsError
from featherface.layers import ChannelShuffle, same_max_pool_3x3_s2
from featherface.weights import load_weights
from tests.conftest import RF_WEIGHTS, V1_WEIGHTS
from toolchain.measuring.validate import params_without_gradient


def test_parameter_counts():
    assert featherface.count_parameters(featherface.create_model("featherface-v1")) == 592_371
    assert featherface.count_parameters(featherface.create_model("retinaface-mnet0.25")) == 426_608
    v2 = featherface.count_parameters(featherface.create_model("featherface-v2"))
    assert abs(v2 - 256_000) <= 25_600


@pytest.mark.parametrize("name,weights", [("featherface-v1", V1_WEIGHTS), ("retinaface-mnet0.25", RF_WEIGHTS)])
def test_shared_weights_load_strictly(name, weights):
    model = featherface.load_model(name, weights)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    key = "body.stage1.0.0.weight"
    torch.testing.assert_close(model.state_dict()[key], state[key].cpu())


def test_wrong_architecture_names_the_file_and_first_keys():
    with pytest.raises(WeightsError, match=r"retinaface_mobilenet0\.25\.pth: weights do not fit model "
                                           r"'featherface-v1': \d+ missing \(e\.g\. bacbkbone_0_cbam"):
        featherface.load_model("featherface-v1", RF_WEIGHTS)


def test_missing_truncated_and_corrupt_weights(tmp_path):
    model = featherface.create_model("retinaface-mnet0.25")
    with pytest.raises(WeightsError, match="nope.pth: weights file not found"):
        load_weights(model, tmp_path / "nope.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(RF_WEIGHTS.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="truncated.pth: not a readable PyTorch checkpoint"):
        load_weights(model, truncated)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsError, match="corrupt.pth: not a readable"):
        load_weights(model, corrupt)
    not_tensors = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(WeightsError, match="list.pth: checkpoint holds no state dict"):
        load_weights(model, not_tensors)


def test_the_trainers_resume_checkpoint_loads_as_weights(tmp_path):
    """`toolchain eval --weights runs/X/last.pth`: the trainer's {"model", "optimizer", ...} checkpoint."""
    trained = featherface.create_model("retinaface-mnet0.25")
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    torch.save({"model": trained.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, tmp_path / "last.pth")
    loaded = load_weights(featherface.create_model("retinaface-mnet0.25"), tmp_path / "last.pth")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))


@pytest.mark.parametrize("name", ["featherface-v1", "featherface-v2"])
@pytest.mark.parametrize("shape", [(1, 3, 320, 320), (2, 3, 257, 391), (1, 3, 480, 640)])
def test_forward_shapes_and_softmax(name, shape):
    model = featherface.create_model(name).eval()
    with torch.inference_mode():
        loc, conf, landms = model(torch.randn(*shape) * 50)
    anchors = model.priors.num_priors(shape[2], shape[3])
    assert loc.shape == (shape[0], anchors, 4) and conf.shape == (shape[0], anchors, 2)
    assert landms.shape == (shape[0], anchors, 10)
    torch.testing.assert_close(conf.sum(-1), torch.ones(shape[0], anchors))


def test_training_mode_returns_logits():
    model = featherface.create_model("featherface-v2").train()
    _, conf, _ = model(torch.randn(2, 3, 128, 128))
    assert not torch.allclose(conf.sum(-1), torch.ones(2, conf.shape[1]))


@pytest.mark.parametrize("size", [(7, 9), (8, 10), (1, 2), (13, 13)])
def test_same_max_pool_matches_tensorflow_same_padding(size):
    x = torch.randn(2, 3, *size) - 1  # negative values: the zero padding matters
    h, w = size
    pad_h, pad_w = (-h) % 2 + 1, (-w) % 2 + 1  # 'same' total padding for k=3, s=2
    ref = F.max_pool2d(F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]), 3, 2)
    torch.testing.assert_close(same_max_pool_3x3_s2(x), ref)


def test_channel_shuffle_matches_the_view_transpose_definition():
    x = torch.randn(2, 8, 3, 5)
    ref = x.view(2, 4, 2, 3, 5).transpose(1, 2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(ChannelShuffle(8, 2)(x), ref)


@pytest.mark.parametrize("name", ["featherface-v1", "featherface-v2", "retinaface-mnet0.25"])
def test_every_parameter_gets_a_gradient(name):
    assert params_without_gradient(featherface.create_model(name), size=96) == []


def test_a_parameter_outside_the_graph_is_reported():
    model = featherface.create_model("retinaface-mnet0.25")
    model.unused = torch.nn.Linear(3, 2)  # registered, never called by forward
    assert params_without_gradient(model, size=64) == ["unused.weight", "unused.bias"]


@pytest.mark.parametrize("name", featherface.list_models())
def test_models_export_with_dynamic_batch_height_width(name, tmp_path):
    """Export-friendliness: one dynamic export must serve other batch sizes and odd spatial sizes."""
    import onnxruntime as ort
    from torch.export import Dim

    model = featherface.create_model(name).eval()
    program = torch.onnx.export(model, (torch.randn(2, 3, 96, 128),), dynamo=True, external_data=False,
                                input_names=["input"], verbose=False,
                                dynamic_shapes={"input": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}})
    program.save(str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 75, 141) * 50
    with torch.inference_mode():
        expected = model(x)
    got = session.run(None, {"input": x.numpy()})
    for e, g in zip(expected, got):
        assert g.shape == tuple(e.shape)
        assert abs(g - e.numpy()).max() < 1e-3
