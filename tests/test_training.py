"""Training on the CPU: fine-tune, from scratch, DDP (gloo), kill and resume, matching, bad input."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from featherface.box_coder import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from featherface.data.augment import mirror
from featherface.data.dataset import FaceDataset
from featherface.errors import ConfigError, LabelError, WeightsError
from featherface.matcher import match
from featherface.priors import PriorConfig, prior_boxes
from toolchain.training.config import load_config
from toolchain.training.trainer import load_backbone, read_checkpoint, train

from .conftest import CALIB, V1_WEIGHTS, WEIGHTS

SMOKE = {"image_size": 160, "batch_size": 4, "workers": 0, "warmup_epochs": 0, "eval_every": 0,
         "max_steps_per_epoch": 2}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "toolchain.cli", "train", *args]


def _smoke_args(out, epochs=2, extra=()):
    return ["--data", str(CALIB), "--out", str(out), "--device", "cpu", "--epochs", str(epochs), "--batch-size", "4",
            "--image-size", "160", "--workers", "0", "--eval-every", "0", "--max-steps-per-epoch", "2", *extra]


def test_encoding_inverts_decoding_and_matching_finds_each_face():
    config = PriorConfig()
    priors = prior_boxes(config, 160, 160)
    faces = torch.tensor([[0.10, 0.10, 0.30, 0.35], [0.5, 0.5, 0.9, 0.95]])
    points = torch.rand(2, 10) * 0.2 + 0.2
    loc, landm, labels = match(faces, points, torch.tensor([1, -1]), priors, config.variances)
    positive = labels != 0
    assert positive.sum() >= 2 and set(labels[positive].tolist()) == {1, -1}
    _, _, none = match(faces[:0], points[:0], torch.tensor([], dtype=torch.long), priors, config.variances)
    assert none.shape == (len(priors),) and not none.any()  # an image without faces: all background
    boxes = decode_boxes(loc[positive], priors[positive], config.variances)
    assert all(torch.isclose(boxes, faces[0], atol=1e-5).all(1).any() or torch.isclose(b, faces[1], atol=1e-5).all()
               for b in boxes)
    assert torch.allclose(encode_boxes(decode_boxes(loc, priors, config.variances), priors, config.variances), loc,
                          atol=1e-4)
    assert torch.allclose(decode_landmarks(encode_landmarks(points[:1].expand(len(priors), 10), priors,
                                                            config.variances), priors, config.variances),
                          points[:1].expand(len(priors), 10), atol=1e-5)


def test_mirror_swaps_eyes_and_mouth_corners():
    image = np.zeros((10, 100, 3), np.uint8)
    boxes = np.array([[10, 2, 30, 8]], np.float32)
    points = np.array([[12, 3, 28, 3, 20, 5, 14, 7, 26, 7]], np.float32)  # left eye, right eye, nose, mouth l/r
    for seed in range(20):
        out, b, p = mirror(image, boxes, points, np.random.default_rng(seed))
        if b[0, 0] != boxes[0, 0]:
            break
    assert b.tolist() == [[70, 2, 90, 8]]
    assert p.reshape(5, 2).tolist() == [[72, 3], [88, 3], [80, 5], [74, 7], [86, 7]]  # still left-to-right


def test_backbone_init_and_wrong_backbone():
    import featherface

    model = featherface.create_model("featherface-v2")
    assert load_backbone(model, WEIGHTS / "mobilenetV1X0.25_pretrain.tar") == 162
    with pytest.raises(WeightsError, match="backbone tensors fit"):
        load_backbone(model, V1_WEIGHTS.with_name("retinaface_mobilenet0.25.pth"))


@pytest.fixture(scope="module")
def finetune(tmp_path_factory, small_val):
    out = tmp_path_factory.mktemp("finetune")
    cfg = load_config(None, {**SMOKE, "epochs": 2, "lr": 1e-4, "eval_every": 2, "freeze_bn": True})
    return out, train("featherface-v1", cfg, CALIB, out, small_val, "cpu", init=V1_WEIGHTS, echo=lambda m: None)


def test_finetune_writes_checkpoints_and_metrics_and_keeps_accuracy(finetune, small_val):
    from toolchain.backends.torch_backend import load_torch_runner
    from toolchain.measuring.evaluate import evaluate_folder

    out, result = finetune
    assert not result.interrupted and result.epochs_done == 2
    for name in ("last.pth", "best.pth", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    start = evaluate_folder(load_torch_runner("featherface-v1", V1_WEIGHTS), small_val).ap
    assert all(abs(rows[-1][k] - start[k]) < 0.03 for k in start), (rows[-1], start)
    best = torch.load(out / "best.pth", weights_only=True)
    assert set(best) == set(torch.load(V1_WEIGHTS, weights_only=True, map_location="cpu")) - {
        k for k in torch.load(V1_WEIGHTS, weights_only=True, map_location="cpu") if "total_" in k}


def test_from_scratch_v2_loss_falls(tmp_path):
    cfg = load_config(None, {**SMOKE, "epochs": 6, "max_steps_per_epoch": 3, "lr": 5e-3, "optimizer": "adamw",
                             "weight_decay": 0.0})
    result = train("featherface-v2", cfg, CALIB, tmp_path, None, "cpu",
                   backbone=WEIGHTS / "mobilenetV1X0.25_pretrain.tar", echo=lambda m: None)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_ddp_two_processes_gloo_writes_the_same_checkpoint_format(tmp_path, finetune):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m",
           "toolchain.cli", "train", *_smoke_args(out, epochs=1, extra=("--weights", str(V1_WEIGHTS)))[:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ddp = read_checkpoint(out / "last.pth", "featherface-v1")
    single = read_checkpoint(finetune[0] / "last.pth", "featherface-v1")
    assert set(ddp) == set(single) and set(ddp["model"]) == set(single["model"]) and ddp["epoch"] == 1
    assert not any(k.startswith("module.") for k in ddp["model"])


def test_kill_mid_epoch_then_resume(tmp_path):
    out = tmp_path / "run"
    args = _smoke_args(out, epochs=3, extra=("--weights", str(V1_WEIGHTS), "--max-steps-per-epoch", "4"))
    proc = subprocess.Popen(_cli(*args), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until epoch 1 is checkpointed and epoch 2 is under way
        lines.append(line)
        if line.startswith("epoch 2/3"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stderr.read()
    assert proc.wait(timeout=300) == 1, "".join(lines)
    ckpt = read_checkpoint(out / "last.pth", "featherface-v1")
    assert ckpt["epoch"] == 1 and len(ckpt["metrics"]) == 1
    resumed = subprocess.run(_cli(*args, "--resume", str(out / "last.pth")), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    final = read_checkpoint(out / "last.pth", "featherface-v1")
    assert final["epoch"] == 3 and [m["epoch"] for m in final["metrics"]] == [1, 2, 3]


def test_bad_training_input(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "label.txt").write_text("# a.jpg\n10 10 x 20\n")
    with pytest.raises(LabelError, match=r"label.txt:2: malformed number"):
        FaceDataset(data, 160)
    (data / "label.txt").write_text("# missing.jpg\n10 10 20 20\n")
    with pytest.raises(LabelError, match="lists 'missing.jpg', but .* does not exist"):
        FaceDataset(data, 160)
    (tmp_path / "c.toml").write_text("epochz = 3\n")
    with pytest.raises(ConfigError, match="c.toml: unknown key 'epochz'"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "c.toml").write_text("lr = 'fast'\n")
    with pytest.raises(ConfigError, match="'lr' has the wrong type"):
        load_config(tmp_path / "c.toml")


def test_a_loss_that_is_not_finite_stops_training_in_one_line(tmp_path, v1_model):
    import copy

    broken = copy.deepcopy(v1_model)
    with torch.no_grad():
        broken.ClassHead[0].conv1x1.bias.fill_(float("nan"))
    torch.save(broken.state_dict(), tmp_path / "nan.pth")
    out = tmp_path / "run"
    result = subprocess.run(_cli(*_smoke_args(out, extra=("--weights", str(tmp_path / "nan.pth")))),
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("the loss is not finite at epoch 1, step 1; lower the "
                                                           "learning rate or set grad_clip and resume from the last "
                                                           "checkpoint")
    (tmp_path / "c.toml").write_text("grad_clip = -1.0\n")
    with pytest.raises(ConfigError, match="'grad_clip' must be ≥ 0"):
        load_config(tmp_path / "c.toml")


def test_resume_from_another_model_is_refused_and_nothing_is_overwritten(finetune, tmp_path):
    out, _ = finetune
    before = (out / "last.pth").read_bytes()
    result = subprocess.run(_cli(*_smoke_args(out, extra=("--model", "featherface-v2", "--resume",
                                                           str(out / "last.pth")))), capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("checkpoint is for model 'featherface-v1', not 'featherface-v2'")
    assert (out / "last.pth").read_bytes() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA training profile needs a GPU")
def test_cuda_amp_step_profile_and_batch_finder():
    from toolchain.training.gpu import find_batch_size, profile_step

    profile = profile_step("featherface-v1", 8, 320, "fp16", steps=2)
    assert profile.images_per_s > 0 and profile.peak_memory_mb > 0
    assert find_batch_size("featherface-v1", 320, "fp16", start=8, limit=64) >= 8


def test_resume_at_an_epoch_boundary_continues_exactly(tmp_path):
    cfg = load_config(None, {**SMOKE, "epochs": 2, "lr": 1e-3})
    straight = tmp_path / "straight"
    train("featherface-v1", cfg, CALIB, straight, None, "cpu", init=V1_WEIGHTS, echo=lambda m: None)
    split = tmp_path / "split"
    train("featherface-v1", load_config(None, {**SMOKE, "epochs": 1, "lr": 1e-3}), CALIB, split, None, "cpu",
          init=V1_WEIGHTS, echo=lambda m: None)
    train("featherface-v1", cfg, CALIB, split, None, "cpu", resume=split / "last.pth", echo=lambda m: None)
    a, b = (read_checkpoint(d / "last.pth", "featherface-v1") for d in (straight, split))
    assert b["epoch"] == 2 and a["metrics"][1]["loss"] == pytest.approx(b["metrics"][1]["loss"], rel=1e-5)
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6), key
