"""User-facing errors: each carries a one-line message that names the offending file."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's first message line cut to ``limit`` characters, or its type name when it has no message:
    library errors often span pages, one line is what a user needs."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line`` for reports that list failures of any kind."""
    return f"{type(exc).__name__}: {first_line(exc, limit)}" if str(exc).strip() else type(exc).__name__


class FeatherFaceError(Exception):
    """Base class for bad input (weights, images, labels, configs); the CLI prints it on one line."""


class WeightsError(FeatherFaceError):
    pass


class ImageError(FeatherFaceError):
    pass


class LabelError(FeatherFaceError):
    pass


class ArtifactError(FeatherFaceError):
    """A model artifact (ONNX file, engine, bundle) that is missing, corrupt or does not match."""


class ConfigError(FeatherFaceError):
    pass


class TrainingError(FeatherFaceError):
    """Training cannot go on (a loss or gradient that is not finite)."""
