"""Running a batch of items that must not stop for one broken item.

The shared rules of every batch step (data preparation, observations, fitting, evaluation):

- an item that fails is reported (its ledger entry says why and, when known, which input file
  is to blame: :class:`InputError`) and the others continue;
- the outcome of every item goes into the output folder's ledger (:mod:`nphm.utils.ledger`);
- each item is claimed before it runs (:mod:`nphm.utils.claims`), so that several workers on
  one folder do it once; ``--shard K/N`` splits the items statically (:func:`take_shard`);
- stale temporary files of killed writers are removed when a step starts
  (:func:`nphm.utils.io.remove_stale_temporaries`);
- the exit codes :data:`EXIT_OK`, :data:`EXIT_ITEMS_FAILED` and :data:`EXIT_USAGE`.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from nphm.layout import ItemResult, claims_dir, ledger_dir
from nphm.utils.claims import Claims
from nphm.utils.io import PathLike, remove_stale_temporaries
from nphm.utils.ledger import Ledger, item_key

#: Exit codes of the batch scripts: every item done (or already done); some items failed
#: (the others were finished); a usage or configuration error (nothing was run). 1 remains
#: Python's code for an unexpected crash.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_ITEMS_FAILED = 3

#: Who is to blame for a failing item (:class:`InputError`): a dataset file (scan, registration,
#: FLAME fit, ``s/R/t``), a reconstruction, a single-view observation, or an item the dataset
#: description expects but the disk lacks.
GROUND_TRUTH, PREDICTION, OBSERVATION, DATASET = "ground truth", "prediction", "observation", "dataset"

#: Message of a "skipped" result of an item another worker holds (followed by who).
CLAIMED = "claimed by"
#: Message of a "skipped" result of an item found finished.
ALREADY_DONE = "already done"

T = TypeVar("T")


class InputError(ValueError):
    """An input file of an item is missing or broken.

    ``role`` says which input (:data:`GROUND_TRUTH`, :data:`PREDICTION`, :data:`OBSERVATION`,
    :data:`DATASET`), ``path`` the file, ``problem`` what is wrong; the message is
    ``"{role} {path}: {problem}"``.
    """

    def __init__(self, role: str, path: PathLike, problem: str) -> None:
        self.role, self.path = role, Path(path)
        prefix = f"{self.path}: "
        self.problem = problem[len(prefix):] if problem.startswith(prefix) else problem
        super().__init__(f"{role} {self.path}: {self.problem}")


def blame(role: str, path: PathLike, call: Callable[[], T]) -> T:
    """``call()``, with a missing or unreadable file (OSError, ValueError) re-raised as an
    :class:`InputError` of ``role`` naming ``path``."""
    try:
        return call()
    except InputError:
        raise
    except (OSError, ValueError) as e:
        problem = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise InputError(role, path, problem) from e


def failure_message(error: BaseException) -> str:
    """``"TypeName: message"`` of an exception (one line per part, no traceback); an
    :class:`InputError` is its message alone (it names the culprit)."""
    if isinstance(error, InputError):
        return str(error)
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def failed_result(subject: int, expression: int, error: BaseException, seconds: float = 0.0) -> ItemResult:
    """The "failed" :class:`ItemResult` of ``error`` (culprit role and file when it names one)."""
    role = getattr(error, "role", "") if isinstance(error, InputError) else ""
    file = str(error.path) if isinstance(error, InputError) else ""
    return ItemResult(int(subject), int(expression), "failed", failure_message(error), seconds, role=role, file=file)


# ------------------------------------------------------------------------------- shards
def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (e.g. a job array's task id and count)."""
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must be K/N with integers (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard K/N needs N >= 1 and 0 <= K < N, got {text!r}")
    return k, n


def take_shard(items: Sequence[T], shard: Optional[Tuple[int, int]]) -> List[T]:
    """Items ``k, k + n, k + 2n, ...`` of ``items`` for ``shard = (k, n)`` (all for None):
    the shards of one list are disjoint and together hold every item."""
    if shard is None:
        return list(items)
    k, n = shard
    return [item for i, item in enumerate(items) if i % n == k]


# ------------------------------------------------------------------------------- folders
class BatchFolder:
    """The ledger and the claims of one batch output folder (``out_dir/ledger``, ``out_dir/claims``).

    Picklable (paths only), so that pool workers run items through the same object.

    Args:
        out_dir: the step's output folder.
        step: the step's name (stored in ledger entries).
        claims: claim items before running them (False: a single worker is assumed).
    """

    def __init__(self, out_dir: PathLike, step: str, claims: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.step = step
        self.ledger = Ledger(ledger_dir(self.out_dir), step)
        self.claims = Claims(claims_dir(self.out_dir)) if claims else None

    def clean(self, *folders: PathLike) -> List[Path]:
        """Remove stale temporary files below ``out_dir`` and ``folders``; returns them."""
        removed = []
        for folder in (self.out_dir,) + tuple(folders):
            removed += remove_stale_temporaries(folder)
        return removed

    def run_item(self, subject: int, expression: int, is_done: Callable[[], bool],
                 work: Callable[[], ItemResult], overwrite: bool = False) -> ItemResult:
        """Run one item: skipped when finished (unless ``overwrite``) or claimed by another
        worker; otherwise claimed, run (an exception becomes a "failed" result) and recorded
        in the ledger.

        ``work()`` returns the item's :class:`ItemResult` ("done", or "failed" for a failure
        it caught itself).
        """
        key = item_key(subject, expression)
        if not overwrite and is_done():
            self._clear_stale_failure(key, subject, expression)
            return ItemResult(int(subject), int(expression), "skipped", ALREADY_DONE)
        if self.claims is not None and not self.claims.acquire(key):
            holder = self.claims.holder(key)
            who = holder.describe() if holder is not None else "another worker"
            return ItemResult(int(subject), int(expression), "skipped", f"{CLAIMED} {who}")
        start = time.perf_counter()
        try:
            # another worker may have finished it between the check and the claim
            if not overwrite and is_done():
                return ItemResult(int(subject), int(expression), "skipped", ALREADY_DONE)
            try:
                result = work()
            except Exception as e:  # a bad item must not stop the batch
                result = failed_result(subject, expression, e, time.perf_counter() - start)
            self.ledger.record_result(result)
            return result
        finally:
            if self.claims is not None:
                self.claims.release(key)

    def _clear_stale_failure(self, key: str, subject: int, expression: int) -> None:
        entry = self.ledger.get(key)
        if entry is not None and entry.status == "failed":
            self.ledger.record(subject, expression, "done", "found finished")

    def record_missing(self, missing: Sequence, subjects: Iterable[int]) -> None:
        """Record the expected subjects/scans missing on disk (:class:`nphm.data.expected.MissingItem`)
        as failures (role :data:`DATASET`; once, every worker finds the same), and remove such
        entries that no longer hold: of ``subjects`` when not missing now, of any subject when
        the missing folder exists again."""
        keys = set()
        for m in missing:
            keys.add(item_key(m.subject, m.expression))
            self.ledger.record_once(m.subject, m.expression, "failed", m.message, DATASET, str(m.path))
        wanted = {int(s) for s in subjects}
        for entry in self.ledger.with_status("failed"):
            if entry.role != DATASET or entry.item in keys:
                continue
            if entry.subject in wanted or (entry.file and Path(entry.file).exists()):
                self.ledger.remove(entry.item)

    def exit_code(self, subjects: Optional[Iterable[int]] = None) -> int:
        """:data:`EXIT_ITEMS_FAILED` when the ledger holds failures (of ``subjects``), else :data:`EXIT_OK`."""
        return EXIT_ITEMS_FAILED if self.ledger.with_status("failed", subjects) else EXIT_OK


def left_to_another_worker(result: ItemResult) -> bool:
    """Whether ``result`` is an item skipped because another worker holds its claim."""
    return result.status == "skipped" and result.message.startswith(CLAIMED)


def run_subjects(subjects: Iterable[int], is_done: Callable[[int], bool], run_one: Callable[[int], ItemResult],
                 overwrite: bool = False, skipped_message: str = "already fitted",
                 folder: Optional[BatchFolder] = None) -> Iterator[ItemResult]:
    """``run_one(subject)`` for every subject, one :class:`ItemResult` each (expression -1).

    A subject for which ``is_done`` holds is skipped unless ``overwrite``; an exception of
    ``run_one`` becomes a "failed" result and the batch continues. With a ``folder``, each
    subject is claimed first and its outcome goes into the folder's ledger.
    """
    for subject in subjects:
        if folder is not None:
            result = folder.run_item(subject, -1, lambda: is_done(subject), lambda: run_one(subject), overwrite)
            if result.status == "skipped" and result.message == ALREADY_DONE:
                result.message = skipped_message
            yield result
            continue
        if not overwrite and is_done(subject):
            yield ItemResult(int(subject), -1, "skipped", skipped_message)
            continue
        start = time.perf_counter()
        try:
            yield run_one(subject)
        except Exception as e:  # a bad subject must not stop the batch
            yield failed_result(subject, -1, e, time.perf_counter() - start)
