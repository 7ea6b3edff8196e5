"""Model files and ONNX files: their formats, versions and how older ones are read; ONNX export."""
