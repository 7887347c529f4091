"""The reference registry's behaviours, on a real ledger server."""

from __future__ import annotations

import pytest

import budget_ledger
from budget_ledger import (
    BudgetExhaustedError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ThreadBudget,
    ThreadBudgetRegistry,
    configure_budget_registry,
    get_budget_registry,
    reset_budget_registry,
)

REFERENCE_USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "remaining", "max_tokens", "request_count"}


def test_thread_budget_is_the_reference_dataclass() -> None:
    # Proves the local value's arithmetic is the reference's: totals, remaining never negative,
    # exhausted at the max, can_consume, and a local consume that records nothing remotely.
    budget = ThreadBudget(max_tokens=1000, prompt_tokens=700, completion_tokens=200, request_count=2)
    assert (budget.total_tokens, budget.remaining, budget.is_exhausted) == (900, 100, False)
    assert budget.percent_used == 90.0
    assert budget.can_consume(100) and not budget.can_consume(101)
    budget.consume(prompt_tokens=150, completion_tokens=50)
    assert (budget.total_tokens, budget.remaining, budget.is_exhausted, budget.request_count) == (1100, 0, True, 3)
    assert ThreadBudget(max_tokens=0).is_exhausted and ThreadBudget(max_tokens=0).percent_used == 0.0
    assert ThreadBudget(max_tokens=3, prompt_tokens=2).percent_used == 66.7


def test_a_new_thread_opens_at_the_ledgers_default(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves get_budget gets-or-creates at the default max (100,000 in a new ledger) and names the thread.
    assert registry.max_tokens_per_thread == 100_000
    assert not registry.has_budget(thread_id)
    budget = registry.get_budget(thread_id)
    assert budget == ThreadBudget(max_tokens=100_000, thread_id=thread_id)
    assert registry.has_budget(thread_id)
    assert registry.get_budget(thread_id) == budget


def test_configure_changes_the_default_for_new_threads_only(server, registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves configure (and the constructor's max_tokens_per_thread) set the ledger's shared
    # default: a second client sees it, open threads keep their max.
    registry.get_budget(thread_id)
    registry.configure(max_tokens_per_thread=500)
    other = ThreadBudgetRegistry(url=server.url, token=server.token)
    assert other.max_tokens_per_thread == 500
    assert registry.get_budget(thread_id).max_tokens == 100_000
    assert other.get_budget(thread_id + "-new").max_tokens == 500
    ThreadBudgetRegistry(1234, url=server.url, token=server.token).close()
    assert registry.max_tokens_per_thread == 1234
    other.close()


def test_check_budget_is_true_or_raises_the_reference_error(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves check_budget: True when the estimate fits, else BudgetExhaustedError with
    # thread_id, used, max_tokens and "budget exhausted"; an exhausted thread refuses even 0.
    registry.set_limit(thread_id, 100)
    registry.consume(thread_id, prompt_tokens=60, completion_tokens=20)
    assert registry.check_budget(thread_id, estimated_tokens=20) is True
    with pytest.raises(BudgetExhaustedError) as refused:
        registry.check_budget(thread_id, estimated_tokens=21)
    assert (refused.value.thread_id, refused.value.used, refused.value.max_tokens) == (thread_id, 80, 100)
    assert "budget exhausted" in str(refused.value)
    registry.consume(thread_id, prompt_tokens=20)
    with pytest.raises(BudgetExhaustedError):
        registry.check_budget(thread_id)


def test_check_budget_opens_an_unknown_thread(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves check_budget gets-or-creates, as the reference's.
    assert registry.check_budget(thread_id, estimated_tokens=10)
    assert registry.has_budget(thread_id)


def test_consume_records_even_past_the_max(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves consume never refuses (the tokens were spent) and returns the ledger's budget.
    registry.set_limit(thread_id, 100)
    budget = registry.consume(thread_id, prompt_tokens=90, completion_tokens=50)
    assert (budget.total_tokens, budget.remaining, budget.is_exhausted, budget.request_count) == (140, 0, True, 1)
    assert budget.thread_id == thread_id and budget.percent_used == 140.0
    assert registry.get_budget(thread_id) == budget


def test_check_and_consume_refuses_without_recording(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves check_and_consume records what fits and raises, recording nothing, for what does not.
    registry.set_limit(thread_id, 100)
    assert registry.check_and_consume(thread_id, 60, 40).total_tokens == 100
    with pytest.raises(BudgetExhaustedError) as refused:
        registry.check_and_consume(thread_id, 1)
    assert refused.value.used == 100
    assert registry.get_usage(thread_id) == {
        "prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100, "remaining": 0, "max_tokens": 100,
        "request_count": 1}


def test_reads_never_open_a_thread(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves has_budget, get_usage and get_all_usage are pure reads (None / False when unknown).
    assert registry.get_usage(thread_id) is None
    assert not registry.has_budget(thread_id)
    assert thread_id not in registry.get_all_usage()
    assert not registry.has_budget(thread_id)


def test_get_all_usage_lists_every_thread_hottest_first(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves get_all_usage maps thread id to the reference's dict, ordered by percent used.
    for suffix, max_tokens, used in (("cool", 1000, 10), ("hot", 100, 99), ("warm", 100, 50)):
        registry.set_limit(f"{thread_id}-{suffix}", max_tokens)
        registry.consume(f"{thread_id}-{suffix}", used)
    usage = registry.get_all_usage()
    ours = [key for key in usage if key.startswith(thread_id)]
    assert ours == [f"{thread_id}-hot", f"{thread_id}-warm", f"{thread_id}-cool"]
    assert set(usage[f"{thread_id}-hot"]) == REFERENCE_USAGE_KEYS
    assert usage[f"{thread_id}-hot"]["remaining"] == 1


def test_reset_thread_zeroes_spent_and_keeps_the_max(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves reset_thread starts a new window (max kept); an unknown thread is no error.
    registry.set_limit(thread_id, 100)
    registry.consume(thread_id, 80)
    assert registry.reset_thread(thread_id) is None
    assert registry.get_budget(thread_id) == ThreadBudget(max_tokens=100, thread_id=thread_id)
    registry.reset_thread(thread_id + "-unknown")


def test_cleanup_thread_returns_the_final_budget_once(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves cleanup_thread: the final budget, then None; the id later opens fresh at the default.
    registry.set_limit(thread_id, 100)
    registry.consume(thread_id, 30, 5)
    final = registry.cleanup_thread(thread_id)
    assert final is not None and (final.total_tokens, final.max_tokens) == (35, 100)
    assert registry.cleanup_thread(thread_id) is None
    assert registry.get_usage(thread_id) is None
    assert registry.get_budget(thread_id).max_tokens == 100_000


def test_holds_count_against_the_budget_until_settled_or_released(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves reserve / settle / release: a hold takes room from checked calls, settle records
    # the actual usage once, release frees it, and a second end is a ConflictError.
    registry.set_limit(thread_id, 100)
    hold = registry.reserve(thread_id, 70, ttl_seconds=60)
    assert hold.budget.held_tokens == 70 and hold.thread_id == thread_id
    with pytest.raises(BudgetExhaustedError):
        registry.check_and_consume(thread_id, 31)
    settled = registry.settle(hold.reservation_id, prompt_tokens=40, completion_tokens=10, model="gpt-4o")
    assert (settled.total_tokens, settled.held_tokens, settled.request_count) == (50, 0, 1)
    second = registry.reserve(thread_id, 50)
    assert registry.release(second.reservation_id).held_tokens == 0
    with pytest.raises(ConflictError):
        registry.release(second.reservation_id)
    with pytest.raises(NotFoundError) as unknown:
        registry.release(10**12)
    assert isinstance(unknown.value, KeyError)


def test_holds_lists_the_live_holds_of_a_thread(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves holds() lists exactly the live holds, oldest first, narrowed to one thread, and
    # that a released hold leaves the list.
    first = registry.reserve(thread_id, 10)
    second = registry.reserve(thread_id, 20)
    listed = registry.holds(thread_id)
    assert [(hold.reservation_id, hold.tokens) for hold in listed] == [(first.reservation_id, 10), (second.reservation_id, 20)]
    assert all(hold.thread_id == thread_id and hold.expires_at for hold in listed)
    assert {hold.reservation_id for hold in registry.holds()} >= {first.reservation_id, second.reservation_id}
    registry.release(first.reservation_id)
    assert [hold.reservation_id for hold in registry.holds(thread_id)] == [second.reservation_id]
    assert registry.holds(thread_id + "-nobody") == []


def test_a_callers_idempotency_key_counts_once_and_guards_its_request(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves a repeated key replays (counted once) and the same key with other tokens is a conflict.
    registry.consume(thread_id, 10, idempotency_key=f"{thread_id}-k1")
    again = registry.consume(thread_id, 10, idempotency_key=f"{thread_id}-k1")
    assert (again.total_tokens, again.request_count) == (10, 1)
    with pytest.raises(ConflictError):
        registry.consume(thread_id, 11, idempotency_key=f"{thread_id}-k1")
    registry.consume(thread_id, 10)
    registry.consume(thread_id, 10)
    assert registry.get_budget(thread_id).request_count == 3


def test_bad_input_is_a_value_error_naming_the_field(registry: ThreadBudgetRegistry, thread_id: str) -> None:
    # Proves a 400 is an InvalidRequestError (a ValueError) carrying the server's detail.
    with pytest.raises(ValueError) as refused:
        registry.consume(thread_id, prompt_tokens=-1)
    assert isinstance(refused.value, InvalidRequestError)
    assert "promptTokens" in str(refused.value) and refused.value.status == 400
    with pytest.raises(InvalidRequestError) as too_long:
        registry.consume("x" * 300, 1)
    assert "threadId" in str(too_long.value)
    with pytest.raises(ValueError):
        registry.consume("", 1)
    assert not registry.has_budget(thread_id)


def test_the_process_wide_registry(server, monkeypatch: pytest.MonkeyPatch, thread_id: str) -> None:
    # Proves get/configure/reset_budget_registry as the reference's singleton, configured from
    # the environment or from configure_budget_registry's connection settings.
    monkeypatch.setenv("BUDGET_LEDGER_URL", server.url)
    monkeypatch.setenv("BUDGET_LEDGER_TOKEN", server.token)
    first = get_budget_registry()
    assert get_budget_registry() is first and first.url == server.url
    first.consume(thread_id, 7)
    reset_budget_registry()
    second = get_budget_registry()
    assert second is not first
    assert second.get_usage(thread_id)["total_tokens"] == 7  # durable: the ledger kept it
    monkeypatch.delenv("BUDGET_LEDGER_URL")
    configured = configure_budget_registry(max_tokens_per_thread=777, url=server.url, token=server.token)
    assert configured is get_budget_registry() and configured is not second
    assert configured.max_tokens_per_thread == 777
    configured.configure(100_000)


def test_the_swap_is_one_import_line() -> None:
    # Proves every name the reference module exports exists here under the same name.
    for name in ("ThreadBudget", "BudgetExhaustedError", "ThreadBudgetRegistry", "get_budget_registry",
                 "configure_budget_registry", "reset_budget_registry", "UsageEvent", "UsageTracker",
                 "get_usage_tracker", "reset_usage_tracker", "estimate_cost"):
        assert hasattr(budget_ledger, name), name
