"""A byte range fetched from an HTTP source is received into one buffer: `domas get` holds about one
copy of each chunk in flight, not the body's pieces plus their joined copy (issue 11: peak RSS at 16
streams over a shaped 1 Gbit/s link was 224-244 MiB, 130-135 MiB after; benchmarks/bench_get_link.py).

Real parts: a threaded http.server on a free loopback port answering HEAD and ranged GETs from a
bytes object made before tracing starts, and the real HTTPStorage reading from it.
"""

from __future__ import annotations

import http.client
import os
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from domas.errors import ConnectionLost

MiB = 1024 * 1024
BODY = os.urandom(8 * MiB)


class _Handler(BaseHTTPRequestHandler):
    short = False                       # send one byte less than the range asks for

    def log_message(self, *args) -> None:
        pass

    def _head(self, status: int, length: int, extra: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"v1"')
        self.send_header("Accept-Ranges", "bytes")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._head(200, len(BODY), {})

    def do_GET(self) -> None:
        first, last = (int(x) for x in self.headers["Range"].removeprefix("bytes=").split("-"))
        self._head(206, last + 1 - first, {"Content-Range": f"bytes {first}-{last}/{len(BODY)}"})
        end = last + (0 if self.short else 1)
        self.wfile.write(memoryview(BODY)[first:end])          # no copy on the server side
        if self.short:
            self.close_connection = True


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    _Handler.short = False


def test_a_range_is_received_into_one_buffer(server):
    from domas.transfer.storage.http import HTTPStorage

    store = HTTPStorage(server)
    try:
        reader = store.open_read("/f")
        assert reader.pread(0, 4096) == BODY[:4096]          # connection and pool made before tracing
        tracemalloc.start()
        try:
            data = reader.pread(0, len(BODY))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert data == BODY
        assert peak < 1.25 * len(BODY), f"peak {peak / MiB:.1f} MiB for an 8 MiB range"   # was >= 16 MiB
        assert reader.pread(3 * MiB + 5, 1000) == BODY[3 * MiB + 5:3 * MiB + 1005]
    finally:
        store.close()


def test_a_short_body_is_a_lost_connection(server):
    from domas.transfer.storage.http import HTTPStorage

    _Handler.short = True
    store = HTTPStorage(server)
    try:
        with pytest.raises(ConnectionLost, match="999 bytes"):
            store.open_read("/f").pread(10, 1000)
    finally:
        store.close()


class _OneShotHandler(_Handler):
    """HTTP/1.1 without `Connection: close`, yet the server closes every connection after one
    answer (as a keep-alive timeout does): the client's pooled connection is stale when reused."""
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def handle(self) -> None:
        self.handle_one_request()           # then the socket is closed, without saying so


def test_a_keep_alive_connection_the_server_closed_is_replaced_not_an_error():
    from domas.transfer.storage.http import HTTPStorage

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OneShotHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    store = HTTPStorage(f"http://127.0.0.1:{httpd.server_address[1]}")
    try:
        reader = store.open_read("/f")
        for offset in (0, MiB, 5 * MiB):
            assert reader.pread(offset, 1000) == BODY[offset:offset + 1000]
        assert _OneShotHandler.connections == 4              # HEAD, then one new connection per range
    finally:
        store.close()
        httpd.shutdown()
        httpd.server_close()


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: takes the absolute URL, fetches it, answers with what it got."""
    seen: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        u = urlsplit(self.path)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request(self.command, u.path, headers={k: v for k, v in self.headers.items()
                                                    if k.lower() not in ("connection", "proxy-connection")})
        r = conn.getresponse()
        body = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "server", "date"):
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        conn.close()

    do_GET = do_HEAD = _forward


def test_the_environments_http_proxy_is_used_unless_no_proxy_names_the_host(server, monkeypatch):
    from domas.transfer.storage.http import HTTPStorage
    from domas.transfer.storage.httpwire import proxy_for

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        store = HTTPStorage(server)
        assert store.open_read("/f").pread(7, 1000) == BODY[7:1007]
        assert _ForwardProxy.seen == [f"HEAD {server}/f", f"GET {server}/f"]
        store.close()
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
        store = HTTPStorage(server)
        assert store.open_read("/f").pread(0, 10) == BODY[:10]
        assert len(_ForwardProxy.seen) == 2                       # direct this time
        store.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
    env = {"https_proxy": "proxy.example:3128", "no_proxy": ".heps.example"}
    assert proxy_for(("https", "data.other.org", 443), env) == ("proxy.example", 3128)
    assert proxy_for(("https", "data.heps.example", 443), env) is None
    assert proxy_for(("http", "data.other.org", 80), env) is None
