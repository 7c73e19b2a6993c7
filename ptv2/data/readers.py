"""Read local task files into raw rows, with errors that name the file, the line and the fix.

Plain Python readers (no hub, no cache): UTF-8 checked with the offending line's number, empty files
refused, JSONL parsed line by line. A split may take its labels from a separate file, one label per
line (WiC's ``*.gold.txt``), joined to the rows in order.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from ptv2.errors import DataError
from ptv2.files import LFS_POINTER, lfs_pointer

_LINE_END = re.compile(r"\r\n|\r|\n")


def read_lines(path: Path) -> list[str]:
    """The file's lines (no newline characters); DataError when missing or not UTF-8."""
    if path.exists() and not path.is_file():  # a folder, a named pipe, /dev/zero: read_bytes would block or never end
        raise DataError(f"data file {str(path)!r} is not a regular file (a folder, pipe or device); point the task's "
                        f"files at a file")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check data_root in params.yaml (or $PTV2_DATA_ROOT) "
                        f"and the task's files")
    raw = path.read_bytes()
    pointer = lfs_pointer(path) if raw.startswith(LFS_POINTER) else None
    if pointer:  # its "version https://git-lfs..." line read as a header, then "missing column"
        raise DataError(pointer)
    try:
        text = raw.decode("utf-8-sig")  # MRPC starts with a byte-order mark
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}); re-save the file as UTF-8") from None
    # line ends only: str.splitlines also splits at U+2028, U+0085, form feeds…, which JSON strings and web text
    # hold raw (json.dumps(ensure_ascii=False) writes U+2028 as is), so one valid row read as broken lines
    lines = _LINE_END.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def tsv_rows(path: Path, header: bool, columns: list[str]) -> Iterator[dict[str, str]]:
    """Split on tabs (no quote parsing: STS-B has bare quotes); extra trailing columns are dropped."""
    lines = read_lines(path)
    if header:
        if not lines:
            return
        names, lines = [n.strip() for n in lines[0].split("\t")], lines[1:]
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:  # a row dict keeps the last of two same-named columns: a template read the wrong one silently
            raise DataError(f"{path}: the header line names column(s) {twice} more than once; give each column its "
                            f"own name in the file")
    else:
        names = list(columns)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(names):
            raise DataError(f"{path}: line {i + 1 + header} has {len(cells)} columns, expected {len(names)} "
                            f"({names}); fix the row or the task's columns in params.yaml")
        yield {n: c.strip() for n, c in zip(names, cells)}


def jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {i} is not valid JSON ({e.args[0] if e.args else e}); fix or remove "
                            f"the line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {i} is not a JSON object (got {type(row).__name__}); each line must be "
                            f"one {{...}} row")
        yield row


def conll_rows(path: Path) -> Iterator[dict[str, Any]]:
    """CoNLL columns: token first, NER tag last; blank lines end sentences; -DOCSTART- skipped."""
    tokens: list[str] = []
    tags: list[str] = []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                yield {"tokens": tokens, "tags": tags}
            tokens, tags = [], []
            continue
        cols = line.split()
        if len(cols) < 2:  # a word alone would become its own tag, a label the model then learns
            raise DataError(f"{path}: line {i} is {line.strip()[:60]!r}, one column; a CoNLL line is the word, "
                            f"then its tag last (whitespace between): fix the line")
        tokens.append(cols[0])
        tags.append(cols[-1])
    if tokens:
        yield {"tokens": tokens, "tags": tags}


def join_labels(rows: list[dict[str, Any]], path: Path, field: str) -> list[dict[str, Any]]:
    """Set ``row[field]`` from ``path``, one label per line, in order (WiC's ``*.gold.txt``)."""
    labels = [x.strip() for x in read_lines(path) if x.strip()]
    if len(labels) != len(rows):
        raise DataError(f"{path}: {len(labels)} labels for {len(rows)} rows; a label file needs one line per row")
    return [{**r, field: y} for r, y in zip(rows, labels)]
