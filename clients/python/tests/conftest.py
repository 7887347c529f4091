"""Fixtures: one real `budget-ledger serve` for the whole session, on a fresh ledger.

The fixture builds nothing: it runs the binary `make test` (or `swift build`) built,
`$BUDGET_LEDGER_BIN` or `<repo>/.build/debug/budget-ledger`, on 127.0.0.1 at a free port with a
random token, waits for `/healthz`, and stops it at the end of the session. The server is also
asked by the kernel to stop if this process dies first (PR_SET_PDEATHSIG), so it never outlives
the test run.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from budget_ledger import ThreadBudgetRegistry, UsageTracker, reset_budget_registry, reset_usage_tracker

REPOSITORY = Path(__file__).resolve().parents[3]
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    port: int
    database: Path
    binary: Path


def _binary() -> Path:
    configured = os.environ.get("BUDGET_LEDGER_BIN")
    binary = Path(configured) if configured else REPOSITORY / ".build" / "debug" / "budget-ledger"
    if not os.access(binary, os.X_OK):
        pytest.exit(
            f"no budget-ledger binary at {binary}: run `swift build` (or `make test`) first, "
            "or set BUDGET_LEDGER_BIN", returncode=2)
    return binary


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to the server when the test process dies, however it dies.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_server(binary: Path, folder: Path, token: str) -> tuple[subprocess.Popen[bytes], int]:
    """Starts `serve` on a fresh ledger in `folder` and waits until it answers /healthz."""
    database = folder / "ledger.db"
    log = open(folder / "server.log", "ab")
    for _ in range(5):  # another process may take the free port first
        port = free_port()
        process = subprocess.Popen(
            [str(binary), "serve", "--db", str(database), "--host", "127.0.0.1", "--port", str(port), "--token", token],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, env={**os.environ, "LOG_LEVEL": "warning"})
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(port):
                return process, port
            time.sleep(0.05)
        stop_server(process)
    log.close()
    pytest.exit(f"budget-ledger serve did not start; its log: {(folder / 'server.log').read_text()[-2000:]}", returncode=2)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # graceful: requests in flight finish, the ledger closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = _binary()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="budget-ledger-pytest-") as directory:
        folder = Path(directory)
        process, port = start_server(binary, folder, token)
        try:
            yield Server(f"http://127.0.0.1:{port}", token, port, folder / "ledger.db", binary)
        finally:
            stop_server(process)


@pytest.fixture
def registry(server: Server) -> Iterator[ThreadBudgetRegistry]:
    """A registry on the session's server; the default max is put back to 100,000 afterwards."""
    with ThreadBudgetRegistry(url=server.url, token=server.token) as registry:
        yield registry
        registry.configure(100_000)


@pytest.fixture
def tracker(server: Server) -> Iterator[UsageTracker]:
    with UsageTracker(url=server.url, token=server.token, price_refresh_seconds=0) as tracker:
        yield tracker


@pytest.fixture(autouse=True)
def _no_singletons_leak() -> Iterator[None]:
    yield
    reset_budget_registry()
    reset_usage_tracker()


@pytest.fixture
def thread_id() -> str:
    """A thread id no other test uses (the session shares one ledger)."""
    return f"thread-{uuid.uuid4().hex[:12]}"
