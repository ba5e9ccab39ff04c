"""The gateway the settings ask for: Stripe (or a stand-in at STRIPE_API_BASE), or none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

from domain.payments.gateway import GatewayUnavailable
from infra.payment_settings import PaymentSettings
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


def make_gateway(p: PaymentSettings) -> StripeGateway | UnconfiguredGateway:
    if not p.stripe_enabled:
        return UnconfiguredGateway()
    return StripeGateway(p.stripe_secret_key, p.stripe_api_base or None, p.stripe_timeout_seconds)
