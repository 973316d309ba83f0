"""The teacher side of distillation: a frozen detector whose outputs on each training view are computed once.

With ``views`` fixed augmentations per image (``FaceDataset(views=...)``), epoch e shows view e % views, so after
the first ``views`` epochs every batch is served from the cache (float16 on the host: 32 bytes per anchor).
"""
import torch
from torch import Tensor

import featherface
from featherface.heads import Detector

Outputs = tuple[Tensor, Tensor, Tensor]


class Teacher:
    def __init__(self, model: Detector, device: torch.device, cache: bool = True,
                 amp: torch.dtype | None = None) -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.device, self.amp, self.cache = device, amp, cache
        self.store: dict[tuple[int, int], Outputs] = {}
        self.hits = self.misses = 0

    @classmethod
    def load(cls, name: str, weights, device: torch.device, cache: bool = True,
             amp: torch.dtype | None = None) -> "Teacher":
        return cls(featherface.load_model(name, weights), device, cache, amp)

    @torch.no_grad()
    def __call__(self, images: Tensor, indices: Tensor, view: int) -> Outputs:
        """Teacher (loc, conf probabilities, landms) for this batch, on ``images``' device."""
        keys = [(view, int(i)) for i in indices]
        if self.cache and all(k in self.store for k in keys):
            self.hits += len(keys)
            return tuple(torch.stack([self.store[k][j] for k in keys]).to(images.device).float() for j in range(3))
        self.misses += len(keys)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            outputs = tuple(o.float() for o in self.model(images.to(self.device)))
        if self.cache:
            host = [o.to("cpu", torch.float16) for o in outputs]
            for n, key in enumerate(keys):
                self.store[key] = tuple(h[n] for h in host)
        return outputs
