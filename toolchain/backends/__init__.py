"""Backends as loader → runner pairs behind one interface (``Runner``)."""
from toolchain.backends.base import Runner

__all__ = ["Runner"]
