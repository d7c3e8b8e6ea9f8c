"""Backends: one runner interface (see base.Runner) over PyTorch, ONNX Runtime and TensorRT."""
