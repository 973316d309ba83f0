import numpy as np
import pytest

from featherface.data import read_retinaface_labels, read_wider_gt
from featherface.errors import ImageError, LabelError
from featherface.preprocess import preprocess, read_image
from tests.conftest import VAL


def test_official_gt_file_of_the_val_split():
    records = read_wider_gt(VAL / "wider_face_val_bbx_gt.txt")
    assert len(records) == 80 and sum(len(r.boxes) for r in records) == 1233
    assert all((VAL / "images" / r.path).is_file() for r in records)
    assert records[0].attributes.shape == (len(records[0].boxes), 6)


def test_gt_reader_tolerates_blank_and_short_lines_and_zero_faces(tmp_path):
    f = tmp_path / "gt.txt"
    f.write_text("a/x.jpg\n2\n\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8\nb/y.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n\n")
    a, b = read_wider_gt(f)
    np.testing.assert_array_equal(a.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert b.path == "b/y.jpg" and len(b.boxes) == 0


def test_gt_reader_rejects_malformed_numbers_with_file_and_line(tmp_path):
    f = tmp_path / "gt.txt"
    f.write_text("a/x.jpg\n1\n1 2 x3 4 0 0 0 0 0 0\n")
    with pytest.raises(LabelError, match=r"gt.txt:3: malformed number"):
        read_wider_gt(f)
    f.write_text("a/x.jpg\n3\n1 2 3 4\n")
    with pytest.raises(LabelError, match=r"gt.txt:2: 'a/x.jpg' announces 3 faces"):
        read_wider_gt(f)


def test_retinaface_label_format(tmp_path):
    f = tmp_path / "label.txt"
    f.write_text("# 0--Parade/a.jpg\n"
                 "10 20 30 40 15.0 25.0 0.0 30.0 25.0 0.0 22.0 32.0 0.0 17.0 40.0 0.0 28.0 40.0 0.0 0.9\n"
                 "50 60 10 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n\n"
                 "# 0--Parade/b.jpg\n1 1 5 5\n")
    a, b = read_retinaface_labels(f)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 30, 40], [50, 60, 10, 10]])
    np.testing.assert_array_equal(a.landmarks[0], [15, 25, 30, 25, 22, 32, 17, 40, 28, 40])
    assert a.has_landmarks.tolist() == [True, False]
    assert b.path == "0--Parade/b.jpg" and b.has_landmarks.tolist() == [False]
    f.write_text("# a.jpg\n10 20 abc 40\n")
    with pytest.raises(LabelError, match=r"label.txt:2: malformed number"):
        read_retinaface_labels(f)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="bad.jpg: cannot decode image"):
        read_image(bad)
    with pytest.raises(ImageError, match="missing.jpg: image not found"):
        read_image(tmp_path / "missing.jpg")


def test_preprocess_is_bgr_minus_mean_chw():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 104, 117, 200
    x = preprocess(image)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 0], [0, 0, 77])
