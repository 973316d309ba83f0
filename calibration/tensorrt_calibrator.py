"""TensorRT ≤ 10 implicit INT8: an ``IInt8EntropyCalibrator2`` over a calibration set, with a cache file.

Needs ``tensorrt`` and ``pycuda`` (device buffers); imported only when a target asks for calibrator mode
and the build happens on a machine with TensorRT and a GPU.
"""
from pathlib import Path

import numpy as np

from calibration.dataset import CalibrationSet
from toolchain.building.artifacts import write_bytes


def entropy_calibrator(calib: CalibrationSet, cache: str | Path, batch_size: int = 1):
    import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
    import pycuda.driver as cuda
    import tensorrt as trt

    cache = Path(cache)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            height, width = calib.shape
            self.device = cuda.mem_alloc(batch_size * 3 * height * width * np.dtype(np.float32).itemsize)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            if self.index + batch_size > len(calib):
                return None
            batch = np.stack([calib.tensor(i) for i in range(self.index, self.index + batch_size)])
            cuda.memcpy_htod(self.device, np.ascontiguousarray(batch))
            self.index += batch_size
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            write_bytes(cache, bytes(data))

    return EntropyCalibrator()
