"""FeatherFace: pure-PyTorch face detectors, priors, box coding, post-processing, data readers and WIDER evaluation."""
from pathlib import Path

from featherface import models  # noqa: F401  (registers the detectors)
from featherface.heads import Detector, count_parameters
from featherface.registry import create_model, default_weights_name, list_models
from featherface.weights import load_weights

__all__ = ["Detector", "count_parameters", "create_model", "default_weights_name", "list_models", "load_weights",
           "load_model"]


def load_model(name: str, weights: str | Path | None = None) -> Detector:
    """Build ``name`` in eval mode, loading ``weights`` strictly when given."""
    model = create_model(name)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
