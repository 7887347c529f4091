"""Prices from the ledger's table, for `estimate_cost`.

The client never matches model names itself: it asks the server which price applies to a
model (`GET /api/v1/prices/{model}`, the rule the ledger bills consumes by) and caches the
answer per model name. The cache is dropped when the table changes: at most every
`refresh_seconds` the client asks `GET /api/v1/prices` with the last ETag (a 304 costs a few
bytes); the tag changes when a price is added and when one set for later starts to apply.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from .errors import NotFoundError
from .transport import Transport, quote

NANOS_PER_USD = 10**9
DEFAULT_REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class ModelPrice:
    """One row of the price table: USD per million tokens, exact, from `effective_from` (ISO 8601 UTC)."""

    model: str
    prompt_per_million: Decimal
    completion_per_million: Decimal
    effective_from: str
    source: str
    in_force: bool | None = None

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The cost in nano-dollars, exactly as the ledger computes it (nano-dollars per token × tokens)."""
        prompt_nanos = int(self.prompt_per_million * 1000)
        completion_nanos = int(self.completion_per_million * 1000)
        return prompt_tokens * prompt_nanos + completion_tokens * completion_nanos

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelPrice:
        in_force = body.get("inForce")
        return cls(
            model=str(body["model"]),
            prompt_per_million=Decimal(str(body["promptPerMillion"])),
            completion_per_million=Decimal(str(body["completionPerMillion"])),
            effective_from=str(body["effectiveFrom"]),
            source=str(body["source"]),
            in_force=None if in_force is None else bool(in_force),
        )


def usd(nanos: int) -> float:
    """Nano-dollars as the nearest float of USD (0.00045, never a binary near-miss of the sum)."""
    return float(Decimal(nanos) / NANOS_PER_USD)


class PriceBook:
    """The ledger's price table as this client has seen it: thread-safe, refreshed on change."""

    def __init__(self, transport: Transport, *, refresh_seconds: float = DEFAULT_REFRESH_SECONDS) -> None:
        self._transport = transport
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._tag: str | None = None
        self._checked_at = float("-inf")
        self._by_model: dict[str, ModelPrice | None] = {}

    def price(self, model: str) -> ModelPrice | None:
        """The price the ledger bills `model` by now, or None when it has none."""
        self._refresh_if_due()
        with self._lock:
            if model in self._by_model:
                return self._by_model[model]
        try:
            body = self._transport.request("GET", f"/api/v1/prices/{quote(model)}", replay_safe=True).json()
            price: ModelPrice | None = ModelPrice.from_json(body["price"])
        except NotFoundError:
            price = None
        with self._lock:
            self._by_model[model] = price
        return price

    def estimate_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for a call, as the ledger would bill it now; None for a model without a price."""
        price = self.price(model)
        if price is None:
            return None
        return usd(price.cost_nanos(prompt_tokens, completion_tokens))

    def table(self) -> list[ModelPrice]:
        """Every row of the price table, with which are in force now."""
        response = self._transport.request("GET", "/api/v1/prices", replay_safe=True)
        self._note_tag(response.headers.get("etag"))
        return [ModelPrice.from_json(row) for row in response.json()["prices"]]

    def set_price(
        self, model: str, prompt_per_million: str | int | Decimal, completion_per_million: str | int | Decimal,
        *, effective_from: str | None = None, replaces: str | None = None,
    ) -> ModelPrice:
        """Adds a price row (USD per million tokens, at most 3 decimals) from `effective_from` (default now).

        With `replaces` (the start of a price of `model` that has not taken effect yet), that
        price is withdrawn and this one added in one transaction (`KeyError`-derived
        `NotFoundError` when no price starts then, a conflict when it is already in effect).
        Not retried after a lost answer: without `effective_from` a second attempt would add a
        second row. Pass a float and it is refused: give the decimal as a string ("2.5").
        """
        body: dict[str, Any] = {
            "promptPerMillion": _decimal_text(prompt_per_million, "prompt_per_million"),
            "completionPerMillion": _decimal_text(completion_per_million, "completion_per_million"),
        }
        if effective_from is not None:
            body["effectiveFrom"] = effective_from
        if replaces is not None:
            body["replaces"] = replaces
        response = self._transport.request("PUT", f"/api/v1/prices/{quote(model)}", body=body, replay_safe=False)
        self.invalidate()
        return ModelPrice.from_json(response.json())

    def withdraw_price(self, model: str, effective_from: str) -> ModelPrice:
        """Withdraws the price of `model` that starts at `effective_from` (ISO 8601 UTC), before it
        takes effect; lookups then fall back to the price that held before.

        Raises a `KeyError`-derived error when no such price starts then, and a conflict when it
        is already in effect (it can only be superseded from now on, with `set_price`).
        """
        response = self._transport.request(
            "DELETE", f"/api/v1/prices/{quote(model)}?from={quote(effective_from)}", replay_safe=False)
        self.invalidate()
        return ModelPrice.from_json(response.json()["withdrawn"])

    def reprice(self, model: str, start: str, end: str) -> dict[str, Any]:
        """Bills `model`'s consumes recorded unpriced in [start, end) (ISO 8601 UTC) at the prices now in the table.

        One reprice event per such consume the table prices, at the price in force at its own
        time; `model` may be a pattern with one trailing `*`. Answers {"repriced", "cost",
        "costNanos", "unpriced", "complete"} (`complete` is False when the server stopped at its
        per-call limit: call again). Safe to retry: a consume is repriced at most once.
        """
        body = {"model": model, "from": start, "to": end}
        answer: dict[str, Any] = self._transport.request(
            "POST", "/api/v1/prices/reprice", body=body, replay_safe=True).json()
        return answer

    def invalidate(self) -> None:
        """Forgets every cached price; the next lookup asks the server."""
        with self._lock:
            self._by_model.clear()
            self._tag = None
            self._checked_at = float("-inf")

    def _refresh_if_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < self.refresh_seconds:
                return
            tag = self._tag
        headers = {"If-None-Match": tag} if tag else None
        response = self._transport.request(
            "GET", "/api/v1/prices", headers=headers, replay_safe=True, expected=(200, 304))
        with self._lock:
            self._checked_at = now
        if response.status == 200:
            self._note_tag(response.headers.get("etag"))

    def _note_tag(self, tag: str | None) -> None:
        with self._lock:
            if tag != self._tag:
                self._by_model.clear()
                self._tag = tag
            self._checked_at = time.monotonic()


def _decimal_text(value: str | int | Decimal, name: str) -> str | int:
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name} must be a str, int or Decimal (a float is not exact): got {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f")
    return value
