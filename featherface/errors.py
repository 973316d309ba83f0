"""User-facing errors: each carries a one-line message that names the offending file."""


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
