"""The client's exceptions: each subclasses the builtin a Python programmer would catch.

| server answer                      | exception                 | also a            |
|------------------------------------|---------------------------|-------------------|
| 400 bad input, 413 body too large  | InvalidRequestError       | ValueError        |
| 401 missing or wrong token         | AuthenticationError       | PermissionError   |
| 404 unknown thread or reservation  | NotFoundError             | KeyError          |
| 409 with threadId/used/maxTokens   | BudgetExhaustedError      |                   |
| any other 409                      | ConflictError             |                   |
| 503, no answer, refused, timed out | LedgerConnectionError     | ConnectionError   |
| 5xx                                | ServerError               | RuntimeError      |

Every one is also a `BudgetLedgerError`, so `except BudgetLedgerError` catches them all.
"""

from __future__ import annotations

from typing import Any, Mapping


class BudgetLedgerError(Exception):
    """The base of every error this client raises."""


class BudgetExhaustedError(BudgetLedgerError):
    """A thread's budget does not fit the request (the reference's exception, same attributes).

    Its message contains "budget exhausted", as the reference's does.
    """

    def __init__(self, thread_id: str, used: int, max_tokens: int, detail: str | None = None) -> None:
        self.thread_id = thread_id
        self.used = used
        self.max_tokens = max_tokens
        self.detail = detail or f"Thread {thread_id[:8]}... budget exhausted: {used}/{max_tokens} tokens used"
        super().__init__(self.detail)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable across processes (multiprocessing re-raises it in the parent).
        return (type(self), (self.thread_id, self.used, self.max_tokens, self.detail))


class HTTPStatusError(BudgetLedgerError):
    """An error answer from the server: its status, `error` and `detail`."""

    def __init__(self, status: int, error: str, detail: str, *, method: str = "", url: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(detail)

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status} from {self.method} {self.url})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.status, self.error, self.detail, self.method, self.url))


def _rebuild(kind: type[HTTPStatusError], status: int, error: str, detail: str, method: str, url: str) -> HTTPStatusError:
    return kind(status, error, detail, method=method, url=url)


class InvalidRequestError(HTTPStatusError, ValueError):
    """400 or 413: the server refused the input; `detail` names the field and why."""


class AuthenticationError(HTTPStatusError, PermissionError):
    """401: the server needs `Authorization: Bearer TOKEN` (pass `token=` or set $BUDGET_LEDGER_TOKEN)."""


class NotFoundError(HTTPStatusError, KeyError):
    """404: the thread, reservation or model price is not known."""

    # KeyError's str() quotes its argument; the server's sentence reads better.
    __str__ = HTTPStatusError.__str__


class ConflictError(HTTPStatusError):
    """409 other than exhaustion: a hold no longer live, an idempotency key reused for another
    request, a price already set at that time, the ledger's capacity reached."""


class ServerError(HTTPStatusError, RuntimeError):
    """5xx other than 503: the server failed (its detail says how); the request may not have been applied."""


class LedgerConnectionError(BudgetLedgerError, ConnectionError):
    """No usable answer from the ledger at `url`: refused, dropped, timed out, or 503 busy, after the retries."""

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),), {"url": self.url})


class LedgerTimeoutError(LedgerConnectionError, TimeoutError):
    """The ledger at `url` did not answer within the timeout, after the retries."""


def error_from_response(status: int, body: Mapping[str, Any] | None, *, method: str, url: str) -> BudgetLedgerError:
    """The exception for an error answer `status` with the JSON `body` the server sent."""
    body = body or {}
    error = str(body.get("error", "") or f"HTTP {status}")
    detail = str(body.get("detail", "") or error)
    if status == 409 and "threadId" in body and "used" in body and "maxTokens" in body:
        return BudgetExhaustedError(str(body["threadId"]), int(body["used"]), int(body["maxTokens"]), detail)
    kinds: dict[int, type[HTTPStatusError]] = {
        400: InvalidRequestError,
        413: InvalidRequestError,
        401: AuthenticationError,
        404: NotFoundError,
        409: ConflictError,
    }
    if status == 503:
        return LedgerConnectionError(f"the budget ledger at {url} is unavailable: {detail}", url=url)
    kind = kinds.get(status, ServerError if status >= 500 else HTTPStatusError)
    return kind(status, error, detail, method=method, url=url)
