"""The client's exceptions: each subclasses the builtin a Python programmer would catch.

| server answer                      | exception                 | also a            |
|------------------------------------|---------------------------|-------------------|
| 400 bad input, 413 body too large  | InvalidRequestError       | ValueError        |
| 401 missing or wrong token         | AuthenticationError       | PermissionError   |
| 404 unknown thread, hold or budget | NotFoundError             | KeyError          |
| 409 budget exhausted (thread/scope)| BudgetExhaustedError      |                   |
| any other 409                      | ConflictError             |                   |
| 503, no answer, refused, timed out | LedgerConnectionError     | ConnectionError   |
| 5xx                                | ServerError               | RuntimeError      |

Every one is also a `BudgetLedgerError`, so `except BudgetLedgerError` catches them all.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from .scopes import BudgetWindow


class BudgetLedgerError(Exception):
    """The base of every error this client raises."""


class BudgetExhaustedError(BudgetLedgerError):
    """A budget does not fit the request (the reference's exception, same attributes).

    Its message contains "budget exhausted", as the reference's does. When a scope budget
    refused (not the thread's own), `scope` names it ("org:acme"), `window` is its window and
    `unit` is "tokens" or "usd"; `used` and `max_amount` are then in that unit (USD as exact
    `Decimal`s) and `max_tokens` is None for a dollar budget. For the thread's own refusal
    `scope`, `window` and `unit` are None.
    """

    def __init__(
        self,
        thread_id: str,
        used: int | Decimal,
        max_tokens: int | None,
        detail: str | None = None,
        *,
        scope: str | None = None,
        window: BudgetWindow | None = None,
        unit: str | None = None,
        max_amount: int | Decimal | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.used = used
        self.max_tokens = max_tokens
        self.scope = scope
        self.window = window
        self.unit = unit
        self.max_amount = max_tokens if max_amount is None else max_amount
        self.detail = detail or f"Thread {thread_id[:8]}... budget exhausted: {used}/{max_tokens} tokens used"
        super().__init__(self.detail)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable across processes (multiprocessing re-raises it in the parent).
        return (
            _rebuild_exhausted,
            (self.thread_id, self.used, self.max_tokens, self.detail, self.scope, self.window, self.unit,
             self.max_amount))


def _rebuild_exhausted(
    thread_id: str, used: int | Decimal, max_tokens: int | None, detail: str, scope: str | None,
    window: BudgetWindow | None, unit: str | None, max_amount: int | Decimal | None,
) -> BudgetExhaustedError:
    return BudgetExhaustedError(
        thread_id, used, max_tokens, detail, scope=scope, window=window, unit=unit, max_amount=max_amount)


def _exhausted_from_body(body: Mapping[str, Any], detail: str) -> BudgetExhaustedError:
    """The refusal of the thread's budget, or (with `scope`) of a scope budget."""
    scope = body.get("scope")
    if scope is None:
        return BudgetExhaustedError(str(body["threadId"]), int(body["used"]), int(body["maxTokens"]), detail)
    unit = str(body.get("unit", "tokens"))

    def amount(value: Any) -> int | Decimal:
        return int(value) if unit == "tokens" else Decimal(str(value))

    window = body.get("window")
    return BudgetExhaustedError(
        str(body["threadId"]), amount(body["used"]),
        int(body["maxTokens"]) if body.get("maxTokens") is not None else None, detail,
        scope=str(scope), window=BudgetWindow.from_json(window) if isinstance(window, Mapping) else None,
        unit=unit, max_amount=amount(body["max"]))


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
    if status == 409 and "threadId" in body and "used" in body and ("maxTokens" in body or "scope" in body):
        return _exhausted_from_body(body, detail)
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
