"""The one runner interface every backend implements."""
from abc import ABC, abstractmethod

import numpy as np

from featherface.priors import PriorConfig

OUTPUT_NAMES = ("loc", "conf", "landms")


class Runner(ABC):
    """Runs a detector on preprocessed batches (N, 3, H, W float32) and returns ``loc, conf, landms``.

    ``conf`` holds softmax probabilities. ``priors`` says how to decode the outputs.
    """

    backend: str
    precision: str = "fp32"
    priors: PriorConfig

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend}, {self.precision})"
