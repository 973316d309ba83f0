"""Building: target profiles, ONNX metadata, atomic artifacts, DCN lowerings and the make-like chain."""
