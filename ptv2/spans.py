"""Entity tags -> entity spans: one home for the model folder's ``ptv2 predict`` and the server's answers
(no imports, so the torch-free serving code carries it).

Chunks are read by the rules seqeval's ``get_entities`` applies (its default mode), so what is served is what the
entity F1 counts: IOB2 (CoNLL-2003 here), IOB1 (an I- after O or another type starts a chunk) and IOBES (S- is an
entity of one word, E- closes one). Reading IOB2 only, an S- entity was never served and E- words were cut off.
"""
from __future__ import annotations

from typing import Any

_OUTSIDE = ("O", ".")  # seqeval's tags that never end or start a chunk by a change of type


def is_chunk_tag(tag: str) -> bool:
    """'O', or B-/I-/E-/S- and an entity type ('B-PER'): the tags these rules read as chunks. Others (tag ids '0',
    bare 'PER', BILOU's 'L-'/'U-') are read into chunks of nonsense types, so the entity F1 and the served entities
    of a model trained on them mean nothing."""
    return tag == "O" or (len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-")


def _ends(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    """Whether a chunk ended between the previous word and this one."""
    return (prev in ("E", "S") or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev not in _OUTSIDE and prev_type != typ))


def _starts(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    """Whether a chunk starts at this word."""
    return (tag in ("B", "S") or (prev in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in _OUTSIDE and prev_type != typ))


def entities(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """One tag per word -> [{"type", "start", "end", "text"}] over word positions (end exclusive)."""
    out: list[dict[str, Any]] = []
    begin, prev, prev_type = 0, "O", ""
    for i, chunk in enumerate([*tags, "O"]):
        tag, typ = chunk[:1] or "O", chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _ends(prev, tag, prev_type, typ):
            out.append({"type": prev_type, "start": begin, "end": i, "text": " ".join(words[begin:i])})
        if _starts(prev, tag, prev_type, typ):
            begin = i
        prev, prev_type = tag, typ
    return out
