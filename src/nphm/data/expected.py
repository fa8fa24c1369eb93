"""What a dataset should hold by its description, and what of it is missing on disk.

The description (:class:`~nphm.data.description.DatasetDescription`) names the subjects of
each split and, per subject, expressions that must exist: the neutral scans
(``neutral_open``/``neutral_closed``), every expression of an explicit ``expressions`` table
(``{subject: [expression, ...]}``, optional) and, for generated datasets,
``synthetic.n_expressions`` (expressions ``0 .. n-1`` of every subject). Bad scans are not
expected anywhere, invalid test expressions not in the test set.

The batch steps report what is missing (instead of silently working on fewer items), each
for the items it reads: :func:`missing_items`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Set

USES = ("all", "test", "subjects")


@dataclass(frozen=True)
class MissingItem:
    """A subject (``expression`` -1) or scan the description expects but the disk lacks."""

    subject: int
    expression: int
    path: Path
    reason: str

    @property
    def message(self) -> str:
        return f"{self.path} not found: {self.reason}"


def expected_expressions(description, subject: int) -> Set[int]:
    """Expressions the description says ``subject`` has (before removing bad scans)."""
    s = int(subject)
    out: Set[int] = set()
    for kind in ("open", "closed"):
        e = description.neutral(s, kind)
        if e is not None:
            out.add(e)
    table = description.extra.get("expressions")
    if isinstance(table, dict):
        listed = table.get(str(s), table.get(s, []))
        out.update(int(e) for e in listed)
    synthetic = description.extra.get("synthetic")
    if isinstance(synthetic, dict) and isinstance(synthetic.get("n_expressions"), int):
        out.update(range(synthetic["n_expressions"]))
    return out


def _listed_subjects(description, split: Optional[str]) -> List[int]:
    d = description
    if split in (None, "all"):
        lists = [d.subjects_train or [], d.subjects_eval, d.subjects_test]
    else:
        lists = [{"train": d.subjects_train or [], "eval": d.subjects_eval, "test": d.subjects_test}[split]]
    return sorted({int(s) for group in lists for s in group})


def missing_items(manager, subjects: Optional[Iterable[int]] = None, split: Optional[str] = None,
                  use: str = "all") -> List[MissingItem]:
    """Expected subjects and scans of ``manager``'s dataset that are not on disk.

    Args:
        subjects: the subjects a step was asked for (explicit ids; None: the split's).
        split: the split whose listed subjects are expected (with ``subjects`` None).
        use: which expressions a step reads: "all" (every expected one but bad scans), "test"
            (also without invalid test expressions) or "subjects" (only the subject folders).
    Returns:
        Missing subjects first (``expression`` -1), then missing scans, sorted.
    """
    if use not in USES:
        raise ValueError(f"use must be one of {USES}, got {use!r}")
    d = manager.description
    source = d.source or d.name
    wanted = sorted({int(s) for s in subjects}) if subjects is not None else _listed_subjects(d, split)
    out: List[MissingItem] = []
    for s in wanted:
        folder = manager.subject_dir(s)
        if not folder.is_dir():
            out.append(MissingItem(s, -1, folder, f"subject {s} is {_why(d, s, split, subjects)}"))
            continue
        if use == "subjects":
            continue
        expected = expected_expressions(d, s) - set(d.bad_scans.get(s, ()))
        if use == "test":
            expected -= set(d.invalid_expressions_test.get(s, ()))
        for e in sorted(expected):
            path = manager.scan_dir(s, e)
            if not path.is_dir():
                out.append(MissingItem(s, e, path, f"expression {e} of subject {s} is expected by {source}"))
    return out


def _why(description, subject: int, split: Optional[str], subjects) -> str:
    if subjects is not None:
        return "asked for"
    return f"listed in the {split or 'any'} split of {description.source or description.name}"
