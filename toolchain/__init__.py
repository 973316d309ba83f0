"""FeatherFace edge toolchain: export, simplify, quantize, build engines, bundle and benchmark."""
__version__ = "0.2.0"
