"""The reference usage tracker's behaviours, the feed, and estimate_cost, on a real server."""

from __future__ import annotations

import uuid

import pytest

from budget_ledger import (
    ConflictError, UsageEvent, UsageTracker, configure_usage_tracker, estimate_cost, get_usage_tracker,
)


def test_record_returns_the_event_with_the_ledgers_cost(tracker: UsageTracker, thread_id: str) -> None:
    # Proves record: a UsageEvent with the reference's fields, the cost the ledger billed
    # (0.00045 USD for gpt-4o-mini at 1000 + 500), the metadata, and the ledger's event id.
    event = tracker.record(thread_id, "planner", "gpt-4o-mini", "openai", 1000, 500, 812.6, {"org_id": "acme"})
    assert isinstance(event, UsageEvent)
    assert (event.thread_id, event.agent_id, event.model, event.provider) == (thread_id, "planner", "gpt-4o-mini", "openai")
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (1000, 500, 1500)
    assert event.estimated_cost == 0.00045
    assert event.latency_ms == 813.0  # whole milliseconds in the ledger
    assert event.metadata == {"org_id": "acme"}
    assert event.timestamp.endswith("Z") and event.event_id is not None and event.event_id > 0
    unpriced = tracker.record(thread_id, None, "llama-local", "ollama", 5, 5, 1)
    assert unpriced.estimated_cost is None and unpriced.metadata == {}


def test_subscribers_hear_each_record_and_a_failing_one_breaks_nothing(tracker: UsageTracker, thread_id: str) -> None:
    # Proves subscribe/unsubscribe: callbacks get each event of this tracker; one that raises
    # does not stop recording nor the other callbacks.
    heard: list[UsageEvent] = []

    def failing(_: UsageEvent) -> None:
        raise RuntimeError("subscriber bug")

    tracker.subscribe(failing)
    tracker.subscribe(heard.append)
    first = tracker.record(thread_id, "a", "gpt-4o", "openai", 10, 1, 5)
    tracker.unsubscribe(heard.append)
    tracker.unsubscribe(heard.append)  # unknown now: ignored
    tracker.record(thread_id, "a", "gpt-4o", "openai", 10, 1, 5)
    assert heard == [first]


def test_totals_count_the_window_by_agent_and_model(tracker: UsageTracker, thread_id: str) -> None:
    # Proves get_totals (with avg_latency_ms), get_agent_totals, get_model_totals and the
    # all-agents/all-models maps, in the reference's keys; reset starts a new window.
    tracker.reset()
    assert tracker.get_totals() == {
        "total_tokens": 0, "prompt_tokens": 0, "completion_tokens": 0, "request_count": 0, "total_cost": 0.0,
        "unpriced_requests": 0, "unpriced_tokens": 0, "cost_complete": True, "avg_latency_ms": 0}
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    tracker.record(thread_id, agent, "gpt-4o", "openai", 1_000_000, 0, 100)
    tracker.record(thread_id, agent, "claude-opus-4", "anthropic", 0, 1_000_000, 300)
    tracker.record(thread_id, "other", "mystery", "x", 10, 0, 200)
    totals = tracker.get_totals()
    assert totals == {
        "total_tokens": 2_000_010, "prompt_tokens": 1_000_010, "completion_tokens": 1_000_000, "request_count": 3,
        "total_cost": 77.5, "unpriced_requests": 1, "unpriced_tokens": 10, "cost_complete": False,
        "avg_latency_ms": 200.0}
    assert tracker.get_agent_totals(agent) == {
        "total_tokens": 2_000_000, "prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "request_count": 2,
        "total_cost": 77.5, "unpriced_requests": 0, "unpriced_tokens": 0, "cost_complete": True}
    assert tracker.get_model_totals("gpt-4o")["total_cost"] == 2.5
    # An unpriced model's cost is unknown, never 0, and its usage is counted apart in tokens.
    assert tracker.get_model_totals("mystery")["total_cost"] is None
    assert tracker.get_model_totals("mystery")["unpriced_tokens"] == 10
    assert tracker.get_agent_totals("nobody")["request_count"] == 0
    assert set(tracker.get_all_agent_totals()) == {agent, "other"}
    assert set(tracker.get_all_model_totals()) == {"gpt-4o", "claude-opus-4", "mystery"}
    tracker.reset()
    assert tracker.get_totals()["request_count"] == 0


def test_follow_reads_every_clients_calls_and_resumes(server, tracker: UsageTracker, thread_id: str) -> None:
    # Proves follow(): the ledger's consumes in order (another client's too), resumable from an
    # event id, and ending when caught up without block.
    start = max((event.event_id or 0 for event in tracker.follow(block=False)), default=0)
    with UsageTracker(url=server.url, token=server.token) as other:
        other.record(thread_id, "a", "gpt-4o", "openai", 1, 0, 1)
    tracker.record(thread_id, "b", "gpt-4o", "openai", 2, 0, 1)
    seen = [event for event in tracker.follow(after=start, block=False) if event.thread_id == thread_id]
    assert [(event.agent_id, event.prompt_tokens) for event in seen] == [("a", 1), ("b", 2)]
    resumed = [event for event in tracker.follow(after=seen[0].event_id or 0, block=False)]
    assert [event.agent_id for event in resumed if event.thread_id == thread_id] == ["b"]


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "usd"),
    [
        ("grok-4.1", 1_000_000, 1_000_000, 18.0),
        ("claude-opus-4", 1_000_000, 1_000_000, 90.0),
        ("gpt-4o", 1_000_000, 1_000_000, 12.5),
        ("gpt-4o-mini", 1000, 500, 0.00045),
        ("gpt-4o-mini-2024-07-18", 1000, 500, 0.00045),
        ("unknown-model", 1000, 1000, None),
    ],
)
def test_estimate_cost_figures(server, model: str, prompt: int, completion: int, usd: float | None) -> None:
    # Proves the figures through the module-level estimate_cost, from the ledger's table.
    configure_usage_tracker(url=server.url, token=server.token)
    assert estimate_cost(model, prompt, completion) == usd


def test_estimate_cost_follows_a_price_another_client_sets(server, tracker: UsageTracker) -> None:
    # Proves the per-model cache is dropped when the table changes: a price set by another
    # client is used at the next estimate, and names are matched by the server's rule (case and
    # surrounding spaces do not matter; a longer name is priced only by an explicit pattern).
    model = f"zeta-{uuid.uuid4().hex[:6]}"
    assert tracker.estimate_cost(model, 1000, 1000) is None
    with UsageTracker(url=server.url, token=server.token) as other:
        row = other.set_price(model, "1.5", 6)
    assert (str(row.prompt_per_million), row.model) == ("1.5", model)
    assert tracker.estimate_cost(model, 1_000_000, 1_000_000) == 7.5
    assert tracker.estimate_cost(" " + model.upper(), 2000, 0) == 0.003
    assert tracker.estimate_cost(model + "-preview", 2000, 0) is None
    tracker.set_price(model + "-*", "1.5", 6)
    assert tracker.estimate_cost(model.upper() + "-preview", 2000, 0) == 0.003
    listed = [price for price in tracker.prices.table() if price.model == model]
    assert [price.in_force for price in listed] == [True]
    with pytest.raises(TypeError):
        tracker.set_price(model, 1.5, 6)  # type: ignore[arg-type]


def test_reprice_bills_unpriced_usage_once(tracker: UsageTracker) -> None:
    # Proves reprice bills calls recorded while their model had no price, at a price set since
    # that starts before them, exactly, and that a second call bills nothing more.
    model = f"eta-{uuid.uuid4().hex[:6]}"
    thread = f"reprice-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        assert tracker.record(thread, None, model, "test", 1000, 100, 5.0).estimated_cost is None
    before = tracker.get_model_totals(model)
    assert (before["total_cost"], before["unpriced_requests"], before["unpriced_tokens"]) == (None, 3, 3_300)
    tracker.set_price(model, "2", "4", effective_from="2020-01-01")
    # 3 x (1,000 x 2,000 + 100 x 4,000) nano-dollars.
    first = tracker.reprice(model, "2020-01-01", "2100-01-01")
    assert (first["repriced"], first["costNanos"], first["unpriced"], first["complete"]) == (3, 7_200_000, 0, True)
    after = tracker.get_model_totals(model)
    assert (after["total_cost"], after["unpriced_requests"], after["unpriced_tokens"]) == (0.0072, 0, 0)
    again = tracker.reprice(model, "2020-01-01", "2100-01-01")
    assert (again["repriced"], again["costNanos"]) == (0, 0)


def test_a_model_named_reprice_is_priced_like_any_other(tracker: UsageTracker) -> None:
    # Proves the model name "reprice" reaches the price endpoints (GET, PUT and DELETE
    # /api/v1/prices/reprice) rather than the reprice operation, which still answers POST.
    tracker.set_price("reprice", "1", "2", effective_from="2020-01-01")
    assert tracker.prices.price("reprice") is not None
    assert tracker.estimate_cost("reprice", 1_000_000, 1_000_000) == 3.0
    tracker.set_price("reprice", "5", "5", effective_from="2100-01-01")
    assert tracker.withdraw_price("reprice", "2100-01-01").model == "reprice"
    assert tracker.reprice("reprice", "2020-01-01", "2100-01-01")["repriced"] == 0


def test_a_future_price_is_withdrawn_or_replaced(tracker: UsageTracker) -> None:
    # Proves withdraw_price removes a price that has not started (a second withdrawal is a
    # KeyError-derived error), replaces= swaps a future price for another, and a price already in
    # force cannot be withdrawn (a conflict).
    model = f"theta-{uuid.uuid4().hex[:6]}"
    tracker.set_price(model, "2", "4", effective_from="2100-01-01")
    withdrawn = tracker.withdraw_price(model, "2100-01-01")
    assert withdrawn.model == model
    with pytest.raises(KeyError):
        tracker.withdraw_price(model, "2100-01-01")
    tracker.set_price(model, "1", "1", effective_from="2020-01-01")
    with pytest.raises(ConflictError):
        tracker.withdraw_price(model, "2020-01-01")
    tracker.set_price(model, "2", "4", effective_from="2100-01-01")
    replaced = tracker.set_price(model, "3", "5", effective_from="2100-02-01", replaces="2100-01-01")
    assert replaced.effective_from.startswith("2100-02-01")
    assert tracker.estimate_cost(model, 1_000_000, 0) == 1.0


def test_the_process_wide_tracker(server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proves get_usage_tracker is one object per process, configured from the environment.
    monkeypatch.setenv("BUDGET_LEDGER_URL", server.url)
    monkeypatch.setenv("BUDGET_LEDGER_TOKEN", server.token)
    assert get_usage_tracker() is get_usage_tracker()
    assert get_usage_tracker().url == server.url
