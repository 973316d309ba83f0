"""The torch-free runtime shipped inside bundles (numpy + onnxruntime, or tensorrt + pycuda)."""
