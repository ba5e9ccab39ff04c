"""Payment error codes."""

from __future__ import annotations

from collections.abc import Awaitable
from enum import StrEnum
from typing import TypeVar

from domain.errors import DomainError, Problem
from domain.payments.gateway import GatewayRejected, GatewayUnavailable

T = TypeVar("T")


class PaymentErrorCode(StrEnum):
    INVALID_AMOUNT = "INVALID_AMOUNT"
    UNSUPPORTED_CURRENCY = "UNSUPPORTED_CURRENCY"
    PAYMENT_NOT_FOUND = "PAYMENT_NOT_FOUND"
    NOT_REFUNDABLE = "NOT_REFUNDABLE"
    AMOUNT_EXCEEDS_REFUNDABLE = "AMOUNT_EXCEEDS_REFUNDABLE"
    INVALID_REASON = "INVALID_REASON"
    STRIPE_UNAVAILABLE = "STRIPE_UNAVAILABLE"
    STRIPE_REJECTED = "STRIPE_REJECTED"


class ProviderError(DomainError):
    """Stripe could not be reached or refused; what we stored so far is kept, and the same
    request (same idempotency key) may be sent again."""

    def __init__(self, code: PaymentErrorCode, message: str) -> None:
        super().__init__(Problem(code, message))


async def stripe_call(pending: Awaitable[T]) -> T:
    """Await a gateway call, turning its failures into errors a client can act on."""
    try:
        return await pending
    except GatewayUnavailable as exc:
        raise ProviderError(PaymentErrorCode.STRIPE_UNAVAILABLE,
                            "Stripe did not answer; send the same request again.") from exc  # fmt: skip
    except GatewayRejected as exc:
        raise ProviderError(PaymentErrorCode.STRIPE_REJECTED, f"Stripe refused: {exc}") from exc
