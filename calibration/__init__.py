"""Calibration sets, the data reader that feeds them to ONNX Runtime, INT8/FP16 conversion, and the least-squares
refit of pruned models."""
