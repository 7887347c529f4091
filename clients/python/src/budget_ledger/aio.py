"""`AsyncThreadBudgetRegistry` and `AsyncUsageTracker`: the same methods as coroutines.

Each coroutine runs the sync client's call on a thread pool of this client's own, as many
threads as the pool has connections (see the package README for why: one HTTP code path, the
standard library only, and a request's cost is the server's, not the thread's). They are safe
under `asyncio.gather`: calls run concurrently, each on its own pooled connection.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Callable, Mapping, TypeVar

from .budget import Hold, Reservation, ThreadBudget
from .pricing import ModelPrice
from .scopes import ScopeBudget
from .registry import DEFAULT_HOLD_SECONDS, ThreadBudgetRegistry
from .usage import UsageCallback, UsageEvent, UsageTracker

Result = TypeVar("Result")


class _Offloaded:
    """Runs blocking calls on an executor sized to the connection pool."""

    def __init__(self, max_connections: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="budget-ledger")

    async def _run(self, call: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=False)


class AsyncThreadBudgetRegistry(_Offloaded):
    """`ThreadBudgetRegistry` for asyncio. Arguments as `ThreadBudgetRegistry`'s; `max_tokens_per_thread`
    is applied by `await registry.configure(…)` (a constructor cannot await)."""

    def __init__(self, **connection: Any) -> None:
        self.sync = ThreadBudgetRegistry(**connection)
        super().__init__(self.sync.transport.max_connections)

    async def configure(self, max_tokens_per_thread: int) -> None:
        await self._run(self.sync.configure, max_tokens_per_thread)

    async def max_tokens_per_thread(self) -> int:
        return await self._run(lambda: self.sync.max_tokens_per_thread)

    async def get_budget(self, thread_id: str) -> ThreadBudget:
        return await self._run(self.sync.get_budget, thread_id)

    async def check_budget(self, thread_id: str, estimated_tokens: int = 0) -> bool:
        return await self._run(self.sync.check_budget, thread_id, estimated_tokens)

    async def has_budget(self, thread_id: str) -> bool:
        return await self._run(self.sync.has_budget, thread_id)

    async def get_usage(self, thread_id: str) -> dict[str, int] | None:
        return await self._run(self.sync.get_usage, thread_id)

    async def get_all_usage(self) -> dict[str, dict[str, int]]:
        return await self._run(self.sync.get_all_usage)

    async def consume(
        self, thread_id: str, prompt_tokens: int = 0, completion_tokens: int = 0, **usage: Any
    ) -> ThreadBudget:
        """As `ThreadBudgetRegistry.consume` (keyword arguments: agent_id, model, provider,
        latency_ms, metadata, idempotency_key)."""
        return await self._run(self.sync.consume, thread_id, prompt_tokens, completion_tokens, **usage)

    async def check_and_consume(
        self, thread_id: str, prompt_tokens: int = 0, completion_tokens: int = 0, **usage: Any
    ) -> ThreadBudget:
        return await self._run(self.sync.check_and_consume, thread_id, prompt_tokens, completion_tokens, **usage)

    async def set_limit(self, thread_id: str, max_tokens: int) -> ThreadBudget:
        return await self._run(self.sync.set_limit, thread_id, max_tokens)

    async def reset_thread(self, thread_id: str) -> None:
        await self._run(self.sync.reset_thread, thread_id)

    async def cleanup_thread(self, thread_id: str) -> ThreadBudget | None:
        return await self._run(self.sync.cleanup_thread, thread_id)

    async def reserve(
        self, thread_id: str, tokens: int, ttl_seconds: int = DEFAULT_HOLD_SECONDS, **scopes: Any
    ) -> Reservation:
        """As `ThreadBudgetRegistry.reserve` (keyword arguments: agent_id, model, metadata, idempotency_key)."""
        return await self._run(self.sync.reserve, thread_id, tokens, ttl_seconds, **scopes)

    async def settle(
        self, reservation_id: int, prompt_tokens: int = 0, completion_tokens: int = 0, **usage: Any
    ) -> ThreadBudget:
        return await self._run(self.sync.settle, reservation_id, prompt_tokens, completion_tokens, **usage)

    async def release(self, reservation_id: int) -> ThreadBudget:
        return await self._run(self.sync.release, reservation_id)

    async def holds(self, thread_id: str | None = None) -> list[Hold]:
        return await self._run(self.sync.holds, thread_id)

    async def set_budget(
        self, scope: str, *, period: str = "none", max_tokens: int | None = None,
        max_usd: str | int | Decimal | None = None,
    ) -> ScopeBudget:
        return await self._run(self.sync.set_budget, scope, period=period, max_tokens=max_tokens, max_usd=max_usd)

    async def list_budgets(self) -> list[ScopeBudget]:
        return await self._run(self.sync.list_budgets)

    async def get_budget_scope(self, scope: str) -> ScopeBudget | None:
        return await self._run(self.sync.get_budget_scope, scope)

    async def remove_budget(self, scope: str) -> None:
        await self._run(self.sync.remove_budget, scope)

    async def aclose(self) -> None:
        self.sync.close()
        self._shutdown()

    async def __aenter__(self) -> AsyncThreadBudgetRegistry:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncUsageTracker(_Offloaded):
    """`UsageTracker` for asyncio; arguments as `UsageTracker`'s. Subscribers are called on the
    executor thread that recorded the call (as the sync tracker calls them on the caller's)."""

    def __init__(self, **connection: Any) -> None:
        self.sync = UsageTracker(**connection)
        super().__init__(self.sync._transport.max_connections)

    def subscribe(self, callback: UsageCallback) -> None:
        self.sync.subscribe(callback)

    def unsubscribe(self, callback: UsageCallback) -> None:
        self.sync.unsubscribe(callback)

    async def record(
        self, thread_id: str, agent_id: str | None, model: str, provider: str, prompt_tokens: int,
        completion_tokens: int, latency_ms: float, metadata: Mapping[str, Any] | None = None,
        *, idempotency_key: str | None = None,
    ) -> UsageEvent:
        return await self._run(
            self.sync.record, thread_id, agent_id, model, provider, prompt_tokens, completion_tokens, latency_ms,
            metadata, idempotency_key=idempotency_key)

    async def get_totals(self) -> dict[str, Any]:
        return await self._run(self.sync.get_totals)

    async def get_agent_totals(self, agent_id: str) -> dict[str, Any]:
        return await self._run(self.sync.get_agent_totals, agent_id)

    async def get_model_totals(self, model: str) -> dict[str, Any]:
        return await self._run(self.sync.get_model_totals, model)

    async def get_all_agent_totals(self) -> dict[str, dict[str, Any]]:
        return await self._run(self.sync.get_all_agent_totals)

    async def get_all_model_totals(self) -> dict[str, dict[str, Any]]:
        return await self._run(self.sync.get_all_model_totals)

    async def reset(self) -> None:
        await self._run(self.sync.reset)

    async def estimate_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        return await self._run(self.sync.estimate_cost, model, prompt_tokens, completion_tokens)

    async def set_price(
        self, model: str, prompt_per_million: str | int | Decimal, completion_per_million: str | int | Decimal,
        *, effective_from: str | None = None,
    ) -> ModelPrice:
        return await self._run(
            self.sync.set_price, model, prompt_per_million, completion_per_million, effective_from=effective_from)

    async def aclose(self) -> None:
        self.sync.close()
        self._shutdown()

    async def __aenter__(self) -> AsyncUsageTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
