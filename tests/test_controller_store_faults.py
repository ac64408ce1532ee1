"""The controller's state store refusing writes mid-transfer: memory follows the disk again.

Real processes: `domas controller` and two `domas agent`s (tests/test_controller_faults.Cluster);
another SQLite connection holds the controller's state database with BEGIN EXCLUSIVE for longer
than the controller's busy timeout (2 s), as a backup tool or a stuck sqlite3 shell would, until a
client's submit has been refused (under load the controller may take a while to reach it).
"""

from __future__ import annotations

import sqlite3
import threading
import time

import grpc

from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc
from tests.fixtures.common import wait_until
from tests.test_controller_faults import MiB, Cluster, _assert_done_once, _finished, _progress, _submit, _write

LOCKED_AT_MOST = 30.0
AUTH = (("authorization", "Bearer s3cret"),)


def hold_exclusive(db_path, release: threading.Event, held: threading.Event) -> None:
    """Hold the database until `release` (at most LOCKED_AT_MOST seconds)."""
    db = sqlite3.connect(str(db_path), isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(LOCKED_AT_MOST)
        time.sleep(1.0)                  # a moment more: the agents' writes keep failing meanwhile
        db.execute("ROLLBACK")
    finally:
        db.close()


def test_a_locked_state_store_mid_transfer_is_recovered_from_nothing_doubled(tmp_path):
    """Old main applied each event to the scheduler, then failed to store it ("database is locked"):
    the scheduler ran ahead of the disk, the failures escaped as tracebacks (the lease stream's
    task, the tick loop), and acknowledgements were lost. Now the write is refused as UNAVAILABLE
    with one sentence, the scheduler is rebuilt from the stored facts, and the agents reconnect
    and replay their spooled reports."""
    src, dst = tmp_path / "run", tmp_path / "out"
    data = _write(src, {f"f{i}.h5": 8 * MiB + i for i in range(8)})
    c = Cluster(tmp_path)
    try:
        tid = _submit(tmp_path, c.port, src, dst, "256KiB")
        wait_until(lambda: _progress(c.port, tid)[0] >= MiB, 60, "some bytes done")
        held, release = threading.Event(), threading.Event()
        locker = threading.Thread(target=hold_exclusive, args=(tmp_path / "ctl" / "controller.sqlite", release,
                                                               held))
        locker.start()
        held.wait(10)
        mid_transfer = not all((dst / src.name / name).exists() for name in data)
        codes, refused = [], None
        with grpc.insecure_channel(f"127.0.0.1:{c.port}") as channel:        # a client submits meanwhile
            stub = pb_grpc.ControllerStub(channel)
            while locker.is_alive() and not release.is_set():
                try:
                    stub.SubmitTransfer(pb.SubmitTransferRequest(sources=[str(src / "f0.h5")], request_id="req-1",
                                                                 destination=f"{tmp_path / 'other'}/"),
                                        metadata=AUTH, timeout=30)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        refused = e
                        release.set()
            locker.join()
            again = stub.SubmitTransfer(pb.SubmitTransferRequest(sources=[str(src / "f0.h5")], request_id="req-1",
                                                                 destination=f"{tmp_path / 'other'}/"),
                                        metadata=AUTH, timeout=30)
            listed = stub.ListTransfers(pb.ListTransfersRequest(), metadata=AUTH, timeout=30).transfers
        assert grpc.StatusCode.UNAVAILABLE in codes, codes
        assert sorted(t.transfer_id for t in listed) == sorted({tid, again.transfer_id}), listed   # one each
        assert "state store" in refused.details() and "try again" in refused.details()
        assert "\n" not in refused.details() and "sqlite" not in refused.details().lower()
        assert mid_transfer                                     # the lock came mid-transfer
        wait_until(lambda: _finished(c.port, tid), 120, "the transfer done after the lock")
        # a chunk leased before the rebuild may still be written after its file was renamed (the
        # agent worked on through the outage); the janitor removes that part file after a lease
        wait_until(lambda: not list(dst.rglob("*.domas-part")), 30, "late part files swept")
        st = _assert_done_once(tmp_path, c.port, tid, src, dst, data)
        assert st["files_done"] == len(data)
    finally:
        c.stop()
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("controller-*.log"))
    assert "did not take a write" in log and "scheduler rebuilt from the state store" in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    agents = "".join(p.read_text(errors="replace") for p in tmp_path.glob("agent-*.log"))
    assert "Traceback" not in agents, agents[-5000:]
    assert "could not record this in its state store (busy or full); nothing was changed, try again shortly; " \
           "retrying" in agents                      # the agents' calls were refused with the same sentence


def test_a_rebuilt_schedulers_epoch_is_stored_with_the_next_commit(tmp_path):
    """The epoch of a scheduler rebuilt after a failed write must outlive a restart, or lease ids
    granted by it would repeat after one. It is written in the next transaction that commits."""
    from domas.controller.state import StateStore

    path = tmp_path / "controller.sqlite"
    store = StateStore(path)
    assert store.epoch == 1
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    assert store.next_epoch() == 2
    started = time.monotonic()
    try:
        store.apply([], 0.0)
        raise AssertionError("a locked store took the write")
    except sqlite3.OperationalError as e:
        assert "locked" in str(e) and time.monotonic() - started < 4      # busy timeout 2 s, not 5
    assert not store._db.in_transaction
    blocker.execute("ROLLBACK")
    blocker.close()
    store.apply([], 0.0)                   # nothing else to store: the epoch alone is written
    store.close()
    again = StateStore(path)
    assert again.epoch == 3                # not 2 again
    again.close()
