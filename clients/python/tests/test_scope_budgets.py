"""Scope budgets through the client: set, read, list, remove, refusals naming the scope, and
exactness of a dollar budget under processes and threads."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import pickle
import secrets
import threading
import uuid
from decimal import Decimal

import pytest

from .conftest import _binary, start_server, stop_server

from budget_ledger import (
    AsyncThreadBudgetRegistry,
    BudgetExhaustedError,
    ConflictError,
    InvalidRequestError,
    ScopeBudget,
    ThreadBudgetRegistry,
)

NANOS_PER_USD = 10**9
GPT_4O_MINI_PROMPT_NANOS = 150  # the seeded price: $0.15 per million prompt tokens
PROMPT_TOKENS = 66_667  # 10,000,050 nano-dollars a call: $1.00 holds 99 of them, not 100
PROCESSES = 4
THREADS_PER_PROCESS = 8
ATTEMPTS_PER_THREAD = 5


def _scope() -> str:
    return f"org:test-{uuid.uuid4().hex[:10]}"


def test_set_get_list_remove(registry: ThreadBudgetRegistry) -> None:
    # Proves: set_budget returns the typed budget with exact USD; get_budget_scope and
    # list_budgets read it back; remove_budget drops it (then None, and a second remove is a
    # ConflictError).
    scope = _scope()
    budget = registry.set_budget(scope, period="month", max_tokens=1000, max_usd="500.00")
    assert isinstance(budget, ScopeBudget)
    assert (budget.scope, budget.period, budget.max_tokens, budget.max_usd) == (scope, "month", 1000, Decimal(500))
    assert budget.spent_usd == 0 and budget.remaining_usd == Decimal(500) and not budget.exhausted
    assert budget.window.start.endswith("T00:00:00.000000Z") and budget.window.end is not None
    assert registry.get_budget_scope(scope) == budget
    assert budget in registry.list_budgets()
    assert registry.set_budget(scope, max_usd=Decimal("0.000000001")).max_usd == Decimal("0.000000001")
    registry.remove_budget(scope)
    assert registry.get_budget_scope(scope) is None
    with pytest.raises(ConflictError):
        registry.remove_budget(scope)


def test_bad_input_names_the_field(registry: ThreadBudgetRegistry) -> None:
    # Proves: the server's 400 names the field; a float amount is refused before sending.
    scope = _scope()
    with pytest.raises(InvalidRequestError) as raised:
        registry.set_budget(scope, max_usd="1.0000000001")
    assert "maxUsd" in raised.value.detail
    with pytest.raises(InvalidRequestError) as raised:
        registry.set_budget("team:x", max_tokens=1)
    assert "scope" in raised.value.detail
    with pytest.raises(TypeError):
        registry.set_budget(scope, max_usd=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        registry.set_budget(scope)
    assert registry.get_budget_scope(scope) is None


def test_refusals_name_the_scope(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves: a scope's refusal carries scope, window and unit (USD exact, max_tokens None for a
    # dollar budget), survives pickling; a hold under agent/model/metadata counts as held; the
    # thread's own refusal has scope, window and unit None.
    org = _scope()
    org_id = org.split(":", 1)[1]
    registry.set_budget(org, period="day", max_usd="0.001")
    registry.check_and_consume(thread_id, 6000, model="gpt-4o-mini", metadata={"org_id": org_id})
    with pytest.raises(BudgetExhaustedError) as raised:
        registry.check_and_consume(thread_id, 6000, model="gpt-4o-mini", metadata={"org_id": org_id})
    error = raised.value
    assert (error.scope, error.unit, error.used, error.max_amount) == (org, "usd", Decimal("0.0009"), Decimal("0.001"))
    assert error.max_tokens is None and error.window is not None and error.window.end is not None
    assert "budget exhausted" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.scope, again.window, again.unit, again.used) == (error.scope, error.window, error.unit, error.used)

    agent = f"agent-{uuid.uuid4().hex[:8]}"
    registry.set_budget(f"agent:{agent}", max_tokens=100)
    registry.reserve(thread_id + "-h", 80, agent_id=agent, model="gpt-4o-mini", metadata={"user_id": "u"})
    assert registry.get_budget_scope(f"agent:{agent}").held_tokens == 80  # type: ignore[union-attr]
    with pytest.raises(BudgetExhaustedError) as raised:
        registry.reserve(thread_id + "-h2", 21, agent_id=agent)
    assert (raised.value.scope, raised.value.unit, raised.value.max_tokens) == (f"agent:{agent}", "tokens", 100)

    registry.set_limit(thread_id + "-t", 1)
    with pytest.raises(BudgetExhaustedError) as raised:
        registry.check_and_consume(thread_id + "-t", 2)
    assert (raised.value.scope, raised.value.window, raised.value.unit) == (None, None, None)
    assert raised.value.max_tokens == 1


def test_the_async_registry(server) -> None:
    # Proves: the async registry's budget calls are the sync ones', awaited.
    scope = _scope()

    async def main() -> tuple[ScopeBudget, ScopeBudget | None, ScopeBudget | None]:
        async with AsyncThreadBudgetRegistry(url=server.url, token=server.token) as budgets:
            budget = await budgets.set_budget(scope, period="week", max_tokens=5)
            read = await budgets.get_budget_scope(scope)
            listed = [b for b in await budgets.list_budgets() if b.scope == scope]
            await budgets.remove_budget(scope)
            return budget, read if listed == [read] else None, await budgets.get_budget_scope(scope)

    budget, read, gone = asyncio.run(main())
    assert budget.period == "week" and read == budget and gone is None


def _race(url: str, token: str, thread_ids: list[str], attempt) -> int:
    """Runs one Python thread per thread id, all released at once, each calling
    `attempt(registry, thread_id)` ATTEMPTS_PER_THREAD times; returns how many returned True."""
    succeeded = [0]
    lock = threading.Lock()
    with ThreadBudgetRegistry(url=url, token=token, max_connections=len(thread_ids)) as registry:
        barrier = threading.Barrier(len(thread_ids))

        def worker(thread_id: str) -> None:
            barrier.wait()
            count = sum(1 for _ in range(ATTEMPTS_PER_THREAD) if attempt(registry, thread_id))
            with lock:
                succeeded[0] += count

        threads = [threading.Thread(target=worker, args=(thread_id,)) for thread_id in thread_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return succeeded[0]


def _org_call(org_id: str, registry: ThreadBudgetRegistry, thread_id: str) -> bool:
    """One check_and_consume under `org_id`: True when accepted; a refusal must name the org's budget."""
    try:
        registry.check_and_consume(thread_id, PROMPT_TOKENS, model="gpt-4o-mini", metadata={"org_id": org_id})
        return True
    except BudgetExhaustedError as error:
        assert error.scope == f"org:{org_id}" and error.unit == "usd"
        return False


def _org_race(url: str, token: str, thread_ids: list[str], org_id: str) -> int:
    return _race(url, token, thread_ids, functools.partial(_org_call, org_id))


def test_a_dollar_budget_is_exact_across_processes_and_threads(server, registry: ThreadBudgetRegistry) -> None:
    # Proves: 4 processes x 8 threads (160 attempts, each on its own ledger thread of org acme)
    # against a $1.00 monthly budget on org:acme: exactly the calls that fit succeed, the org's
    # spend ends at most $1.00, and it is exactly their cost. The window may already hold spend
    # of acme from other tests of the session; what fits is computed from it.
    org_id = "acme"
    cost = PROMPT_TOKENS * GPT_4O_MINI_PROMPT_NANOS
    assert cost == 10_000_050
    thread_ids = [f"acme-{uuid.uuid4().hex[:8]}-{index}" for index in range(PROCESSES * THREADS_PER_PROCESS)]
    for thread_id in thread_ids:
        registry.set_limit(thread_id, 10**9)  # the threads' own budgets are not what is tested
    before = registry.set_budget(f"org:{org_id}", period="month", max_usd="1.00")
    try:
        spent_before = int(before.spent_usd * NANOS_PER_USD)
        fits = (NANOS_PER_USD - spent_before) // cost
        assert fits < PROCESSES * THREADS_PER_PROCESS * ATTEMPTS_PER_THREAD
        context = multiprocessing.get_context("spawn")
        with context.Pool(PROCESSES) as pool:
            accepted = pool.starmap(
                _org_race,
                [(server.url, server.token, thread_ids[index::PROCESSES], org_id) for index in range(PROCESSES)])
        assert sum(accepted) == fits
        after = registry.get_budget_scope(f"org:{org_id}")
        assert after is not None
        assert after.spent_usd <= Decimal("1.00")
        assert int(after.spent_usd * NANOS_PER_USD) == spent_before + fits * cost
        assert sum(registry.get_budget(thread_id).request_count for thread_id in thread_ids) == fits
    finally:
        registry.remove_budget(f"org:{org_id}")


HOLD_TOKENS = 1_000


def _hold_call(registry: ThreadBudgetRegistry, thread_id: str) -> bool:
    """One hold of HOLD_TOKENS settled in full: True when granted; a refusal must name global."""
    try:
        hold = registry.reserve(thread_id, HOLD_TOKENS)
    except BudgetExhaustedError as error:
        assert error.scope == "global" and error.unit == "tokens"
        return False
    registry.settle(hold.reservation_id, HOLD_TOKENS)
    return True


def _global_race(url: str, token: str, thread_ids: list[str]) -> int:
    return _race(url, token, thread_ids, _hold_call)


def test_a_global_token_budget_is_exact_for_holds_across_processes(tmp_path) -> None:
    # Proves: 4 processes x 8 threads reserving 1,000 tokens and settling them in full, under a
    # global token budget with room for exactly 37 holds: holds count against the scope while
    # live, so exactly 37 are granted, whatever the interleaving, and the fleet's spend ends at
    # most at the max. A server of its own: the session's server holds other tests' live holds,
    # which fall under global too and could lapse mid-test.
    token = secrets.token_hex(16)
    process, port = start_server(_binary(), tmp_path, token)
    url = f"http://127.0.0.1:{port}"
    try:
        with ThreadBudgetRegistry(url=url, token=token) as registry:
            thread_ids = [f"fleet-{index}" for index in range(PROCESSES * THREADS_PER_PROCESS)]
            for thread_id in thread_ids:
                registry.set_limit(thread_id, 10**9)
            fits = 37
            maximum = fits * HOLD_TOKENS + HOLD_TOKENS // 2
            registry.set_budget("global", max_tokens=maximum)
            context = multiprocessing.get_context("spawn")
            with context.Pool(PROCESSES) as pool:
                granted = pool.starmap(
                    _global_race, [(url, token, thread_ids[index::PROCESSES]) for index in range(PROCESSES)])
            assert sum(granted) == fits
            after = registry.get_budget_scope("global")
            assert after is not None
            assert after.spent_tokens == fits * HOLD_TOKENS <= maximum
            assert after.held_tokens == 0
    finally:
        stop_server(process)
