"""CUDA utilities: the largest batch that fits (with margin) and a memory/throughput profile of one
training step, measured on the device rather than guessed."""
from dataclasses import dataclass

import torch

import featherface
from featherface.errors import ConfigError
from featherface.loss import MultiBoxLoss
from featherface.priors import prior_boxes


@dataclass
class StepProfile:
    batch: int
    image_size: int
    amp: str
    images_per_s: float
    step_ms: float
    peak_memory_mb: float


def _require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError("CUDA is not available: the batch-size finder and step profile measure a GPU")
    return torch.device("cuda")


def _synthetic_batch(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random images with a few faces each: the memory and time of a step do not depend on pixel values."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator) * 50
    targets = []
    for _ in range(batch):
        corners = torch.rand(8, 2, generator=generator) * 0.7
        boxes = torch.cat([corners, corners + 0.05 + torch.rand(8, 2, generator=generator) * 0.2], 1)
        targets.append(torch.cat([boxes, torch.rand(8, 10, generator=generator), torch.ones(8, 1)], 1))
    return images.to(device), targets


def profile_step(model_name: str, batch: int, size: int = 640, amp: str = "fp16", steps: int = 10,
                 warmup: int = 3) -> StepProfile:
    device = _require_cuda()
    model = featherface.create_model(model_name).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), 1e-3, momentum=0.9)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = MultiBoxLoss(model.priors.variances)
    priors = prior_boxes(model.priors, size, size).to(device)
    images, targets = _synthetic_batch(batch, size, device)
    images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loc, conf, landms = model(images)
        loss = criterion(loc, conf, landms, priors, targets).total
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    return StepProfile(batch, size, amp, batch * 1e3 / ms, ms, torch.cuda.max_memory_allocated() / 2**20)


def find_batch_size(model_name: str, size: int = 640, amp: str = "fp16", start: int = 8, limit: int = 1024,
                    margin: float = 0.9) -> int:
    """Largest batch whose training step fits (doubling, then bisecting on out-of-memory), times ``margin``."""
    _require_cuda()

    def fits(batch: int) -> bool:
        try:
            profile_step(model_name, batch, size, amp, steps=1, warmup=1)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    low, high = 0, start
    while high <= limit and fits(high):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    if low == 0:
        raise ConfigError(f"{model_name}: not even a batch of 1 at {size}px fits in GPU memory")
    return max(1, int(low * margin))
