"""Money policies, from settings."""

from __future__ import annotations

from domain.payments.topups import TopUpPolicy
from infra.settings import Settings


def topup_policy(settings: Settings) -> TopUpPolicy:
    p = settings.payments
    return TopUpPolicy(
        currencies=frozenset(p.topup_currencies),
        min_amount=p.topup_min_minor,
        max_amount=p.topup_max_minor,
        checkout_success_url=p.checkout_success_url or None,
        checkout_cancel_url=p.checkout_cancel_url or None,
    )
