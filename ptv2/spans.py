"""IOB2 tags -> entity spans: one home for the model folder's ``ptv2 predict`` and the server's answers
(no imports, so the torch-free serving code carries it)."""
from __future__ import annotations

from typing import Any


def entities(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """IOB2 tags -> [{"type", "text", "start", "end"}] over word positions."""
    out, cur = [], None
    for i, t in enumerate(tags + ["O"]):
        if cur and not (t.startswith("I-") and t[2:] == cur["type"]):
            cur["text"] = " ".join(words[cur["start"]:cur["end"]])
            out.append(cur)
            cur = None
        if t.startswith("B-") or (t.startswith("I-") and cur is None):
            cur = {"type": t[2:], "start": i, "end": i + 1}
        elif cur is not None and t.startswith("I-"):
            cur["end"] = i + 1
    return out
