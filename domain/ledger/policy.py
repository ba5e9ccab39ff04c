"""Ledger limits an operator sets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class LedgerPolicy:
    # New holds (and extensions) of usage past this much per wallet per rolling hour are
    # refused: a runaway script cannot drain a balance faster than its owner can notice.
    default_hourly_spend_limit: int = 100_000
    max_hold_ttl: timedelta = timedelta(days=31)
    spend_window: timedelta = timedelta(hours=1)
