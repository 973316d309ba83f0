"""PyTorch runner: the reference every other backend is compared with."""
from pathlib import Path

import numpy as np
import torch

import featherface
from featherface.heads import Detector
from toolchain.backends.base import Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: Detector, device: str = "cpu", half: bool = False) -> None:
        self.device = torch.device(device)
        self.half = half
        self.precision = "fp16" if half else "fp32"
        self.model = model.eval().to(self.device)
        if half:
            self.model.half()
        self.priors = model.priors

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device)
        if self.half:
            x = x.half()
        return tuple(t.float().cpu().numpy() for t in self.model(x))


def load_torch_runner(model: str, weights: str | Path | None, device: str = "cpu", half: bool = False) -> TorchRunner:
    return TorchRunner(featherface.load_model(model, weights), device, half)
