"""Compression: FLOPs counting, the VOC reader, structured pruning, pruned models through save/load/export, and
distillation (loss, one step, the CLI)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import featherface
from featherface.data.dataset import FaceDataset, collate
from featherface.data.voc import read_voc_file, read_voc_folder
from featherface.errors import ConfigError, LabelError
from featherface.flops import count_flops
from featherface.layers import DeformConv2d
from featherface.loss import DistillConfig, distillation_loss
from toolchain.measuring.validate import validate_model
from toolchain.stages.prune import prune_model, prune_to_flops
from toolchain.training.teacher import Teacher

from .conftest import CALIB, SHARED, V1_WEIGHTS

FACEMASK = SHARED / "data" / "facemask"


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.dcn = DeformConv2d(8, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.dcn(self.dw(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_flops_match_a_hand_count():
    # 32×32 input → 16×16 after the stride-2 conv; 2 FLOPs per multiply-accumulate.
    conv = 2 * (8 * 16 * 16) * (3 * 3 * 3)
    depthwise = 2 * (8 * 16 * 16) * (1 * 3 * 3)
    predictors = 2 * ((18 + 9) * 16 * 16) * (8 * 3 * 3)  # offset and mask convs of the DCN
    deform = 2 * (4 * 16 * 16) * (8 * 3 * 3)
    linear = 2 * 2 * 4
    count = count_flops(_Small(), 32)
    assert count.by_type == {"conv": conv + depthwise + predictors, "deform_conv": deform, "linear": linear}
    assert count.total == conv + depthwise + predictors + deform + linear


def test_flops_of_the_detectors_at_640():
    v1 = count_flops(featherface.create_model("featherface-v1"))
    v2 = count_flops(featherface.create_model("featherface-v2"))
    assert 2.4 < v1.gflops < 2.6 and 0.5 < v1.by_type["deform_conv"] / 1e9 < 0.65  # 1.9 G dense + 0.58 G deformable
    assert v2.total < 0.45 * v1.total


def test_voc_reader_takes_the_shared_set_with_its_stray_text():
    records = read_voc_folder(FACEMASK / "annotations", FACEMASK / "images")
    assert len(records) == 853 and sum(len(r.boxes) for r in records) == 4072
    assert all((FACEMASK / "images" / r.path).is_file() for r in records)  # .png names resolved to the .jpg files
    assert (np.concatenate([r.boxes for r in records])[:, 2:] > 0).all()


def test_voc_reader_ignores_stray_text_and_names_broken_files(tmp_path):
    good = tmp_path / "a.xml"
    good.write_text("<annotation><filename>a.png</filename><object><name>with_mask</name><bndbox>\n"
                    "<xmin>10</xmin><ymin>20</ymin>file:/stray/path.xml<xmax>30</xmax>\n<ymax>50</ymax></bndbox>"
                    "trailing text</object></annotation>")
    record = read_voc_file(good)
    assert record.path == "a.png" and record.boxes.tolist() == [[10, 20, 20, 30]]
    broken = tmp_path / "b.xml"
    broken.write_text("<annotation>\n<filename>b.png</filename>\n<object><bndbox><xmin>1</xmin></object>\n")
    with pytest.raises(LabelError, match=r"b\.xml:3: not well-formed XML"):
        read_voc_file(broken)
    no_number = tmp_path / "c.xml"
    no_number.write_text("<annotation><filename>c.png</filename>\n<object>\n<bndbox><xmin>x</xmin><ymin>1</ymin>"
                         "<xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>")
    with pytest.raises(LabelError, match=r"c\.xml:3: object 1 needs a <bndbox> with numeric"):
        read_voc_file(no_number)


def test_voc_folder_trains_as_boxes_without_landmarks():
    dataset = FaceDataset([FACEMASK, CALIB], 160, views=2)
    assert len(dataset) == 853 + 40
    images, targets, indices = collate([dataset[0], dataset[len(dataset) - 1]])
    assert images.shape == (2, 3, 160, 160) and indices.tolist() == [0, len(dataset) - 1]
    assert (targets[0][:, 14] == -1).all()  # VOC faces carry no landmarks
    dataset.set_epoch(2)  # view 0 again: the same augmentation as epoch 0
    again = dataset[0]
    dataset.set_epoch(0)
    assert np.array_equal(again[0], dataset[0][0])


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned") / "p30.json"
    return prune_model("featherface-v1", V1_WEIGHTS, out, 0.30, importance="variance", calib_images=CALIB / "images",
                       calib_count=2, calib_size=160), out


def test_pruning_meets_the_flops_request_and_keeps_the_network_valid(pruned):
    report, out = pruned
    before, after = report.flops
    assert 0.30 <= 1 - after / before <= 0.40  # at least what was asked, within the channel-rounding steps
    assert report.params[1] < report.params[0]
    config = json.loads(out.read_text())
    assert config["base"] == "featherface-v1" and config["flops_640"] == after
    assert config["refit"]["layers"] == len(report.fits) > 100  # every conv but the depthwise ones
    assert all(f.error_after <= f.error_before for f in report.fits)
    assert not any("Head." in k or "_cs." in k for k in config["channels"])  # the shuffle blocks and heads stay
    assert all(config["channels"][k][0] == 18 for k in config["channels"] if k.endswith("offset_conv"))
    report = validate_model(str(out), report.weights, sizes=(320, 640, 1024), batches=(1, 2))
    assert report.ok, report


def test_pruned_model_round_trips_through_save_load_and_export(pruned, tmp_path):
    from toolchain.measuring.compare import FP32_TOLERANCES, worst_violation
    from toolchain.stages.export import export_onnx

    report, out = pruned
    model = featherface.load_model(str(out), report.weights)  # strict load against the channel config
    assert featherface.count_parameters(model) == report.params[1]
    x = torch.randn(1, 3, 160, 224)
    again = featherface.load_model(str(out), report.weights)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), again(x)))
    with pytest.raises(Exception, match="do not fit model"):
        featherface.load_model("featherface-v1", report.weights)
    export = export_onnx(str(out), report.weights, tmp_path / "p30.onnx", check_images=CALIB / "images")
    assert len(export.comparisons) >= 3 and worst_violation(export.comparisons, FP32_TOLERANCES) is None


def test_channel_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json:1: not valid JSON"):
        featherface.create_model(str(bad))
    bad.write_text(json.dumps({"format": "featherface-channels-1", "base": "featherface-v1",
                               "channels": {"no.such.layer": [4, 4, 1]}}))
    with pytest.raises(ConfigError, match=r"bad\.json: 'no.such.layer' is not a resizable layer"):
        featherface.create_model(str(bad))


def test_flops_bisection_is_monotone_in_the_request():
    make = lambda: featherface.create_model("featherface-v1")  # noqa: E731
    light, light_ratio, _ = prune_to_flops(make, 0.2, steps=6)
    heavy, heavy_ratio, _ = prune_to_flops(make, 0.5, steps=6)
    assert heavy_ratio > light_ratio and count_flops(heavy).total < count_flops(light).total


def test_one_distillation_step_lowers_the_distillation_loss(pruned):
    report, out = pruned
    torch.manual_seed(0)
    student = featherface.load_model(str(out), report.weights).train()
    teacher = Teacher.load("featherface-v1", V1_WEIGHTS, torch.device("cpu"))
    dataset = FaceDataset(CALIB, 160, views=1)
    images, _, indices = collate([dataset[i] for i in range(4)])
    for module in student.modules():  # a fixed batch: compare losses, not BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.0)
    losses = []
    for _ in range(2):
        loss = distillation_loss(student(images), teacher(images, indices, 0), DistillConfig()).total
        losses.append(float(loss))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[1] < losses[0]
    assert teacher.hits == 4 and teacher.misses == 4  # the second pass came from the cache


def test_distillation_loss_is_zero_for_a_perfect_student(v1_model):
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        probs = v1_model(x)
    logits = torch.log(probs[1])
    parts = distillation_loss((probs[0], logits, probs[2]), probs)
    assert float(parts.total) == pytest.approx(0.0, abs=1e-5)


def test_prune_and_distill_cli(tmp_path):
    out = tmp_path / "p50.json"
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "prune", "--flops-reduction", "0.5", "--calib-count",
                          "2", "--calib-size", "128", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "fewer than 2.49" in run.stdout and out.is_file() and out.with_suffix(".pth").is_file()
    assert "refitted" in run.stdout and json.loads(out.read_text())["importance"] == "variance"
    (tmp_path / "ft.toml").write_text("freeze_bn = true\ngrad_clip = 1.0\n")  # the fine-tuning recipe's keys
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "distill", "--student", str(out), "--data", str(CALIB),
                          "--config", str(tmp_path / "ft.toml"), "--out", str(tmp_path / "run"), "--device", "cpu",
                          "--epochs", "1", "--batch-size", "2",
                          "--image-size", "128", "--workers", "0", "--eval-every", "0", "--max-steps-per-epoch", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert " kd " in run.stderr and (tmp_path / "run" / "weights.pth").is_file()
    model = featherface.load_model(str(out), tmp_path / "run" / "weights.pth")
    assert featherface.count_parameters(model) == json.loads(out.read_text())["params"]
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", "eval", "--model", str(tmp_path / "none.json")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "none.json: channel config not found" in run.stderr


def test_scope_limits_what_is_narrowed():
    from featherface.channels import channel_config
    from toolchain.stages.prune import prune_channels

    base = featherface.create_model("featherface-v1")
    model = featherface.create_model("featherface-v1")
    prune_channels(model, 0.5, scope=("ssh",))
    ssh_only = channel_config(model, base)
    assert ssh_only and all(name.startswith("ssh") for name in ssh_only)
    model = featherface.create_model("featherface-v1")
    prune_channels(model, 0.5)
    everything = channel_config(model, base)
    assert any(n.startswith("bifpn") for n in everything) and any(n.startswith("body.stage2") for n in everything)
    assert not any(n.startswith(("body.stage1.0", "body.stage1.1", "body.stage1.2", "ssh1_cs")) for n in everything)
    assert all(sizes[0] == 64 // 16 for n, sizes in everything.items() if n.startswith("bif_cbam_0.ChannelGate.mlp.1"))


def test_refit_columns_reproduce_each_layer():
    """The refit solves output = columns @ weight: the columns must be exactly what each layer multiplies."""
    from calibration.reconstruct import _columns, _output

    torch.manual_seed(0)
    net = _Small().eval()
    nn.init.normal_(net.dcn.offset_conv.weight, std=0.3)  # real offsets and masks, not the zero start
    nn.init.normal_(net.dcn.modulator_conv.weight, std=0.3)
    x = torch.randn(2, 8, 12, 10)
    with torch.no_grad():
        for layer, inputs in ((net.conv, torch.randn(2, 3, 12, 10)), (net.dcn, x), (net.fc, torch.randn(5, 4))):
            weight = (layer.regular_conv if isinstance(layer, DeformConv2d) else layer).weight
            rebuilt = _columns(layer, inputs) @ weight.reshape(len(weight), -1).T
            torch.testing.assert_close(rebuilt, _output(layer, inputs), rtol=1e-4, atol=1e-4)


def test_kept_channels_index_the_base_layers(v1_model):
    """``prune_channels`` reports which original channels each narrowed layer keeps (the refit's targets)."""
    import copy

    from calibration.reconstruct import following_bn
    from toolchain.stages.prune import prune_channels

    model = copy.deepcopy(v1_model)
    kept = prune_channels(model, 0.3)
    layers, base_layers = dict(model.named_modules()), dict(v1_model.named_modules())
    after, base_after = following_bn(model), following_bn(v1_model)
    checked = 0
    for name, channels in kept.items():
        layer = layers[name]
        base_layer = base_layers[name].regular_conv if isinstance(layer, DeformConv2d) else base_layers[name]
        assert channels == sorted(set(channels)) and channels[-1] < len(base_layer.weight)  # original indices
        if layer in after:
            assert torch.equal(after[layer].weight, base_after[base_layers[name]].weight[channels])
            checked += 1
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:  # depthwise: input and output go together
            assert torch.equal(layer.weight, base_layers[name].weight[channels])
    assert checked > 20


def test_refit_brings_a_pruned_model_closer_on_held_out_images(v1_model):
    import copy

    from calibration.reconstruct import reconstruct
    from toolchain.stages.prune import calibration_images, prune_channels

    images = calibration_images(CALIB / "images", 4, 160)
    fit_on, held_out = images[:2], images[2:]
    model = copy.deepcopy(v1_model)
    kept = prune_channels(model, 0.2)

    def distance(net):
        with torch.no_grad():
            return sum(float((a - b).pow(2).mean()) for a, b in zip(net(held_out), v1_model(held_out)))

    before = distance(model)
    fits = reconstruct(model, v1_model, fit_on, kept)
    assert distance(model) < 0.75 * before  # 0.51× measured (2 fit images at 160²)
    assert len(fits) > 100 and sum(f.error_after for f in fits) < sum(f.error_before for f in fits)


def test_data_driven_importance_needs_calibration_images(tmp_path):
    from toolchain.stages.prune import prune_channels

    with pytest.raises(ConfigError, match="calibration images"):
        prune_channels(featherface.create_model("featherface-v1"), 0.2, importance="variance")
    with pytest.raises(ConfigError, match="calibration images"):
        prune_model("featherface-v1", V1_WEIGHTS, tmp_path / "x.json", 0.2, importance="variance")
    assert not (tmp_path / "x.json").exists()
