"""The controller's scheduler as a pure state machine: events in, actions out (no fixtures, no I/O)."""

from __future__ import annotations

import random
import zlib

import pytest

from domas.controller import events as ev
from domas.retry import RetryPolicy
from domas.controller.scheduler import Scheduler, SchedulerConfig

CS = 4096   # chunk size used throughout


def sched(**cfg) -> Scheduler:
    return Scheduler(SchedulerConfig(**cfg), random.Random(7))


def of(actions: list, cls: type) -> list:
    return [a for a in actions if isinstance(a, cls)]


OWNER: dict[str, str] = {}      # lease id -> the agent it was granted to (reports come from it)


def leases_in(actions: list) -> list[ev.LeaseInfo]:
    grants = of(actions, ev.GrantLeases)
    OWNER.update({lease.lease_id: g.agent for g in grants for lease in g.leases})
    return [lease for g in grants for lease in g.leases]


def submit(s: Scheduler, tid: str, sizes, beamline="bl", priority=0, now=0.0, src="/src", dst="/dst",
           **spec) -> list:
    files = tuple(ev.FileSpec(f"{src}/{tid}/{i}", f"{dst}/{tid}/{i}", size) for i, size in enumerate(sizes))
    return s.on_event(ev.TransferSubmitted(ev.TransferSpec(tid, beamline, priority, CS, **spec), files), now)


def ask(s: Scheduler, agent: str, n: int, now=0.0) -> list[ev.LeaseInfo]:
    """Add n to the agent's credit; the leases granted by this very event."""
    if agent not in s.snapshot(now)["agents"]:
        s.on_event(ev.AgentRegistered(agent), now)
    return leases_in(s.on_event(ev.LeaseRequested(agent, n), now))


def data_of(lease: ev.LeaseInfo) -> bytes:
    """Deterministic content of the source file a lease reads (so checksums can be checked)."""
    return random.Random(lease.src_url).randbytes(lease.file_size)


def ok(lease: ev.LeaseInfo, rid: str | None = None, **changes) -> ev.ChunkReport:
    part = data_of(lease)[lease.offset:lease.offset + lease.length]
    fields = dict(report_id=rid or f"r-{lease.lease_id}", lease_id=lease.lease_id, transfer_id=lease.transfer_id,
                  file_id=lease.file_id, index=lease.index, offset=lease.offset, length=lease.length,
                  adler32=zlib.adler32(part), xxh3=0, nbytes=lease.length, seconds=0.01)
    fields.update(changes)
    return ev.ChunkReport(**fields)


def failed(lease: ev.LeaseInfo, kind: str, retriable: bool, side: str = "", rid: str | None = None,
           **changes) -> ev.ChunkReport:
    return ok(lease, rid or f"f-{lease.lease_id}-{kind}", error_kind=kind, error_message=f"{kind} happened",
              retriable=retriable, error_side=side, nbytes=0, **changes)


def report(s: Scheduler, r: ev.ChunkReport, now=1.0, agent: str | None = None) -> list:
    """The report as the agent holding the lease sends it (or as `agent`)."""
    return s.on_event(ev.ChunkReported(agent or OWNER.get(r.lease_id, "a"), r), now)


def whole_adler(lease: ev.LeaseInfo) -> int:
    return zlib.adler32(data_of(lease))


# -- leases, expiry, requeue ---------------------------------------------------------------------

def test_leases_cover_every_chunk_once_with_the_part_name_and_source_identity():
    s = sched()
    submit(s, "t", [3 * CS + 5, 0, CS])
    got = ask(s, "a", 100)
    assert [(g.file_id, g.index, g.offset, g.length) for g in got] == [
        (1, 0, 0, CS), (1, 1, CS, CS), (1, 2, 2 * CS, CS), (1, 3, 3 * CS, 5), (2, 0, 0, 0), (3, 0, 0, CS)]
    assert got[0].dst_url == "/dst/t/.0.domas-part" and got[0].src_url == "/src/t/0"
    assert got[0].file_size == 3 * CS + 5 and got[0].expires_at == 60.0 and got[0].verify == "default"
    assert len({g.lease_id for g in got}) == 6
    assert ask(s, "b", 10) == []


def test_credit_accumulates_and_is_served_when_work_arrives():
    s = sched()
    assert ask(s, "a", 3) == []
    granted = leases_in(submit(s, "t", [CS] * 5))
    assert len(granted) == 3
    assert s.snapshot(0)["leases_active"] == 3


@pytest.mark.parametrize("heartbeat_at, tick_at, expired", [
    (None, 59.9, 0),
    (None, 60.0, 3),
    (30.0, 60.0, 0),     # renewed until 90
    (30.0, 90.0, 3),
])
def test_leases_expire_unless_renewed_and_chunks_go_back(heartbeat_at, tick_at, expired):
    s = sched(lease_seconds=60.0)
    submit(s, "t", [3 * CS])
    first = ask(s, "a", 3)
    if heartbeat_at is not None:
        renewed = s.on_event(ev.AgentHeartbeat("a"), heartbeat_at)
        assert renewed == [ev.LeasesRenewed("a", heartbeat_at + 60.0, ())]
    s.on_event(ev.Tick(), tick_at)
    again = ask(s, "b", 10, now=tick_at + 100)   # after any backoff
    assert len(again) == expired
    assert {(g.file_id, g.index) for g in again} <= {(g.file_id, g.index) for g in first}
    assert s.snapshot(tick_at)["errors_total"].get("lease_expired", 0) == expired


def test_expiry_still_works_after_reported_leases_are_pruned_from_the_timer_heap():
    s = sched(limit_initial=10_000, limit_max=10_000)
    submit(s, "t", [CS] * 5002)
    for lease in ask(s, "a", 5000):
        report(s, ok(lease), now=0.5)
    pending = ask(s, "a", 2, now=1.0)
    s.on_event(ev.Tick(), 2.0)                         # prunes 5000 entries of closed leases
    assert s.snapshot(2.0)["leases_active"] == 2
    s.on_event(ev.Tick(), 61.0)
    assert s.snapshot(61.0)["errors_total"] == {"lease_expired": 2} and len(pending) == 2


def test_heartbeat_names_leases_the_agent_no_longer_holds():
    s = sched()
    submit(s, "t", [2 * CS])
    a, b = ask(s, "a", 2)
    report(s, ok(a))
    out = s.on_event(ev.AgentHeartbeat("a", (a.lease_id, b.lease_id)), 5.0)
    assert out == [ev.LeasesRenewed("a", 65.0, (a.lease_id,))]


def test_lost_agent_chunks_are_requeued_at_once_without_counting_an_attempt():
    s = sched()
    submit(s, "t", [2 * CS])
    first = ask(s, "a", 2)
    s.on_event(ev.AgentLost("a"), 5.0)
    again = ask(s, "b", 5, now=5.0)
    assert [(g.file_id, g.index) for g in again] == [(g.file_id, g.index) for g in first]
    assert s.snapshot(5.0)["errors_total"] == {}


def test_late_success_of_an_expired_lease_counts_and_revokes_the_new_lease():
    s = sched(lease_seconds=10.0)
    submit(s, "t", [CS])
    (old,) = ask(s, "a", 1)
    s.on_event(ev.Tick(), 10.0)
    (new,) = ask(s, "b", 1, now=100.0)
    out = report(s, ok(old), now=101.0)
    assert of(out, ev.RevokeLeases) == [ev.RevokeLeases("b", (new.lease_id,))]
    assert len(of(out, ev.ChunkDone)) == 1 and len(of(out, ev.FinalizeFile)) == 1
    assert of(report(s, ok(new), now=102.0), ev.Duplicate)


# -- folding and finalisation --------------------------------------------------------------------

def test_whole_file_adler32_is_folded_from_chunks_copied_by_different_agents_in_any_order():
    s = sched()
    submit(s, "t", [7 * CS + 123])
    got = ask(s, "a", 4) + ask(s, "b", 4)
    final = []
    for lease in reversed(got):              # each agent reports its own leases, interleaved
        final += report(s, ok(lease))
    (fin,) = of(final, ev.FinalizeFile)
    assert fin.expected_adler32 == whole_adler(got[0])
    assert (fin.part_url, fin.final_url, fin.verify) == ("/dst/t/.0.domas-part", "/dst/t/0", True)
    done = s.on_event(ev.DestinationVerified("t", fin.file_id, whole_adler(got[0])), 2.0)
    assert of(done, ev.FileDone) == [ev.FileDone("t", 1, "/dst/t/0", 7 * CS + 123, whole_adler(got[0]))]
    assert of(done, ev.TransferEnded)[0].state == "done"


def test_empty_file_finalizes_with_the_adler32_of_nothing():
    s = sched()
    submit(s, "t", [0])
    (lease,) = ask(s, "a", 1)
    (fin,) = of(report(s, ok(lease)), ev.FinalizeFile)
    assert fin.expected_adler32 == 1 == zlib.adler32(b"")


def test_verify_none_accepts_the_rename_without_a_destination_checksum():
    s = sched()
    submit(s, "t", [CS], verify="none")
    (lease,) = ask(s, "a", 1)
    (fin,) = of(report(s, ok(lease)), ev.FinalizeFile)
    assert fin.verify is False
    assert of(s.on_event(ev.DestinationVerified("t", 1, None), 2.0), ev.FileDone)


def test_destination_mismatch_recopies_the_file_then_fails_when_attempts_run_out():
    s = sched(retry=RetryPolicy(max_attempts=2, base=0.0, cap=0.0))
    submit(s, "t", [2 * CS])
    for round_ in range(2):
        got = ask(s, "a", 2, now=10.0 * round_)
        assert len(got) == 2
        fin = of(report(s, ok(got[0])) + report(s, ok(got[1])), ev.FinalizeFile)[0]
        out = s.on_event(ev.DestinationVerified("t", 1, fin.expected_adler32 ^ 1), 10.0 * round_ + 1)
    assert of(out, ev.FileFailed)[0].kind == "checksum_mismatch"
    assert "differs from the copied chunks" in of(out, ev.FileFailed)[0].message


def test_first_mismatch_resets_the_file_and_persists_the_reset():
    s = sched()
    submit(s, "t", [2 * CS])
    got = ask(s, "a", 2)
    fin = of(report(s, ok(got[0])) + report(s, ok(got[1])), ev.FinalizeFile)[0]
    out = s.on_event(ev.DestinationVerified("t", 1, 12345), 2.0)
    assert of(out, ev.FileReset) == [ev.FileReset("t", 1, 2 * CS, 0, "checksum_mismatch")]
    assert [(g.index, g.offset) for g in ask(s, "a", 5, now=3.0)] == [(0, 0), (1, CS)]
    assert fin.expected_adler32 == whole_adler(got[0])


@pytest.mark.parametrize("retriable, expect_failed", [(True, False), (False, True)])
def test_verification_errors_retry_or_fail(retriable, expect_failed):
    s = sched(verify_retry=RetryPolicy(max_attempts=3, base=1.0, cap=1.0))
    submit(s, "t", [CS])
    (lease,) = ask(s, "a", 1)
    report(s, ok(lease))
    out = s.on_event(ev.DestinationVerified("t", 1, None, "timeout" if retriable else "permission_denied",
                                            "no answer", retriable), 2.0)
    assert bool(of(out, ev.FileFailed)) is expect_failed
    again = of(s.on_event(ev.Tick(), 3.1), ev.FinalizeFile)
    assert len(again) == (0 if expect_failed else 1)


# -- retries -------------------------------------------------------------------------------------

def test_retriable_failure_waits_for_its_full_jitter_backoff():
    policy = RetryPolicy(max_attempts=5, base=2.0, cap=60.0)
    s = Scheduler(SchedulerConfig(retry=policy), random.Random(3))
    expected = policy.next_delay(1, "timeout", True, random.Random(3))
    submit(s, "t", [CS])
    (lease,) = ask(s, "a", 1)
    out = report(s, failed(lease, "timeout", True), now=10.0)
    assert not of(out, ev.FileFailed)
    assert ask(s, "a", 1, now=10.0 + expected - 1e-6) == []
    (again,) = ask(s, "a", 0, now=10.0 + expected)
    assert (again.file_id, again.index) == (lease.file_id, lease.index)


def test_retriable_failures_give_up_after_max_attempts_keeping_the_last_reason():
    s = sched(retry=RetryPolicy(max_attempts=3, base=0.0, cap=0.0))
    submit(s, "t", [CS])
    out: list = []
    for attempt in range(3):
        (lease,) = ask(s, "a", 1, now=attempt)
        out = report(s, failed(lease, "connection_lost", True), now=attempt + 0.5)
    (fail,) = of(out, ev.FileFailed)
    assert (fail.file_id, fail.kind, fail.part_url) == (1, "connection_lost", "/dst/t/.0.domas-part")
    assert fail.message == "gave up on chunk 0 after 3 attempts: connection_lost happened"
    assert s.snapshot(5)["errors_total"] == {"connection_lost": 3}


@pytest.mark.parametrize("kind", ["not_found", "permission_denied", "no_space", "is_a_directory"])
def test_permanent_error_fails_the_file_at_once_and_revokes_its_other_leases(kind):
    s = sched()
    submit(s, "t", [3 * CS])
    a0, a1 = ask(s, "a", 2)
    (b2,) = ask(s, "b", 1)
    out = report(s, failed(a0, kind, retriable=True))     # a permanent kind wins over the flag
    assert of(out, ev.FileFailed) == [ev.FileFailed("t", 1, "/dst/t/.0.domas-part", kind, f"{kind} happened")]
    assert of(out, ev.RevokeLeases) == [ev.RevokeLeases("a", (a1.lease_id,)), ev.RevokeLeases("b", (b2.lease_id,))]
    assert of(out, ev.TransferEnded)[0].state == "failed"
    assert of(report(s, ok(a1)), ev.Duplicate)


def test_source_change_restarts_the_file_with_its_new_size():
    s = sched()
    submit(s, "t", [2 * CS])
    a0, a1 = ask(s, "a", 2)
    report(s, ok(a1))
    out = report(s, failed(a0, "source_changed", True, observed_size=3 * CS, observed_mtime_ns=99))
    assert of(out, ev.FileReset) == [ev.FileReset("t", 1, 3 * CS, 99, "source_changed")]
    again = ask(s, "a", 10)
    assert [(g.index, g.file_size, g.mtime_ns) for g in again] == [(0, 3 * CS, 99), (1, 3 * CS, 99),
                                                                    (2, 3 * CS, 99)]
    assert of(report(s, ok(a1, rid="other")), ev.Duplicate)   # reports for pre-change leases change nothing


# -- circuit breaker and AIMD --------------------------------------------------------------------

def test_breaker_stops_leases_to_a_failing_endpoint_then_probes_once():
    s = sched(breaker_threshold=3, breaker_cooldown=30.0, retry=RetryPolicy(max_attempts=9, base=0.0, cap=0.0))
    submit(s, "bad", [CS] * 10, beamline="A", src="root://bad.example")
    submit(s, "good", [CS] * 10, beamline="B", src="root://good.example")
    got = ask(s, "a", 6)
    bad = [g for g in got if g.transfer_id == "bad"]
    assert len(bad) == 3
    for lease in bad:
        report(s, failed(lease, "timeout", True, side="source"), now=1.0)
    assert s.snapshot(1.0)["endpoints"]["bad.example:1094"]["breaker"] == "open"
    more = ask(s, "a", 20, now=2.0)
    assert more and {g.transfer_id for g in more} == {"good"}
    probe = [g for g in ask(s, "a", 20, now=31.0) + ask(s, "a", 20, now=31.0) if g.transfer_id == "bad"]
    assert len(probe) == 1                              # half-open: exactly one probe
    resumed = leases_in(report(s, ok(probe[0]), now=32.0))   # a still has credit: served at once
    assert s.snapshot(32.0)["endpoints"]["bad.example:1094"]["breaker"] == "closed"
    assert s.snapshot(32.0)["endpoints"]["file"]["breaker"] == "closed"     # destination not blamed
    assert len(resumed) > 1 and {g.transfer_id for g in resumed} == {"bad"}


def test_aimd_limit_caps_leases_per_endpoint_and_adapts():
    s = sched(limit_initial=4, limit_min=1, limit_max=64)
    submit(s, "t", [CS] * 200, src="root://s.example")
    got = ask(s, "a", 100)
    assert len(got) == 4 and ask(s, "b", 10) == []      # the endpoint is full, whoever asks
    regranted = []
    for lease in got:                                   # each success frees a slot; the 4th also adds one
        regranted += leases_in(report(s, ok(lease), now=1.0))
    assert len(regranted) == 5
    assert s.snapshot(1.0)["endpoints"]["s.example:1094"] | {"rate": 0} == {
        "limit": 5, "inflight": 5, "breaker": "closed", "rate": 0}
    out = report(s, failed(regranted[0], "server_refused", True, side="source"), now=2.0)
    assert leases_in(out) == []                         # 4 in flight > new limit 2
    snap = s.snapshot(2.0)
    assert (snap["endpoints"]["s.example:1094"]["limit"], snap["endpoints"]["s.example:1094"]["inflight"]) == (2, 4)
    assert snap["errors_total"] == {"server_refused": 1}


# -- fair share ----------------------------------------------------------------------------------

def test_a_small_beamline_is_served_within_a_batch_of_a_huge_backlog():
    s = sched(limit_initial=10_000, limit_max=10_000)
    submit(s, "big", [CS] * 100_000, beamline="A")
    for batch in range(3):
        assert {g.transfer_id for g in ask(s, "a", 64, now=batch)} == {"big"}
    submit(s, "small", [CS] * 10, beamline="B", now=3.0)
    nxt = ask(s, "a", 64, now=4.0)
    assert [g.transfer_id for g in nxt[:2]].count("small") == 1
    assert [g.transfer_id for g in nxt].count("small") == 10     # all of B within one batch


@pytest.mark.parametrize("weights, b_share", [({}, 0.5), ({"B": 3.0}, 0.75)])
def test_backlogged_beamlines_share_by_weight(weights, b_share):
    s = sched(weights=weights, limit_initial=10_000, limit_max=10_000)
    submit(s, "ta", [CS] * 2000, beamline="A")
    submit(s, "tb", [CS] * 2000, beamline="B")
    got = ask(s, "a", 400)
    assert abs([g.transfer_id for g in got].count("tb") / 400 - b_share) <= 0.01


def test_priority_orders_transfers_within_a_beamline():
    s = sched()
    submit(s, "low", [CS] * 3, priority=0)
    submit(s, "high", [CS] * 3, priority=9)
    assert [g.transfer_id for g in ask(s, "a", 6)] == ["high"] * 3 + ["low"] * 3


# -- duplicates and bad reports ------------------------------------------------------------------

def _one_lease():
    s = sched()
    submit(s, "t", [2 * CS])
    return s, ask(s, "a", 1)[0]


BAD_REPORTS = [
    ("unknown lease", lambda g: ok(g, lease_id="1-999"), "unknown lease"),
    ("forged lease id", lambda g: ok(g, lease_id="junk"), "unknown lease"),
    ("wrong offset", lambda g: ok(g, offset=1), "says offset=1"),
    ("wrong length", lambda g: ok(g, length=CS - 1), "length=4095"),
    ("short write", lambda g: ok(g, nbytes=CS - 1), "with 4095 of 4096 bytes"),
    ("other chunk", lambda g: ok(g, index=1, offset=CS), "is for file 1 chunk 0"),
    ("unknown transfer", lambda g: ok(g, transfer_id="nope"), "unknown transfer"),
    ("file outside transfer", lambda g: ok(g, file_id=77), "not part of transfer"),
    ("no such chunk", lambda g: ok(g, lease_id="1-999", index=9), "unknown lease"),
    ("adler32 too wide", lambda g: ok(g, adler32=1 << 32), "with 4096 of 4096 bytes"),
]


@pytest.mark.parametrize("name, make, reason", BAD_REPORTS, ids=[b[0] for b in BAD_REPORTS])
def test_bad_reports_are_rejected_and_change_nothing(name, make, reason):
    s, lease = _one_lease()
    before = s.snapshot(1.0)
    out = report(s, make(lease))
    assert len(out) == 1 and isinstance(out[0], ev.Rejected) and reason in out[0].reason
    assert s.snapshot(1.0) == before
    assert of(report(s, ok(lease)), ev.ChunkDone)     # the real report still works afterwards


DUPLICATES = [
    ("same report id", lambda g: ok(g)),
    ("same lease, new report id", lambda g: ok(g, rid="again")),
    ("failure after success", lambda g: failed(g, "timeout", True)),
]


@pytest.mark.parametrize("name, make", DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_duplicate_reports_change_nothing(name, make):
    s, lease = _one_lease()
    assert of(report(s, ok(lease)), ev.ChunkDone)
    before = s.snapshot(1.0)
    assert report(s, make(lease)) == [ev.Duplicate(make(lease).report_id)]
    assert s.snapshot(1.0) == before


def test_reports_for_a_finished_transfer_are_duplicates_not_errors():
    s = sched()
    submit(s, "t", [CS])
    (lease,) = ask(s, "a", 1)
    report(s, ok(lease))
    s.on_event(ev.DestinationVerified("t", 1, whole_adler(lease)), 2.0)
    assert report(s, ok(lease, rid="replayed")) == [ev.Duplicate("replayed")]


@pytest.mark.parametrize("spec, files, reason", [
    (ev.TransferSpec(""), (), "no id"),
    (ev.TransferSpec("x", chunk_size=0), (), "chunk size must be positive"),
    (ev.TransferSpec("x", verify="maybe"), (), "verify must be one of"),
    (ev.TransferSpec("x"), (ev.FileSpec("/a", "/b", -1),), "negative size"),
    (ev.TransferSpec("dup"), (), "already exists"),
])
def test_invalid_submissions_are_rejected(spec, files, reason):
    s = sched()
    submit(s, "dup", [CS])
    (out,) = s.on_event(ev.TransferSubmitted(spec, files), 0.0)
    assert isinstance(out, ev.Rejected) and reason in out.reason


@pytest.mark.parametrize("event, reason", [
    (ev.LeaseRequested("ghost", 3), "not registered"),
    (ev.AgentHeartbeat("ghost"), "not registered"),
    (ev.CancelTransfer("ghost"), "unknown transfer"),
])
def test_events_about_unknown_things_are_rejected(event, reason):
    (out,) = sched().on_event(event, 0.0)
    assert isinstance(out, ev.Rejected) and reason in out.reason


def test_cancel_revokes_leases_and_ends_the_transfer():
    s = sched()
    submit(s, "t", [CS] * 5)
    got = ask(s, "a", 2)
    out = s.on_event(ev.CancelTransfer("t", "operator"), 1.0)
    assert of(out, ev.RevokeLeases) == [ev.RevokeLeases("a", tuple(g.lease_id for g in got))]
    assert of(out, ev.TransferEnded) == [ev.TransferEnded("t", "cancelled", {"done": 0, "failed": 0, "cancelled": 5})]
    assert ask(s, "a", 10, now=2.0) == []
    assert report(s, ok(got[0])) == [ev.Duplicate(f"r-{got[0].lease_id}")]
    assert s.snapshot(2.0)["files"] == {("bl", "cancelled"): 5}


# -- restore -------------------------------------------------------------------------------------

class Store:
    """The test's stand-in for the shell's durable store: it keeps every Persist action."""

    def __init__(self) -> None:
        self.transfers: dict[str, ev.TransferSpec] = {}
        self.files: dict[int, ev.FileRecord] = {}
        self.chunks: dict[tuple[int, int], ev.ChunkRecord] = {}

    def apply(self, actions: list) -> list:
        for a in actions:
            if isinstance(a, ev.TransferAccepted):
                self.transfers[a.transfer.transfer_id] = a.transfer
                for i, f in enumerate(a.files):
                    fid = a.first_file_id + i
                    self.files[fid] = ev.FileRecord(fid, a.transfer.transfer_id, f.src, f.dst, f.size, f.mtime_ns)
            elif isinstance(a, ev.ChunkDone):
                self.chunks[a.file_id, a.index] = ev.ChunkRecord(a.file_id, a.index, a.adler32)
            elif isinstance(a, (ev.FileDone, ev.FileFailed)):
                rec = self.files[a.file_id]
                self.files[a.file_id] = ev.FileRecord(rec.file_id, rec.transfer_id, rec.src, rec.dst, rec.size,
                                                      rec.mtime_ns, "done" if isinstance(a, ev.FileDone) else "failed")
        return actions

    def restore(self) -> Scheduler:
        return Scheduler.restore(self.transfers.values(), self.files.values(), self.chunks.values(),
                                 rng=random.Random(1), epoch=2)


def test_restore_continues_where_the_persisted_facts_left_off():
    s, store = sched(), Store()
    store.apply(submit(s, "t", [3 * CS, CS, CS]))
    s.on_event(ev.AgentRegistered("a"), 0.0)
    got = leases_in(store.apply(s.on_event(ev.LeaseRequested("a", 4), 0.0)))
    store.apply(report(s, ok(got[0])))                               # file 1 chunk 0
    fin = of(store.apply(report(s, ok(got[3]))), ev.FinalizeFile)     # file 2 complete
    store.apply(s.on_event(ev.DestinationVerified("t", 2, fin[0].expected_adler32), 1.0))
    late = ok(got[1])                                                 # in flight at the "crash"

    r = store.restore()
    assert r.snapshot(0.0)["files"] == {("bl", "active"): 1, ("bl", "done"): 1, ("bl", "queued"): 1}
    assert report(r, ok(got[0], rid="replay")) == [ev.Duplicate("replay")]   # already persisted
    assert of(store.apply(report(r, late)), ev.ChunkDone)                    # old-epoch lease still counts
    again = ask(r, "a", 10, now=5.0)
    assert [(g.file_id, g.index) for g in again] == [(1, 2), (3, 0)]
    assert all(g.lease_id.startswith("2-") for g in again)
    out = store.apply(report(r, ok(again[0]), now=6.0))
    assert of(out, ev.FinalizeFile)[0].expected_adler32 == whole_adler(got[0])
    assert report(r, ok(again[1], rid="x", lease_id="2-999")) == [ev.Rejected("unknown lease '2-999'", "x")]


def test_restore_refinalizes_files_whose_chunks_are_all_done():
    s, store = sched(), Store()
    store.apply(submit(s, "t", [2 * CS]))
    s.on_event(ev.AgentRegistered("a"), 0.0)
    for lease in leases_in(s.on_event(ev.LeaseRequested("a", 2), 0.0)):
        store.apply(report(s, ok(lease)))
    r = store.restore()
    assert r.snapshot(0.0)["files"] == {("bl", "verifying"): 1}
    (fin,) = of(r.on_event(ev.Tick(), 0.0), ev.FinalizeFile)
    assert fin.file_id == 1 and fin.expected_adler32 == zlib.adler32(random.Random("/src/t/0").randbytes(2 * CS))


def test_restore_refuses_inconsistent_records():
    from domas.errors import InvalidMessage

    spec = ev.TransferSpec("t", chunk_size=CS)
    files = [ev.FileRecord(1, "t", "/a", "/b", 1), ev.FileRecord(3, "t", "/c", "/d", 1)]
    with pytest.raises(InvalidMessage, match="not contiguous"):
        Scheduler.restore([spec], files, [])
    with pytest.raises(InvalidMessage, match="outside its 1 chunks"):
        Scheduler.restore([spec], files[:1], [ev.ChunkRecord(1, 5, 1)])


@pytest.mark.parametrize("paths, prefix", [
    (["/data/a/x.h5", "/data/a/y.h5"], "/data/a/"),
    (["/data/ab", "/data/ac"], "/data/"),
    (["root://h:1094//d/x.h5"], "root://h:1094//d/"),
    (["x", "y"], ""),
    ([], ""),
])
def test_common_directory_of_paths(paths, prefix):
    from domas.controller.records import common_dir

    assert common_dir(paths) == prefix


def test_leases_carry_full_urls_whatever_prefixes_the_files_share():
    s = sched()
    files = (ev.FileSpec("root://s.example//raw/b1/x.h5", "/central/b1/x.h5", CS),
             ev.FileSpec("root://s.example//raw/b2/deep/y.h5", "/central/b2/deep/y.h5", CS),
             ev.FileSpec("/local/z", "/elsewhere/renamed", CS))
    s.on_event(ev.TransferSubmitted(ev.TransferSpec("t", chunk_size=CS), files), 0.0)
    got = ask(s, "a", 3)
    assert [(g.src_url, g.dst_url) for g in got] == [(f.src, ev.part_url(f.dst)) for f in files]


@pytest.mark.parametrize("kwargs, message", [
    ({"lease_seconds": 0}, "lease_seconds must be positive"),
    ({"limit_initial": 0}, "limit_min <= limit_initial"),
    ({"limit_min": 8, "limit_initial": 4}, "limit_min <= limit_initial"),
    ({"agent_round": 0}, "must be positive"),
])
def test_nonsense_settings_are_refused(kwargs, message):
    from domas.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        SchedulerConfig(**kwargs)


def test_an_agent_cannot_report_another_agents_lease_nor_hoard_the_queue():
    s = Scheduler(SchedulerConfig(max_agent_leases=3), rng=random.Random(0))
    s.on_event(ev.TransferSubmitted(ev.TransferSpec("t", chunk_size=10), (ev.FileSpec("/a", "/b", 100),)), 0.0)
    for name in ("a1", "a2"):
        s.on_event(ev.AgentRegistered(name), 0.0)
    out = s.on_event(ev.LeaseRequested("a1", 10**9), 0.0)
    leases = [lease for a in out if isinstance(a, ev.GrantLeases) for lease in a.leases]
    assert len(leases) == 3
    first = leases[0]
    report = ev.ChunkReport("r1", first.lease_id, "t", first.file_id, first.index, first.offset, first.length,
                            adler32=1, nbytes=first.length)
    out = s.on_event(ev.ChunkReported("a2", report), 0.0)
    assert any(isinstance(a, ev.Rejected) and "belongs to agent 'a1'" in a.reason for a in out)
    out = s.on_event(ev.ChunkReported("a1", report), 0.0)
    assert not any(isinstance(a, ev.Rejected) for a in out)
