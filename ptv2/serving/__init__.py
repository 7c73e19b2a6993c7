"""Serving a bundle with onnxruntime, tokenizers and numpy only (no torch at serving time)."""
