"""Images → detections through any runner; shared by eval, detect and bench."""
import numpy as np

from featherface.postprocess import Detections, PostprocessConfig, postprocess
from featherface.preprocess import MEAN_BGR, preprocess
from toolchain.backends.base import Runner
from toolchain.runtime.featherface_runtime import letterbox


def detect_array(runner: Runner, image_bgr, config: PostprocessConfig = PostprocessConfig()) -> Detections:
    """One BGR image at its original size → detections in its pixel coordinates."""
    loc, conf, landms = runner.infer(preprocess(image_bgr)[None])
    return postprocess(loc, conf, landms, runner.priors, image_bgr.shape[:2], config)[0]


def detect_in_profile(runner: Runner, image_bgr, profile: dict,
                      config: PostprocessConfig = PostprocessConfig()) -> Detections:
    """The bundle runtime's input policy: the image fitted into ``profile`` (letterbox, exact shape when static),
    detections mapped back to its own pixels — what a board scores."""
    x, scale = letterbox(image_bgr, MEAN_BGR, profile)
    loc, conf, landms = runner.infer(x)
    dets = postprocess(loc, conf, landms, runner.priors, x.shape[2:], config)[0]
    return Detections(dets.boxes / np.float32(scale), dets.scores, dets.landmarks / np.float32(scale))
