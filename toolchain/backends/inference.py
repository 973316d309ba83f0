"""Images → detections through any runner; shared by eval, detect and bench."""
from featherface.postprocess import Detections, PostprocessConfig, postprocess
from featherface.preprocess import preprocess
from toolchain.backends.base import Runner


def detect_array(runner: Runner, image_bgr, config: PostprocessConfig = PostprocessConfig()) -> Detections:
    """One BGR image at its original size → detections in its pixel coordinates."""
    loc, conf, landms = runner.infer(preprocess(image_bgr)[None])
    return postprocess(loc, conf, landms, runner.priors, image_bgr.shape[:2], config)[0]
