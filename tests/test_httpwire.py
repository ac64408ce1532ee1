"""The download client's own HTTP/1.1 wire (transfer/storage/httpwire.py) against real sockets:
a raw server that sends exactly the bytes a test gives it, and a real CONNECT proxy for https."""

from __future__ import annotations

import socket
import threading

import pytest

from domas.errors import ConnectionLost, NotFound, UsageError
from domas.transfer.storage.http import HTTPStorage
from domas.transfer.storage.httpwire import Pool
from tests.fixtures.httpfiles import http_files, https_files, loopback_certificate  # noqa: F401


class LoopbackServer:
    """A listening socket on a free loopback port; each connection is handed to `serve` in a thread."""

    def __init__(self, serve) -> None:
        self.connections, self._serve = 0, serve
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


class RawServer(LoopbackServer):
    """Answers the n-th request on any connection with answers[n] (bytes), then keeps the connection
    open (or closes it after the answer when the entry is a tuple (bytes, "close"))."""

    def __init__(self, answers: list) -> None:
        self.answers, self.requests = list(answers), []
        super().__init__(self._answer)

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while self.answers:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.requests.append(head.decode("latin-1"))
                answer = self.answers.pop(0)
                close = isinstance(answer, tuple)
                conn.sendall(answer[0] if close else answer)
                if close:
                    return


def pool(url: str) -> Pool:
    return Pool(url, headers={"User-Agent": "test"}, auth="", timeout=5, connect_timeout=5)


def test_chunked_lines_split_across_chunks_then_keep_alive_reuse():
    body = b'{"a": 1}\n{"b": 2}\n{"c": 3}'
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:5], body[5:13], body[13:])) + \
        b"0\r\nX-Trailer: t\r\n\r\n"
    srv = RawServer([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"])
    p = pool(srv.url)
    try:
        resp = p.request("GET", srv.url + "/list")
        assert list(resp.lines()) == [b'{"a": 1}\n', b'{"b": 2}\n', b'{"c": 3}']
        assert p.request("GET", srv.url + "/x").read_body() == b"hello"
        assert srv.connections == 1                 # the chunked answer ended cleanly: the connection was reused
        assert srv.requests[0].startswith("GET /list HTTP/1.1\r\nHost: 127.0.0.1:")
    finally:
        p.close()
        srv.close()


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once_on_a_new_one():
    # the first answer keeps the connection (no "Connection: close"), then the server closes it, as
    # its keep-alive timer would
    srv = RawServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "close"),
                     b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew"])
    p = pool(srv.url)
    try:
        assert p.request("GET", srv.url + "/a").read_body() == b"ok"
        assert len(p._idle[p.home]) == 1
        assert p.request("GET", srv.url + "/b").read_body() == b"new"
        assert srv.connections == 2 and len(srv.requests) == 2
    finally:
        p.close()
        srv.close()


@pytest.mark.parametrize("answer, why", [
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "close"), "inside a chunk"),
])
def test_malformed_answers_are_one_retriable_sentence_and_the_connection_is_dropped(answer, why):
    srv = RawServer([answer])
    p = pool(srv.url)
    try:
        with pytest.raises(ConnectionLost) as err:
            p.request("GET", srv.url + "/f").read_body()
        assert why in str(err.value) and "\n" not in str(err.value) and err.value.retriable
        assert not p._idle.get(p.home)
    finally:
        p.close()
        srv.close()


def test_a_body_cut_short_is_short_and_never_reused():
    srv = RawServer([(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n12345", "close")])
    p = pool(srv.url)
    try:
        with p.request("GET", srv.url + "/f") as resp:
            assert resp.read_exact(10) == b"12345" and resp.remaining == 5
        assert not p._idle.get(p.home)
    finally:
        p.close()
        srv.close()


@pytest.mark.parametrize("url", ["/a b", "/a\r\nX-Evil: 1", "/a\x00"])
def test_a_url_that_could_smuggle_a_header_is_refused_before_anything_is_sent(url):
    srv = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    p = pool(srv.url)
    try:
        with pytest.raises(UsageError):
            p.request("GET", srv.url + url)
        assert srv.requests == []
    finally:
        p.close()
        srv.close()


def test_head_204_and_304_have_no_body_and_keep_the_connection():
    srv = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n",
                     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
                     b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n"
                     b'{"error": "no such file."}\n'])
    store = HTTPStorage(srv.url)
    try:
        assert store.stat("/f").size == 99 and store.stat("/f").ident == '"x"'
        with store._pool.request("GET", srv.url + "/f", {"If-None-Match": '"x"'}) as resp:
            assert resp.status == 304 and resp.read_exact(10) == b""
        with pytest.raises(NotFound, match="no such file"):
            store.send("GET", "/g")
        assert srv.connections == 1
    finally:
        store.close()
        srv.close()


class ConnectProxy(LoopbackServer):
    """A real CONNECT tunnel proxy: splices bytes between the client and the host it names."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        super().__init__(self._tunnel)

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        target = head.split(b" ")[1].decode()
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def test_https_goes_through_the_proxys_connect_tunnel_verified_end_to_end(https_files, monkeypatch):  # noqa: F811
    (https_files.root / "t.bin").write_bytes(bytes(range(256)) * 400)
    proxy = ConnectProxy()
    for var in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("https_proxy", proxy.url)
    store = HTTPStorage(https_files.url)
    try:
        assert store.open_read("/t.bin").pread(1000, 5000) == (bytes(range(256)) * 400)[1000:6000]
        assert set(proxy.tunnels) == {https_files.url.split("://", 1)[1]}     # host:port, TLS inside
    finally:
        store.close()
        proxy.close()
