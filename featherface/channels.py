"""Channel configurations: a registered architecture with narrower layers (what structured pruning leaves).

A configuration is a small JSON file naming the base model and, for each convolution, linear layer and batch
norm whose width changed, its new sizes. ``create_model`` accepts the file's path wherever it accepts a model
name, so a pruned model saves as plain weights plus this file and loads strictly like any other.
"""
import json
from pathlib import Path

from torch import nn

from featherface.errors import ConfigError

FORMAT = "featherface-channels-1"


def channel_config(model: nn.Module, base: nn.Module) -> dict[str, list[int]]:
    """Sizes of every layer of ``model`` whose width differs from the same layer in ``base``."""
    reference = dict(base.named_modules())
    changed = {}
    for name, module in model.named_modules():
        sizes = _sizes(module)
        if sizes is not None and sizes != _sizes(reference[name]):
            changed[name] = sizes
    return changed


def _sizes(module: nn.Module) -> list[int] | None:
    if isinstance(module, nn.Conv2d):
        return [module.out_channels, module.in_channels, module.groups]
    if isinstance(module, nn.Linear):
        return [module.out_features, module.in_features]
    if isinstance(module, nn.BatchNorm2d):
        return [module.num_features]
    return None


def _narrowed(module: nn.Module, sizes: list[int]) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        out_ch, in_ch, groups = sizes
        return nn.Conv2d(in_ch, out_ch, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                         module.bias is not None)
    if isinstance(module, nn.Linear):
        return nn.Linear(sizes[1], sizes[0], module.bias is not None)
    return nn.BatchNorm2d(sizes[0], module.eps, module.momentum, module.affine, module.track_running_stats)


def apply_channels(model: nn.Module, channels: dict[str, list[int]], where: str = "channel config") -> nn.Module:
    """Replace each named layer by a fresh one of the given sizes (weights are loaded afterwards)."""
    modules = dict(model.named_modules())
    for name, sizes in channels.items():
        module = modules.get(name)
        expected = _sizes(module) if module is not None else None
        if expected is None or len(sizes) != len(expected) or not all(isinstance(v, int) and v > 0 for v in sizes):
            raise ConfigError(f"{where}: '{name}' is not a resizable layer of '{getattr(model, 'name', '?')}' "
                              f"or has bad sizes {sizes}")
        parent_name, _, attr = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, attr, _narrowed(module, sizes))
    return model


def read_channel_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read channel config ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a channel config (format '{FORMAT}' expected)")
    if not isinstance(data.get("base"), str) or not isinstance(data.get("channels"), dict):
        raise ConfigError(f"{path}: channel config needs 'base' (a model name) and 'channels'")
    return data
