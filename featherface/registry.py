"""A tiny model registry: ``@register_model(name)`` on a factory, ``create_model(name)`` to build."""
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


def create_model(name: str) -> Detector:
    _check(name)
    model = _FACTORIES[name]()
    model.name = name
    return model


def default_weights_name(name: str) -> str | None:
    _check(name)
    return _DEFAULT_WEIGHTS[name]
