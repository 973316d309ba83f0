"""TensorRT build plans and trtexec command lines, bundles, verify, and the torch-free runtime."""
import json
import shlex
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import box_iou

from featherface.errors import ArtifactError
from toolchain.backends.tensorrt_backend import build_config, build_script, tensorrt_missing, trtexec_argv
from toolchain.pipeline import build_target
from toolchain.building.metadata import get_metadata, load_onnx
from toolchain.stages.bundle import verify_bundle, write_bundle
from toolchain.stages.engine import build_engine
from toolchain.backends.onnxruntime_backend import session_options
from toolchain.runtime.featherface_runtime import (BundleError, FaceDetector, check_engine_info, disabled_optimizers,
                                                   onnxruntime_session)
from toolchain.building.targets import TARGETS_DIR, load_target

from .conftest import CALIB, V1_WEIGHTS, VAL

ONNX = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
NO_TRT = tensorrt_missing()


def _argv(target, precision, version):
    return trtexec_argv(build_config(load_target(target), precision, ONNX, "calib.cache"), version)


def _calibrator_target(tmp_path):
    """Implicit INT8 (calibrator) on TensorRT 10.3 with the native DeformConv: what a GPU here can build."""
    text = (TARGETS_DIR / "jetson-xavier.toml").read_text().replace('"8.5"', '"10.3"').replace(
        "opset = 17", "opset = 20").replace('"decomposed"', '"native"').replace('"jetson"', '"x86_64"')
    (tmp_path / "calibrator.toml").write_text(text)
    return load_target(tmp_path / "calibrator.toml")


def test_trtexec_argv_per_target_and_generation():
    orin = _argv("jetson-orin", "fp16", (10, 3))
    assert orin[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    assert "--minShapes=input:1x3x320x320" in orin and "--maxShapes=input:4x3x1024x1024" in orin
    assert "--memPoolSize=workspace:1024M" in orin and "--fp16" in orin and "--timingCacheFile=timing.cache" in orin
    typed = _argv("x86-cuda", "fp16", (11, 0))  # TensorRT 11: precision from the FP16 graph, no flags
    assert "--onnx=model.fp16.onnx" in typed and not {"--fp16", "--int8"} & set(typed)
    int8 = _argv("x86-cuda", "int8", (10, 3))
    assert "--onnx=model.int8.onnx" in int8 and {"--int8", "--fp16"} <= set(int8) and not any("--calib" in a for a in int8)
    assert "--onnx=model.int8.onnx" in _argv("x86-cuda", "int8", (11, 0))
    xavier = _argv("jetson-xavier", "int8", (8, 5))  # implicit INT8 from the cache re-headed on the device
    assert "--onnx=model.onnx" in xavier and "--calib=calib.device.cache" in xavier and "--int8" in xavier
    with pytest.raises(ArtifactError, match="calibrator"):
        _argv("jetson-xavier", "int8", (11, 0))
    assert "--workspace=512" in _argv("jetson-nano", "fp16", (8, 2))  # TensorRT 8.2 has no --memPoolSize
    dla = _argv("jetson-orin-dla", "int8", (10, 3))
    assert {"--useDLACore=0", "--allowGPUFallback", "--optShapes=input:1x3x1024x1024"} <= set(dla)
    with pytest.raises(ArtifactError, match="precision 'int8' is not offered"):
        _argv("jetson-nano", "int8", (8, 2))


def test_build_script_is_valid_bash_with_quoted_argv(tmp_path):
    config = build_config(load_target("jetson-orin"), "fp16", {**ONNX, "fp32": "my model.onnx"})
    script = build_script(config)
    path = tmp_path / "build_engine.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith("args=(")]
    assert len(lines) == 4  # TensorRT 11, 10, 8.4-8.6, 8.2
    for line, version in zip(lines, ((11, 0), (10, 0), (8, 4), (8, 2))):
        assert shlex.split(line[6:-1]) == trtexec_argv(config, version)[1:]
    assert "'--onnx=my model.onnx'" in lines[1]
    assert "/usr/src/tensorrt/bin/trtexec" in script  # where JetPack installs it


def test_device_cache_header_is_the_installed_tensorrt(tmp_path):
    """Defect 6: the shipped header names the target's minimum; the device's TensorRT rewrites it."""
    from toolchain.kit.build_engine import prepare_cache

    config = build_config(load_target("jetson-xavier"), "int8", ONNX, "calib.cache")
    (tmp_path / "calib.cache").write_text("TRT-8500-EntropyCalibration2\ninput: 3c010a14\n")
    out = prepare_cache(config, tmp_path, "8.5.2.2")
    assert out.read_text() == "TRT-8502-EntropyCalibration2\ninput: 3c010a14\n"
    assert prepare_cache(config, tmp_path, "10.3.0").read_text().startswith("TRT-100300-EntropyCalibration2\n")


def test_engine_info_mismatch_is_refused():
    info = {"tensorrt_version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    check_engine_info(info, dict(info), "e")
    with pytest.raises(BundleError, match="built for gpu 'Orin', this machine has 'NVIDIA H200'"):
        check_engine_info(info, {**info, "gpu": "NVIDIA H200"}, "e")
    with pytest.raises(BundleError, match="tensorrt version '10.3.0'"):
        check_engine_info(info, {**info, "tensorrt_version": "10.4.0"}, "e")


def test_bundle_manifest_lists_every_file(cpu_bundle):
    _, result = cpu_bundle
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    on_disk = {p.relative_to(result.bundle).as_posix() for p in result.bundle.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    assert {"model.onnx", "runtime/featherface_runtime.py", "runtime/detect_folder.py"} <= set(manifest["files"])
    assert manifest["priors"]["steps"] == [8, 16, 32] and manifest["preprocess"]["mean"] == [104.0, 117.0, 123.0]
    assert len(manifest["sources"]["weights_sha256"]) == 64 and manifest["versions"]["onnxruntime"]
    assert [s for s, _, _ in result.steps] == ["export", "simplify", "lean"]  # the cpu target ships the lean graph


def test_rebuild_reuses_unchanged_steps(cpu_bundle):
    root, first = cpu_bundle
    again = build_target("featherface-v1", V1_WEIGHTS, load_target("cpu"), "fp32", root, CALIB, echo=lambda m: None)
    assert [status for _, status, _ in again.steps] == ["reused", "reused", "reused"]
    assert again.manifest["files"]["model.onnx"] == first.manifest["files"]["model.onnx"]


def test_verify_accepts_a_good_bundle_and_refuses_tampering(cpu_bundle, tmp_path):
    import shutil

    _, result = cpu_bundle
    assert "files match" in verify_bundle(result.bundle)[0]
    copy = tmp_path / "bundle"
    shutil.copytree(result.bundle, copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{model}: sha256/size does not match"):
        verify_bundle(copy)
    with pytest.raises(BundleError, match="sha256 does not match manifest.json"):
        FaceDetector(copy)
    shutil.copyfile(result.bundle / "model.onnx", model)
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="extra.bin: not listed in manifest.json"):
        verify_bundle(copy)
    (copy / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="unreadable bundle manifest"):
        verify_bundle(copy)


def _iou(a, b):
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def test_torch_free_runtime_matches_toolchain_detect(cpu_bundle, tmp_path):
    """The bundle's example runs with torch made unimportable and gives `toolchain detect`'s detections."""
    _, result = cpu_bundle
    script = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
              f"sys.argv = ['detect_folder.py', {str(VAL / 'images')!r}]; "
              f"runpy.run_path({str(result.bundle / 'runtime' / 'detect_folder.py')!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    runtime = {json.loads(line)["image"]: json.loads(line)["faces"] for line in out.splitlines()}
    detect_dir = tmp_path / "detect"
    subprocess.run([sys.executable, "-m", "toolchain.cli", "detect", "--backend", "onnxruntime", "--onnx",
                    str(result.bundle / "model.onnx"), str(VAL / "images"), "--out", str(detect_dir)],
                   check=True, capture_output=True)
    assert len(runtime) == len(list((VAL / "images").rglob("*.jpg")))
    inside = 0
    for image, faces in runtime.items():
        if max(cv2.imread(image).shape[:2]) > 1024:  # outside the cpu profile: letterboxed (tests/test_jetson.py)
            continue
        inside += 1
        rel = __import__("pathlib").Path(image).relative_to(VAL / "images").with_suffix(".json")
        reference = json.loads((detect_dir / rel).read_text())["detections"]
        assert len(faces) == len(reference), image
        if not faces:
            continue
        iou = _iou([f["box"] for f in faces], [d["box"] for d in reference])
        assert np.all(np.diag(iou) >= 0.99), image
        assert np.allclose([f["score"] for f in faces], [d["score"] for d in reference], atol=1e-4)
    assert inside >= 70


def test_tensorrt_kit_without_tensorrt(tmp_path, v1_onnx):
    if not NO_TRT:
        pytest.skip("TensorRT is installed here: the kit path is replaced by a real engine build")
    onnx = {"fp32": v1_onnx.path, "fp16": v1_onnx.path}
    result = build_engine(load_target("jetson-orin"), "fp16", onnx, tmp_path)
    assert result.kind == "tensorrt-build-kit" and NO_TRT in result.note
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", "model.fp16.onnx", "build_config.json",
                                                    "build_engine.py", "build_engine.sh", "INSTALL.txt"}
    assert "cuda-python>=12.6,<12.7" in (tmp_path / "INSTALL.txt").read_text()  # Orin: JetPack 6.1+ only
    config = json.loads((tmp_path / "build_config.json").read_text())
    assert config["tensorrt10"]["builder_flags"] == ["FP16"] and config["profile"]["opt"] == [1, 3, 640, 640]
    calib = tmp_path / "calibrator"
    calib.mkdir()
    (tmp_path / "c.cache").write_text("TRT-8502-EntropyCalibration2\n")
    target = _calibrator_target(tmp_path)
    kit = build_engine(target, "int8", onnx, calib, tmp_path / "c.cache")
    assert (calib / "calib.cache").is_file() and not (calib / "model.int8.onnx").exists()
    write_bundle(calib, "featherface-v1", target, "int8", kit, get_metadata(load_onnx(v1_onnx.path)), {}, None)
    (calib / "calib.device.cache").write_text("TRT-100300-EntropyCalibration2\n")  # what the board writes first
    assert "TensorRT kit: engine not built yet" in verify_bundle(calib)[1]
    (calib / "stray.txt").write_text("x")
    with pytest.raises(ArtifactError, match="stray.txt: not listed in manifest.json"):
        verify_bundle(calib)


@pytest.mark.skipif(NO_TRT is not None, reason=f"TensorRT engine build needs tensorrt, cuda-python or pycuda, and a GPU: {NO_TRT}")
def test_tensorrt_engine_builds_and_matches_onnxruntime(tmp_path, v1_onnx):
    from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
    from toolchain.backends.tensorrt_backend import TensorRTRunner
    from toolchain.measuring.compare import compare_runners, sample_batches

    result = build_engine(load_target("x86-cuda"), "fp32", {"fp32": v1_onnx.path}, tmp_path)
    assert result.kind == "tensorrt-engine" and (tmp_path / "timing.cache").is_file()
    runner = TensorRTRunner(tmp_path / "model.engine", OnnxRuntimeRunner(v1_onnx.path).priors, "fp32")
    for c in compare_runners(OnnxRuntimeRunner(v1_onnx.path), runner, sample_batches(CALIB / "images")):
        assert c.det_f1 > 0.95


@pytest.mark.skipif(NO_TRT is not None, reason=f"TensorRT implicit INT8 needs tensorrt, pycuda and a GPU: {NO_TRT}")
def test_tensorrt_entropy_calibrator_writes_a_readable_cache(tmp_path, v1_onnx):
    import tensorrt as trt

    from calibration.dataset import build_calibration_set
    from calibration.tensorrt_cache import read_trt_cache
    from calibration.tensorrt_calibrator import entropy_calibrator
    from toolchain.kit.build_engine import build

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no calibrators (INT8 comes only from Q/DQ)")
    if tuple(int(p) for p in trt.__version__.split(".")[:2]) < (10, 1):
        pytest.skip("the native DeformConv graph needs TensorRT ≥ 10.1 (older ones get the decomposed lowering)")
    calib = build_calibration_set(CALIB / "images", count=8, shape=(320, 320))
    config = build_config(_calibrator_target(tmp_path), "int8", ONNX, "calib.cache")
    config["profile"] = {k: [1, 3, 320, 320] for k in ("min", "opt", "max")}
    (tmp_path / "model.onnx").write_bytes(v1_onnx.path.read_bytes())
    build(config, tmp_path, calibrator=entropy_calibrator(calib, tmp_path / "calib.cache"))
    header, scales = read_trt_cache(tmp_path / "calib.cache")
    assert header.startswith("TRT-") and "input" in scales and (tmp_path / "model.engine").is_file()


def test_onnxruntime_sessions_keep_the_zero_padding_before_a_max_pool():
    """BiFPN's 'same' max pool pads with zeros; ONNX Runtime 1.25–1.31 fused that Pad into MaxPool's −inf
    padding (the plain session gives the windows' negative maxima on 1.31.1)."""
    from onnx import TensorProto, helper, numpy_helper

    assert disabled_optimizers("1.25.0") == disabled_optimizers("1.31.1") == ["Pad_Fusion"]
    assert disabled_optimizers("1.32.0") == []
    pads = numpy_helper.from_array(np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()
    x = -1 - np.random.default_rng(0).random((1, 2, 6, 6)).astype(np.float32)  # every window all negative
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.stack([padded[..., 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(-2, -1))
                     for i in range(3) for j in range(3)], axis=-1).reshape(1, 2, 3, 3)
    assert want[..., 0, :].max() == 0 and want[..., 1:, 1:].max() < 0  # border windows reach the zeros
    for session in (onnxruntime_session(model, session_options(), ["CPUExecutionProvider"]),
                    ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"],
                                         disabled_optimizers=["Pad_Fusion"])):  # the rule name is one ORT takes
        assert np.array_equal(session.run(None, {"x": x})[0], want)


def test_a_graph_outside_the_budget_under_the_input_policy_is_refused():
    """Issue 20 item 9: the runtime's input policy is part of the budget (the DLA's static 640 lost 0.15 hard AP)."""
    from toolchain.pipeline import check_input_policy

    target = load_target("jetson-orin-dla")
    profile = {"min": [1, 640, 640], "opt": [1, 640, 640], "max": [1, 640, 640]}
    lost = {"delta": {"easy": -0.0029, "medium": -0.0401, "hard": -0.1478}, "profile": profile}
    with pytest.raises(ArtifactError, match=r"jetson-orin-dla\.toml: under the runtime's input policy \(images "
                                            r"fitted into \[1, 640, 640\]\) the shipped graph misses the ΔAP budget: "
                                            r"-0\.0029 / -0\.0401 / -0\.1478; nothing written"):
        check_input_policy(lost, target, False)
    assert check_input_policy(lost, target, True) is True
    kept = {"delta": {"easy": -0.0018, "medium": 0.0008, "hard": 0.0006}, "profile": profile}
    assert check_input_policy(kept, target, False) is False
