"""Checkpoint loading: safe (``weights_only``), strict, and loud about what does not match."""
from pathlib import Path

import torch
from torch import nn

from featherface.errors import WeightsError, first_line

# thop's profiler leaves these buffers in checkpoints saved after counting FLOPs.
_PROFILER_SUFFIXES = ("total_ops", "total_params")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain or wrapped checkpoint onto the CPU, minus profiler keys and ``module.``: ``{"state_dict": ...}``,
    or the trainer's resume checkpoint (``last.pth``: ``{"model": ..., "optimizer": ..., ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc, 200)})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: checkpoint holds no state dict of tensors")
    return {
        k.removeprefix("module."): v for k, v in obj.items() if not k.split(".")[-1] in _PROFILER_SUFFIXES
    }


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` with strict key and shape matching; mismatches name the first keys."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        name = getattr(model, "name", type(model).__name__)
        raise WeightsError(f"{path}: weights do not fit model '{name}': " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model
