"""Host-independent INT8: the exact-accumulation graph against a reference written from the Q/DQ definitions."""
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.dataset import build_calibration_set
from calibration.exact import EXACT_LIMIT, exact_bound, integer_exact
from calibration.quantize import calibrate
from calibration.sensitivity import tensor_noise
from featherface.errors import ArtifactError
from featherface.preprocess import preprocess
from toolchain.backends.onnxruntime_backend import OnnxRuntimeRunner, exact_session, session_options
from toolchain.building.metadata import get_metadata, load_onnx
from toolchain.building.targets import load_target
from toolchain.measuring import crossarch
from toolchain.measuring.evaluate import evaluate_folder
from toolchain.runtime.featherface_runtime import (CPU_FLAGS_ENV, FaceDetector, architecture_warning, cpu_features,
                                                   int8_warning, onnxruntime_session)
from toolchain.stages.bundle import write_bundle
from toolchain.stages.engine import build_engine

from .conftest import CALIB, ROOT, VAL


def quantize(x: np.ndarray, scale: np.float32, zero: int, dtype) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    info = np.iinfo(dtype)
    q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.int64) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def conv_int(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Integer convolution summed in int64 (never near overflow here: the int32 accumulation, exactly)."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, width = x.shape
    m, cg, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (width - k) // stride + 1
    out = np.zeros((n, m, oh, ow), np.int64)
    per_group = m // groups
    for o in range(m):
        g = o // per_group
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(k):
            for j in range(k):
                patch = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j].astype(np.int64))
    return out


def reference(x: np.ndarray, layers: list[dict]) -> np.ndarray:
    """Each layer: quantize the activation, int8 × int8 summed exactly, then · (s_x · s_w[c]) (float32), + bias."""
    for layer in layers:
        q = quantize(x, layer["x_scale"], layer["x_zero"], layer["x_dtype"]).astype(np.int64) - layer["x_zero"]
        acc = conv_int(q, layer["w"], layer["stride"], layer["pad"], layer["groups"])
        assert np.abs(acc).max() < EXACT_LIMIT
        scale = (np.float32(layer["x_scale"]) * layer["w_scale"]).astype(np.float32).reshape(1, -1, 1, 1)
        x = acc.astype(np.float32) * scale + layer["bias"].reshape(1, -1, 1, 1)
        if layer.get("relu"):
            x = np.maximum(x, np.float32(0))
    return x


def qdq_graph(layers: list[dict], shape: tuple[int, ...]) -> onnx.ModelProto:
    """Q → DQ → Conv(DQ(weights), bias) per layer, as ``onnxruntime.quantization`` writes them (QDQ format)."""
    nodes, inits, x = [], [], "input"
    for i, layer in enumerate(layers):
        elem = TensorProto.INT8 if layer["x_dtype"] == np.int8 else TensorProto.UINT8
        inits += [numpy_helper.from_array(np.float32(layer["x_scale"]), f"xs{i}"),
                  helper.make_tensor(f"xz{i}", elem, [], [layer["x_zero"]]),
                  numpy_helper.from_array(layer["w"], f"w{i}_quantized"),
                  numpy_helper.from_array(layer["w_scale"], f"ws{i}"),
                  numpy_helper.from_array(np.zeros(len(layer["w"]), np.int8), f"wz{i}"),
                  numpy_helper.from_array(layer["bias"], f"b{i}")]
        nodes += [helper.make_node("QuantizeLinear", [x, f"xs{i}", f"xz{i}"], [f"{x}_QuantizeLinear_Output"]),
                  helper.make_node("DequantizeLinear", [f"{x}_QuantizeLinear_Output", f"xs{i}", f"xz{i}"],
                                   [f"{x}_DequantizeLinear_Output"]),
                  helper.make_node("DequantizeLinear", [f"w{i}_quantized", f"ws{i}", f"wz{i}"], [f"w{i}"], axis=0),
                  helper.make_node("Conv", [f"{x}_DequantizeLinear_Output", f"w{i}", f"b{i}"], [f"c{i}"],
                                   name=f"conv{i}", kernel_shape=[3, 3], strides=[layer["stride"]] * 2,
                                   pads=[layer["pad"]] * 4, group=layer["groups"])]
        x = f"c{i}"
        if layer.get("relu"):
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    graph = helper.make_graph(nodes, "crafted", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def crafted_layers(rng: np.random.Generator, saturating: bool) -> list[dict]:
    """A dense 3×3 conv (s8 activations, 32 → 16) and a depthwise stride-2 one (u8, zero point 7).

    ``saturating``: activations at the top of their range and weights at ±127, the case where an x86 kernel without
    VNNI overflows its 16-bit pair sums (2 · 255 · 127 > 32767)."""
    w1 = rng.integers(-127, 128, (16, 32, 3, 3)).astype(np.int8)
    if saturating:
        w1 = np.where(rng.random(w1.shape) < 0.5, 127, 100).astype(np.int8)
    w2 = rng.integers(-127, 128, (16, 1, 3, 3)).astype(np.int8)
    return [dict(x_scale=np.float32(0.0173), x_zero=0, x_dtype=np.int8, w=w1, stride=1, pad=1, groups=1,
                 w_scale=rng.uniform(1e-3, 4e-3, 16).astype(np.float32), relu=True,
                 bias=rng.normal(0, 0.3, 16).astype(np.float32)),
            dict(x_scale=np.float32(0.21), x_zero=7, x_dtype=np.uint8, w=w2, stride=2, pad=1, groups=16,
                 w_scale=rng.uniform(2e-3, 9e-3, 16).astype(np.float32),
                 bias=rng.normal(0, 0.5, 16).astype(np.float32))]


@pytest.mark.parametrize("saturating", [False, True])
def test_exact_graph_equals_the_integer_reference_to_the_last_bit(saturating):
    rng = np.random.default_rng(7)
    layers = crafted_layers(rng, saturating)
    x = rng.normal(0, 1.2, (2, 32, 11, 13)).astype(np.float32)
    if saturating:
        x = np.abs(x) + 2.0  # every activation quantizes to 127
    expected = reference(x, layers)
    model = qdq_graph(layers, x.shape)
    exact = integer_exact(model)
    assert not any(n.op_type == "DequantizeLinear" and n.input[0].startswith("w") for n in exact.graph.node)
    got = exact_session(exact).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # bit for bit, not allclose


def test_reference_would_catch_a_rewrite_that_drops_the_zero_point():
    """The comparison above is sharp: the exact graph with its u8 zero-point subtraction removed does not match."""
    rng = np.random.default_rng(7)
    layers = crafted_layers(rng, False)
    x = rng.normal(0, 1.2, (1, 32, 11, 13)).astype(np.float32)
    exact = integer_exact(qdq_graph(layers, x.shape))
    (sub,) = [n for n in exact.graph.node if n.op_type == "Sub"]
    for node in exact.graph.node:
        node.input[:] = [sub.input[0] if name == sub.output[0] else name for name in node.input]
    exact.graph.node.remove(sub)
    got = exact_session(exact).run(None, {"input": x})[0]
    assert not np.array_equal(got, reference(x, layers))


def test_bound_refuses_a_convolution_float32_cannot_sum_exactly():
    rng = np.random.default_rng(0)
    layer = crafted_layers(rng, True)[0]
    layer = dict(layer, w=np.full((4, 128, 3, 3), 127, np.int8), w_scale=np.full(4, 1e-3, np.float32),
                 bias=np.zeros(4, np.float32))
    model = qdq_graph([layer], (1, 128, 8, 8))
    (bound,) = exact_bound(model)
    assert bound.node == "conv0" and bound.worst_sum == 128 * 127 * 128 * 9 > EXACT_LIMIT
    with pytest.raises(ArtifactError, match=r"crafted\.onnx: conv0 may accumulate up to \d+ > 2\^24"):
        integer_exact(model, "crafted.onnx")


def v1_outputs(path) -> str:
    """sha256 of V1's outputs on one real image through the exact runner (ONNX Runtime's default optimisations)."""
    image = cv2.resize(cv2.imread(str(sorted((VAL / "images").rglob("*.jpg"))[3])), (320, 256))
    outputs = OnnxRuntimeRunner(path, threads=1).infer(preprocess(image)[None])
    return hashlib.sha256(b"".join(o.tobytes() for o in outputs)).hexdigest()


def noise_readings(fp32_path, qdq_path) -> str:
    """sha256 of the noise rounds' readings (tensor, local and accumulated SQNR) on one calibration image."""
    calib = build_calibration_set(CALIB / "images", count=1, min_images=1, shape=(320, 320))
    rows = tensor_noise(fp32_path, qdq_path, calib)
    return hashlib.sha256(json.dumps([(r.tensor, r.local_db, r.accumulated_db) for r in rows]).encode()).hexdigest()


def calibration_ranges(fp32_path, out) -> str:
    """sha256 of the calibration cache (MinMax ranges of every tensor around a conv) on one calibration image."""
    calib = build_calibration_set(CALIB / "images", count=1, min_images=1, shape=(320, 320))
    calibrate(fp32_path, calib, "minmax", out)
    return hashlib.sha256(Path(out).read_bytes()).hexdigest()


def test_v1_int8_graph_is_provably_exact_and_runs_the_same_at_every_optimisation_level(minmax_int8):
    """Every quantized conv of V1's real Q/DQ graph is within float32's exact range, and ONNX Runtime's graph
    rewrites (layouts, fusions) leave the exact graph's outputs identical to the unoptimised run, to the bit."""
    model = onnx.load(str(minmax_int8))
    bounds = exact_bound(model)
    assert len(bounds) > 50 and max(b.worst_sum for b in bounds) < EXACT_LIMIT
    exact = integer_exact(model)
    image = cv2.resize(cv2.imread(str(sorted((VAL / "images").rglob("*.jpg"))[3])), (320, 256))
    x = preprocess(image)[None]
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unoptimised = ort.InferenceSession(exact.SerializeToString(), plain, providers=["CPUExecutionProvider"])
    for a, b in zip(exact_session(exact).run(None, {"input": x}), unoptimised.run(None, {"input": x})):
        np.testing.assert_array_equal(a, b)
    assert OnnxRuntimeRunner(minmax_int8).int8 == "exact"


def saturation_probe() -> dict:
    """The saturating crafted conv with a Q/DQ on its output (so ONNX Runtime fuses it into its integer kernel):
    the largest error, in output quantization steps, of the host's kernels and of the exact graph."""
    rng = np.random.default_rng(7)
    layers = [dict(crafted_layers(rng, True)[0], relu=False)]
    x = (np.abs(rng.normal(0, 1.2, (1, 32, 11, 13))) + 2.0).astype(np.float32)
    expected = reference(x, layers)
    step = np.float32(np.abs(expected).max() / 127)
    model = qdq_graph(layers, x.shape)
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(step, "out_scale"),
                              helper.make_tensor("out_zero", TensorProto.INT8, [], [0])])
    graph.node[-1].input[0] = "out_dq"
    graph.node.insert(len(graph.node) - 1, helper.make_node("QuantizeLinear", ["c0", "out_scale", "out_zero"], ["out_q"]))
    graph.node.insert(len(graph.node) - 1, helper.make_node("DequantizeLinear", ["out_q", "out_scale", "out_zero"],
                                                            ["out_dq"]))
    expected = np.clip(np.rint(expected / step), -128, 127) * step
    kernels = onnxruntime_session(model.SerializeToString(), session_options(1), ["CPUExecutionProvider"])
    exact = exact_session(integer_exact(model), 1)
    return {name: float(np.abs(session.run(None, {"input": x})[0] - expected).max() / step)
            for name, session in (("kernels", kernels), ("exact", exact))}


def test_exact_semantics_hold_where_this_cpu_kernels_are_exact():
    probe = saturation_probe()
    assert probe["exact"] == 0
    if cpu_features()["exact_int8"]:  # VNNI / ARM: ONNX Runtime's own kernels agree to the step
        assert probe["kernels"] == 0


QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


@pytest.mark.skipif(platform.machine() != "x86_64" or QEMU is None,
                    reason="needs an x86-64 host with qemu-user (Debian: qemu-user-static) to emulate an AVX2 CPU")
def test_an_avx2_cpu_saturates_in_onnxruntime_kernels_but_not_in_exact_semantics(minmax_int8, v1_onnx, tmp_path):
    """On an emulated Haswell (AVX2, no VNNI, no AVX-512) the crafted conv: ONNX Runtime's kernels sum u8 × s8 pairs
    in saturating 16-bit lanes and miss by many steps, the exact graph is still the reference to the bit; V1's INT8
    graph through the exact runner gives this host's outputs to the bit, the noise rounds read the same SQNRs and the
    calibration writes the same ranges: nothing that decides the INT8 graph depends on the CPU."""
    code = ("import json, tests.test_exact_int8 as t; "
            f"print(json.dumps(dict(t.saturation_probe(), v1=t.v1_outputs({str(minmax_int8)!r}), "
            f"noise=t.noise_readings({str(v1_onnx.path)!r}, {str(minmax_int8)!r}), "
            f"ranges=t.calibration_ranges({str(v1_onnx.path)!r}, {str(tmp_path / 'avx2.json')!r}))))")
    run = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["exact"] == 0 and probe["kernels"] > 10
    assert probe["v1"] == v1_outputs(minmax_int8)
    assert probe["noise"] == noise_readings(v1_onnx.path, minmax_int8)
    assert probe["ranges"] == calibration_ranges(v1_onnx.path, tmp_path / "here.json")


def test_cpu_features_from_cpuinfo_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n\nprocessor\t: 1\n")
    found = cpu_features(str(info))
    assert found["flags"] == ["avx2", "avx512bw"]
    assert found["exact_int8"] is (False if platform.machine() == "x86_64" else found["exact_int8"])
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2 avx512_vnni")
    assert cpu_features(str(info))["flags"] == ["avx2", "avx512_vnni"]
    if platform.machine() == "x86_64":
        assert cpu_features(str(info))["exact_int8"] is True


def test_warning_is_one_line_for_int8_bundles_on_saturating_cpus():
    manifest = {"runtime": "onnxruntime", "precision": "int8",
                "int8": {"saturating_kernels": {"delta": {"easy": -0.0093, "medium": 0.0033, "hard": -0.0189}}}}
    avx2 = {"arch": "x86_64", "flags": ["avx2"], "exact_int8": False}
    line = int8_warning(manifest, avx2)
    assert "\n" not in line and "saturates" in line and "-0.0093 / +0.0033 / -0.0189" in line and "avx2" in line
    assert int8_warning(manifest, dict(avx2, flags=["avx2", "avx512_vnni"], exact_int8=True)) is None
    assert int8_warning(dict(manifest, precision="fp32"), avx2) is None
    assert int8_warning(dict(manifest, runtime="tensorrt"), avx2) is None
    arm = {"arch": "aarch64", "flags": [], "exact_int8": True}
    assert architecture_warning({"checked_on": ["x86_64", "aarch64"]}, arm) is None
    assert "checked on x86_64 only; aarch64" in architecture_warning({"checked_on": ["x86_64"]}, arm)
    assert architecture_warning({"checked_on": ["x86_64"], "precision": "int8"}, arm).startswith("this int8 bundle")
    assert architecture_warning({}, arm) is None  # bundles from before the record: nothing claimed, nothing said


@pytest.fixture(scope="module")
def int8_cpu_bundle(minmax_int8, v1_onnx, tmp_path_factory):
    """A cpu bundle of the MinMax Q/DQ graph: (folder, manifest)."""
    target = load_target("cpu")
    folder = tmp_path_factory.mktemp("int8-bundle") / "bundle"
    folder.mkdir()
    engine = build_engine(target, "int8", {"int8": minmax_int8, "fp32": v1_onnx.path}, folder)
    return folder, write_bundle(folder, "featherface-v1", target, "int8", engine,
                                get_metadata(load_onnx(minmax_int8)), {}, None)


def test_int8_cpu_bundle_records_its_semantics_and_warns_on_a_saturating_cpu(int8_cpu_bundle, monkeypatch, capsys):
    folder, manifest = int8_cpu_bundle
    assert manifest["int8"]["semantics"] == "exact-int32"
    assert manifest["checked_on"] == list(load_target("cpu").checked_on_for("int8"))
    assert manifest["int8"]["build_host"]["arch"] == platform.machine().lower()
    image = cv2.imread(str(next((VAL / "images").rglob("*.jpg"))))
    monkeypatch.setenv(CPU_FLAGS_ENV, "sse4_2 avx2 fma")
    capsys.readouterr()
    detector = FaceDetector(folder)
    err = capsys.readouterr().err
    if platform.machine() == "x86_64":
        assert err.count("\n") == 1 and err.startswith(f"warning: {folder}: INT8") and "saturates" in err
        assert detector.warnings and len(detector.detect(image)[0]) > 0  # it warns, and still runs
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2 avx512_vnni")
    assert FaceDetector(folder).warnings == [] and capsys.readouterr().err == ""


def test_the_cross_architecture_check_measures_kernels_against_the_exact_semantics(int8_cpu_bundle, tmp_path):
    """``make arm64-check``'s reference side: the bundle's own runtime (its preprocessing, its post-processing) with
    the exact int32 path swapped in, and the table that sets each architecture's kernels against it."""
    folder, _ = int8_cpu_bundle
    images, keys, ground_truth = crossarch.val_images(VAL, 2)
    exact = crossarch.exact_probe(folder, images)
    kernels = crossarch.host_probe(folder, images, tmp_path / "kernels.npz")
    detector = FaceDetector(folder, threads=1)
    runner = OnnxRuntimeRunner(folder / "model.onnx", threads=1, int8="exact")
    for i, image in enumerate(images):
        x, _ = detector.prepare(cv2.imread(str(image)))
        for name, value in zip(crossarch.OUTPUTS, runner.infer(x)):
            np.testing.assert_allclose(exact[f"{i}/{name}"], value, rtol=0, atol=1e-5)
    sides = ("exact", "kernels")
    result = crossarch.compare(exact, kernels, keys, ground_truth, sides)
    assert set(result["ap"]) == set(sides) and result["dotprod"] is None  # no HWCAP words on x86
    faces_exact, faces_kernels = (sum(c[k] for c in result["counts"]) for k in (0, 1))
    assert faces_exact > 0 and faces_exact - result["lost"] == faces_kernels - result["gained"]  # the matched faces
    table = crossarch.table([{"precision": "int8", "cpu": "x86_64 (host)", "result": result}], sides)
    assert "faces exact→kernels" in table.splitlines()[0] and table.splitlines()[2].startswith("int8   x86_64")


def test_noise_rounds_measure_the_exact_semantics(minmax_int8, v1_onnx, tmp_path):
    """The noise rounds judge the Q/DQ graph through the same exact int32 path as the AP verdicts: their readings on
    the shipped graph equal those on its exact rewrite (which the rewrite leaves as it is)."""
    calib = build_calibration_set(CALIB / "images", count=2, min_images=1, shape=(320, 320))
    exact_path = tmp_path / "exact.onnx"
    onnx.save(integer_exact(onnx.load(str(minmax_int8))), str(exact_path))
    shipped = tensor_noise(v1_onnx.path, minmax_int8, calib)
    assert shipped == tensor_noise(v1_onnx.path, exact_path, calib)
    assert len(shipped) > 50 and all(np.isfinite(r.local_db) for r in shipped)


def test_the_ap_verdict_is_measured_with_exact_semantics(minmax_int8, v1_onnx, small_val):
    """toolchain engine's accuracy record for an INT8 graph: the exact runner's AP (what the budget judges), and
    this CPU's kernels beside it, labelled with the CPU's flags."""
    from toolchain.pipeline import _accuracy

    profile = {"min": [1, 320, 320], "opt": [1, 640, 640], "max": [1, 1024, 1024]}
    result = _accuracy({"fp32": v1_onnx.path, "int8": minmax_int8}, "int8", "model.onnx", small_val, profile,
                       lambda m: None, host_kernels=True)
    exact = evaluate_folder(OnnxRuntimeRunner(minmax_int8, int8="exact"), small_val).ap
    assert result["int8_semantics"] == "exact-int32" and result["ap"] == exact
    own = evaluate_folder(OnnxRuntimeRunner(minmax_int8, int8="kernels"), small_val).ap
    assert result["host_kernels"]["ap"] == own and result["host_kernels"]["cpu"] == cpu_features()


def test_exact_semantics_keep_an_fp16_int8_graph_in_fp16(minmax_int8, tmp_path):
    """TensorRT 11's int8-fp16 graph (the float part in FP16) loads through the exact runner and agrees with the
    FP32 Q/DQ graph's exact outputs to FP16 precision."""
    from toolchain.stages.quantize import fp16_onnx

    half = fp16_onnx(minmax_int8, tmp_path / "int8-fp16.onnx")
    image = cv2.resize(cv2.imread(str(sorted((VAL / "images").rglob("*.jpg"))[3])), (320, 256))
    x = preprocess(image)[None]
    runner = OnnxRuntimeRunner(half)
    assert runner.int8 == "exact"
    conf_half, conf_full = runner.infer(x)[1], OnnxRuntimeRunner(minmax_int8).infer(x)[1]
    assert np.median(np.abs(conf_half - conf_full)) < 0.01
