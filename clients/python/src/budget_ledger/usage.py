"""`UsageTracker`: the reference's platform usage tracker, recording into the durable ledger.

Totals come from the ledger, so they count every client's calls in the current usage window
(not only this process's), and they survive restarts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from .pricing import ModelPrice, PriceBook
from .registry import _usage_body
from .transport import (
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    Transport,
    quote,
)

FEED_PAGE_SIZE = 1000


@dataclass
class UsageEvent:
    """One recorded call: the reference's fields, plus `event_id`, the ledger's id (resume a feed after it)."""

    thread_id: str
    agent_id: str | None
    model: str | None
    provider: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    timestamp: str
    latency_ms: float | None
    estimated_cost: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: int | None = None

    @classmethod
    def from_json(cls, thread_id: str, prompt_tokens: int, completion_tokens: int, event: Mapping[str, Any]) -> UsageEvent:
        cost = event.get("cost")
        latency = event.get("latencyMs")
        return cls(
            thread_id=thread_id,
            agent_id=event.get("agentId"),
            model=event.get("model"),
            provider=event.get("provider"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            timestamp=str(event["timestamp"]),
            latency_ms=None if latency is None else float(latency),
            estimated_cost=None if cost is None else float(cost),
            metadata=dict(event.get("metadata") or {}),
            event_id=int(event["id"]),
        )


UsageCallback = Callable[[UsageEvent], None]


class UsageTracker:
    """Records calls and reads usage totals from the ledger at `url`; thread-safe.

    Args: as `ThreadBudgetRegistry` (`url`, `token`, `timeout`, …, `transport` to share a pool);
    `price_refresh_seconds`: how often `estimate_cost` asks whether the price table changed.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        price_refresh_seconds: float = 1.0,
        transport: Transport | None = None,
    ) -> None:
        self._transport = transport or Transport(
            url, token, timeout=timeout, max_connections=max_connections, max_retries=max_retries,
            backoff_seconds=backoff_seconds)
        self.prices = PriceBook(self._transport, refresh_seconds=price_refresh_seconds)
        self._callbacks: list[UsageCallback] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._transport.url

    # MARK: subscribers

    def subscribe(self, callback: UsageCallback) -> None:
        """Calls `callback(event)` after each `record` of this tracker (after the ledger committed it).

        A callback that raises does not affect recording, as in the reference. For every
        client's events, iterate `follow()`.
        """
        with self._lock:
            self._callbacks.append(callback)

    def unsubscribe(self, callback: UsageCallback) -> None:
        """Stops calling `callback`; unknown callbacks are ignored."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    # MARK: recording

    def record(
        self,
        thread_id: str,
        agent_id: str | None,
        model: str,
        provider: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_ms: float,
        metadata: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> UsageEvent:
        """Records a finished call against the thread (never refused: the tokens were spent),
        exactly once across retries, and notifies this tracker's subscribers."""
        body = _usage_body(
            prompt_tokens, completion_tokens, agent_id=agent_id, model=model, provider=provider,
            latency_ms=latency_ms, metadata=metadata or None, idempotency_key=idempotency_key)
        answer = self._transport.request(
            "POST", f"/api/v1/threads/{quote(thread_id)}/consume", body=body, replay_safe=True).json()
        event = UsageEvent.from_json(thread_id, prompt_tokens, completion_tokens, answer["event"])
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                # A subscriber's failure must not break tracking (the reference's rule).
                pass
        return event

    def follow(
        self, after: int = 0, *, block: bool = True, poll_seconds: float = 0.5, page_size: int = FEED_PAGE_SIZE
    ) -> Iterator[UsageEvent]:
        """Every recorded call in the ledger (every client's) after event id `after`, in order.

        Resumable: pass the last `event_id` you handled. With `block` it waits for new events
        (polling every `poll_seconds`) and never ends; without, it ends when it has caught up.
        """
        cursor = after
        while True:
            page = self._transport.request(
                "GET", f"/api/v1/events?after={int(cursor)}&limit={int(page_size)}", replay_safe=True).json()
            for raw in page["events"]:
                cursor = int(raw["id"])
                if raw.get("kind") == "consume":
                    yield UsageEvent.from_json(
                        str(raw["threadId"]), int(raw["promptTokens"]), int(raw["completionTokens"]), raw)
            cursor = max(cursor, int(page["lastId"]))
            if len(page["events"]) < page_size:
                if not block:
                    return
                time.sleep(poll_seconds)

    # MARK: totals

    def get_totals(self) -> dict[str, Any]:
        """Totals of the current usage window: the reference's keys plus `unpriced_requests` and `unpriced_tokens`."""
        totals = self._overview()["totals"]
        result = _totals(totals)
        latency = totals.get("avgLatencyMs")
        result["avg_latency_ms"] = 0 if latency is None else float(latency)
        return result

    def get_agent_totals(self, agent_id: str) -> dict[str, Any]:
        """One agent's totals in the current window (zeros when unknown)."""
        return _totals(self._transport.request(
            "GET", f"/api/v1/usage/agents/{quote(agent_id)}", replay_safe=True).json())

    def get_model_totals(self, model: str) -> dict[str, Any]:
        """One model's totals in the current window, by the name as recorded (zeros when unknown)."""
        return _totals(self._transport.request(
            "GET", f"/api/v1/usage/models/{quote(model)}", replay_safe=True).json())

    def get_all_agent_totals(self) -> dict[str, dict[str, Any]]:
        """Every agent's totals (calls without an agent are left out, as in the reference)."""
        return {row["agentId"]: _totals(row) for row in self._overview()["byAgent"] if row.get("agentId") is not None}

    def get_all_model_totals(self) -> dict[str, dict[str, Any]]:
        """Every model's totals (calls without a model are left out)."""
        return {row["model"]: _totals(row) for row in self._overview()["byModel"] if row.get("model") is not None}

    def reset(self) -> None:
        """Starts a new usage window in the ledger: totals read zero from now on, for every client.

        Deletes nothing: budgets, billing and the feed still see every event.
        """
        self._transport.request("POST", "/api/v1/usage/reset", replay_safe=True)

    # MARK: prices

    def estimate_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for a call as the ledger would bill it now (exact to the nano-dollar); None when unpriced."""
        return self.prices.estimate_cost(model, prompt_tokens, completion_tokens)

    def set_price(
        self, model: str, prompt_per_million: str | int | Decimal, completion_per_million: str | int | Decimal,
        *, effective_from: str | None = None, replaces: str | None = None,
    ) -> ModelPrice:
        """Adds a price (USD per million tokens) for model names the ledger matches to `model`
        (with `replaces`, in place of a future price: see `PriceBook.set_price`)."""
        return self.prices.set_price(
            model, prompt_per_million, completion_per_million, effective_from=effective_from, replaces=replaces)

    def withdraw_price(self, model: str, effective_from: str) -> ModelPrice:
        """Withdraws a price of `model` that has not taken effect yet (see `PriceBook.withdraw_price`)."""
        return self.prices.withdraw_price(model, effective_from)

    def reprice(self, model: str, start: str, end: str) -> dict[str, Any]:
        """Bills the consumes of `model` recorded while it was unpriced, in [start, end) (see `PriceBook.reprice`)."""
        return self.prices.reprice(model, start, end)

    def close(self) -> None:
        """Closes the connections."""
        self._transport.close()

    def __enter__(self) -> UsageTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _overview(self) -> Mapping[str, Any]:
        overview: Mapping[str, Any] = self._transport.request("GET", "/api/v1/usage", replay_safe=True).json()["usage"]
        return overview


def _totals(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "total_tokens": int(row["totalTokens"]),
        "prompt_tokens": int(row["promptTokens"]),
        "completion_tokens": int(row["completionTokens"]),
        "request_count": int(row["requestCount"]),
        # None when there are requests and none is priced: the cost is unknown, never 0.0;
        # cost_complete False means total_cost covers the priced requests only.
        "total_cost": None if row["totalCost"] is None else float(Decimal(str(row["totalCost"]))),
        "unpriced_requests": int(row["unpricedRequests"]),
        # The prompt plus completion tokens of those requests: the usage total_cost leaves out.
        "unpriced_tokens": int(row["unpricedTokens"]),
        "cost_complete": bool(row["costComplete"]),
    }


# MARK: the process-wide tracker, as the reference's

_tracker: UsageTracker | None = None
_tracker_lock = threading.Lock()


def get_usage_tracker() -> UsageTracker:
    """The process-wide tracker (created on first use from $BUDGET_LEDGER_URL / $BUDGET_LEDGER_TOKEN)."""
    global _tracker
    if _tracker is None:
        with _tracker_lock:
            if _tracker is None:
                _tracker = UsageTracker()
    return _tracker


def configure_usage_tracker(**connection: Any) -> UsageTracker:
    """Replaces the process-wide tracker with one using these settings (`url`, `token`, …)."""
    global _tracker
    with _tracker_lock:
        previous, _tracker = _tracker, UsageTracker(**connection)
    if previous is not None:
        previous.close()
    return _tracker


def reset_usage_tracker() -> None:
    """Drops the process-wide tracker and closes its connections.

    Unlike the reference it does not zero the totals (they are the ledger's, shared by every
    client); call `get_usage_tracker().reset()` for a new usage window.
    """
    global _tracker
    with _tracker_lock:
        previous, _tracker = _tracker, None
    if previous is not None:
        previous.close()


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for a call from the ledger's price table (the process-wide tracker's server); None when unpriced."""
    return get_usage_tracker().estimate_cost(model, prompt_tokens, completion_tokens)
