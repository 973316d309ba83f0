"""Images → detections through any runner; shared by eval, detect and bench."""
from pathlib import Path
from typing import Iterable, Iterator

from featherface.postprocess import Detections, PostprocessConfig, postprocess
from featherface.preprocess import preprocess, read_image
from toolchain.backends.base import Runner


def detect_array(runner: Runner, image_bgr, config: PostprocessConfig = PostprocessConfig()) -> Detections:
    """One BGR image at its original size → detections in its pixel coordinates."""
    loc, conf, landms = runner.infer(preprocess(image_bgr)[None])
    return postprocess(loc, conf, landms, runner.priors, image_bgr.shape[:2], config)[0]


def detect_paths(runner: Runner, paths: Iterable[Path],
                 config: PostprocessConfig = PostprocessConfig()) -> Iterator[tuple[Path, Detections]]:
    for path in paths:
        yield path, detect_array(runner, read_image(path), config)
