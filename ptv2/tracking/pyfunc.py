"""The MLflow pyfunc model (models-from-code): a ptv2 ONNX bundle served by onnxruntime.

MLflow loads this file itself (``python_model=<this file>``); it lives in ``ptv2.tracking``, the
only package that imports mlflow. Input: a table with ``task``, ``text`` and, by task type, ``text_pair``
(pair tasks) or ``choices`` (multiple choice). Output: one row per input with ``label`` + ``score``
(classification), ``score`` (regression), ``label`` + ``choice`` + ``score`` (multiple choice) or
``entities`` (NER). Bad rows raise an MLflow INVALID_PARAMETER_VALUE error, which the scoring server
answers with HTTP 400 and keeps serving. Under the scoring server a request has the server's own timeout
as its deadline: the server answers 504 when it passes but cannot stop the worker thread, so the bundle
drops the request's remaining micro-batches itself (``Abandoned``) and the cores go to the next request.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, INTERNAL_ERROR, INVALID_PARAMETER_VALUE

log = logging.getLogger("ptv2.serving")


class BundleModel(mlflow.pyfunc.PythonModel):
    # predict has no type hints on purpose (the signature is given at logging); without this MLflow warned "Add type
    # hints to the `predict` method" in yellow each time it loaded this file: ten times in a pipeline run's log,
    # under a warnings filter of its own that a filter of ours cannot override
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from ptv2.serving.bundle import Bundle
        from ptv2.serving.requests import BUNDLE_ARTIFACT

        # params.yaml's serving section, stored at registration (packaging.log_bundle_model)
        self.bundle = Bundle.from_serving(context.artifacts[BUNDLE_ARTIFACT], context.model_config or None)
        if "mlflow.pyfunc.scoring_server" in sys.modules:  # loaded by the scoring server (it imports it first)
            _no_tracebacks_to_clients(sys.modules["mlflow.pyfunc.scoring_server"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would infer a schema
        import pandas as pd

        from ptv2.serving.bundle import BundleError
        from ptv2.serving.requests import Abandoned

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = {"task", "text"} - set(df.columns)
        if missing:
            raise MlflowException(f"input needs columns 'task' and 'text' (missing {sorted(missing)})",
                                  error_code=INVALID_PARAMETER_VALUE)
        rows = [{k: _value(v) for k, v in r.items()} for r in df.to_dict("records")]
        try:
            out = self.bundle.predict(rows, deadline=serving_deadline())
        except Abandoned as e:
            raise MlflowException(str(e), error_code=DEADLINE_EXCEEDED) from None
        except BundleError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as e:  # a bug: its traceback goes to the server's log, not to the client (HTTP 500)
            log.exception("predict failed")
            raise MlflowException(f"the ptv2 model failed on this request ({type(e).__name__}); the server's log "
                                  f"has the details", error_code=INTERNAL_ERROR) from None
        return pd.DataFrame([{"task": o["task"], "label": o.get("label"), "score": o.get("score"),
                              "choice": o.get("choice"),
                              "entities": json.dumps(o["entities"]) if "entities" in o else None} for o in out],
                            dtype=object)  # object columns: a choice index stays an int next to other tasks' None


def _no_tracebacks_to_clients(server: Any) -> None:
    """MLflow's scoring server answers a body it cannot parse (CSV or Parquet not in this model's input form) with
    HTTP 400 and the server's Python traceback in ``stack_trace``; keep the message, log the traceback here. A
    JSON body nested deeper than Python's recursion limit is a 400 too (MLflow's own answer: a bare HTTP 500)."""
    handle = getattr(server, "_handle_serving_error", None)
    if handle is None or getattr(handle, "ptv2", False):
        return

    @functools.wraps(handle)
    def quiet(error_message: str, error_code: Any, include_traceback: bool = True) -> None:
        log.warning("request refused: %s", error_message, exc_info=include_traceback)
        handle(error_message + " This model takes JSON (Content-Type: application/json), e.g. "
               '{"dataframe_records": [{"task": ..., "text": ...}]}.', error_code, include_traceback=False)

    quiet.ptv2 = True  # type: ignore[attr-defined]
    server._handle_serving_error = quiet
    decode = server._decode_json_input

    @functools.wraps(decode)
    def flat(json_input: Any) -> Any:  # json's RecursionError on a deeply nested body was an HTTP 500
        try:
            return decode(json_input)
        except RecursionError:
            raise server.MlflowInvalidInputException("the JSON body is nested too deeply to parse") from None

    server._decode_json_input = flat


def serving_deadline() -> float | None:
    """A ``time.monotonic()`` deadline for this request inside MLflow's scoring server (it sets
    ``_MLFLOW_IS_IN_SERVING_ENVIRONMENT`` and times requests out after ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``
    seconds, 60 by default); None elsewhere (a batch job calling the model in-process has no client to lose)."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    if os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() != "true":
        return None
    return time.monotonic() + float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


def _value(v: Any) -> Any:
    """A cell as the bundle expects it: missing (NaN/None) -> None; lists (choices) kept as lists."""
    import numpy as np
    import pandas as pd

    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, dict):
        return v
    return None if pd.isna(v) else v


mlflow.models.set_model(BundleModel())
