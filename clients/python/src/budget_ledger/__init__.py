"""A client of the BudgetLedger REST API: the reference thread budget registry and usage
tracker as a drop-in, durable and exact across threads, processes and retries.

    from budget_ledger import get_budget_registry, BudgetExhaustedError
"""

from .aio import AsyncThreadBudgetRegistry, AsyncUsageTracker
from .budget import Hold, Reservation, ThreadBudget
from .errors import (
    AuthenticationError,
    BudgetExhaustedError,
    BudgetLedgerError,
    ConflictError,
    HTTPStatusError,
    InvalidRequestError,
    LedgerConnectionError,
    LedgerTimeoutError,
    NotFoundError,
    ServerError,
)
from .pricing import ModelPrice, PriceBook
from .registry import (
    ThreadBudgetRegistry,
    configure_budget_registry,
    get_budget_registry,
    reset_budget_registry,
)
from .scopes import BudgetWindow, ScopeBudget
from .transport import Transport
from .usage import (
    UsageCallback,
    UsageEvent,
    UsageTracker,
    configure_usage_tracker,
    estimate_cost,
    get_usage_tracker,
    reset_usage_tracker,
)

__all__ = [
    "AsyncThreadBudgetRegistry",
    "AsyncUsageTracker",
    "AuthenticationError",
    "BudgetWindow",
    "BudgetExhaustedError",
    "BudgetLedgerError",
    "ConflictError",
    "HTTPStatusError",
    "Hold",
    "InvalidRequestError",
    "LedgerConnectionError",
    "LedgerTimeoutError",
    "ModelPrice",
    "NotFoundError",
    "PriceBook",
    "Reservation",
    "ScopeBudget",
    "ServerError",
    "ThreadBudget",
    "ThreadBudgetRegistry",
    "Transport",
    "UsageCallback",
    "UsageEvent",
    "UsageTracker",
    "configure_budget_registry",
    "configure_usage_tracker",
    "estimate_cost",
    "get_budget_registry",
    "get_usage_tracker",
    "reset_budget_registry",
    "reset_usage_tracker",
]
