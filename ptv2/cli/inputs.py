"""What ``ptv2 predict`` reads from its user: texts from ``--text`` / ``--text-pair``, or lines on stdin
(``text<TAB>text_pair`` for a pair task), each with the name an error gives it (``--text 2``, ``line 7``)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, TextIO

from ptv2.errors import Ptv2Error
from ptv2.serving.requests import not_utf8

PAIR_SEP = "\t"  # a pair task's stdin line: text, tab, text_pair (the second text may hold more tabs)
# The longest stdin line read: ~400x what a 512-position encoder sees of a text (it is truncated to that),
# while `< /dev/zero` (or a binary file with no line break) was read until the host ran out of memory (11.8 GB
# in 40 s), and tokenizing a 50 MB line took 100 s and 7.4 GB for one answer.
MAX_LINE_CHARS = 1_000_000


@dataclass(frozen=True)
class Inputs:
    """Texts as the user gave them; ``numbers``: the stdin line of each text when read from stdin (blank lines
    are skipped, so answers name their line), empty for ``--text``."""

    texts: list[str]
    pairs: list[str] | None
    names: list[str]
    numbers: tuple[int, ...] = ()

    @property
    def lines(self) -> bool:
        """Read from stdin: a pair task's pair then sits in its line."""
        return bool(self.numbers)

    def tag(self, answers: Iterable[dict], start: int = 0) -> Iterator[dict]:
        """``answers`` (to texts ``start``, ``start`` + 1, ...) with ``line``: the stdin line each answers (an
        answer is then matched to its line even where blank lines were skipped); as they are for ``--text``."""
        for i, answer in enumerate(answers, start):
            yield {"line": self.numbers[i], **answer} if self.numbers else answer

    def rows(self, task: str, pair: bool) -> tuple[list[str], list[str] | None, list[str]]:
        """(texts, pairs or None, names) for a task that takes a pair (``pair``) or one text; else one line
        naming the input and the fix."""
        texts, pairs, names = self._rows(task, pair)
        for name, t, p in zip(names, texts, pairs or [None] * len(texts)):
            if not t.strip() or (p is not None and not p.strip()):
                raise Ptv2Error(f"{name} ({task}): {'the text' if not t.strip() else 'the second text'} is empty")
            why = _not_utf8(t) or (p is not None and _not_utf8(p))
            if why:  # else the tokenizer's TypeError (a Latin-1 file on stdin, or such bytes in argv)
                raise Ptv2Error(f"{name} ({task}) is not UTF-8 text ({why}): convert it first, e.g. "
                                f"iconv -f latin1 -t utf-8")
        return texts, pairs, names

    def _rows(self, task: str, pair: bool) -> tuple[list[str], list[str] | None, list[str]]:
        if not pair:
            if self.pairs:
                raise Ptv2Error(f"task {task!r} takes one text; drop --text-pair")
            return self.texts, None, self.names
        if self.pairs:
            return self.texts, self.pairs, self.names
        if not self.lines:
            raise Ptv2Error(f"task {task!r} takes a text pair: pass one --text-pair for each --text")
        split = [t.split(PAIR_SEP, 1) for t in self.texts]
        bad = next((n for n, s in zip(self.names, split) if len(s) < 2 or not s[1].strip()), None)
        if bad:
            raise Ptv2Error(f"{bad} has no second text: task {task!r} takes a pair per line, "
                            f"'text<TAB>text_pair'")
        return [s[0] for s in split], [s[1] for s in split], self.names


def _not_utf8(text: str) -> str | None:
    """Where ``text`` cannot be UTF-8: Python keeps the bytes of stdin and argv that do not decode as lone
    surrogates U+DC80-U+DCFF (the byte, plus 0xDC00)."""
    bad = not_utf8(text)
    if bad is None:
        return None
    c = ord(text[bad])
    return f"{f'byte 0x{c - 0xDC00:02x}' if 0xDC80 <= c <= 0xDCFF else f'U+{c:04X}'} at character {bad + 1}"


def read_inputs(texts: list[str] | None, pairs: list[str] | None, stdin: TextIO | None = None) -> Inputs:
    """``--text`` values (with ``--text-pair`` values, as many), else the non-blank lines of ``stdin``."""
    if texts:
        if pairs and len(pairs) != len(texts):
            raise Ptv2Error(f"{len(texts)} --text but {len(pairs)} --text-pair values: pass one pair per text")
        return Inputs(texts, pairs or None, [f"--text {i}" for i in range(1, len(texts) + 1)])
    if pairs:
        raise Ptv2Error("--text-pair needs a --text for each pair; on stdin, write 'text<TAB>text_pair' lines")
    stdin = stdin or sys.stdin
    if stdin is None:  # started with stdin closed (`<&-`, some supervisors): AttributeError on isatty otherwise
        raise Ptv2Error("no texts to label: stdin is closed; pass --text TEXT (repeatable) or one text per line on "
                        "stdin")
    if stdin.isatty():  # a user who typed only the command would otherwise face a silent wait
        print("ptv2: reading texts from stdin, one per line (a pair task: text<TAB>text_pair); end with Ctrl-D",
              file=sys.stderr)
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(_bounded_lines(stdin), 1)]
    kept = [(n, line) for n, line in lines if line.strip()]
    if not kept:
        raise Ptv2Error("no texts to label: pass --text TEXT (repeatable) or one text per line on stdin")
    if len(kept) < len(lines):  # answers would otherwise fall out of step with a file's lines
        blank = [n for n, line in lines if not line.strip()]
        print(f"ptv2: skipped {len(blank)} blank line(s) ({', '.join(map(str, blank[:5]))}"
              f"{', ...' if len(blank) > 5 else ''}): each answer names its line ('line')", file=sys.stderr)
    return Inputs([line for _, line in kept], None, [f"line {n}" for n, _ in kept], tuple(n for n, _ in kept))


def _bounded_lines(stdin: TextIO) -> Iterator[str]:
    """The lines of ``stdin``, each at most ``MAX_LINE_CHARS`` characters; else one line naming it and the fix."""
    n = 0
    while line := stdin.readline(MAX_LINE_CHARS + 2):  # + '\r\n'
        n += 1
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise Ptv2Error(f"line {n} on stdin is over {MAX_LINE_CHARS:,} characters (binary data, e.g. /dev/zero, or "
                            f"a file without line breaks?): ptv2 predict labels one text per line and reads only the "
                            f"first backbone.max_length tokens of each; cut the line")
        yield line
