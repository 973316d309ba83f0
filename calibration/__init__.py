"""Calibration sets, the data reader that feeds them to ONNX Runtime, and INT8/FP16 conversion."""
