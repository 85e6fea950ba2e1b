"""A blob body cut short resumes with Range (HTTP-level, no docker-registry).

A CDN or proxy may close a connection in the middle of a body, or stall until the client
times out. The download must keep what it has and continue from where it stopped, and a
connection whose body was abandoned must not carry the next request (its unread bytes
would be parsed as the next response).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowfs.registry.client import RegistryClient
from cowfs.registry.distribution import Repository

BLOB = os.urandom(3 << 20)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    cuts_left = 2
    stall = 0.0
    ranges: list[str]
    connections: set[tuple[str, int]]


class _Cutting(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.connections.add(self.client_address)
        if self.path != f"/v2/lib/x/blobs/{DIGEST}":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.server.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").rstrip("-"))
        body = BLOB[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        self.end_headers()
        if self.server.cuts_left > 0:
            self.server.cuts_left -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            time.sleep(self.server.stall)  # the client gives up first when stall > timeout
            self.close_connection = True  # then a clean close in the middle of the body
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Cutting)
    srv.ranges = []
    srv.connections = set()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_body_cut_short_resumes_with_range(server: _Server, tmp_path: Path) -> None:
    host = f"127.0.0.1:{server.server_address[1]}"
    client = RegistryClient(host, insecure=True, backoff=0.01)
    got: list[int] = []
    try:
        Repository(client, "lib/x").download_blob(DIGEST, str(tmp_path / "blob"),
                                                  size=len(BLOB), progress=got.append)
    finally:
        client.close()
    assert (tmp_path / "blob").read_bytes() == BLOB
    assert sum(got) == len(BLOB)  # nothing fetched twice
    first = len(BLOB) // 3
    assert server.ranges == [f"bytes={first}-", f"bytes={first + (len(BLOB) - first) // 3}-"]
    assert len(server.connections) == 3  # a cut connection is never reused


def test_stalled_body_times_out_and_resumes_on_a_new_connection(
        server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.cuts_left = 1
    server.stall = 1.5
    host = f"127.0.0.1:{server.server_address[1]}"
    client = RegistryClient(host, insecure=True, backoff=0.01, timeout=0.3)
    caplog.set_level("INFO", logger="cowfs.registry")
    try:
        Repository(client, "lib/x").download_blob(DIGEST, str(tmp_path / "blob"),
                                                  size=len(BLOB))
    finally:
        client.close()
    assert (tmp_path / "blob").read_bytes() == BLOB
    assert server.ranges == [f"bytes={len(BLOB) // 3}-"]
    # One resume, and no request ever sent on the abandoned connection.
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries == [], retries
