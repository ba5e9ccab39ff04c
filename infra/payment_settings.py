"""Money settings: Stripe, top-up bounds, spend limits and the periodic money jobs."""

from __future__ import annotations

from dataclasses import dataclass

from domain.ledger.policy import LedgerPolicy
from domain.money import is_known_currency


@dataclass(frozen=True)
class PaymentSettings:
    stripe_secret_key: str  # empty: top-ups and refunds answer STRIPE_UNAVAILABLE
    stripe_api_base: str  # empty: Stripe itself; tests point it at localstripe
    stripe_webhook_secrets: tuple[str, ...]  # several, so a secret can be rotated
    stripe_webhook_tolerance_seconds: int
    stripe_timeout_seconds: float
    checkout_success_url: str
    checkout_cancel_url: str
    topup_currencies: tuple[str, ...]
    topup_min_minor: int
    topup_max_minor: int
    spend_limit_per_hour_minor: int
    money_tick_seconds: float  # expire holds, settle refunds
    reconcile_interval_seconds: float
    reconcile_window_hours: int

    @property
    def stripe_enabled(self) -> bool:
        return bool(self.stripe_secret_key)


def secrets_list(value: str) -> tuple[str, ...]:
    found = tuple(s.strip() for s in value.split(",") if s.strip())
    if not found or any(not s.startswith("whsec_") for s in found):
        raise ValueError("comma-separated whsec_... secrets")
    return found


def currencies(value: str) -> tuple[str, ...]:
    found = tuple(c.strip().upper() for c in value.split(",") if c.strip())
    if not found or not all(is_known_currency(c) for c in found):
        raise ValueError("comma-separated ISO 4217 codes such as USD,EUR")
    return found


def ledger_policy(payments: PaymentSettings) -> LedgerPolicy:
    return LedgerPolicy(default_hourly_spend_limit=payments.spend_limit_per_hour_minor)
