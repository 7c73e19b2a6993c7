"""Tracking and orchestration: ``store`` is the only code that talks to MLflow (runs, registry calls),
``registry`` the promotion gate, ``pyfunc`` the model MLflow serves (``packaging``: its code, signature,
input example and model card), ``orchestrate`` runs the DVC graph
for the flows. The only package that imports mlflow or dvc."""
