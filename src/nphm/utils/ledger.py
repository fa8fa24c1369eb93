"""The item ledger of a batch output folder: every item's last outcome, kept across runs.

One small JSON file per item, ``LEDGER_DIR/{key}.json``, written atomically by the worker that
ran the item; reading the ledger merges the files. Workers of one folder (several processes,
on one or several machines) therefore never overwrite each other's entries, and an item's
entry is replaced, never lost, when the item runs again: a later success clears an earlier
failure. Each entry keeps a short history of its runs (who and when), from which the
"every item exactly once" checks of concurrent runs read.

Entry (JSON)::

    {"item": "3_1", "subject": 3, "expression": 1, "status": "failed",
     "message": "ground truth .../scan.ply: 12 of 8500 vertices are not finite",
     "role": "ground truth", "file": ".../scan.ply", "step": "evaluation",
     "time": "2026-12-01T11:00:00Z", "host": "node7", "pid": 4242, "seconds": 3.1,
     "history": [{"status": "failed", "time": ..., "host": ..., "pid": ...}, ...]}

``status``: "done", "failed" (``message`` says why, ``role`` and ``file`` name the culprit when
known) or "skipped" (``message`` says why, e.g. a prediction without ground truth). An item that
is merely found finished is not written again.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from nphm.utils.io import PathLike, host_name, save_json

STATUSES = ("done", "failed", "skipped")
#: Runs kept in an entry's history.
HISTORY_LENGTH = 20


def describe_item(subject: int, expression: int = -1) -> str:
    """``"subject 3 expression 1"``, or ``"subject 3"`` for a whole subject (expression < 0)."""
    return f"subject {int(subject)}" + (f" expression {int(expression)}" if expression is not None and expression >= 0
                                        else "")


def item_key(subject: int, expression: int = -1) -> str:
    """``"{subject}_{expression}"`` for a scan, ``"{subject}"`` for a whole subject (expression < 0)."""
    return f"{int(subject)}" if expression is None or int(expression) < 0 else f"{int(subject)}_{int(expression)}"


@dataclass
class LedgerEntry:
    """One item's last outcome (see the module docstring)."""

    item: str
    subject: int
    expression: int
    status: str
    message: str = ""
    role: str = ""
    file: str = ""
    step: str = ""
    time: str = ""
    host: str = ""
    pid: int = 0
    seconds: float = 0.0
    history: List[Dict[str, Any]] = field(default_factory=list)

    def where(self) -> str:
        return describe_item(self.subject, self.expression)

    def line(self) -> str:
        """``"subject 3 expression 1: message"``, the culprit first when known."""
        return f"{self.where()}: {self.message}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Ledger:
    """The ledger folder of one batch output folder.

    Args:
        folder: the ledger folder (e.g. ``RESULTS_DIR/evaluation/ledger``).
        step: name of the batch step writing it (stored in each entry).
    """

    def __init__(self, folder: PathLike, step: str = "") -> None:
        self.folder = Path(folder)
        self.step = step

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> Optional[LedgerEntry]:
        """The entry of ``key``; None when absent or unreadable."""
        return _load(self.path(key))

    def record(self, subject: int, expression: int, status: str, message: str = "", role: str = "",
               file: str = "", seconds: float = 0.0) -> LedgerEntry:
        """Write the outcome of one item (replacing its previous entry, extending its history)."""
        if status not in STATUSES:
            raise ValueError(f"ledger status must be one of {STATUSES}, got {status!r}")
        key = item_key(subject, expression)
        previous = self.get(key)
        entry = LedgerEntry(key, int(subject), int(expression), status, message, role, str(file or ""), self.step,
                            _now(), host_name(), os.getpid(), round(float(seconds), 3))
        history = previous.history if previous is not None else []
        entry.history = (history + [{"status": status, "time": entry.time, "host": entry.host,
                                     "pid": entry.pid}])[-HISTORY_LENGTH:]
        save_json(self.path(key), asdict(entry))
        return entry

    def record_once(self, subject: int, expression: int, status: str, message: str, role: str = "",
                    file: str = "") -> Optional[LedgerEntry]:
        """:meth:`record` unless the entry already has this status and message: for reasons found
        before an item runs (a scan missing on disk), which every worker of a folder finds."""
        entry = self.get(item_key(subject, expression))
        if entry is not None and (entry.status, entry.message) == (status, message):
            return None
        return self.record(subject, expression, status, message, role, file)

    def remove(self, key: str) -> None:
        """Delete the entry of ``key`` (a recorded reason that no longer holds)."""
        self.path(key).unlink(missing_ok=True)

    def record_result(self, result) -> Optional[LedgerEntry]:
        """Record a "done" or "failed" :class:`nphm.layout.ItemResult` (a "skipped" one is not an
        outcome: the item was finished or run by another worker); returns the entry written."""
        if result.status not in ("done", "failed"):
            return None
        return self.record(result.subject, result.expression, result.status, result.message,
                           getattr(result, "role", ""), getattr(result, "file", ""), result.seconds)

    def entries(self) -> Dict[str, LedgerEntry]:
        """Every readable entry, by item key (merged from the per-item files)."""
        out = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.json")):
                if path.name.startswith("."):  # a temporary file of a writer
                    continue
                entry = _load(path)
                if entry is not None:
                    out[entry.item] = entry
        return out

    def with_status(self, status: str, subjects: Optional[Iterable[int]] = None) -> List[LedgerEntry]:
        """Entries of ``status`` (optionally only of ``subjects``), by subject and expression."""
        wanted = None if subjects is None else {int(s) for s in subjects}
        found = [e for e in self.entries().values()
                 if e.status == status and (wanted is None or e.subject in wanted)]
        return sorted(found, key=lambda e: (e.subject, e.expression))

    def counts(self, subjects: Optional[Iterable[int]] = None) -> Dict[str, int]:
        """``{"done": n, "failed": n, "skipped": n}`` over the ledger (optionally ``subjects``)."""
        return {s: len(self.with_status(s, subjects)) for s in STATUSES}


def _load(path: Path) -> Optional[LedgerEntry]:
    try:
        data = json.loads(path.read_text())
        return LedgerEntry(**{k: data[k] for k in LedgerEntry.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return None
