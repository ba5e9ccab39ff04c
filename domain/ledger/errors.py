"""Ledger error codes: what a client or a calling use case can act on."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import Conflict, InvalidInput, NotFound, Problem
from domain.money import Money, is_known_currency


class LedgerErrorCode(StrEnum):
    INVALID_AMOUNT = "INVALID_AMOUNT"
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    SPEND_LIMIT_REACHED = "SPEND_LIMIT_REACHED"
    HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
    HOLD_NOT_OPEN = "HOLD_NOT_OPEN"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    HOLD_NOT_EXPIRED = "HOLD_NOT_EXPIRED"
    INVALID_BATCH = "INVALID_BATCH"
    AMOUNT_EXCEEDS_HOLD = "AMOUNT_EXCEEDS_HOLD"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    TRANSFER_NOT_FOUND = "TRANSFER_NOT_FOUND"
    ALREADY_REVERSED = "ALREADY_REVERSED"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    INVALID_REASON = "INVALID_REASON"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"


def invalid(code: LedgerErrorCode, message: str, field: str | None = None) -> InvalidInput:
    return InvalidInput(Problem(code, message, field))


def conflict(code: LedgerErrorCode, message: str, field: str | None = None) -> Conflict:
    return Conflict(Problem(code, message, field))


def not_found(code: LedgerErrorCode, message: str, field: str | None = None) -> NotFound:
    return NotFound(Problem(code, message, field))


class InsufficientFunds(Conflict):
    """A wallet's available balance would go below zero; nothing was written."""

    def __init__(
        self,
        account_id: int | None = None,
        available: int | None = None,
        needed: int | None = None,
        currency: str | None = None,
    ) -> None:
        self.account_id = account_id
        self.available = available
        self.needed = needed
        detail = ""
        if needed is not None and available is not None:
            shown = (
                (str(Money(available, currency)), str(Money(needed, currency)))
                if currency is not None and is_known_currency(currency)
                else (f"{available} minor units", f"{needed}")
            )
            detail = f": {shown[0]} available, {shown[1]} needed"
        super().__init__(
            Problem(
                LedgerErrorCode.INSUFFICIENT_FUNDS,
                f"Not enough available balance{detail}.",
                "amount",
            )
        )
