"""``metadata_props`` carried by every exported model, so later stages read facts instead of guessing."""
import json
from pathlib import Path

import onnx

from featherface.errors import ArtifactError, first_line
from featherface.priors import PriorConfig

PREFIX = "featherface."


def set_metadata(model: onnx.ModelProto, values: dict) -> None:
    """Store ``values`` (JSON-encoded when not strings) under ``featherface.*`` keys, replacing old ones."""
    keys = {PREFIX + k for k in values}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in values.items():
        model.metadata_props.add(key=PREFIX + k, value=v if isinstance(v, str) else json.dumps(v))


def parse_metadata(props: dict[str, str]) -> dict:
    out = {}
    for key, value in props.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX):]] = json.loads(value)
            except json.JSONDecodeError:
                out[key[len(PREFIX):]] = value
    return out


def get_metadata(model: onnx.ModelProto) -> dict:
    return parse_metadata({p.key: p.value for p in model.metadata_props})


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """``onnx.load`` with a one-line error naming the file when it is missing, truncated or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    return model


def priors_from(meta: dict, path: str | Path) -> PriorConfig:
    if "priors" not in meta:
        raise ArtifactError(f"{path}: no featherface.priors metadata (was it exported by this toolchain?)")
    return PriorConfig.from_dict(meta["priors"])
