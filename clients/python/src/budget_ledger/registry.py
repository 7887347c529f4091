"""`ThreadBudgetRegistry`: the reference's in-memory registry, backed by the durable ledger.

Swap `from xml_pipeline.message_bus.budget_registry import …` for `from budget_ledger import …`.
The budgets live in the ledger server, so every process and every client sees the same ones;
the default max per thread is the ledger's, shared by every client too.
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any, Mapping

from .budget import Hold, Reservation, ThreadBudget
from .errors import BudgetExhaustedError, NotFoundError
from .scopes import ScopeBudget, budget_body
from .transport import (
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    Transport,
    quote,
)

DEFAULT_HOLD_SECONDS = 300


class ThreadBudgetRegistry:
    """Per-thread token budgets in the ledger at `url`; thread-safe, share one per process.

    Args:
        max_tokens_per_thread: when given, sets the ledger's default max for threads opened from
            now on (stored in the ledger, so it applies to every client); None keeps the stored one.
        url: the server; default `$BUDGET_LEDGER_URL`, else `http://127.0.0.1:8765`.
        token: the bearer token; default `$BUDGET_LEDGER_TOKEN`.
        timeout: seconds to wait for the server on each attempt.
        max_connections, max_retries, backoff_seconds: see `Transport`.
        transport: share another client's connections instead of opening a pool of its own.
    """

    def __init__(
        self,
        max_tokens_per_thread: int | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        transport: Transport | None = None,
    ) -> None:
        self._transport = transport or Transport(
            url, token, timeout=timeout, max_connections=max_connections, max_retries=max_retries,
            backoff_seconds=backoff_seconds)
        if max_tokens_per_thread is not None:
            self.configure(max_tokens_per_thread)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._transport.url

    @property
    def transport(self) -> Transport:
        """The connection pool (share it with a `UsageTracker(transport=…)`)."""
        return self._transport

    # MARK: the default max

    def configure(self, max_tokens_per_thread: int) -> None:
        """Sets the ledger's default max for threads opened from now on; open threads keep theirs."""
        self._transport.request(
            "PUT", "/api/v1/config", body={"defaultMaxTokens": max_tokens_per_thread}, replay_safe=True)

    @property
    def max_tokens_per_thread(self) -> int:
        """The ledger's default max for new threads."""
        return int(self._transport.request("GET", "/api/v1/config", replay_safe=True).json()["defaultMaxTokens"])

    # MARK: reading and checking

    def get_budget(self, thread_id: str) -> ThreadBudget:
        """The thread's budget, opening the thread at the default max when it is not open."""
        budget = self._read(thread_id)
        if budget is not None:
            return budget
        try:
            return self._check(thread_id, 0)
        except BudgetExhaustedError:
            # Opened (or already open) with nothing left: the read now finds it.
            budget = self._read(thread_id)
            if budget is None:
                raise
            return budget

    def check_budget(self, thread_id: str, estimated_tokens: int = 0) -> bool:
        """True when `estimated_tokens` more fit; opens an unknown thread, as the reference.

        Raises:
            BudgetExhaustedError: the thread is exhausted or the estimate does not fit.
        """
        self._check(thread_id, estimated_tokens)
        return True

    def has_budget(self, thread_id: str) -> bool:
        """Whether the thread is open in the ledger (never opens it)."""
        return self._read(thread_id) is not None

    def get_usage(self, thread_id: str) -> dict[str, int] | None:
        """The reference's usage dict (prompt, completion, total, remaining, max, requests), None when unknown."""
        budget = self._read(thread_id)
        return None if budget is None else budget.usage()

    def get_all_usage(self) -> dict[str, dict[str, int]]:
        """Every open thread's usage dict, hottest first."""
        body = self._transport.request("GET", "/api/v1/usage/threads", replay_safe=True).json()
        budgets = [ThreadBudget.from_json(row) for row in body["threads"]]
        return {str(budget.thread_id): budget.usage() for budget in budgets}

    # MARK: recording

    def consume(
        self,
        thread_id: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadBudget:
        """Records a call's usage (even past the max: the tokens were spent) and returns the budget.

        Exactly once: the request carries `idempotency_key` (a new uuid4 when None) and a lost
        answer is retried with it, so a retry never counts twice.
        """
        return self._consume(
            thread_id, "consume", prompt_tokens, completion_tokens, agent_id=agent_id, model=model,
            provider=provider, latency_ms=latency_ms, metadata=metadata, idempotency_key=idempotency_key)

    def check_and_consume(
        self,
        thread_id: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadBudget:
        """Records the usage only if it fits under the max (one transaction in the ledger).

        Raises:
            BudgetExhaustedError: it does not fit; nothing is recorded.
        """
        return self._consume(
            thread_id, "check-and-consume", prompt_tokens, completion_tokens, agent_id=agent_id, model=model,
            provider=provider, latency_ms=latency_ms, metadata=metadata, idempotency_key=idempotency_key)

    def consume_result(
        self, thread_id: str, prompt_tokens: int = 0, completion_tokens: int = 0, *, check: bool = False,
        **usage: Any,
    ) -> dict[str, Any]:
        """The server's whole answer to a consume: `budget`, `crossedThresholds`, `event`, `replayed`."""
        operation = "check-and-consume" if check else "consume"
        body = _usage_body(prompt_tokens, completion_tokens, **usage)
        return dict(self._transport.request(
            "POST", f"/api/v1/threads/{quote(thread_id)}/{operation}", body=body, replay_safe=True).json())

    def _consume(
        self, thread_id: str, operation: str, prompt_tokens: int, completion_tokens: int, **usage: Any
    ) -> ThreadBudget:
        body = _usage_body(prompt_tokens, completion_tokens, **usage)
        answer = self._transport.request(
            "POST", f"/api/v1/threads/{quote(thread_id)}/{operation}", body=body, replay_safe=True).json()
        return ThreadBudget.from_json(answer["budget"])

    # MARK: managing threads

    def set_limit(self, thread_id: str, max_tokens: int) -> ThreadBudget:
        """Sets one thread's max (opening it when needed); it may go below what is spent."""
        return ThreadBudget.from_json(self._transport.request(
            "PUT", f"/api/v1/threads/{quote(thread_id)}/limit", body={"maxTokens": max_tokens},
            replay_safe=True).json())

    def reset_thread(self, thread_id: str) -> None:
        """Starts a new budget window: spent reads zero, the max stays (the events stay). Unknown: nothing."""
        try:
            self._transport.request("POST", f"/api/v1/threads/{quote(thread_id)}/reset", replay_safe=False)
        except NotFoundError:
            pass

    def cleanup_thread(self, thread_id: str) -> ThreadBudget | None:
        """Ends the thread and returns its final budget (None when unknown); its id then starts fresh."""
        try:
            return ThreadBudget.from_json(
                self._transport.request("DELETE", f"/api/v1/threads/{quote(thread_id)}", replay_safe=False).json())
        except NotFoundError:
            return None

    # MARK: holds

    def reserve(
        self,
        thread_id: str,
        tokens: int,
        ttl_seconds: int = DEFAULT_HOLD_SECONDS,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """Holds `tokens` against the thread's budget for `ttl_seconds` (then the hold lapses).

        `agent_id`, `model` and `metadata` (`org_id`, `user_id`) put the hold under those scope
        budgets too; under a dollar budget it holds the most its tokens can cost with `model`.

        Exactly once: the request carries `idempotency_key` (a new uuid4 when None), so a hold
        whose answer was lost is retried and the server answers with the original hold.

        Raises:
            BudgetExhaustedError: the hold does not fit.
        """
        request: dict[str, Any] = {
            "tokens": tokens, "ttlSeconds": ttl_seconds, "idempotencyKey": idempotency_key or uuid.uuid4().hex}
        optional = {"agentId": agent_id, "model": model, "metadata": None if metadata is None else dict(metadata)}
        request.update({name: value for name, value in optional.items() if value is not None})
        body = self._transport.request(
            "POST", f"/api/v1/threads/{quote(thread_id)}/reserve", body=request, replay_safe=True).json()
        budget = ThreadBudget.from_json(body["budget"])
        return Reservation(int(body["reservationId"]), thread_id, tokens, str(body["expiresAt"]), budget)

    def settle(
        self,
        reservation_id: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadBudget:
        """Records what a held call spent and ends the hold, exactly once (idempotency key, retried)."""
        body = _usage_body(
            prompt_tokens, completion_tokens, agent_id=agent_id, model=model, provider=provider,
            latency_ms=latency_ms, metadata=metadata, idempotency_key=idempotency_key)
        answer = self._transport.request(
            "POST", f"/api/v1/reservations/{int(reservation_id)}/settle", body=body, replay_safe=True).json()
        return ThreadBudget.from_json(answer["budget"])

    def release(self, reservation_id: int) -> ThreadBudget:
        """Ends a hold with nothing spent.

        Raises:
            NotFoundError: unknown reservation. ConflictError: it is no longer live.
        """
        answer = self._transport.request(
            "POST", f"/api/v1/reservations/{int(reservation_id)}/release", replay_safe=False).json()
        return ThreadBudget.from_json(answer["budget"])

    def holds(self, thread_id: str | None = None) -> list[Hold]:
        """The live holds (not settled, released or expired), of one thread or of all, oldest first."""
        path = "/api/v1/reservations" + ("" if thread_id is None else f"?threadId={quote(thread_id)}")
        body = self._transport.request("GET", path, replay_safe=True).json()
        return [Hold.from_json(row) for row in body["holds"]]

    # MARK: scope budgets

    def set_budget(
        self,
        scope: str,
        *,
        period: str = "none",
        max_tokens: int | None = None,
        max_usd: str | int | Decimal | None = None,
    ) -> ScopeBudget:
        """Sets (or changes) the budget of `scope` ("global", "org:acme", "user:ID", "agent:ID",
        "model:NAME"): `max_tokens`, `max_usd` (exact: a str, int or Decimal, at most 9 decimals)
        or both, per `period` window ("none", "day", "week", "month"; UTC calendar).

        Setting the same figures again changes nothing, so a lost answer is retried.

        Raises:
            InvalidRequestError: the server refused a field (the detail names it).
        """
        body = budget_body(period, max_tokens, max_usd)
        return ScopeBudget.from_json(self._transport.request(
            "PUT", f"/api/v1/budgets/{quote(scope)}", body=body, replay_safe=True).json())

    def list_budgets(self) -> list[ScopeBudget]:
        """Every scope budget with its current window, by scope."""
        body = self._transport.request("GET", "/api/v1/budgets", replay_safe=True).json()
        return [ScopeBudget.from_json(budget) for budget in body["budgets"]]

    def get_budget_scope(self, scope: str) -> ScopeBudget | None:
        """The budget of `scope` with its current window; None when it has none."""
        try:
            body = self._transport.request("GET", f"/api/v1/budgets/{quote(scope)}", replay_safe=True).json()
        except NotFoundError:
            return None
        return ScopeBudget.from_json(body)

    def remove_budget(self, scope: str) -> None:
        """Removes the budget of `scope` (its history stays in the ledger's events).

        Raises:
            ConflictError: the scope has no budget.
        """
        self._transport.request("DELETE", f"/api/v1/budgets/{quote(scope)}", replay_safe=False)

    # MARK: lifetime

    def close(self) -> None:
        """Closes the connections."""
        self._transport.close()

    def __enter__(self) -> ThreadBudgetRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, thread_id: str) -> ThreadBudget | None:
        try:
            body = self._transport.request("GET", f"/api/v1/usage/threads/{quote(thread_id)}", replay_safe=True).json()
        except NotFoundError:
            return None
        return ThreadBudget.from_json(body)

    def _check(self, thread_id: str, estimated_tokens: int) -> ThreadBudget:
        body = self._transport.request(
            "POST", f"/api/v1/threads/{quote(thread_id)}/check", body={"estimatedTokens": estimated_tokens},
            replay_safe=True).json()
        return ThreadBudget.from_json(body)


def _usage_body(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    agent_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    latency_ms: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A consume's request body; the idempotency key is generated here once, so every retry repeats it."""
    body: dict[str, Any] = {
        "promptTokens": prompt_tokens,
        "completionTokens": completion_tokens,
        "idempotencyKey": idempotency_key or uuid.uuid4().hex,
    }
    optional = {"agentId": agent_id, "model": model, "provider": provider, "metadata": metadata}
    body.update({name: value for name, value in optional.items() if value is not None})
    if latency_ms is not None:
        # The ledger keeps whole milliseconds; the reference passes floats.
        body["latencyMs"] = int(round(latency_ms))
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


# MARK: the process-wide registry, as the reference's

_registry: ThreadBudgetRegistry | None = None
_registry_lock = threading.Lock()


def get_budget_registry() -> ThreadBudgetRegistry:
    """The process-wide registry (created on first use from $BUDGET_LEDGER_URL / $BUDGET_LEDGER_TOKEN)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ThreadBudgetRegistry()
    return _registry


def configure_budget_registry(max_tokens_per_thread: int | None = None, **connection: Any) -> ThreadBudgetRegistry:
    """Configures the process-wide registry: connection settings (`url`, `token`, `timeout`, …)
    replace it with a new one; `max_tokens_per_thread` sets the ledger's default max."""
    global _registry
    if connection:
        with _registry_lock:
            previous, _registry = _registry, ThreadBudgetRegistry(**connection)
        if previous is not None:
            previous.close()
    registry = get_budget_registry()
    if max_tokens_per_thread is not None:
        registry.configure(max_tokens_per_thread)
    return registry


def reset_budget_registry() -> None:
    """Drops the process-wide registry and closes its connections (the ledger keeps every budget)."""
    global _registry
    with _registry_lock:
        previous, _registry = _registry, None
    if previous is not None:
        previous.close()
