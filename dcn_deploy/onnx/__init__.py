"""ONNX: the dcn_deploy op set, export from PyTorch, inspection and graph rewrites."""
