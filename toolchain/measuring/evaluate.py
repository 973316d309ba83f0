"""Evaluate any runner on a WIDER-style folder (``images/<event>/*.jpg`` + ``ground_truth/*.mat``)."""
from pathlib import Path
from typing import Callable

import numpy as np

from featherface.errors import FeatherFaceError
from featherface.data.shifts import SHIFTS, apply_shift
from featherface.evaluation import EvalResult, GroundTruth, evaluate, load_ground_truth
from featherface.postprocess import Detections, PostprocessConfig
from featherface.preprocess import list_images, read_image
from toolchain.building.artifacts import write_text
from toolchain.backends.base import Runner
from toolchain.backends.inference import detect_array


def wider_rows(dets: Detections) -> np.ndarray:
    """(K, 5) ``x y w h score`` in whole pixels (corners truncated), as WIDER submissions are written.

    Integer boxes are what the reference figures were measured on; keeping sub-pixel boxes moves
    medium/hard AP by up to 0.003.
    """
    corners = np.trunc(dets.boxes.astype(np.float64))
    xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return np.concatenate([xywh, dets.scores[:, None]], axis=1)


def write_wider_prediction(out_dir: Path, key: str, rows: np.ndarray) -> None:
    """``out_dir/<event>/<name>.txt``: name, count, then ``x y w h score`` lines (official submission format)."""
    lines = [Path(key).name, str(len(rows))] + [f"{x:.0f} {y:.0f} {w:.0f} {h:.0f} {s:.6f}" for x, y, w, h, s in rows]
    write_text(out_dir / f"{key}.txt", "\n".join(lines) + "\n")


def evaluate_folder(runner: Runner, data_dir: str | Path, config: PostprocessConfig = PostprocessConfig(),
                    save_preds: Path | None = None, on_image: Callable[[int, int], None] | None = None,
                    shift: str | None = None, seed: int = 0) -> EvalResult:
    return evaluate_detector(lambda image: detect_array(runner, image, config), data_dir, save_preds, on_image,
                             shift, seed)


def evaluate_detector(detect: Callable[[np.ndarray], Detections], data_dir: str | Path,
                      save_preds: Path | None = None, on_image: Callable[[int, int], None] | None = None,
                      shift: str | None = None, seed: int = 0) -> EvalResult:
    """Any detector (BGR image → detections in its pixels) on a WIDER folder, official protocol; with
    ``shift`` every image is corrupted in memory first (``featherface.data.shifts``, seeded per image) and the
    ground truth is scaled with it where the shift changes geometry."""
    data_dir = Path(data_dir)
    images = list_images(data_dir / "images")
    if not images:
        raise FeatherFaceError(f"{data_dir / 'images'}: no images found")
    ground_truth = load_ground_truth(data_dir / "ground_truth")
    if shift is not None and SHIFTS[shift].scale != 1.0:
        ground_truth = {k: GroundTruth(g.boxes * SHIFTS[shift].scale, g.keep) for k, g in ground_truth.items()}
    predictions = {}
    for i, path in enumerate(images):
        key = path.relative_to(data_dir / "images").with_suffix("").as_posix()
        image = read_image(path)
        if shift is not None:
            image, _ = apply_shift(shift, image, key, seed)
        dets = detect(image)
        predictions[key] = wider_rows(dets)
        if save_preds is not None:
            write_wider_prediction(Path(save_preds), key, predictions[key])
        if on_image:
            on_image(i + 1, len(images))
    return evaluate(predictions, ground_truth)
