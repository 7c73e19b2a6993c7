"""The project's Prefect flows (``pipeline.py``) and their command lines (``run.py``, ``serve.py``).

Importing this package, before Prefect, sets what ``prefect.toml`` sets for runs in the project's folder, for a
flow started from any other folder too (``python /path/flows/run.py``, a deployment, ``python -c "from
flows.pipeline import …"``): no analytics from the temporary server (it was on there), and 120 s for that server
to start (Prefect's 20 s is short of the 10–19 s it takes here). A user's own settings win."""
from ptv2.procenv import set_quiet_defaults

set_quiet_defaults(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
