"""Retries that never double-count, a dead server, timeouts, and the token."""

from __future__ import annotations

import socket
import threading

import pytest

from budget_ledger import (
    AuthenticationError,
    LedgerConnectionError,
    LedgerTimeoutError,
    ThreadBudgetRegistry,
)

from .conftest import free_port


class FlakyProxy:
    """A TCP proxy in front of the server that mistreats the answer to the first request:
    `drop` closes the client's connection instead of passing it on; `delay` holds it until the
    client gives up on it (hangs up after its timeout). Every later connection is passed
    through untouched. The request itself always reaches the server, so the server has applied
    it: only the answer is lost. `first_answer` is what the server answered to it."""

    def __init__(self, upstream_port: int, mode: str) -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.connections = 0
        self.first_answer = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._serve, args=(client, first), daemon=True).start()

    def _serve(self, client: socket.socket, first: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        # The request goes through whole, however many segments it comes in.
        request_pump = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        request_pump.start()
        if not first:
            _pump(upstream, client)
            return
        self.first_answer = upstream.recv(65536)  # the server applied the request and answered
        if self.mode == "delay":
            request_pump.join()  # ends once the client has timed out and hung up
        _close(client, upstream)

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    _close(source, target)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        try:
            each.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        each.close()


@pytest.mark.parametrize("mode", ["drop", "delay"])
def test_a_lost_answer_is_retried_and_counted_once(server, thread_id: str, mode: str) -> None:
    # Proves exactly-once: the first consume reaches the server but its answer is dropped (or
    # comes after the timeout); the client retries with the same idempotency key, the server
    # replays, and the ledger counts the call once.
    proxy = FlakyProxy(server.port, mode)
    try:
        with ThreadBudgetRegistry(url=proxy.url, token=server.token, timeout=2.0, backoff_seconds=0.01) as flaky:
            budget = flaky.check_and_consume(thread_id, 100, 20, model="gpt-4o")
        assert proxy.first_answer.startswith(b"HTTP/1.1 200"), proxy.first_answer[:80]
        assert (budget.total_tokens, budget.request_count) == (120, 1)
        assert proxy.connections >= 2
    finally:
        proxy.close()
    with ThreadBudgetRegistry(url=server.url, token=server.token) as direct:
        assert direct.get_usage(thread_id)["request_count"] == 1


@pytest.mark.parametrize("mode", ["drop", "delay"])
def test_a_hold_whose_answer_is_lost_is_retried_and_held_once(server, thread_id: str, mode: str) -> None:
    # Proves exactly-once for holds: the first reserve reaches the server but its answer is lost;
    # the client retries with the same idempotency key, the server answers with the original
    # hold (the same reservation id), and the ledger holds the tokens once.
    proxy = FlakyProxy(server.port, mode)
    try:
        with ThreadBudgetRegistry(url=proxy.url, token=server.token, timeout=2.0, backoff_seconds=0.01) as flaky:
            hold = flaky.reserve(thread_id, 40)
        assert proxy.first_answer.startswith(b"HTTP/1.1 200"), proxy.first_answer[:80]
        assert proxy.connections >= 2
    finally:
        proxy.close()
    with ThreadBudgetRegistry(url=server.url, token=server.token) as direct:
        assert direct.get_budget(thread_id).held_tokens == 40
        direct.settle(hold.reservation_id, 30)
        assert direct.get_budget(thread_id).total_tokens == 30


def test_a_dead_server_is_a_connection_error_naming_the_url(thread_id: str) -> None:
    # Proves: nothing listening means LedgerConnectionError, a ConnectionError whose message
    # names the URL, after the bounded retries (even for a call without a key: it never left).
    url = f"http://127.0.0.1:{free_port()}"
    with ThreadBudgetRegistry(url=url, max_retries=2, backoff_seconds=0.01) as dead:
        with pytest.raises(ConnectionError) as refused:
            dead.consume(thread_id, 1)
        assert isinstance(refused.value, LedgerConnectionError)
        assert url in str(refused.value) and "3 attempt(s)" in str(refused.value)
        with pytest.raises(LedgerConnectionError):
            dead.reserve(thread_id, 1)


def test_a_silent_server_is_a_timeout(thread_id: str) -> None:
    # Proves: a server that accepts but never answers raises LedgerTimeoutError, both a
    # TimeoutError and a ConnectionError, after the retries.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:
            return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with ThreadBudgetRegistry(url=url, timeout=0.2, max_retries=1, backoff_seconds=0.01) as silent:
            with pytest.raises(TimeoutError) as timed_out:
                silent.get_usage(thread_id)
        assert isinstance(timed_out.value, LedgerTimeoutError) and isinstance(timed_out.value, ConnectionError)
        assert url in str(timed_out.value)
    finally:
        listener.close()
        for each in held:
            each.close()


def test_the_token_is_required(server, monkeypatch: pytest.MonkeyPatch, thread_id: str) -> None:
    # Proves: no token or a wrong one is an AuthenticationError (a PermissionError) with the
    # server's detail; nothing is recorded; the right token works.
    monkeypatch.delenv("BUDGET_LEDGER_TOKEN", raising=False)
    for token in (None, "wrong"):
        with ThreadBudgetRegistry(url=server.url, token=token) as registry:
            with pytest.raises(PermissionError) as refused:
                registry.consume(thread_id, 5)
            assert isinstance(refused.value, AuthenticationError)
            assert "Bearer" in str(refused.value) and refused.value.status == 401
    with ThreadBudgetRegistry(url=server.url, token=server.token) as registry:
        assert registry.get_usage(thread_id) is None
