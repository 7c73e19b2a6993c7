"""Training: the one driver (single task, mixture pretraining, adaptation), the loop (accelerate),
heads fitted on frozen features (``probe``: LP-FT's step 0, the frozen-backbone baseline), evaluation and
metrics, model folders (safetensors + ModelSpec + manifest), checkpoints (verified before a resume), run keys,
and inference on a saved folder. Imports config, data and model; never mlflow, prefect or dvc."""

# A run folder's record of the MLflow run its model was logged in, written by the pipeline's stages beside the run's
# own files and read by the promote stage (which imports no torch: the name lives here, not in the driver)
RUN_ID = "mlflow.json"
