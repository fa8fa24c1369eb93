"""Outcome of one item of a batch job (a scan or a subject), shared by every batch script."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ItemResult:
    """Outcome of one ``(subject, expression)``: ``status`` is "done", "skipped" (already
    finished) or "failed" (``message`` says why); ``expression`` is -1 for a whole subject."""

    subject: int
    expression: int
    status: str
    message: str = ""
    seconds: float = 0.0
