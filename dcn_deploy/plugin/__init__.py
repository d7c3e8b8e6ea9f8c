"""Finding, building and calling the compiled plugin library (CUDA kernels, host build, TensorRT plugin)."""
