"""Files copied verbatim into TensorRT build kits: they must need nothing but the standard library and tensorrt."""
