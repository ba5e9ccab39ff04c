"""Money wiring: the Stripe gateway and the policies, from settings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

from domain.ledger.policy import LedgerPolicy
from domain.payments.gateway import GatewayUnavailable
from domain.payments.topups import TopUpPolicy
from infra.settings import Settings
from infra.stripe.gateway import StripeGateway


class UnconfiguredGateway:
    """Stands in when no Stripe key is set: every call is refused as unavailable, so top-ups
    and refunds answer STRIPE_UNAVAILABLE while the rest of the platform runs."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise GatewayUnavailable("Stripe is not configured (STRIPE_SECRET_KEY is not set)")

    async def create_payment_intent(self, *a: object, **k: object) -> NoReturn:
        self._refuse()

    async def create_checkout_session(self, *a: object, **k: object) -> NoReturn:
        self._refuse()

    async def retrieve_payment_intent(self, intent_id: str) -> NoReturn:
        self._refuse()

    async def create_refund(self, *a: object, **k: object) -> NoReturn:
        self._refuse()

    async def find_refund(self, payment_intent: str, refund_ref: str) -> NoReturn:
        self._refuse()

    async def retrieve_refund(self, refund_id: str) -> NoReturn:
        self._refuse()

    async def payment_intents_since(self, since: datetime) -> Sequence[NoReturn]:
        self._refuse()

    async def refunds_since(self, since: datetime) -> Sequence[NoReturn]:
        self._refuse()

    async def balance_transactions_since(self, since: datetime) -> Sequence[NoReturn]:
        self._refuse()

    async def events_since(self, since: datetime) -> Sequence[NoReturn]:
        self._refuse()

    async def aclose(self) -> None:
        return None


def make_gateway(settings: Settings) -> StripeGateway | UnconfiguredGateway:
    p = settings.payments
    if not p.stripe_enabled:
        return UnconfiguredGateway()
    return StripeGateway(p.stripe_secret_key, p.stripe_api_base or None, p.stripe_timeout_seconds)


def topup_policy(settings: Settings) -> TopUpPolicy:
    p = settings.payments
    return TopUpPolicy(
        currencies=frozenset(p.topup_currencies),
        min_amount=p.topup_min_minor,
        max_amount=p.topup_max_minor,
        checkout_success_url=p.checkout_success_url or None,
        checkout_cancel_url=p.checkout_cancel_url or None,
    )


def ledger_policy(settings: Settings) -> LedgerPolicy:
    return LedgerPolicy(default_hourly_spend_limit=settings.payments.spend_limit_per_hour_minor)
