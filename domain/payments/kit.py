"""What the money use cases need from the process: Stripe and the operator's policies."""

from __future__ import annotations

from dataclasses import dataclass

from domain.ledger.policy import LedgerPolicy
from domain.payments.topups import TopUpPolicy
from domain.ports import PaymentGateway


@dataclass(frozen=True)
class MoneyKit:
    gateway: PaymentGateway
    topups: TopUpPolicy
    ledger: LedgerPolicy
