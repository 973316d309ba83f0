"""The torch-free runtime shipped inside bundles (numpy + onnxruntime, or tensorrt + cuda-python/pycuda)."""
