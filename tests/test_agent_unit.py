"""Agent pieces without a controller: leased chunk copy, report spool, /metrics."""

from __future__ import annotations

import os
import urllib.request
import zlib

import xxhash

from domas.agent.accounting import Accounting
from domas.agent.metrics import AgentCollector
from domas.agent.spool import ReportSpool
from domas.agent.worker import run_lease
from domas.metrics import serve_metrics
from domas.v1 import domas_pb2 as pb


def lease_for(src, dst, offset, length, size, **kw) -> pb.ChunkLease:
    st = os.stat(src)
    return pb.ChunkLease(lease_id="L1", transfer_id="T1", file_id=7, chunk_index=offset // max(length, 1),
                         offset=offset, length=length, src_url=str(src), dst_url=str(dst), file_size=size,
                         source=pb.SourceIdentity(size=st.st_size, mtime_ns=st.st_mtime_ns), **kw)


def test_leased_chunks_assemble_the_file_with_right_sums(tmp_path):
    data = os.urandom(300_000)
    src, dst = tmp_path / "src", tmp_path / "out" / ".dst.part"
    src.write_bytes(data)
    acct = Accounting()
    results = [run_lease(lease_for(src, dst, off, min(100_000, len(data) - off), len(data)), acct)
               for off in (200_000, 0, 100_000)]
    assert all(not r.error_kind for r in results)
    assert dst.read_bytes() == data
    for r in results:
        piece = data[r.offset:r.offset + r.length]
        assert r.adler32 == zlib.adler32(piece) and r.xxh3 == xxhash.xxh3_64_intdigest(piece)
    assert acct.chunks_done == 3 and acct.bytes_verified == len(data)
    assert len({r.report_id for r in results}) == 3


def test_changed_source_and_impossible_range_are_reported_not_raised(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    lease = lease_for(src, tmp_path / "d", 0, 1000, 1000)
    src.write_bytes(b"y" * 1001)
    r = run_lease(lease, Accounting())
    assert r.error_kind == "source_changed" and r.retriable and r.error_side == pb.ERROR_SIDE_SOURCE
    bad = run_lease(lease_for(src, tmp_path / "d", 900, 500, 1001), Accounting())
    assert bad.error_kind == "impossible_range" and not bad.retriable
    missing = run_lease(pb.ChunkLease(lease_id="L", src_url=str(tmp_path / "nope"), dst_url=str(tmp_path / "d"),
                                      length=1, file_size=1), Accounting())
    assert missing.error_kind == "not_found" and missing.error_side == pb.ERROR_SIDE_SOURCE


def test_spool_survives_reopen_and_keeps_order(tmp_path):
    spool = ReportSpool(tmp_path / "s.sqlite")
    for i in range(5):
        spool.put(f"r{i}", f"payload{i}".encode())
    spool.put("r1", b"again")              # same id: kept once
    spool.remove(["r0", "r3"])
    spool.close()
    again = ReportSpool(tmp_path / "s.sqlite")
    assert [rid for rid, _ in again.pending()] == ["r1", "r2", "r4"]
    assert again.pending()[0][1] == b"payload1"
    assert again.pending(older_than=3600) == []
    assert len(again) == 3


def test_metrics_endpoint_serves_the_accounting(tmp_path):
    acct = Accounting()
    acct.observe_chunk(0.3, 1 << 20, ok=True, verified=True)
    acct.observe_chunk(75.0, 1 << 20, ok=False)
    acct.add_error("timeout")
    server, port = serve_metrics("127.0.0.1:0", AgentCollector(acct, lambda: 4, lambda: True))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'domas_agent_bytes_total{direction="write"} 1.048576e+06' in text
    assert 'domas_agent_chunks_total{result="error"} 1.0' in text
    assert 'domas_agent_chunk_duration_seconds_bucket{le="120.0"} 2.0' in text
    assert 'domas_agent_errors_total{class="timeout"} 1.0' in text
    assert "domas_agent_spooled_reports 4.0" in text
