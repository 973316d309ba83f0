"""Where the shared data and weights live: ``$FEATHERFACE_SHARED``, else ``../shared`` from the working directory."""
import os
from pathlib import Path

ENV_VAR = "FEATHERFACE_SHARED"


def shared_dir() -> Path:
    return Path(os.environ.get(ENV_VAR, "../shared"))


def default_weights(filename: str) -> Path:
    return shared_dir() / "weights" / filename


def default_val_dir() -> Path:
    return shared_dir() / "data" / "widerface-val-mini" / "val"


def default_calib_dir() -> Path:
    return shared_dir() / "data" / "widerface-val-mini" / "calib"
