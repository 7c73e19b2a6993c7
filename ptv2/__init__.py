"""ptv2: P-Tuning v2 deep prompts on frozen encoders, as a pipeline.

Packages, by responsibility (arrows: may import):
- ``config``, ``errors``, ``files``: the typed params.yaml loader, user-facing errors, atomic file helpers;
  ``prefix``, ``spans``: the prompt's layouts and NER spans, torch-free (the server carries them).
- ``data``: tasks from config, tokenization and batching, mixture sampling (-> config).
- ``model``: backbone, deep prompts, heads, ModelSpec; torch/transformers only, no I/O.
- ``training``: the one driver, the loop, evaluation, metrics, artifacts, run keys (-> data, model).
- ``experiments``: the method comparison and the transfer table; tables and plots (-> training).
- ``export`` / ``serving``: ONNX graphs, bundles and gates; onnxruntime serving without torch.
- ``tracking``: the only package that imports mlflow (store, registry gate, pyfunc) and runs dvc.
- ``stages``: one thin module per DVC stage; ``cli``: the same functions for people (the parser, the training
  commands, evaluate / predict / export, `ptv2 registry` and `ptv2 serve`).
"""

__version__ = "0.2.0"
