"""A thread's budget as a value: the reference's `ThreadBudget`, plus what the ledger knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class ThreadBudget:
    """Token usage of one thread against its max: the reference dataclass, field for field.

    A budget read from the ledger also carries `thread_id` and `held_tokens` (tokens reserved
    by live holds). It is a snapshot: `consume()` here changes only this object, as the
    reference's does; the registry's `consume` records in the ledger.
    """

    max_tokens: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_count: int = 0
    thread_id: str | None = None
    held_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens spent."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def remaining(self) -> int:
        """Tokens left under the max; never negative (an overshoot reads 0)."""
        return max(0, self.max_tokens - self.total_tokens)

    @property
    def remaining_after_holds(self) -> int:
        """Tokens a checked consume or a new hold may still take: max − spent − held, never negative."""
        return max(0, self.max_tokens - self.total_tokens - self.held_tokens)

    @property
    def is_exhausted(self) -> bool:
        """True when the spent tokens reach the max (a max of 0 is always exhausted)."""
        return self.total_tokens >= self.max_tokens

    @property
    def percent_used(self) -> float:
        """Percent of the max spent, to one decimal as the server rounds it; 0 when the max is 0."""
        if self.max_tokens == 0:
            return 0.0
        return _round_half_away(self.total_tokens / self.max_tokens * 100)

    def can_consume(self, estimated_tokens: int) -> bool:
        """Whether `estimated_tokens` more fit under the max (counting live holds, as the ledger does)."""
        return estimated_tokens >= 0 and self.total_tokens + self.held_tokens + estimated_tokens <= self.max_tokens

    def consume(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Adds a call to this snapshot only (the reference's local bookkeeping); records nothing."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.request_count += 1

    def usage(self) -> dict[str, int]:
        """The reference's `get_usage` dict of this budget."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "remaining": self.remaining,
            "max_tokens": self.max_tokens,
            "request_count": self.request_count,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ThreadBudget:
        """A budget from the server's `{threadId, maxTokens, promptTokens, …}`."""
        return cls(
            max_tokens=int(body["maxTokens"]),
            prompt_tokens=int(body["promptTokens"]),
            completion_tokens=int(body["completionTokens"]),
            request_count=int(body["requestCount"]),
            thread_id=str(body["threadId"]),
            held_tokens=int(body.get("heldTokens", 0)),
        )


@dataclass(frozen=True)
class Reservation:
    """A live hold: `reservation_id` to settle or release, the tokens held and until when."""

    reservation_id: int
    thread_id: str
    tokens: int
    expires_at: str
    budget: ThreadBudget


@dataclass(frozen=True)
class Hold:
    """A live hold as the ledger lists it (`holds()`): no budget, since it is one of many."""

    reservation_id: int
    thread_id: str
    tokens: int
    expires_at: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Hold:
        return cls(int(body["reservationId"]), str(body["threadId"]), int(body["tokens"]), str(body["expiresAt"]))


def _round_half_away(value: float) -> float:
    # Swift's rounded() rounds half away from zero; Python's round() rounds half to even.
    scaled = value * 10
    whole = int(scaled)
    if scaled - whole >= 0.5:
        whole += 1
    return whole / 10
