"""HTTP transport for the OCI distribution API: auth, retries, redirects.

Owns: one registry endpoint (scheme + host), its credentials and tokens, and
retrying requests. Knows nothing about images or the store. Thread-safe: each
thread gets its own connection; tokens are shared under a lock.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import RegistryError
from .auth import Challenge, basic_header, find_credentials, parse_challenge

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_NET_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError, OSError)
USER_AGENT = "cowfs/0.1"


def is_loopback(host: str) -> bool:
    """True if ``host`` (without port) names this machine."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class Response:
    """A response whose body is read lazily (``read``/``iter``) or eagerly (``data``)."""

    status: int
    headers: Mapping[str, str]
    raw: http.client.HTTPResponse | None
    data: bytes = b""
    url: str = ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def iter_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        if self.raw is None:
            if self.data:
                yield self.data
            return
        while True:
            chunk = self.raw.read(size)
            if not chunk:
                return
            yield chunk

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise RegistryError(f"registry sent invalid JSON ({exc})") from None


@dataclass
class RegistryClient:
    """A client for one registry host.

    Args:
        host: ``host[:port]``.
        insecure: use plain HTTP; allowed only to loopback unless ``allow_remote_http``.
        creds: explicit ``user:password`` (else the auth files).
    """

    host: str
    insecure: bool = False
    creds: str | None = None
    allow_remote_http: bool = False
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.3
    _tokens: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)
    _all_conns: list[http.client.HTTPConnection] = field(default_factory=list)
    _credentials: tuple[str, str] | None = None
    _basic: bool = False

    def __post_init__(self) -> None:
        if self.insecure and not self.allow_remote_http and not is_loopback(self.host):
            raise RegistryError(
                f"refusing plain HTTP to {self.host}: --insecure is allowed only for "
                "loopback registries"
            )
        self._credentials = find_credentials(self.host, self.creds)

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    # --- connections ----------------------------------------------------------------
    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conns: dict[tuple[str, str], http.client.HTTPConnection] = getattr(
            self._local, "conns", {})
        self._local.conns = conns
        conn = conns.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    netloc, timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            conns[key] = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    def abandon(self, resp: Response) -> None:
        """Close a streamed response whose body was not read to the end, and this
        thread's connection it came on (its unread bytes would corrupt the next reply)."""
        if resp.raw is None or resp.raw.isclosed():
            return
        resp.raw.close()
        parts = urllib.parse.urlsplit(resp.url)
        self._drop_conn(parts.scheme, parts.netloc)

    def _drop_conn(self, scheme: str, netloc: str) -> None:
        conns = getattr(self._local, "conns", {})
        conn = conns.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    # --- auth -----------------------------------------------------------------------
    def _authorization(self, scope: str | None) -> str | None:
        with self._lock:
            if self._basic and self._credentials:
                return basic_header(self._credentials)
            token = self._tokens.get(scope or "")
        return f"Bearer {token}" if token else None

    def _authenticate(self, challenge: Challenge, scope: str | None) -> None:
        if challenge.scheme == "basic":
            if not self._credentials:
                raise RegistryError(f"{self.host} requires a login (basic auth); no credentials "
                                    "found (use --creds or an auth file)")
            with self._lock:
                self._basic = True
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryError(f"{self.host}: unsupported auth challenge {challenge.scheme!r}")
        query = {"service": challenge.params.get("service", "")}
        wanted = challenge.params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        url = challenge.params["realm"] + "?" + urllib.parse.urlencode(query)
        headers = {"User-Agent": USER_AGENT}
        if self._credentials:
            headers["Authorization"] = basic_header(self._credentials)
        resp = self._send_url("GET", url, headers, None)
        if resp.status != 200:
            raise RegistryError(f"{self.host}: token request failed with HTTP {resp.status}")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"{self.host}: token endpoint returned no token")
        with self._lock:
            self._tokens[scope or ""] = token

    # --- requests -------------------------------------------------------------------
    def _send_url(self, method: str, url: str, headers: dict[str, str],
                  body: bytes | BinaryIO | None, *, stream: bool = False) -> Response:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._conn(parts.scheme, parts.netloc)
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
        except _NET_ERRORS:
            self._drop_conn(parts.scheme, parts.netloc)
            raise
        hdrs = {k: v for k, v in raw.getheaders()}
        if stream and raw.status in (200, 206):
            return Response(raw.status, hdrs, raw, url=url)
        data = raw.read()
        if raw.will_close:
            self._drop_conn(parts.scheme, parts.netloc)
        return Response(raw.status, hdrs, None, data, url=url)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | BinaryIO | None = None, scope: str | None = None,
                stream: bool = False, ok: tuple[int, ...] = (200,)) -> Response:
        """Send a request with auth, retries (5xx, resets) and redirects.

        ``path`` is relative to the registry (``/v2/...``) or an absolute URL (upload
        locations). Raises RegistryError for a status outside ``ok`` (404 included).
        """
        url = path if "://" in path else f"{self.scheme}://{self.host}{path}"
        attempt = 0
        authed_once = False
        redirects = 0
        while True:
            hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
            same_host = urllib.parse.urlsplit(url).netloc == self.host
            auth = self._authorization(scope) if same_host else None
            if auth:
                hdrs["Authorization"] = auth
            if body is not None and hasattr(body, "seek"):
                body.seek(0)
            try:
                resp = self._send_url(method, url, hdrs, body, stream=stream)
            except _NET_ERRORS as exc:
                if attempt >= self.retries:
                    raise RegistryError(f"{method} {url}: {exc}") from exc
                attempt += 1
                log.info("retrying %s %s after %s (attempt %d)", method, url, exc, attempt)
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if resp.status == 401 and not authed_once:
                challenge = resp.header("WWW-Authenticate")
                if not challenge:
                    raise RegistryError(f"{method} {url}: unauthorized")
                self._authenticate(parse_challenge(challenge), scope)
                authed_once = True
                continue
            if resp.status in (301, 302, 303, 307, 308) and redirects < 5:
                loc = resp.header("Location")
                if not loc:
                    raise RegistryError(f"{method} {url}: redirect without Location")
                url = urllib.parse.urljoin(url, loc)
                redirects += 1
                if resp.status == 303:
                    method, body = "GET", None
                continue
            if resp.status in _RETRY_STATUS and attempt < self.retries:
                attempt += 1
                if resp.raw is not None:
                    resp.raw.close()
                log.info("retrying %s %s after HTTP %d (attempt %d)", method, url,
                         resp.status, attempt)
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if resp.status not in ok:
                detail = _error_detail(resp)
                if resp.status == 401:
                    raise RegistryError(f"{method} {url}: authentication failed{detail}")
                raise RegistryError(f"{method} {url}: HTTP {resp.status}{detail}")
            return resp

    def close(self) -> None:
        """Close every connection, including those opened by worker threads."""
        with self._lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local.conns = {}


def _error_detail(resp: Response) -> str:
    try:
        errs = json.loads(resp.data).get("errors") or []
        if errs:
            return f" ({errs[0].get('code', '')}: {errs[0].get('message', '')})"
    except (ValueError, AttributeError):
        pass
    return ""
