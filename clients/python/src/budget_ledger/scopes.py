"""Scope budgets: a max in tokens and/or USD for `global`, `org:ID`, `user:ID`, `agent:ID` or
`model:NAME`, per UTC calendar window (none, day, week, month), as values.

A call falls under `global`, its metadata's `org_id` and `user_id`, its agent and its model.
`check_and_consume` and `reserve` refuse a call that does not fit one of them (the
`BudgetExhaustedError` names the scope and window); a dollar budget refuses calls whose model
has no price; a plain `consume` records and can overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

PERIODS = ("none", "day", "week", "month")


@dataclass(frozen=True)
class BudgetWindow:
    """A scope budget's window: ISO 8601 UTC `start`, and `end` (exclusive; None for all time)."""

    start: str
    end: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BudgetWindow:
        end = body.get("end")
        return cls(start=str(body["start"]), end=None if end is None else str(end))


@dataclass(frozen=True)
class ScopeBudget:
    """A scope's budget and its current window; USD amounts are exact `Decimal`s, a max the
    budget does not have (and its remaining) is None."""

    scope: str
    period: str
    window: BudgetWindow
    max_tokens: int | None
    max_usd: Decimal | None
    spent_tokens: int
    spent_usd: Decimal
    request_count: int
    unpriced_requests: int
    held_tokens: int
    held_usd: Decimal
    remaining_tokens: int | None
    remaining_usd: Decimal | None
    percent_used: float
    exhausted: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ScopeBudget:
        """A budget from the server's `{scope, period, windowStart, windowEnd, maxTokens, maxUsd, …}`."""
        return cls(
            scope=str(body["scope"]),
            period=str(body["period"]),
            window=BudgetWindow.from_json({"start": body["windowStart"], "end": body.get("windowEnd")}),
            max_tokens=_optional_int(body.get("maxTokens")),
            max_usd=_optional_usd(body.get("maxUsd")),
            spent_tokens=int(body["spentTokens"]),
            spent_usd=_usd(body["spentUsd"]),
            request_count=int(body["requestCount"]),
            unpriced_requests=int(body["unpricedRequests"]),
            held_tokens=int(body["heldTokens"]),
            held_usd=_usd(body["heldUsd"]),
            remaining_tokens=_optional_int(body.get("remainingTokens")),
            remaining_usd=_optional_usd(body.get("remainingUsd")),
            percent_used=float(body["percentUsed"]),
            exhausted=bool(body["exhausted"]),
        )


def budget_body(period: str, max_tokens: int | None, max_usd: str | int | Decimal | None) -> dict[str, Any]:
    """The body of `PUT /api/v1/budgets/{scope}`; a float USD amount is refused (it is not exact).

    Raises:
        ValueError: an unknown period, or neither max given. TypeError: a float or bool amount.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period!r})")
    if max_tokens is None and max_usd is None:
        raise ValueError("a budget needs max_tokens, max_usd or both")
    body: dict[str, Any] = {"period": period}
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise TypeError(f"max_tokens must be an int (got {max_tokens!r})")
        body["maxTokens"] = max_tokens
    if max_usd is not None:
        if isinstance(max_usd, (bool, float)) or not isinstance(max_usd, (str, int, Decimal)):
            raise TypeError(f"max_usd must be a str, int or Decimal (a float is not exact): got {max_usd!r}")
        body["maxUsd"] = format(max_usd, "f") if isinstance(max_usd, Decimal) else str(max_usd)
    return body


def _usd(value: Any) -> Decimal:
    return Decimal(str(value))


def _optional_usd(value: Any) -> Decimal | None:
    return None if value is None else _usd(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
