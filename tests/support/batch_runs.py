"""Batch scripts run in worker processes: several at once, or killed (SIGKILL) at a chosen moment.

The workers are forked from one server process that imported torch and the scripts once
(``multiprocessing``'s forkserver with preloaded modules), so a worker starts in milliseconds
instead of the seconds an interpreter needs to import them; the server itself never runs torch
code, so forking it is safe. Each worker runs one ``nphm.cli`` module's ``main(argv)`` on one
thread (deterministic results), with its stdout and stderr in a log file.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

#: torch._dynamo: the optimisers import it on first use, 3.5 s per process otherwise.
PRELOAD = ["torch", "torch._dynamo", "numpy", "trimesh", "scipy.spatial", "support.batch_runs", "nphm.cli.eval",
           "nphm.cli.fitting_pointclouds", "nphm.cli.sample_surface", "nphm.cli.train", "nphm.evaluation.pipeline",
           "nphm.fitting.pipeline", "nphm.preprocessing.jobs", "nphm.training.stage1"]
_CONTEXT = None


def context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _main(module: str, argv: Sequence[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(1)
    code = importlib.import_module(module).main([str(a) for a in argv])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(code or 0))


@dataclass
class Run:
    """A finished worker: its exit code (-9: killed), wall seconds and log text."""

    exitcode: int
    seconds: float
    log: str


class Worker:
    """One script in a worker process (started on creation)."""

    def __init__(self, module: str, argv: Sequence[object], log: Path) -> None:
        self.log = Path(log)
        self.log.write_text("")
        self.process = context().Process(target=_main, args=(module, [str(a) for a in argv], str(self.log)))
        self.start = time.perf_counter()
        self.process.start()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float = 300.0) -> Run:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"worker did not finish in {timeout} s; log:\n{self.log.read_text()[-3000:]}")
        return Run(self.process.exitcode, time.perf_counter() - self.start, self.log.read_text())


def run(module: str, argv: Sequence[object], log: Path) -> Run:
    """Run one worker to the end."""
    return Worker(module, argv, log).wait()


def run_together(module: str, argvs: Sequence[Sequence[object]], logs: Sequence[Path]) -> List[Run]:
    """Start one worker per argument list at once and wait for all."""
    workers = [Worker(module, argv, log) for argv, log in zip(argvs, logs)]
    return [w.wait() for w in workers]


def run_killed(module: str, argv: Sequence[object], log: Path, after: float) -> Tuple[Run, bool]:
    """Start a worker, SIGKILL it ``after`` seconds later; ``(run, killed)`` (killed False when
    it had already finished)."""
    worker = Worker(module, argv, log)
    worker.process.join(after)
    killed = worker.process.exitcode is None
    if killed:
        worker.kill()
    return worker.wait(), killed


def temporaries(folder: Path) -> List[Path]:
    """Temporary files of the atomic writer left below ``folder``."""
    from nphm.utils.io import is_temporary

    return sorted(p for p in Path(folder).rglob(".*") if is_temporary(p))


def claims_left(folder: Path) -> List[Path]:
    """Claim files left below ``folder``."""
    return sorted(Path(folder).rglob("*.claim"))


def kill_moment(rng, seconds: float, lo: float = 0.1, hi: float = 0.6, floor: Optional[float] = 0.05) -> float:
    """A random moment within a run of ``seconds``: uniform in [lo, hi] x seconds."""
    return max(floor or 0.0, float(rng.uniform(lo, hi)) * seconds)
