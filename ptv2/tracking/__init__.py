"""Tracking: the only code that talks to MLflow. ``store`` (the store, runs, artifacts), ``registry``
(model versions, aliases, tags, downloads), ``health``
(a tracking store that is down or damaged: one line, bounded retries), ``pyfunc`` (the model MLflow
serves) and ``packaging`` (its code, signature, input example and model card)."""
