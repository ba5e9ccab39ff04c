"""Ledger accounts and their balances.

A wallet holds a user's prepaid money in one currency; platform accounts are the other side of
every flow. Balances follow TigerBeetle's shape: four non-negative running sums, from which
balance, held and available are derived, so a pending debit is visible before it posts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AccountKind(StrEnum):
    WALLET = "wallet"  # one per user and currency; may never be overdrawn
    STRIPE_CLEARING = "stripe_clearing"  # card money held for us by Stripe
    COMPUTE_REVENUE = "compute_revenue"
    STORAGE_REVENUE = "storage_revenue"
    PROMOTIONAL_CREDIT = "promotional_credit"  # credits granted by admins come from here
    REFUNDS_IN_FLIGHT = "refunds_in_flight"  # refunded money on its way back to the card


@dataclass(frozen=True, slots=True)
class AccountKey:
    """What names an account: its kind and currency, plus the owner for wallets."""

    kind: AccountKind
    currency: str
    user_id: int | None = None

    def __post_init__(self) -> None:
        if (self.kind is AccountKind.WALLET) != (self.user_id is not None):
            raise ValueError("a wallet has an owner and a platform account has none")

    @property
    def must_not_overdraw(self) -> bool:
        return self.kind is AccountKind.WALLET


def wallet(user_id: int, currency: str) -> AccountKey:
    return AccountKey(AccountKind.WALLET, currency, user_id)


def platform(kind: AccountKind, currency: str) -> AccountKey:
    return AccountKey(kind, currency)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    key: AccountKey
    hourly_spend_limit: int | None = None  # None: the platform default applies


@dataclass(frozen=True, slots=True)
class Balance:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def held(self) -> int:
        return self.debits_pending

    @property
    def available(self) -> int:
        """What a wallet may still spend: credits minus posted and pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    def __add__(self, other: Balance) -> Balance:
        return Balance(
            self.debits_posted + other.debits_posted,
            self.credits_posted + other.credits_posted,
            self.debits_pending + other.debits_pending,
            self.credits_pending + other.credits_pending,
        )


ZERO = Balance()
