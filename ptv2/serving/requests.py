"""What a request to a bundle must be, by task type, and how its rows become encoder rows; the limits
(``Limits``) a server takes requests under.

A request is a list of rows ``{"task", "text"}`` plus ``"text_pair"`` for pair tasks (classification or
regression over two texts) or ``"choices"`` (a list of at least two strings) for multiple-choice tasks.
Every refusal is a BundleError naming the row, the field and what was wrong (HTTP 400 through MLflow).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ptv2.serving.manifest import BundleError


class Abandoned(BundleError):
    """A request whose deadline passed while it ran: its remaining micro-batches were dropped (the server
    had already answered its client with a timeout; the cores go back to the next request)."""


def check_deadline(deadline: float | None, done: int, total: int) -> None:
    """Raise ``Abandoned`` when ``time.monotonic()`` is past ``deadline`` (None: no deadline)."""
    if deadline is not None and time.monotonic() > deadline:
        raise Abandoned(f"the request ran past its deadline after {done} of {total} encoder rows; the rest "
                        "was dropped (send fewer rows per request, or raise MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT)")


@dataclass(frozen=True)
class Limits:
    """How a bundle takes requests: rows are sorted by length and run ``micro_batch`` at a time, each
    padded to its longest row. A request over ``max_rows`` encoder rows, ``max_text_chars`` characters in a
    text, ``max_request_chars`` characters in all or ``max_request_tokens`` encoder tokens (an upper bound
    known before tokenizing: ``requests.check_rows``) is refused (HTTP 400 through the pyfunc server), so
    what the largest allowed request costs, in time and memory, is bounded. A request of more than
    ``release_rows`` encoder rows hands its memory back when it is done (``Bundle.predict``)."""

    micro_batch: int
    max_rows: int
    max_text_chars: int
    max_request_chars: int = 10**12
    max_request_tokens: int = 10**12
    release_rows: int = 256  # bundles written before this setting get params.yaml's default


UNBOUNDED = Limits(micro_batch=64, max_rows=10**9, max_text_chars=10**9)  # library use; servers pass params'
BUNDLE_ARTIFACT = "bundle"  # a registered model's artifact that holds its ONNX bundle (its config: serving_settings)


def serving_settings(serving: Any) -> dict[str, Any]:
    """params' serving section (a ``ServingConfig``) as the settings a server opens a bundle with, the form a
    registered model stores as its model config; a dict of that form passes through; None: unbounded, fp32."""
    if serving is None:
        return {"limits": {}, "int8": False, "spinning": False, "int8_fallback_margin": 0.0, "int8_min_agreement": 0.0}
    if isinstance(serving, dict):
        return serving
    return {"limits": serving.limits(), "int8": serving.int8, "spinning": serving.spinning,
            "int8_fallback_margin": serving.int8_fallback_margin, "int8_min_agreement": serving.int8_min_agreement}


def not_utf8(text: str) -> int | None:
    """The index of the first character of ``text`` that has no UTF-8 form (a lone surrogate: the tokenizer
    refuses it with a TypeError), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start


def _text(where: str, task: str, field: str, v: Any, max_chars: int, hint: str = "",
          reads: Callable[[str], bool] | None = None) -> None:
    if not isinstance(v, str):
        got = "nothing" if v is None else type(v).__name__
        raise BundleError(f"{where} ({task}): {field!r} must be a string, got {got}{hint}")
    if not v.strip():
        raise BundleError(f"{where} ({task}): {field!r} is empty")
    bad = not_utf8(v)  # JSON may escape a lone surrogate ("\\ud800"): the tokenizer's TypeError (HTTP 500)
    if bad is not None:
        raise BundleError(f"{where} ({task}): {field!r} is not valid Unicode (U+{ord(v[bad]):04X}, a lone "
                          f"surrogate, at character {bad + 1}); send UTF-8 text")
    if reads is not None and not reads(v):  # only invisible or control characters: no text at all to the encoder
        raise BundleError(f"{where} ({task}): {field!r} holds no token the model reads ({v!r:.40}); send visible text")
    if len(v) > max_chars:
        raise BundleError(f"{where} ({task}): {field!r} has {len(v)} characters; the limit is {max_chars}")


def row_tokens(spec: dict[str, Any], *texts: str) -> int:
    """An upper bound on one encoder row's tokens, before tokenizing: every token but the 3 special ones
    covers at least one character, and the row is cut to the task's ``max_length``."""
    return min(int(spec["max_length"]), sum(len(t) for t in texts) + 3)


def check_rows(rows: Any, specs: dict[str, dict[str, Any]], limits: Any, names: list[str] | None = None,
               reads: Callable[[str], bool] | None = None) -> None:
    """Refuse a request that is too large or has a row the bundle cannot answer. ``specs``: task -> the
    bundle's task spec; ``limits`` (``bundle.Limits``): ``max_rows`` counts encoder rows (a multiple-choice
    row counts once per choice, a bi-encoded pair twice); ``max_request_chars`` all texts' characters;
    ``max_request_tokens`` the encoder tokens the rows may need (``row_tokens``). ``names``: each row's name in
    an error (the CLI's ``line 7``); default ``row <i>``. ``reads(text)``: whether the tokenizer finds any token
    in a non-blank text (the bundle's; None: not checked)."""
    if not isinstance(rows, list):
        raise BundleError(f"a request is a list of rows, got {type(rows).__name__}")
    max_rows, max_chars = limits.max_rows, limits.max_text_chars
    n = chars = tokens = 0
    for i, r in enumerate(rows):
        where = names[i] if names is not None else f"row {i}"
        if not isinstance(r, dict):
            raise BundleError(f"{where}: expected an object with 'task' and 'text', got {type(r).__name__}")
        task = r.get("task")
        if not isinstance(task, str) or task not in specs:
            raise BundleError(f"{where}: unknown task {task!r}; this bundle serves {sorted(specs)}")
        kind, pair = specs[task]["type"], specs[task]["text_b"]
        _text(where, task, "text", r.get("text"), max_chars, reads=reads)
        if pair:
            _text(where, task, "text_pair", r.get("text_pair"), max_chars, "; this is a pair task: send 'text' and 'text_pair'",
                  reads)
        elif r.get("text_pair") not in (None, ""):
            raise BundleError(f"{where} ({task}): this task takes one text; drop 'text_pair'")
        choices = r.get("choices")
        if kind == "multiple_choice":
            if not isinstance(choices, (list, tuple)) or len(choices) < 2:
                raise BundleError(f"{where} ({task}): a multiple-choice task needs 'choices', a list of at least "
                                  f"2 strings (got {choices!r:.60})")
            for j, c in enumerate(choices):
                _text(where, task, f"choices[{j}]", c, max_chars, reads=reads)
            n += len(choices)
            chars += len(r["text"]) + sum(len(c) for c in choices)
            tokens += sum(row_tokens(specs[task], r["text"], c) for c in choices)
        else:
            if choices not in (None, [], ()):
                raise BundleError(f"{where} ({task}): 'choices' is for multiple-choice tasks; drop it")
            bi = specs[task].get("pair_encoding") == "bi"
            texts = [r["text"]] + ([r["text_pair"]] if pair else [])
            n += 2 if bi else 1
            chars += sum(len(t) for t in texts)
            tokens += sum(row_tokens(specs[task], t) for t in texts) if bi else row_tokens(specs[task], *texts)
        if chars > limits.max_request_chars:
            raise BundleError(f"rows 0-{i} hold {chars} characters; the limit is {limits.max_request_chars} per "
                              f"request: split the request")
        if tokens > limits.max_request_tokens:
            raise BundleError(f"rows 0-{i} may need {tokens} encoder tokens (each encoder row up to its task's "
                              f"max_length); the limit is {limits.max_request_tokens} per request: split the request")
        if n > max_rows:
            raise BundleError(f"{len(rows)}+ rows need more than {max_rows} encoder rows (a multiple-choice row "
                              f"counts once per choice, a bi-encoded pair twice); the limit is {max_rows}: split "
                              f"the request")


def expand(rows: list[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Checked rows -> encoder rows (one per choice for multiple choice, as (text, choice) pairs; one per
    text for a bi-encoded pair) and, per request row, the indices of its encoder rows."""
    flat: list[dict[str, Any]] = []
    where: list[list[int]] = []
    for r in rows:
        if specs[r["task"]]["type"] == "multiple_choice":
            where.append(list(range(len(flat), len(flat) + len(r["choices"]))))
            flat += [{"task": r["task"], "text": r["text"], "text_pair": c} for c in r["choices"]]
        elif specs[r["task"]].get("pair_encoding") == "bi":
            where.append([len(flat), len(flat) + 1])
            flat += [{"task": r["task"], "text": r["text"]}, {"task": r["task"], "text": r["text_pair"]}]
        else:
            where.append([len(flat)])
            flat.append(r)
    return flat, where
