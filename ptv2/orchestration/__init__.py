"""Orchestration: the only library code that talks to DVC. ``dvc_graph`` runs the DVC graph for the Prefect
flows (``flows/``) and ``scripts/run.sh``: reproduce, the stale stages of the fan-out, recording finished
stages, pushing and pulling a remote; ``failures`` says how each failure reaches the user (one line, retried or
not). Prefect itself is imported only by ``flows/``."""
