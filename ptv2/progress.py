"""Progress bars for a user who waits on a long run over rows (``ptv2 predict`` on a file of texts)."""
from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_bar(items: list[T], label: str, unit: str) -> Iterable[T]:
    """``items`` behind a tqdm bar on stderr labelled ``label``; the items alone when ``label`` is empty or there
    is only one (a single step has nothing to show)."""
    if not label or len(items) <= 1:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, unit=unit, leave=False, mininterval=1.0, dynamic_ncols=True)
