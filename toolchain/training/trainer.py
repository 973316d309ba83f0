"""The training loop: one code path for the CPU, one GPU and ``torchrun`` DDP (only rank 0 writes).

Checkpoints (``last.pth``, and the plain weights as ``weights.pth``) are written atomically after every epoch
and when SIGINT/SIGTERM arrives; ``--resume`` restores model, optimizer, scheduler, scaler, epoch and RNG states
and continues. The best model by mean val AP is kept as ``best.pth`` (a plain state dict, loadable with
``weights_only=True``).
"""
import dataclasses
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import featherface
from featherface.data.dataset import FaceDataset, collate
from featherface.errors import ConfigError, TrainingError, WeightsError, first_line
from featherface.loss import DistillConfig, LossConfig, MultiBoxLoss, distillation_loss
from featherface.priors import prior_boxes
from featherface.weights import read_state_dict
from toolchain import __version__
from toolchain.backends.torch_backend import TorchRunner
from toolchain.building.artifacts import atomic_output, write_weights
from toolchain.measuring.evaluate import evaluate_folder
from toolchain.training.config import TrainConfig
from toolchain.training.metrics import MetricsTracker
from toolchain.training.teacher import Teacher

CHECKPOINT_FORMAT = "featherface-train-1"
Echo = Callable[[str], None]


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    interrupted: bool
    history: list[dict]


def load_backbone(model: torch.nn.Module, path: str | Path) -> int:
    """ImageNet MobileNetV1-0.25 weights (``module.`` prefix stripped) into ``model.body``; returns tensors loaded."""
    state = read_state_dict(path)
    target = model.state_dict()
    matched = {f"body.{k}": v for k, v in state.items() if f"body.{k}" in target and target[f"body.{k}"].shape == v.shape}
    body = [k for k in target if k.startswith("body.")]
    if len(matched) < len(body):
        raise WeightsError(f"{path}: only {len(matched)} of {len(body)} backbone tensors fit "
                           f"'{getattr(model, 'name', type(model).__name__)}' (not a MobileNetV1-0.25 backbone?)")
    model.load_state_dict(matched, strict=False)
    return len(matched)


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next step boundary and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame) -> None:
        self.signal = signum

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _distributed(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend)
    return dist.get_rank(), world, torch.device(f"cuda:{local}" if device == "cuda" else "cpu")


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)

    return factor


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: str | Path, model_name: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable training checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not a training checkpoint of this toolchain (use --weights for plain weights)")
    if ckpt["model_name"] != model_name:
        raise WeightsError(f"{path}: checkpoint is for model '{ckpt['model_name']}', not '{model_name}'")
    return ckpt


def train(model_name: str, cfg: TrainConfig, data_dir: Path | list[Path], out_dir: Path, val_dir: Path | None = None,
          device: str = "cpu", init: Path | None = None, backbone: Path | None = None, resume: Path | None = None,
          echo: Echo = print, teacher: tuple[str, Path | None] | None = None) -> TrainResult:
    """Train ``model_name`` (a registered name or a channel config) on ``data_dir`` (one or more folders).

    With ``teacher`` = (model, weights), the loss adds ``distillation_loss`` toward that frozen detector's
    outputs on the same augmented batch (cached per fixed view, ``cfg.kd_views``): the same loop, checkpoints,
    resume and metrics as plain training.
    """
    rank, world, dev = _distributed(device)
    main_process = rank == 0
    say = echo if main_process else (lambda message: None)
    ckpt = read_checkpoint(resume, model_name) if resume else None
    if ckpt:
        cfg = dataclasses.replace(TrainConfig(**ckpt["config"]), epochs=max(cfg.epochs, ckpt["config"]["epochs"]))
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    model = featherface.create_model(model_name)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    elif init:
        featherface.load_weights(model, init)
    elif backbone:
        say(f"backbone: {load_backbone(model, backbone)} tensors from {backbone}")
    model.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model
    dataset = FaceDataset(data_dir, cfg.image_size, cfg.seed, views=cfg.kd_views if teacher else 0)
    per_process = max(1, cfg.batch_size // world)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(dataset, per_process, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        pin_memory=dev.type == "cuda", drop_last=True, persistent_workers=False)
    steps = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"{data_dir}: {len(dataset)} images give no full batch of {per_process} per process")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
                 if cfg.optimizer == "sgd" else torch.optim.AdamW(params, cfg.lr, weight_decay=cfg.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps))
    amp = _amp_dtype(cfg, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    criterion = MultiBoxLoss(model.priors.variances, LossConfig(cfg.neg_pos_ratio, cfg.loc_weight))
    priors = prior_boxes(model.priors, cfg.image_size, cfg.image_size).to(dev)
    kd = DistillConfig(cfg.kd_temperature, cfg.kd_confidence, cfg.kd_weight)
    guide = Teacher.load(*teacher, dev, cache=cfg.kd_views > 0, amp=amp) if teacher else None
    start, best = 0, -1.0
    tracker = MetricsTracker(out_dir, ckpt["metrics"] if ckpt else None)
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start, best = ckpt["epoch"], ckpt["best_map"]
        say(f"resumed from {resume} at epoch {start}")
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    stop = _Stop()

    def save(epoch_done: int) -> None:
        if not main_process:
            return
        state = {"format": CHECKPOINT_FORMAT, "model_name": model_name, "toolchain_version": __version__,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "epoch": epoch_done, "best_map": best, "rng": _rng_state(),
                 "config": dataclasses.asdict(cfg), "metrics": tracker.history}
        with atomic_output(out_dir / "last.pth") as tmp:
            torch.save(state, tmp)
        write_weights(out_dir / "weights.pth", model)  # the latest weights alone, for eval/export/bench

    epoch = start
    try:
        for epoch in range(start, cfg.epochs):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            net.train()
            if cfg.freeze_bn:
                for module in model.modules():
                    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                        module.eval()
            sums = {"loss": 0.0, "loss_loc": 0.0, "loss_conf": 0.0, "loss_landm": 0.0}
            if guide:
                sums["loss_kd"] = 0.0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            began = time.perf_counter()
            done = 0
            for step, (images, targets, indices) in enumerate(loader):
                if step == steps:
                    break
                images = images.to(dev, non_blocking=True)
                if dev.type == "cuda" and cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    loc, conf, landms = net(images)
                parts = criterion(loc, conf, landms, priors, targets)
                total = parts.total
                if guide:
                    distilled = distillation_loss((loc, conf, landms), guide(images, indices, dataset.view), kd,
                                                  cfg.loc_weight)
                    total = total + distilled.total
                    sums["loss_kd"] += float(distilled.total.detach())
                if not torch.isfinite(total.detach()):  # stop before NaN weights reach the deformable kernels
                    raise TrainingError(f"{out_dir}: the loss is not finite at epoch {epoch + 1}, step {step + 1}; "
                                        f"lower the learning rate or set grad_clip and resume from the last checkpoint")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if not torch.isfinite(norm) and not scaler.is_enabled():  # the scaler skips such steps itself
                        raise TrainingError(f"{out_dir}: the gradient is not finite at epoch {epoch + 1}, "
                                            f"step {step + 1}")
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                for key, value in (("loss", total), ("loss_loc", parts.loc), ("loss_conf", parts.conf),
                                   ("loss_landm", parts.landmarks)):
                    sums[key] += float(value.detach())
                done += 1
                if main_process and (step + 1) % max(1, steps // 10) == 0:
                    rate = done * per_process * world / (time.perf_counter() - began)
                    say(f"epoch {epoch + 1}/{cfg.epochs} [{'#' * ((step + 1) * 20 // steps):<20}] {step + 1}/{steps} "
                        f"loss {sums['loss'] / done:.3f} lr {optimizer.param_groups[0]['lr']:.2e} {rate:.1f} img/s")
                if _stop_requested(stop, world, dev):
                    raise KeyboardInterrupt
            elapsed = time.perf_counter() - began
            row = {"epoch": epoch + 1, **{k: v / max(done, 1) for k, v in sums.items()},
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": elapsed,
                   "images_per_s": done * per_process * world / elapsed,
                   "gpu_mem_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}
            if main_process and val_dir and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0
                                                                or epoch + 1 == cfg.epochs):
                row.update(_evaluate(model, val_dir, dev))
                mean_ap = (row["easy"] + row["medium"] + row["hard"]) / 3
                if mean_ap > best:
                    best = mean_ap
                    write_weights(out_dir / "best.pth", model)
                model.train()
            if main_process:
                tracker.add(row)
                save(epoch + 1)
                kd_text = f" kd {row['loss_kd']:.3f}" if guide else ""
                say(f"epoch {epoch + 1}: loss {row['loss']:.3f} (loc {row['loss_loc']:.3f} conf {row['loss_conf']:.3f} "
                    f"landm {row['loss_landm']:.3f}{kd_text}) {row['images_per_s']:.1f} img/s"
                    + (f"  val AP {row['easy']:.4f}/{row['medium']:.4f}/{row['hard']:.4f}" if "easy" in row else ""))
            if world > 1:
                dist.barrier()
    except KeyboardInterrupt:
        save(epoch)  # the epoch in progress is not complete: resuming restarts it
        say(f"interrupted: checkpoint {out_dir / 'last.pth'} (epoch {epoch} complete)")
        return TrainResult(out_dir, epoch, True, tracker.history)
    finally:
        stop.restore()
        if world > 1:
            dist.destroy_process_group()
    return TrainResult(out_dir, cfg.epochs, False, tracker.history)


def _stop_requested(stop: _Stop, world: int, dev: torch.device) -> bool:
    """All ranks agree to stop when any of them got a signal."""
    if world == 1:
        return stop.signal is not None
    flag = torch.tensor([1.0 if stop.signal is not None else 0.0], device=dev)
    dist.all_reduce(flag)
    return bool(flag.item())


def _evaluate(model: torch.nn.Module, val_dir: Path, dev: torch.device) -> dict:
    model.eval()
    ap = evaluate_folder(TorchRunner(model, str(dev)), val_dir).ap
    return {k: float(v) for k, v in ap.items()}


