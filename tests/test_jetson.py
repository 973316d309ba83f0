"""The Jetson/TensorRT 8.x path on a CPU: opset conversion, FP16 index math, targets, runtime input policy."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from torchvision.ops import box_iou

from calibration.quantize import convert_fp16, index_math_nodes
from featherface.errors import ArtifactError
from toolchain.building.lint import errors, float_layers, lint_model, pinned_problems
from toolchain.building.targets import describe_targets, load_target
from toolchain.runtime.featherface_runtime import FaceDetector, fit_to_profile
from toolchain.stages.opset import convert_opset, downgrade
from toolchain.stages.engine import build_engine

from .conftest import CALIB, V1_WEIGHTS, VAL


@pytest.fixture(scope="module")
def decomposed(tmp_path_factory):
    """V1 with the decomposed DCN lowering, simplified, at opset 18 (what the exporter writes) and 17."""
    from toolchain.stages.export import export_onnx
    from toolchain.stages.simplify import simplify_onnx

    root = tmp_path_factory.mktemp("decomposed")
    export_onnx("featherface-v1", V1_WEIGHTS, root / "v1.onnx", "decomposed", 18)
    simplify_onnx(root / "v1.onnx", root / "v1.sim.onnx")
    onnx.save(downgrade(onnx.load(str(root / "v1.sim.onnx")), 17), str(root / "xavier.onnx"))
    return root


@pytest.mark.parametrize("target,opset", [("jetson-xavier", 17), ("jetson-nano", 13)])
def test_tensorrt8_targets_get_their_opset_proven_equal_to_pytorch(decomposed, target, opset):
    profile = load_target(target)
    source = onnx.load(str(decomposed / "v1.sim.onnx"))
    before = errors(lint_model(source, profile))
    assert any("opset" in str(v) for v in before)  # defect 1: opset 18 for TensorRT 8.x
    assert any("ReduceMean" in str(v) for v in before)  # … whose parsers ignore Reduce axes inputs
    out = decomposed / f"v1.opset{opset}.onnx"
    report = convert_opset(decomposed / "v1.sim.onnx", out, opset, V1_WEIGHTS, CALIB / "images")
    assert report.comparisons  # refused beyond the export tolerances, so reaching here means equal to PyTorch
    converted = onnx.load(str(out))
    assert [o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    reduces = [n for n in converted.graph.node if n.op_type in ("ReduceMean", "ReduceMax")]
    assert reduces and all(len(n.input) == 1 and any(a.name == "axes" for a in n.attribute) for n in reduces)
    assert errors(lint_model(converted, profile)) == []


def test_downgrade_refuses_what_it_has_no_rule_for():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    split = onnx.helper.make_node("Split", ["x"], ["y", "z"], name="split0", num_outputs=2, axis=0)
    graph = onnx.helper.make_graph([split], "g", [x], [y, onnx.helper.make_tensor_value_info(
        "z", onnx.TensorProto.FLOAT, [2])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(ArtifactError, match="node 'split0': Split-18 has no rule"):
        downgrade(model, 17)


def test_fp16_graph_of_the_decomposed_lowering_keeps_index_math_fp32(decomposed, tmp_path):
    """Defect 9: ONNX Runtime refused the FP16 Range, and FP16 holds integers exactly only to 2048."""
    source = decomposed / "xavier.onnx"
    model = onnx.load(str(source))
    naive = convert_float_to_float16(model, keep_io_types=True)
    assert any("FP16" in str(v) for v in lint_model(naive, load_target("jetson-xavier")))
    keep = index_math_nodes(model)
    assert sum(model.graph.node[i].op_type == "Range" for i in range(len(model.graph.node))) == 6
    assert {"Range", "Floor", "Cast"} <= {n.op_type for n in model.graph.node if n.name in keep}
    assert not {"Conv", "MatMul", "GatherElements"} & {n.op_type for n in model.graph.node if n.name in keep}
    out = convert_fp16(source, tmp_path / "v1.fp16.onnx")
    assert errors(lint_model(onnx.load(str(out)), load_target("jetson-xavier"))) == []
    x = (np.random.default_rng(0).standard_normal((1, 3, 320, 320)) * 60).astype(np.float32)
    full = ort.InferenceSession(str(source)).run(None, {"input": x})
    half = ort.InferenceSession(str(out)).run(None, {"input": x})
    assert np.abs(full[1] - half[1]).max() < 5e-3  # face probabilities


def test_fp16_kit_for_xavier_pins_the_index_math_to_fp32(decomposed, tmp_path):
    graph = decomposed / "xavier.onnx"
    fp16 = convert_fp16(graph, tmp_path / "fp16.onnx")
    result = build_engine(load_target("jetson-xavier"), "fp16", {"fp32": graph, "fp16": fp16}, tmp_path)
    config = json.loads((tmp_path / "build_config.json").read_text())
    assert result.kind == "tensorrt-build-kit"
    model = onnx.load(str(graph))
    pinned, index_math = config["tensorrt10"]["fp32_layers"], index_math_nodes(model)
    assert pinned == float_layers(model, index_math) and pinned_problems(model, pinned, "8.5") == []
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {"Floor", "Mul", "Add"} <= {ops[n] for n in pinned}  # the float index math stays pinned
    # the whole index-math list (the FP16 converter's block list) names comparisons, And and integer Casts:
    # trtexec would apply FP32 to them with --precisionConstraints=obey and fail the build
    flagged = pinned_problems(model, index_math, "8.5")
    flagged_ops = {v.op for v in flagged}
    assert {"And", "Cast"} <= flagged_ops and flagged_ops & {"Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
    assert not set(pinned) & {v.node for v in flagged}
    script = (tmp_path / "build_engine.sh").read_text()
    assert "--precisionConstraints=obey" in script and "use_python=1" in script  # trtexec 8.2 cannot pin layers


def test_a_graph_the_target_cannot_take_is_not_packed(v1_onnx, tmp_path):
    """A native-DeformConv opset-20 graph is refused for Xavier (TensorRT 8.5), nothing written."""
    with pytest.raises(ArtifactError, match="not accepted by target 'jetson-xavier'.*opset 20 is above the 17.*more"):
        build_engine(load_target("jetson-xavier"), "fp16", {"fp32": v1_onnx.path, "fp16": v1_onnx.path}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_jetson_names_the_current_board_profile():
    assert load_target("jetson").name == "jetson-orin"
    assert "jetson (= jetson-orin)" in describe_targets()
    nano, xavier = load_target("jetson-nano"), load_target("jetson-xavier")
    assert (nano.opset, xavier.opset, nano.export_opset) == (13, 17, 18)
    assert {load_target(t).platform for t in ("jetson-nano", "jetson-orin-dla")} == {"jetson"}


def test_profile_fit_policy():
    dynamic = {"min": [1, 320, 320], "max": [4, 1024, 1024]}
    assert fit_to_profile(480, 640, dynamic) == (1.0, 480, 640)  # inside: original size, like eval
    scale, h, w = fit_to_profile(2048, 1366, dynamic)  # taller than the profile: scaled to fit
    assert scale == 0.5 and (h, w) == (1024, 683)
    assert fit_to_profile(200, 100, dynamic) == (1.0, 320, 320)  # smaller: padded to the minimum
    static = {"min": [1, 3, 640, 640], "max": [1, 3, 640, 640]}  # DLA: exactly the engine's shape
    scale, h, w = fit_to_profile(1024, 768, static)
    assert (h, w) == (640, 640) and scale == 0.625


def test_runtime_letterboxes_an_image_larger_than_the_profile(cpu_bundle, tmp_path):
    """An image beyond the profile is scaled into it and its boxes come back in the image's own pixels."""
    _, result = cpu_bundle
    detector = FaceDetector(result.bundle)
    path = sorted((VAL / "images").rglob("*.jpg"))[0]
    image = cv2.imread(str(path))
    big = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2))  # > 1024: outside the cpu profile
    assert max(big.shape[:2]) > detector.profile["max"][-1]
    boxes, scores, _ = detector.detect(big)
    reference, ref_scores, _ = detector.detect(image)
    assert len(reference) > 0
    confident = ref_scores > 0.9
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(reference[confident] * 2,
                                                                              dtype=torch.float64)).numpy()
    assert np.all(iou.max(axis=0) > 0.8)
    # The on-device benchmark runs on the same bundle without PyTorch (numbers are not asserted).
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), image)
    script = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
              f"sys.argv = ['bench_engine.py', {str(images)!r}, '--runs', '3', '--warmup', '1', '--json', "
              f"{str(tmp_path / 'bench.json')!r}]; "
              f"runpy.run_path({str(result.bundle / 'runtime' / 'bench_engine.py')!r}, run_name='__main__')")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["model_at_opt_shape"]["shape"] == [1, 3, 640, 640] and report["detect_on_folder"]["images"] == 1
    assert {"p50_ms", "p90_ms", "p99_ms", "images_per_s"} <= set(report["detect_on_folder"]) and report["device"]


def test_kit_without_an_engine_is_refused_by_the_runtime(tmp_path, v1_onnx):
    from toolchain.runtime.featherface_runtime import BundleError

    build_engine(load_target("jetson-orin"), "fp16", {"fp32": v1_onnx.path, "fp16": v1_onnx.path}, tmp_path)
    shutil.copyfile(tmp_path / "model.onnx", tmp_path / "copy.onnx")
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "tensorrt-build-kit", "runtime": "tensorrt",
                                                        "artifact": "model.engine", "files": {}}))
    with pytest.raises(BundleError, match="without an engine; run build_engine.sh"):
        FaceDetector(tmp_path)


def test_kit_refuses_a_tensorrt_older_than_its_target_in_one_line(v1_onnx, tmp_path):
    """Defect 6: the kit reads min_tensorrt (an Orin kit on TensorRT 8.5 failed deep in a parser log)."""
    from toolchain.kit.build_engine import plan_for

    build_engine(load_target("jetson-orin"), "fp16", {"fp32": v1_onnx.path, "fp16": v1_onnx.path}, tmp_path)
    config = json.loads((tmp_path / "build_config.json").read_text())
    with pytest.raises(RuntimeError, match=r"^TensorRT 8\.5\.2 here; target jetson-orin needs TensorRT >= 10\.3"):
        plan_for(config, (8, 5, 2))
    assert plan_for(config, (10, 3, 0))["onnx"] == "model.onnx"
    script = (tmp_path / "build_engine.sh").read_text().splitlines()
    check = script.index(next(line for line in script if line.startswith("python3 build_engine.py --check")))
    assert check < script.index(next(line for line in script if line.startswith("if ")))  # before any build


def test_trtexec_builds_without_benchmarking_in_each_generation():
    from toolchain.backends.tensorrt_backend import build_config, trtexec_argv

    config = build_config(load_target("jetson-orin"), "fp16", {"fp32": "model.onnx", "fp16": "model.fp16.onnx"})
    assert "--skipInference" in trtexec_argv(config, (10, 3)) and "--buildOnly" not in trtexec_argv(config, (10, 3))
    for version in ((8, 4), (8, 5), (8, 6), (9, 3)):
        assert "--buildOnly" in trtexec_argv(config, version) and "--skipInference" not in trtexec_argv(config, version)


class _FakeDataType:
    """Stands in for a ``tensorrt.DataType`` member: its str is 'DataType.NAME' like pybind11's enums."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"DataType.{self.name}"


def test_runtime_maps_tensorrt_types_to_numpy_itself():
    """Defect 4: trt.nptype on TensorRT 8.5.2 touches np.bool, gone in numpy 1.24."""
    from toolchain.runtime.featherface_runtime import BundleError, numpy_dtype

    assert numpy_dtype(_FakeDataType("FLOAT")) == np.float32 and numpy_dtype(_FakeDataType("HALF")) == np.float16
    assert numpy_dtype(_FakeDataType("BOOL")) == np.bool_ and numpy_dtype(_FakeDataType("INT64")) == np.int64
    with pytest.raises(BundleError, match="BF16 has no numpy equivalent"):
        numpy_dtype(_FakeDataType("BF16"))
    source = (__import__("pathlib").Path(__file__).parent.parent / "toolchain" / "runtime"
              / "featherface_runtime.py").read_text()
    assert "trt.nptype(" not in source


def test_install_lines_per_jetpack_pin_the_cuda_binding_the_driver_runs():
    from toolchain.runtime.featherface_runtime import install_lines, jetpack_for

    nano = "\n".join(install_lines("8.2"))
    assert "JetPack 4.6.1" in nano and "pycuda" in nano and "cuda-python>=11.5,<=11.8.2" in nano  # 4.6.1 and 5.1
    assert "opencv" not in nano.replace("OpenCV", "")  # JetPack's own OpenCV: never pip-installed on the board
    orin = "\n".join(install_lines("10.3"))
    assert "JetPack 6.1" in orin and "JetPack 5.1" not in orin and "JetPack 6.0" not in orin
    assert jetpack_for((32, 7, 1))["jetpack"] == "4.6.1" and jetpack_for((35, 4, 1))["cuda"] == "11.4"
    assert jetpack_for((36, 3, 0))["tensorrt"] == "8.6.2" and jetpack_for((36, 4, 3))["jetpack"] == "6.1"
    assert jetpack_for((32, 6, 1)) is None  # JetPack 4.6 (TensorRT 8.0): older than every kit


def test_numpy_older_than_jetpack_46_is_one_line():
    from toolchain.runtime.featherface_runtime import BundleError, check_numpy

    check_numpy("1.13.3")
    with pytest.raises(BundleError, match=r"^numpy 1\.12\.1 is older than 1\.13"):
        check_numpy("1.12.1")


FAKE_CUDA_PYTHON = """
class _Error(int):
    def __str__(self):
        return "cudaErrorInsufficientDriver"

class cudaMemcpyKind:
    cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

def cudaStreamCreate():  # a CUDA 12.6 runtime on a CUDA 11.4 driver: the first call fails
    return (_Error(35), None)
"""
FAKE_PYCUDA_DRIVER = """
class Stream:
    handle = 7

    def synchronize(self):
        pass
"""


def test_cuda_python_that_the_driver_cannot_run_falls_back_to_pycuda(tmp_path, monkeypatch):
    """Defect 3: an unpinned cuda-python newer than the board's driver; the runtime uses pycuda instead. These
    stand-ins are files on sys.path (no CUDA here), shaped like the two packages' own modules."""
    from toolchain.runtime.featherface_runtime import BundleError, CudaPython, PyCuda, cuda_memory

    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "__init__.py").write_text("")
    (tmp_path / "cuda" / "cudart.py").write_text(FAKE_CUDA_PYTHON)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "cuda" or m.startswith(("cuda.", "pycuda"))]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(BundleError, match=r"cuda-python: cudaStreamCreate failed: cudaErrorInsufficientDriver; "
                                          r"pycuda not installed\)"):
        cuda_memory()
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "autoinit.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text(FAKE_PYCUDA_DRIVER)
    chosen = cuda_memory()
    assert isinstance(chosen, PyCuda) and not isinstance(chosen, CudaPython) and chosen.handle == 7


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_downgrade_keeps_a_pad_mode(mode):
    """A reflect or edge Pad stays one below opset 19 (it used to become a constant Pad, silently)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 6, 6])
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    pad = onnx.helper.make_node("Pad", ["x", "pads"], ["y"], name="pad0", mode=mode)
    graph = onnx.helper.make_graph([pad], "g", [x], [y], [pads])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    lowered = downgrade(model, 17)
    data = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
           for m in (model, lowered)]
    np.testing.assert_array_equal(run[0], run[1])
    wrap = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Pad", ["x", "pads"], ["y"], name="pad0", mode="wrap")], "g", [x], [y], [pads]),
        opset_imports=[onnx.helper.make_opsetid("", 19)])
    with pytest.raises(ArtifactError, match="node 'pad0' \\(Pad\\): mode 'wrap' has no equivalent before opset 19"):
        downgrade(wrap, 17)


def test_bench_reads_the_gpu_clock_from_the_gpus_own_devfreq_node(tmp_path):
    """Defect 7: on Xavier/Orin the first devfreq node in sorted order is another engine's (VIC, NVDLA)."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent / "toolchain" / "runtime"))
    from bench_engine import gpu_devfreq

    for name, freq in (("15340000.vic", "115200000"), ("158c0000.nvdla1", "1600000000"),
                       ("17000000.ga10b", "1300500000")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cur_freq").write_text(freq + "\n")
    assert gpu_devfreq(str(tmp_path)).name == "17000000.ga10b"
    assert gpu_devfreq(str(tmp_path / "missing")) is None


def test_buffers_for_the_largest_input_serve_every_smaller_shape():
    """The TensorRT model allocates once for the profile's max; each shape is a contiguous view of its front."""
    from toolchain.runtime.featherface_runtime import _leading

    buffer = np.zeros((4, 3, 64, 64), np.float32)
    view = _leading(buffer, (1, 3, 32, 48))
    view[...] = 1.0
    assert view.flags["C_CONTIGUOUS"] and np.shares_memory(view, buffer)
    assert buffer.reshape(-1)[: 3 * 32 * 48].sum() == 3 * 32 * 48 and buffer.sum() == 3 * 32 * 48
