"""What we know of Stripe's objects, as plain values, and how a call to Stripe can fail.

The gateway adapter (infra/stripe) turns Stripe's responses into these; the domain never sees
the SDK. Amounts are integer minor units; currencies are upper-case ISO 4217 codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class GatewayIntent:
    """A Stripe PaymentIntent."""

    id: str
    amount: int
    currency: str
    status: str  # Stripe's own word: requires_payment_method, processing, succeeded, canceled...
    client_secret: str | None
    created: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    amount_received: int = 0


@dataclass(frozen=True)
class GatewayCheckout:
    """A Stripe Checkout Session: where to send the buyer."""

    id: str
    url: str
    payment_intent: str | None


@dataclass(frozen=True)
class GatewayRefund:
    id: str
    payment_intent: str | None
    amount: int
    currency: str
    status: str  # pending, requires_action, succeeded, failed, canceled
    created: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    failure_reason: str | None = None


@dataclass(frozen=True)
class GatewayBalanceTransaction:
    id: str
    amount: int  # signed: a charge is positive, a refund negative
    currency: str
    type: str  # charge, refund, ...
    source: str | None  # ch_..., re_...
    created: datetime


@dataclass(frozen=True)
class GatewayEvent:
    """A verified webhook event (or one listed from the events API)."""

    id: str
    type: str
    created: datetime
    object: dict[str, Any]


class GatewayError(Exception):
    """A call to Stripe did not give an answer we can use."""


class GatewayUnavailable(GatewayError):
    """Timeout, connection failure or a 5xx: Stripe may or may not have done it. Retry with the
    same idempotency key, or look the object up, before assuming either."""


class GatewayRejected(GatewayError):
    """Stripe answered with a 4xx: it did not do it, and repeating it unchanged will not help."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class SignatureInvalid(Exception):
    """A webhook body whose signature matches none of our secrets, or whose timestamp is too
    old or too new: it is refused and nothing of it is applied."""
