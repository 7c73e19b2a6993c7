"""ONNX deployment: graphs with the deep prompt as an input, export and int8, the verified bundle, and
the gates (parity with PyTorch, int8 vs fp32 on dev) that feed the registry."""
