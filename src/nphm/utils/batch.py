"""Running a batch of items that must not stop for one broken item."""
from __future__ import annotations

import time
import traceback
from typing import Callable, Iterable, Iterator

from nphm.layout import ItemResult


def failure_message(error: BaseException) -> str:
    """``"TypeName: message"`` of an exception (one line per part, no traceback)."""
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def run_subjects(subjects: Iterable[int], is_done: Callable[[int], bool], run_one: Callable[[int], ItemResult],
                 overwrite: bool = False, skipped_message: str = "already fitted") -> Iterator[ItemResult]:
    """``run_one(subject)`` for every subject, one :class:`ItemResult` each (expression -1).

    A subject for which ``is_done`` holds is skipped unless ``overwrite``; an exception of
    ``run_one`` becomes a "failed" result and the batch continues.
    """
    for subject in subjects:
        if not overwrite and is_done(subject):
            yield ItemResult(int(subject), -1, "skipped", skipped_message)
            continue
        start = time.perf_counter()
        try:
            yield run_one(subject)
        except Exception as e:  # a bad subject must not stop the batch
            yield ItemResult(int(subject), -1, "failed", failure_message(e), seconds=time.perf_counter() - start)
