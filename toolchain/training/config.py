"""Training configuration: defaults reproduce the published recipe (640 px, batch 32, 350 epochs, SGD 1e-3 with
momentum 0.9 and weight decay 5e-4, steps at 190/220); a TOML file overrides, strictly typed."""
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from featherface.errors import ConfigError


@dataclass
class TrainConfig:
    image_size: int = 640
    batch_size: int = 32  # global: split across DDP processes
    epochs: int = 350
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    schedule: str = "step"  # step | cosine
    milestones: list[int] = field(default_factory=lambda: [190, 220])
    gamma: float = 0.1
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0
    eval_every: int = 10  # epochs between val evaluations (0: never)
    workers: int = field(default_factory=lambda: min(4, len(os.sched_getaffinity(0))))  # data loaders: ≤ the cores
    seed: int = 0
    amp: str = "auto"  # auto (fp16 + GradScaler on CUDA, off on CPU) | fp16 | bf16 | off
    channels_last: bool = True  # CUDA only
    max_steps_per_epoch: int = 0  # 0: the whole dataset (smaller for smoke runs)
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (fine-tuning with small batches)
    grad_clip: float = 0.0  # largest global gradient norm (0: off); steadies fine-tuning from refitted weights
    # Distillation (used when a teacher is given): soft-target temperature, teacher confidence above which an
    # anchor gets box/landmark targets, weight of the distillation term next to the MultiBox loss, and the
    # number of fixed augmentations per image whose teacher outputs are cached (0: new ones each epoch, no cache).
    kd_temperature: float = 2.0
    kd_confidence: float = 0.5
    kd_weight: float = 1.0
    kd_views: int = 8

    def validate(self, where: str) -> "TrainConfig":
        checks = [
            (self.optimizer in ("sgd", "adamw"), "'optimizer' must be 'sgd' or 'adamw'"),
            (self.schedule in ("step", "cosine"), "'schedule' must be 'step' or 'cosine'"),
            (self.amp in ("auto", "fp16", "bf16", "off"), "'amp' must be auto, fp16, bf16 or off"),
            (self.image_size > 0 and self.image_size % 32 == 0, "'image_size' must be a positive multiple of 32"),
            (self.batch_size > 0 and self.epochs > 0 and self.lr > 0, "'batch_size', 'epochs' and 'lr' must be > 0"),
            (self.warmup_epochs >= 0 and self.workers >= 0, "'warmup_epochs' and 'workers' must be ≥ 0"),
            (self.grad_clip >= 0, "'grad_clip' must be ≥ 0 (0: off)"),
            (all(isinstance(m, int) for m in self.milestones), "'milestones' must be a list of integers"),
            (self.kd_temperature > 0 and 0 <= self.kd_confidence < 1 and self.kd_weight >= 0 and self.kd_views >= 0,
             "'kd_temperature' must be > 0, 'kd_confidence' in [0, 1), 'kd_weight' and 'kd_views' ≥ 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{where}: {message}")
        return self


def _accepts(annotation) -> type | tuple[type, ...]:
    if annotation is float:
        return (int, float)
    return getattr(annotation, "__origin__", annotation)  # list[int] → list


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the TOML file's keys, then ``overrides`` (command-line options that were given)."""
    values: dict = {}
    where = str(path) if path else "training config"
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(types))})")
        expected = _accepts(types[key])
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return TrainConfig(**values).validate(where)
