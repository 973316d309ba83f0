import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from tests.conftest import REFERENCE_AP, RF_WEIGHTS, V1_WEIGHTS, VAL
from toolchain.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def v1_torch_ap(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = run("eval", "--model", "featherface-v1", "--weights", V1_WEIGHTS, "--data", VAL,
                 "--json", out / "ap.json", "--save-preds", out / "preds")
    assert result.exit_code == 0, result.output
    return json.loads((out / "ap.json").read_text()), out / "preds"


def test_eval_reproduces_reference_ap_featherface_v1(v1_torch_ap):
    ap, preds = v1_torch_ap
    assert ap["images"] == 80
    for setting, ref in REFERENCE_AP["featherface-v1"].items():
        assert abs(ap[setting] - ref) <= 0.005, (setting, ap[setting], ref)
    files = sorted(preds.rglob("*.txt"))
    assert len(files) == 80
    lines = files[0].read_text().splitlines()
    assert lines[0] == files[0].stem and int(lines[1]) == len(lines) - 2
    x, y, w, h, score = lines[2].split()
    assert int(w) >= 0 and 0 < float(score) <= 1


def test_eval_reproduces_reference_ap_retinaface(tmp_path):
    result = run("eval", "--model", "retinaface-mnet0.25", "--weights", RF_WEIGHTS, "--data", VAL,
                 "--json", tmp_path / "ap.json")
    assert result.exit_code == 0, result.output
    ap = json.loads((tmp_path / "ap.json").read_text())
    for setting, ref in REFERENCE_AP["retinaface-mnet0.25"].items():
        assert abs(ap[setting] - ref) <= 0.005, (setting, ap[setting], ref)


def test_onnxruntime_eval_within_0_002_of_pytorch(v1_onnx, v1_torch_ap, tmp_path):
    result = run("eval", "--backend", "onnxruntime", "--onnx", v1_onnx.path, "--data", VAL,
                 "--json", tmp_path / "ap.json")
    assert result.exit_code == 0, result.output
    ap = json.loads((tmp_path / "ap.json").read_text())
    for setting in ("easy", "medium", "hard"):
        assert abs(ap[setting] - v1_torch_ap[0][setting]) <= 0.002


def test_detect_writes_json_and_annotated_image(tmp_path):
    image = next((VAL / "images").rglob("*.jpg"))
    result = run("detect", "--model", "retinaface-mnet0.25", "--weights", RF_WEIGHTS, image, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert data["width"] == cv2.imread(str(image)).shape[1] and data["detections"]
    det = data["detections"][0]
    assert len(det["box"]) == 4 and len(det["landmarks"]) == 5 and det["score"] >= 0.5
    annotated = cv2.imread(str(tmp_path / f"{image.stem}.jpg"))
    assert annotated is not None and annotated.shape == cv2.imread(str(image)).shape


def test_validate_reports_and_passes():
    result = run("validate", "--model", "featherface-v2", "--sizes", "160,224", "--batches", "1,2")
    assert result.exit_code == 0, result.output
    assert "268,485 parameters" in result.output and "gradient flow: ok" in result.output


def _deform_conv_graph(folder):
    """A valid opset-19 graph with one native DeformConv: what TensorRT before 10.1 cannot parse."""
    from onnx import TensorProto, helper

    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn0", kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (
        ("x", [1, 4, 8, 8]), ("w", [4, 4, 3, 3]), ("offset", [1, 18, 8, 8]))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(folder / "dcn.onnx"))


@pytest.mark.parametrize("make_bad,args,message", [
    (lambda d: (d / "x.onnx").write_bytes(b"junk"), ["lint", "--target", "jetson-orin", "{d}/x.onnx"],
     "x.onnx: cannot read ONNX"),
    (_deform_conv_graph, ["lint", "--target", "jetson-xavier", "{d}/dcn.onnx"],
     "dcn.onnx: 2 violation(s) for target 'jetson-xavier'"),
    (lambda d: None, ["lint", "--target", "mars", "{d}/x.onnx"], "unknown target 'mars'"),
    (lambda d: (d / "w.pth").write_bytes(b"\x00" * 10), ["eval", "--weights", "{d}/w.pth"], "w.pth: not a readable"),
    (lambda d: None, ["eval", "--weights", "{d}/none.pth"], "none.pth: weights file not found"),
    (lambda d: (d / "x.onnx").write_bytes(b"junk"), ["eval", "--backend", "onnxruntime", "--onnx", "{d}/x.onnx"],
     "x.onnx: not a valid ONNX model"),
    (lambda d: (d / "img.jpg").write_bytes(b"junk"), ["detect", "--weights", str(V1_WEIGHTS), "{d}/img.jpg",
                                                      "--out", "{d}/out"], "img.jpg: cannot decode image"),
    (lambda d: None, ["export", "--target", "mars", "--out", "{d}/m.onnx"], "unknown target 'mars'"),
    (lambda d: None, ["engine", "--target", "mars", "--build-dir", "{d}/b"], "unknown target 'mars'"),
    (lambda d: None, ["engine", "--target", "jetson-nano", "--precision", "int8", "--build-dir", "{d}/b"],
     "precision 'int8' is not offered by target 'jetson-nano'"),
    (lambda d: (d / "t.toml").write_text("name = 1\n"), ["engine", "--target", "{d}/t.toml"], "t.toml: 'name' must be str"),
    (lambda d: (d / "empty").mkdir(), ["calibrate", str(V1_WEIGHTS), "--images", "{d}/empty", "--out", "{d}/c"],
     "no images in the calibration folder"),
    (lambda d: (d / "b").mkdir(), ["verify", "{d}/b"], "b/manifest.json: missing or unreadable bundle manifest"),
    (lambda d: (d / "c.cache").write_text("{"), ["quantize", str(V1_WEIGHTS), "--cache", "{d}/c.cache", "--out",
                                               "{d}/q.onnx"], "c.cache: not a readable calibration cache"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, make_bad, args, message):
    make_bad(tmp_path)
    result = CliRunner().invoke(main, [a.format(d=tmp_path) for a in args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_lint_names_node_op_and_version_and_passes_a_good_graph(tmp_path):
    _deform_conv_graph(tmp_path)
    bad = CliRunner().invoke(main, ["lint", "--target", "jetson-xavier", str(tmp_path / "dcn.onnx")])
    assert bad.exit_code == 1 and "node 'dcn0' (DeformConv)" in bad.output and "[TensorRT 8.5]" in bad.output
    good = CliRunner().invoke(main, ["lint", "--target", "jetson-orin", str(tmp_path / "dcn.onnx")])
    assert good.exit_code == 0 and "ok for target 'jetson-orin'" in good.output


@pytest.mark.parametrize("option", ["--score-threshold", "--nms-threshold"])
def test_detect_refuses_thresholds_outside_0_1(tmp_path, option):
    image = sorted((VAL / "images").rglob("*.jpg"))[0]
    result = CliRunner().invoke(main, ["detect", str(image), "--out", str(tmp_path / "o"), option, "7"])
    assert result.exit_code == 2 and "0<=x<=1" in result.output.replace(" ", "")
    assert not (tmp_path / "o").exists()


def test_profile_reports_every_node_onnx_runtime_runs(tmp_path):
    """A small graph with fusions disabled: every node of the graph appears once with its op type."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["y"], name="mean", axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weights])
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from toolchain.measuring.profile import profile_onnx

    report = profile_onnx(path, (32, 32), runs=3, warmup=1)
    ran = {n.name: n.op_type for n in report.nodes}
    from toolchain.backends.onnxruntime_backend import session_options

    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert ran == {n.name: n.op_type for n in optimized.graph.node}  # every node ONNX Runtime runs, once
    assert all(n.ms >= 0 for n in report.nodes) and report.total_ms > 0
    result = CliRunner().invoke(main, ["profile", str(path), "--size", "32", "--runs", "2", "--json",
                                       str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert {n["name"] for n in data["nodes"]} == set(ran) and abs(sum(o["share"] for o in data["op_types"]) - 1) < 1e-6
    bad = CliRunner().invoke(main, ["profile", str(tmp_path / "p.json")])
    assert bad.exit_code == 1 and "not a valid ONNX model" in bad.output


def test_detect_processes_the_rest_of_a_folder_past_a_bad_image(tmp_path):
    """A folder with an empty and a truncated JPEG among good ones: every good one is processed, each bad one is one
    error line, the exit code is 1; --fail-fast stops at the first."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((VAL / "images").rglob("*.jpg"))[:2]
    for i, path in enumerate(good):
        (folder / f"{i * 2}_good.jpg").write_bytes(path.read_bytes())
    (folder / "1_empty.jpg").write_bytes(b"")
    (folder / "3_truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    result = CliRunner().invoke(main, ["detect", "--model", "retinaface-mnet0.25", "--weights", str(RF_WEIGHTS),
                                       str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["0_good.json", "2_good.json"]
    assert "1_empty.jpg: cannot decode image" in result.output and "3_truncated.jpg" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and "2 of 4 image(s)" in result.output
    fast = CliRunner().invoke(main, ["detect", "--model", "retinaface-mnet0.25", "--weights", str(RF_WEIGHTS),
                                     str(folder), "--out", str(tmp_path / "fast"), "--fail-fast"])
    assert fast.exit_code == 1 and sorted(p.name for p in (tmp_path / "fast").glob("*.json")) == ["0_good.json"]


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", "--model", "retinaface-mnet0.25", "--weights", str(RF_WEIGHTS),
                                       "--out", "/proc/nope/rf.onnx"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and "/proc/nope" in result.output


def test_detect_on_odd_images(tmp_path):
    """1×1, grayscale, 16-bit, RGBA and 4000×3000 images run; a truncated JPEG is refused (OpenCV would fill it with
    grey); a phone photo with EXIF orientation 6 is detected in its displayed (rotated) orientation."""
    from PIL import Image

    folder = tmp_path / "odd"
    folder.mkdir()
    source = sorted((VAL / "images").rglob("*.jpg"))[0]
    image = cv2.imread(str(source))
    cv2.imwrite(str(folder / "a_1x1.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(folder / "b_gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "c_16bit.png"), image.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "d_rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "e_large.jpg"), cv2.resize(image, (4000, 3000)))
    (folder / "f_truncated.jpg").write_bytes(source.read_bytes()[:2000])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.open(source).save(folder / "g_phone.jpg", exif=exif)
    result = CliRunner().invoke(main, ["detect", "--model", "retinaface-mnet0.25", "--weights", str(RF_WEIGHTS),
                                       str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "f_truncated.jpg: truncated JPEG" in result.output
    written = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    assert set(written) == {"a_1x1", "b_gray", "c_16bit", "d_rgba", "e_large", "g_phone"}
    assert written["a_1x1"]["detections"] == [] and written["b_gray"]["detections"]
    assert len(written["c_16bit"]["detections"]) == len(written["d_rgba"]["detections"]) > 0
    height, width = image.shape[:2]
    assert (written["g_phone"]["width"], written["g_phone"]["height"]) == (height, width)  # displayed: rotated
    assert written["g_phone"]["detections"]
