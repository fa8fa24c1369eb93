"""Markdown tables (GitHub-flavoured) for the reports the scripts write."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def format_metric(value: object) -> str:
    """A metric cell: "-" for None, "nan", 3 decimals below 100 and 1 above; a value that is
    not a number is written with ``str``."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if np.isnan(v):
        return "nan"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], *,
                   cell: Callable[[object], str]) -> str:
    """A GitHub-flavoured markdown table (lines joined by newlines, no trailing newline).

    Args:
        header: column titles.
        rows: one sequence of cells per row; a ``str`` cell is written as it is, any other
            through ``cell``: :func:`format_metric` for metric tables (3 decimals, "-" for
            None), ``str`` for tables whose numbers are written as they are.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
