"""HTTP/1.1 to the ledger: a small thread-safe pool of keep-alive connections, and retries.

The standard library only (`http.client`). A `Transport` is safe to share between threads, as a
`requests.Session` or an `httpx.Client` is; each call borrows one connection for one request.

Retries: a request marked `replay_safe` (a read, a write with an idempotency key, a PUT that
sets a value) is sent again after a dropped connection, a timeout or a 503, with the same
body (so the same idempotency key), at most `max_retries` times with exponential backoff. Any
other request is sent again only when it provably never left this process (the connection
could not be opened), so a lost answer never applies it twice.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from .errors import LedgerConnectionError, LedgerTimeoutError, error_from_response

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0

#: Failures after which the request may or may not have reached the server.
_TRANSIENT = (ConnectionError, TimeoutError, http.client.HTTPException, OSError)


@dataclass(frozen=True)
class Response:
    """A finished answer: status, headers (lowercase names) and the body, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    method: str
    url: str

    def json(self) -> Any:
        """The body as JSON; fractions as `Decimal`, so prices and costs stay exact."""
        if not self.body:
            return None
        return json.loads(self.body, parse_float=Decimal)


@dataclass
class _Pool:
    """Idle connections of one process (a forked child starts with none of its parent's)."""

    pid: int
    idle: list[http.client.HTTPConnection] = field(default_factory=list)


class Transport:
    """Requests to one ledger server over pooled keep-alive connections, with bounded retries.

    Args:
        url: the server's base URL; default `$BUDGET_LEDGER_URL`, else `http://127.0.0.1:8765`.
        token: the bearer token; default `$BUDGET_LEDGER_TOKEN` (none when unset).
        timeout: seconds to wait to connect and for each read of an answer.
        max_connections: connections kept open at most (calls beyond wait for one).
        max_retries: how many times a failed request is sent again.
        backoff_seconds: the first wait between attempts; it doubles each time (up to 1 s), with jitter.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    ) -> None:
        self.url = (url or os.environ.get("BUDGET_LEDGER_URL") or DEFAULT_URL).rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url must be http://host[:port] or https://host[:port] (got {self.url!r})")
        if max_connections < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("max_connections must be ≥ 1, max_retries ≥ 0 and timeout > 0")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base_path = parsed.path.rstrip("/")
        token = token if token is not None else os.environ.get("BUDGET_LEDGER_TOKEN")
        self._headers = {"Accept": "application/json", "User-Agent": "budget-ledger-python"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pool = _Pool(pid=os.getpid())
        self._closed = False

    # MARK: requests

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        replay_safe: bool,
        expected: tuple[int, ...] = (200,),
    ) -> Response:
        """Sends one request and returns the answer whose status is in `expected`.

        Raises:
            BudgetLedgerError subclasses for error answers (see `errors`), `LedgerConnectionError`
            (a `ConnectionError`) naming the URL when no answer came after the retries.
        """
        payload = None if body is None else json.dumps(body, separators=(",", ":"), default=_json_default).encode()
        all_headers = dict(self._headers)
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        if headers:
            all_headers.update(headers)
        target = self._base_path + path
        url = self.url + path
        attempt = 0
        while True:
            try:
                response = self._send_once(method, target, payload, all_headers, url, replay_safe)
            except _Retry as retry:
                if not retry.retryable or attempt >= self.max_retries:
                    raise retry.final(method, url, attempt + 1) from retry.cause
                self._sleep_before_retry(attempt)
                attempt += 1
                continue
            if response.status == 503 and replay_safe and attempt < self.max_retries:
                self._sleep_before_retry(attempt)
                attempt += 1
                continue
            if response.status in expected:
                return response
            try:
                decoded = response.json()
            except ValueError:
                decoded = None
            raise error_from_response(
                response.status, decoded if isinstance(decoded, dict) else None, method=method, url=url)

    def _send_once(
        self, method: str, target: str, payload: bytes | None, headers: Mapping[str, str], url: str, replay_safe: bool
    ) -> Response:
        connection, reused = self._acquire()
        keep = False
        sent = False
        try:
            try:
                if connection.sock is None:
                    connection.connect()
                connection.request(method, target, body=payload, headers=dict(headers))
                sent = True
                answer = connection.getresponse()
                body = answer.read()
            except _TRANSIENT as error:
                # A request that never left (no connection could be opened) is always safe to repeat.
                raise _Retry(error, url, retryable=replay_safe or not sent and not reused) from error
            keep = not answer.will_close
            headers_read = {name.lower(): value for name, value in answer.getheaders()}
            return Response(answer.status, headers_read, body, method, url)
        finally:
            self._release(connection, keep)

    def _sleep_before_retry(self, attempt: int) -> None:
        delay = min(BACKOFF_MAX_SECONDS, self.backoff_seconds * (2**attempt))
        time.sleep(delay * (0.5 + random.random() / 2))

    # MARK: the pool

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._closed:
            raise LedgerConnectionError(f"this client of the budget ledger at {self.url} is closed", url=self.url)
        if not self._slots.acquire(timeout=self.timeout * (self.max_retries + 1)):
            raise LedgerTimeoutError(
                f"no free connection to the budget ledger at {self.url} "
                f"({self.max_connections} in use for {self.timeout * (self.max_retries + 1)} s)",
                url=self.url)
        with self._lock:
            pool = self._current_pool()
            while pool.idle:
                connection = pool.idle.pop()
                if not _dropped(connection):
                    return connection, True
                connection.close()
        return self._new_connection(), False

    def _release(self, connection: http.client.HTTPConnection, keep: bool) -> None:
        with self._lock:
            pool = self._current_pool()
            if keep and not self._closed and connection.sock is not None:
                pool.idle.append(connection)
            else:
                connection.close()
        self._slots.release()

    def _current_pool(self) -> _Pool:
        # After fork the child must not share its parent's sockets: it starts an empty pool.
        if self._pool.pid != os.getpid():
            self._pool = _Pool(pid=os.getpid())
        return self._pool

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        return _NoDelayConnection(self._host, self._port, timeout=self.timeout)

    def close(self) -> None:
        """Closes the idle connections; later requests raise `LedgerConnectionError`."""
        with self._lock:
            self._closed = True
            for connection in self._pool.idle:
                connection.close()
            self._pool.idle.clear()

    def reopen(self) -> None:
        """Accepts requests again after `close()` (used when a pool is reset after fork)."""
        with self._lock:
            self._closed = False


class _NoDelayConnection(http.client.HTTPConnection):
    """An HTTP connection with Nagle's algorithm off: each request is one small write that must
    not wait for the previous answer's ACK (a 40 ms stall per keep-alive request otherwise)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Retry(Exception):
    """A failed attempt: `retryable` when sending it again cannot apply it twice."""

    def __init__(self, cause: BaseException, url: str, *, retryable: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.url = url
        self.retryable = retryable

    def final(self, method: str, url: str, attempts: int) -> LedgerConnectionError:
        kind = LedgerTimeoutError if isinstance(self.cause, TimeoutError) else LedgerConnectionError
        reason = f"{type(self.cause).__name__}: {self.cause}" if str(self.cause) else type(self.cause).__name__
        unsure = "" if self.retryable else "; it may or may not have been applied (not retried: it has no idempotency key)"
        return kind(
            f"cannot reach the budget ledger at {url} ({method}, {attempts} attempt(s)): {reason}{unsure}", url=url)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the server (readable at rest means EOF)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def quote(segment: str) -> str:
    """One path segment (an id or a model name), percent-encoded, a slash too.

    Raises:
        ValueError: the segment is empty (the URL would name another endpoint).
    """
    if not isinstance(segment, str) or not segment:
        raise ValueError(f"an id or model name must be a non-empty string (got {segment!r})")
    return urllib.parse.quote(segment, safe="")
