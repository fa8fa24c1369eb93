"""Per-item claims, so that any number of workers sharing an output folder do each item once.

A worker that takes an item creates ``CLAIMS_DIR/{key}.claim`` with an exclusive create
(``O_CREAT | O_EXCL``, atomic on local and NFS v3+ filesystems) holding its host, pid and a
random token; whoever fails to create it leaves the item to the holder. The holder deletes the
file when the item is finished (done or failed: the ledger has the outcome).

A claim whose worker died expires:

- on the same machine at once, when its pid no longer exists;
- on any machine after ``expire_s`` seconds without a heartbeat: the holder touches its
  claims every ``heartbeat_s`` seconds from a background thread, so only a dead (or frozen)
  worker's claim grows old. ``expire_s`` must be well above ``heartbeat_s`` and the clock
  differences between the machines.

Breaking an expired claim renames it to a unique name first (one worker wins the rename) and
checks that the renamed file is the expired one before claiming the item.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from nphm.utils.io import PathLike, host_name, process_alive

#: Seconds between heartbeats of a held claim, and without one after which it expires.
HEARTBEAT_SECONDS = 30.0
EXPIRE_SECONDS = 600.0


@dataclass(frozen=True)
class ClaimInfo:
    """Content of a claim file: who holds it (``host``, ``pid``, random ``token``), since
    ``since`` (epoch seconds); ``age`` = seconds since its last heartbeat."""

    host: str
    pid: int
    token: str
    since: float
    age: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, heartbeat {self.age:.0f} s ago"


def _read(path: Path) -> Optional[ClaimInfo]:
    """The claim at ``path``; None if it vanished. A claim still being written (empty or
    partial) reads as held by an unknown live worker that just started."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return ClaimInfo(str(data["host"]), int(data["pid"]), str(data["token"]), float(data["since"]), age)
    except (ValueError, KeyError, TypeError):
        return ClaimInfo("?", -1, "", 0.0, age)


class Claims:
    """The claims of one output folder, held by this process.

    Args:
        folder: where the claim files live (created on first use).
        heartbeat_s: seconds between heartbeats of the claims this process holds.
        expire_s: a claim without heartbeat for this long is expired (any machine).
    """

    def __init__(self, folder: PathLike, heartbeat_s: float = HEARTBEAT_SECONDS,
                 expire_s: float = EXPIRE_SECONDS) -> None:
        if expire_s <= heartbeat_s:
            raise ValueError(f"expire_s ({expire_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.folder = Path(folder)
        self.heartbeat_s = float(heartbeat_s)
        self.expire_s = float(expire_s)
        self._held: Dict[str, str] = {}  # key -> token
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    # pickled into pool workers: the held claims and the thread stay with their process
    def __getstate__(self) -> Dict:
        return {"folder": self.folder, "heartbeat_s": self.heartbeat_s, "expire_s": self.expire_s}

    def __setstate__(self, state: Dict) -> None:
        self.__init__(state["folder"], state["heartbeat_s"], state["expire_s"])

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.claim"

    def holder(self, key: str) -> Optional[ClaimInfo]:
        """Who holds ``key`` (None: nobody)."""
        return _read(self.path(key))

    def is_expired(self, info: ClaimInfo) -> bool:
        """Whether the worker of ``info`` is gone (dead pid here, or no heartbeat for ``expire_s``)."""
        if info.age > self.expire_s:
            return True
        return info.host == host_name() and info.pid > 0 and not process_alive(info.pid)

    def acquire(self, key: str) -> bool:
        """Claim ``key``; False if a live worker holds it. An expired claim is broken and taken."""
        if os.getpid() != self._pid:  # a forked copy must not think it holds its parent's claims
            self.__init__(self.folder, self.heartbeat_s, self.expire_s)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        for _ in range(3):
            token = secrets.token_hex(8)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = _read(path)
                if info is None:
                    continue  # released meanwhile: try again
                if not self.is_expired(info) or not self._break(path, info):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": host_name(), "pid": os.getpid(), "token": token, "since": time.time()}, f)
            with self._lock:
                self._held[key] = token
            self._start_heartbeat()
            return True
        return False

    def _break(self, path: Path, seen: ClaimInfo) -> bool:
        """Remove the expired claim ``seen`` at ``path``; False if it is no longer that claim."""
        grave = path.with_name(f"{path.name}.expired-{secrets.token_hex(6)}")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return True  # another worker broke it first; the caller retries the create
        moved = _read(grave)
        if moved is not None and moved.token != seen.token:
            # a fresh claim replaced the expired one between our read and the rename: put it back
            try:
                os.link(grave, path)
            except FileExistsError:
                pass
            grave.unlink(missing_ok=True)
            return False
        grave.unlink(missing_ok=True)
        return True

    def release(self, key: str) -> None:
        """Give ``key`` back (only if this process still holds it)."""
        with self._lock:
            token = self._held.pop(key, None)
        if token is None:
            return
        info = _read(self.path(key))
        if info is not None and info.token == token:
            self.path(key).unlink(missing_ok=True)

    def held(self) -> Dict[str, str]:
        with self._lock:
            return dict(self._held)

    def _start_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._beat, name="claims-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.heartbeat_s)
            for key in self.held():
                try:
                    os.utime(self.path(key))
                except FileNotFoundError:
                    pass
