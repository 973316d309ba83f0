"""ONNX Runtime calibration data reader over a calibration set (batch 1, loaded lazily)."""
from typing import Callable

from onnxruntime.quantization import CalibrationDataReader

from calibration.dataset import CalibrationSet


class CalibrationReader(CalibrationDataReader):
    def __init__(self, calib: CalibrationSet, input_name: str = "input",
                 on_image: Callable[[int, int], None] | None = None) -> None:
        self.calib, self.input_name, self.on_image = calib, input_name, on_image
        self.start, self.end = 0, len(calib)
        self.index = 0

    def get_next(self) -> dict | None:
        if self.start + self.index >= self.end:
            return None
        i = self.start + self.index
        self.index += 1
        if self.on_image:
            self.on_image(i + 1, len(self.calib))
        return {self.input_name: self.calib.tensor(i)[None]}

    def rewind(self) -> None:
        self.index = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.index = start_index, min(end_index, len(self.calib)), 0

    def __len__(self) -> int:
        return len(self.calib)
