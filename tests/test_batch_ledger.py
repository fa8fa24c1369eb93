"""The batch machinery on its own: item ledger, claims, shards, stale temporary files."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from nphm.layout import ItemResult
from nphm.utils.batch import (
    EXIT_ITEMS_FAILED, EXIT_OK, GROUND_TRUTH, BatchFolder, InputError, failed_result, parse_shard, take_shard,
)
from nphm.utils.claims import Claims
from nphm.utils.io import atomic_path, host_name, is_stale_temporary, is_temporary, remove_stale_temporaries
from nphm.utils.ledger import Ledger, item_key


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------ ledger
def test_ledger_keeps_every_items_last_outcome_across_runs(tmp_path):
    ledger = Ledger(tmp_path / "ledger", "evaluation")
    ledger.record(2, 0, "failed", "prediction x: broken", role="prediction", file="x")
    ledger.record(2, 1, "done", "ok")
    later = Ledger(tmp_path / "ledger", "evaluation")  # another run, another object
    later.record(3, 0, "failed", "ground truth y: NaN", role=GROUND_TRUTH, file="y")
    assert sorted(later.entries()) == ["2_0", "2_1", "3_0"]
    assert [e.item for e in later.with_status("failed")] == ["2_0", "3_0"]
    assert later.counts([2]) == {"done": 1, "failed": 1, "skipped": 0}
    # a later success clears the failure, the history keeps both runs
    later.record(2, 0, "done", "ok now")
    entry = ledger.get("2_0")
    assert entry.status == "done" and entry.role == "" and [h["status"] for h in entry.history] == ["failed", "done"]
    assert [e.item for e in ledger.with_status("failed")] == ["3_0"]
    assert entry.pid == os.getpid() and entry.host == host_name()
    # reasons found before running are written once, whoever finds them again
    assert ledger.record_once(4, -1, "failed", "gone", "dataset", "z") is not None
    assert ledger.record_once(4, -1, "failed", "gone", "dataset", "z") is None
    assert len(ledger.get("4").history) == 1 and item_key(4) == "4" and item_key(4, 2) == "4_2"
    # skipped results (finished, or left to another worker) are not outcomes
    assert ledger.record_result(ItemResult(5, 1, "skipped", "claimed by someone")) is None and ledger.get("5_1") is None


def _write_entries(folder, first: int) -> None:
    ledger = Ledger(folder, "test")
    for s in range(first, first + 25):
        ledger.record(s, 0, "done" if s % 2 else "failed", f"item {s}")


def test_ledger_merges_entries_of_concurrent_processes(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_entries, args=(tmp_path / "ledger", 25 * i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    entries = Ledger(tmp_path / "ledger").entries()
    assert sorted(entries) == sorted(f"{s}_0" for s in range(100))
    assert all(entries[f"{s}_0"].status == ("done" if s % 2 else "failed") for s in range(100))
    assert len({e.pid for e in entries.values()}) == 4
    assert [p for p in (tmp_path / "ledger").iterdir() if is_temporary(p)] == []


def test_batch_folder_runs_claims_and_records_items(tmp_path):
    folder = BatchFolder(tmp_path, "test")
    done = set()

    def work(key):
        def run():
            if key == 2:
                raise InputError(GROUND_TRUTH, tmp_path / "scan.ply", "3 of 10 vertices have non-finite coordinates")
            done.add(key)
            return ItemResult(key, 0, "done", "fine")
        return run

    results = [folder.run_item(k, 0, lambda k=k: k in done, work(k)) for k in (1, 2, 3)]
    assert [r.status for r in results] == ["done", "failed", "done"]
    failed = folder.ledger.get("2_0")
    assert failed.role == GROUND_TRUTH and failed.file == str(tmp_path / "scan.ply")
    assert failed.message == f"ground truth {tmp_path / 'scan.ply'}: 3 of 10 vertices have non-finite coordinates"
    assert folder.exit_code() == EXIT_ITEMS_FAILED and folder.exit_code([1, 3]) == EXIT_OK
    # finished items are skipped without a new ledger run; claims are released
    again = folder.run_item(1, 0, lambda: True, work(1))
    assert (again.status, again.message) == ("skipped", "already done") and len(folder.ledger.get("1_0").history) == 1
    assert list((tmp_path / "claims").iterdir()) == []
    # an item claimed by a live worker is left to it
    other = Claims(tmp_path / "claims")
    assert other.acquire("3_0")
    busy = BatchFolder(tmp_path, "test").run_item(3, 0, lambda: False, work(3))
    assert busy.status == "skipped" and busy.message.startswith(f"claimed by pid {os.getpid()} on {host_name()}")
    other.release("3_0")
    assert failed_result(1, 2, ValueError("x")).message == "ValueError: x"


# ------------------------------------------------------------------------------------ claims
def test_claims_are_exclusive_and_expire_with_their_worker(tmp_path):
    a, b = Claims(tmp_path, heartbeat_s=0.05, expire_s=5.0), Claims(tmp_path, heartbeat_s=0.05, expire_s=5.0)
    assert a.acquire("7") and not b.acquire("7")
    holder = b.holder("7")
    assert (holder.pid, holder.host) == (os.getpid(), host_name())
    time.sleep(0.3)  # heartbeats keep a held claim young
    assert b.holder("7").age < 0.25 and not b.acquire("7")
    b.release("7")  # not b's claim: stays
    assert a.holder("7") is not None
    a.release("7")
    assert a.holder("7") is None and b.acquire("7")
    b.release("7")

    def plant(key, host, pid, age):
        path = tmp_path / f"{key}.claim"
        path.write_text(json.dumps({"host": host, "pid": pid, "token": "t", "since": 0}))
        os.utime(path, (time.time() - age, time.time() - age))

    plant("dead_here", host_name(), _dead_pid(), 0)  # same host, dead pid: expired at once
    plant("live_there", "another-host", os.getpid(), 1)  # another host, fresh heartbeat: held
    plant("old_there", "another-host", os.getpid(), 3600)  # another host, no heartbeat for an hour
    assert b.acquire("dead_here") and b.holder("dead_here").pid == os.getpid()
    assert not b.acquire("live_there")
    c = Claims(tmp_path, heartbeat_s=30, expire_s=600)
    assert c.acquire("old_there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead_here.claim", "live_there.claim", "old_there.claim"]
    with pytest.raises(ValueError):
        Claims(tmp_path, heartbeat_s=10, expire_s=5)


# ------------------------------------------------------------------------------------ shards
def test_shards_split_the_items_disjointly():
    items = list(range(11))
    parts = [take_shard(items, parse_shard(f"{k}/3")) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert take_shard(items, None) == items and take_shard(items, (0, 1)) == items
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


# ------------------------------------------------------------------------------------ temporary files
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    dead, now = _dead_pid(), time.time()

    def make(name, age=0.0):
        path = tmp_path / "sub" / name
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
        return path

    here = host_name()
    dead_here = make(f".checkpoint_epoch_4.abcd1234.{dead}-{here}.tmp.tar")
    live_here = make(f".checkpoint_epoch_5.abcd1234.{os.getpid()}-{here}.tmp.tar", age=7200)  # its writer lives
    fresh_there = make(".metrics.abcd1234.99-otherhost.tmp.json", age=60)  # maybe being written elsewhere
    old_there = make(".metrics.abcd1234.99-otherhost.tmp.json2", age=7200)
    old_legacy = make(".scan.k2j3h4g5.tmp.ply", age=7200)  # written before owners were in the name
    fresh_legacy = make(".scan.k2j3h4g6.tmp.ply", age=10)
    result = make("metrics.json")
    assert not is_temporary(result) and not is_stale_temporary(result)
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead_here, old_there, old_legacy])
    assert all(p.exists() for p in (live_here, fresh_there, fresh_legacy, result))
    # the writer names its temporary file after itself, and a crash inside the block leaves none
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.npy") as tmp:
            assert tmp.name.startswith(".out.") and f".{os.getpid()}-{here}.tmp.npy" in tmp.name
            assert is_temporary(tmp) and not is_stale_temporary(tmp)
            raise RuntimeError("crash")
    assert not (tmp_path / "out.npy").exists() and not tmp.exists()
