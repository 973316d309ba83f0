"""Calibration sets, calibration caches (ONNX Runtime and TensorRT), Q/DQ INT8 and FP16 graphs."""
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration.dataset import build_calibration_set, letterbox
from calibration.quantize import sensitive_nodes
from calibration.tensorrt_cache import (decode_scale, encode_scale, read_trt_cache,
                                        trt_version_tag, write_trt_cache)
from featherface.errors import ArtifactError, FeatherFaceError
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner
from toolchain.measuring.compare import compare_runners, sample_batches
from toolchain.building.metadata import get_metadata, load_onnx
from toolchain.stages.calibrate import calibrate_onnx
from toolchain.stages.quantize import fp16_onnx, quantize_onnx

from .conftest import CALIB


def quantized_fraction(model: onnx.ModelProto) -> float:
    """Share of Conv nodes whose weight comes through a DequantizeLinear."""
    producer = {out: node for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return sum(producer.get(n.input[1]) is not None and producer[n.input[1]].op_type == "DequantizeLinear"
               for n in convs) / len(convs)


def test_calibration_set_is_reproducible_and_listed(tmp_path):
    a = build_calibration_set(CALIB / "images", count=10, seed=3)
    b = build_calibration_set(CALIB / "images", count=10, seed=3)
    c = build_calibration_set(CALIB / "images", count=10, seed=4)
    assert a.files == b.files and a.files != c.files and len(a) == 10
    a.write_manifest(tmp_path / "m.json")
    manifest = a.manifest()
    assert manifest["count"] == 10 and len({f["sha256"] for f in manifest["files"]}) == 10
    assert (tmp_path / "m.json").is_file()


def test_letterbox_keeps_aspect_and_pads_with_the_mean():
    image = np.full((100, 200, 3), (104, 117, 123), np.uint8)  # the mean colour → zeros after preprocessing
    image[:, :100] = 255
    x = letterbox(image, (320, 320))
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    assert np.all(x[:, 160:] == 0)  # padding below the 160-px-high image
    assert np.all(x[0, :150, :150] == 255 - 104)  # the white half, scaled ×1.6, not stretched


def test_unreadable_images_are_skipped_and_counted_until_too_few_remain(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((CALIB / "images").rglob("*.jpg"))[:9]:
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    calib = build_calibration_set(images)
    assert len(calib) == 9 and [p.name for p, _ in calib.skipped] == ["broken.jpg"]
    with pytest.raises(FeatherFaceError, match=r"only 9 readable calibration images \(1 skipped\), need at least 10"):
        build_calibration_set(images, min_images=10)


def test_empty_or_missing_calibration_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FeatherFaceError, match=f"{tmp_path}: no images in the calibration folder"):
        build_calibration_set(tmp_path)
    with pytest.raises(FeatherFaceError, match="calibration folder not found"):
        build_calibration_set(tmp_path / "nope")


def test_trt_cache_round_trip_and_format(tmp_path):
    assert trt_version_tag("8.5.2") == "8502" and trt_version_tag("10.3") == "100300"
    assert encode_scale(1.0) == "3f800000" and decode_scale("3f800000") == 1.0
    scales = {"input": 1.5, "conv_out": 0.0123}
    write_trt_cache(scales, tmp_path / "c.cache", "8.5.2")
    header, read = read_trt_cache(tmp_path / "c.cache")
    assert header == "TRT-8502-EntropyCalibration2"
    assert read.keys() == scales.keys() and all(np.isclose(read[k], v, rtol=1e-7) for k, v in scales.items())


@pytest.mark.parametrize("text,where", [("garbage\n", ":1:"), ("TRT-8502-EntropyCalibration2\nx: zz\n", ":2:"),
                                        ("TRT-8502-EntropyCalibration2\nno separator\n", ":2:")])
def test_malformed_trt_cache_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.cache"
    path.write_text(text)
    with pytest.raises(ArtifactError, match=f"{path}{where}"):
        read_trt_cache(path)


def test_calibration_writes_matching_ort_and_trt_caches(minmax, v1_onnx):
    report, _ = minmax
    assert report.images == 8 and report.cache.is_file() and report.manifest.is_file()
    from calibration.quantize import read_ranges

    ranges = read_ranges(report.cache)
    assert list(ranges.data) == sorted(ranges.data)  # the same ranges give the same bytes in any process
    _, trt_scales = read_trt_cache(report.trt_cache)
    assert trt_scales.keys() == ranges.data.keys()
    name = load_onnx(v1_onnx.path).graph.input[0].name
    amax = max(float(np.max(np.abs(v))) for v in ranges.data[name].range_value)
    assert 100 < amax <= 152  # mean-subtracted pixels: at most 255 - 103 (symmetric range)
    assert np.isclose(trt_scales[name], amax / 127, rtol=1e-6)


def test_qdq_graph_has_tensorrt_layout(minmax, v1_onnx):
    _, path = minmax
    model = load_onnx(path)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fp32 = load_onnx(v1_onnx.path)
    kept = set(sensitive_nodes(fp32))
    assert len(kept) == 10  # the stem + 3 levels × (class, box, landmark) heads
    assert 0.8 < quantized_fraction(model) < 1.0
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weight_dq = producer.get(conv.input[1])
        if conv.name in kept:
            assert weight_dq is None or weight_dq.op_type != "DequantizeLinear", conv.name
            continue
        assert weight_dq.op_type == "DequantizeLinear", conv.name
        q_weight, scale, zero = (inits.get(i) for i in weight_dq.input)
        if q_weight is None:  # weights folded through a QuantizeLinear
            continue
        assert q_weight.dtype == np.int8 and scale.shape == (q_weight.shape[0],)  # per output channel
        assert not np.any(zero)  # symmetric
        act_dq = producer[conv.input[0]]
        assert act_dq.op_type == "DequantizeLinear"
        assert np.ndim(inits[act_dq.input[1]]) == 0  # per tensor
        assert inits[act_dq.input[2]].dtype == np.int8 and not np.any(inits[act_dq.input[2]])
    # Defect 4: TensorRT's IDequantizeLayer takes INT8 only; biases stay float (no INT32 behind a DQ).
    dq_inputs = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert dq_inputs and all(x.dtype == np.int8 for x in dq_inputs)
    from toolchain.building.lint import errors, lint_model
    from toolchain.building.targets import load_target

    assert errors(lint_model(model, load_target("jetson-orin"))) == []
    meta = get_metadata(model)
    assert meta["precision"] == "int8" and meta["calibration"] == "minmax" and meta["priors"]


def test_int8_graph_runs_in_onnxruntime_close_to_fp32(minmax, v1_onnx):
    _, path = minmax
    batches = sample_batches(CALIB / "images", ((1, 480, 640),))
    [c] = compare_runners(OnnxRuntimeRunner(v1_onnx.path), OnnxRuntimeRunner(path), batches)
    # plain MinMax on 8 images is far from accurate (the noise rounds fix that), but it must not be garbage
    assert {d.output: d.cosine for d in c.drift}["conf"] > 0.99 and c.det_f1 >= 0.5


def test_noise_rounds_keep_more_layers_and_reduce_drift(minmax, v1_onnx, tmp_path):
    report, plain = minmax
    out = tmp_path / "rounds.onnx"
    q = quantize_onnx(v1_onnx.path, report.cache, out, CALIB / "images", "s8", threshold_db=25, max_rounds=2)
    assert len(q.kept_fp32) > 10 and q.rounds and all(n.local_db < 25 for n in q.rounds[0])
    assert get_metadata(load_onnx(out))["kept_fp32"] == q.kept_fp32
    again = quantize_onnx(v1_onnx.path, report.cache, tmp_path / "again.onnx", CALIB / "images", "s8",
                          threshold_db=25, max_rounds=2)  # the same inputs give the same bytes
    assert again.kept_fp32 == q.kept_fp32 and (tmp_path / "again.onnx").read_bytes() == out.read_bytes()
    batches = sample_batches(CALIB / "images", ((1, 640, 640),))
    ref = OnnxRuntimeRunner(v1_onnx.path)
    drift = {name: {d.output: d.max_abs for d in compare_runners(ref, OnnxRuntimeRunner(p), batches)[0].drift}
             for name, p in (("plain", plain), ("rounds", out))}
    assert drift["rounds"]["conf"] < drift["plain"]["conf"]


def test_fp16_graph_keeps_fp32_io_and_matches(v1_onnx, tmp_path):
    out = fp16_onnx(v1_onnx.path, tmp_path / "fp16.onnx")
    model = load_onnx(out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    halves = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert halves > 0.8 * len(model.graph.initializer) - 50
    batches = sample_batches(CALIB / "images", ((1, 320, 320), (2, 480, 640)))
    for c in compare_runners(OnnxRuntimeRunner(v1_onnx.path), OnnxRuntimeRunner(out), batches):
        drift = {d.output: d for d in c.drift}
        assert drift["conf"].max_abs < 2e-2 and drift["loc"].cosine > 0.999 and c.det_f1 > 0.95
    assert get_metadata(model)["precision"] == "fp16"


def test_sqnr_is_summed_in_float64_and_agrees_with_the_definition():
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    from calibration.sensitivity import sqnr_db

    ones = [np.ones((2, 50), np.float32)]
    assert sqnr_db(ones, [a + np.float32(0.1) for a in ones]) == pytest.approx(20.0, abs=1e-5)  # 100 / 1
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((3, 4000)).astype(np.float32) for _ in range(2)]
    y = [a + rng.standard_normal(a.shape).astype(np.float32) * 0.01 for a in x]
    assert sqnr_db(x, y) == pytest.approx(compute_signal_to_quantization_noice_ratio(x, y), abs=1e-3)


def test_implicit_int8_cache_ranges_every_float_tensor(minmax, v1_onnx, tmp_path):
    """Issue 20 item 8: TensorRT's implicit INT8 keeps a tensor without a range out of INT8, so the calibrator
    target's cache ranges the BiFPN/CBAM element-wise tensors too, not only the convolutions' inputs and outputs."""
    report, _ = minmax
    full = calibrate_onnx(v1_onnx.path, CALIB / "images", tmp_path, "minmax", count=8, shape=(320, 320),
                          all_tensors=True)
    _, conv_only = read_trt_cache(report.trt_cache)
    _, every = read_trt_cache(full.trt_cache)
    producer = {o: n.op_type for n in load_onnx(v1_onnx.path).graph.node for o in n.output}
    assert set(conv_only) < set(every)
    extra = {producer.get(name) for name in set(every) - set(conv_only)}
    assert {"Mul", "Add", "Sigmoid"} <= extra  # CBAM gates and BiFPN weighted sums
    assert all(every[name] == conv_only[name] for name in conv_only)  # the same ranges where both have one
