"""Tracking: the only code that talks to MLflow. ``store`` (the store, runs, artifacts), ``registry``
(model versions, aliases, tags, downloads), ``health``
(a tracking store that is down or damaged: one line, bounded retries), ``pyfunc`` (the model MLflow
serves), ``packaging`` (its code, signature, input example and model card) and ``scoring`` (MLflow's scoring
server on a registered version)."""
import os

# MLflow sets its loggers' level from this when first imported (here, before any of the modules below imports it):
# its INFO lines ("Validating input example against model signature", "Creating initial MLflow database tables...")
# filled every stage's log; its warnings stay. A level the user set is kept.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
