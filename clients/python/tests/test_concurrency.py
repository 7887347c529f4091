"""Exactness under concurrency: Python threads, processes and asyncio racing one thread's budget."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

from budget_ledger import (
    AsyncThreadBudgetRegistry,
    AsyncUsageTracker,
    BudgetExhaustedError,
    ThreadBudgetRegistry,
)

COST = 10
MAX_TOKENS = 1000  # room for exactly MAX_TOKENS // COST = 100 calls


def _race(url: str, token: str, thread_id: str, attempts: int) -> int:
    """Calls check_and_consume `attempts` times; returns how many were accepted."""
    accepted = 0
    with ThreadBudgetRegistry(url=url, token=token, max_connections=1) as registry:
        for _ in range(attempts):
            try:
                registry.check_and_consume(thread_id, prompt_tokens=COST)
                accepted += 1
            except BudgetExhaustedError:
                pass
    return accepted


def test_sixteen_python_threads_never_overshoot(server, registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves: 16 threads sharing one registry, 160 attempts of 10 tokens on a 1000-token budget:
    # exactly 100 succeed, and the ledger holds exactly 1000 tokens in 100 requests.
    registry.set_limit(thread_id, MAX_TOKENS)
    accepted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        count = 0
        for _ in range(10):
            try:
                registry.check_and_consume(thread_id, prompt_tokens=COST)
                count += 1
            except BudgetExhaustedError:
                pass
        with lock:
            accepted.append(count)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(accepted) == MAX_TOKENS // COST
    budget = registry.get_budget(thread_id)
    assert (budget.total_tokens, budget.request_count) == (MAX_TOKENS, MAX_TOKENS // COST)


def test_eight_processes_never_overshoot(server, registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves: 8 processes, each with its own client, 20 attempts each (160 in all) on room for
    # 100: exactly 100 succeed.
    registry.set_limit(thread_id, MAX_TOKENS)
    context = multiprocessing.get_context("spawn")
    with context.Pool(8) as pool:
        accepted = pool.starmap(_race, [(server.url, server.token, thread_id, 20)] * 8)
    assert sum(accepted) == MAX_TOKENS // COST
    assert registry.get_budget(thread_id).total_tokens == MAX_TOKENS


def test_the_async_client_under_gather(server, registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves: 60 concurrent check_and_consume coroutines on room for 20 calls: exactly 20
    # succeed, the others raise BudgetExhaustedError; the async tracker records under gather.
    registry.set_limit(thread_id, 20 * COST)

    async def main() -> tuple[list[object], list[float | None]]:
        async with AsyncThreadBudgetRegistry(url=server.url, token=server.token) as budgets:
            results = await asyncio.gather(
                *(budgets.check_and_consume(thread_id, COST, agent_id="async") for _ in range(60)),
                return_exceptions=True)
        async with AsyncUsageTracker(url=server.url, token=server.token) as tracker:
            events = await asyncio.gather(
                *(tracker.record(thread_id + "-t", "async", "gpt-4o-mini", "openai", 1000, 500, 1) for _ in range(10)))
        return list(results), [event.estimated_cost for event in events]

    results, costs = asyncio.run(main())
    assert sum(1 for result in results if not isinstance(result, BaseException)) == 20
    assert all(isinstance(result, BudgetExhaustedError) for result in results if isinstance(result, BaseException))
    assert costs == [0.00045] * 10
    assert registry.get_budget(thread_id).total_tokens == 20 * COST
    assert registry.get_usage(thread_id + "-t") == {
        "prompt_tokens": 10_000, "completion_tokens": 5000, "total_tokens": 15_000, "remaining": 85_000,
        "max_tokens": 100_000, "request_count": 10}
