"""A tiny model registry: ``@register_model(name)`` on a factory, ``create_model(name)`` to build.

``create_model`` also takes the path of a channel config (``*.json``, see ``featherface.channels``): the base
model it names, narrowed to the recorded widths.
"""
from pathlib import Path
from typing import Callable

from featherface.errors import FeatherFaceError
from featherface.heads import Detector

_FACTORIES: dict[str, Callable[[], Detector]] = {}
_DEFAULT_WEIGHTS: dict[str, str | None] = {}


def register_model(name: str, default_weights: str | None = None) -> Callable:
    """Register a zero-argument factory; ``default_weights`` is a file name under the shared weights folder."""

    def wrap(factory: Callable[[], Detector]) -> Callable[[], Detector]:
        _FACTORIES[name] = factory
        _DEFAULT_WEIGHTS[name] = default_weights
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_FACTORIES)


def _check(name: str) -> None:
    if name not in _FACTORIES:
        raise FeatherFaceError(f"unknown model '{name}' (available: {', '.join(list_models())})")


def is_channel_file(name: str) -> bool:
    return str(name).endswith(".json")


def create_model(name: str) -> Detector:
    if is_channel_file(name):
        from featherface.channels import apply_channels, read_channel_file

        config = read_channel_file(name)
        model = apply_channels(create_model(config["base"]), config["channels"], str(name))
        model.name = str(name)
        model.expected_params = None  # a pruned width has no published parameter count
        return model
    _check(name)
    model = _FACTORIES[name]()
    model.name = name
    return model


def default_weights_name(name: str) -> str | None:
    if is_channel_file(name):
        weights = Path(name).with_suffix(".pth")  # prune writes NAME.json beside NAME.pth
        return str(weights.resolve()) if weights.is_file() else None
    _check(name)
    return _DEFAULT_WEIGHTS[name]
