"""Holds: money reserved for running work, then captured in parts and released once.

A hold is a pending transfer from a wallet to a revenue (or refunds-in-flight) account. Metering
captures part of it each tick; `final` capture or `void` releases what is left; a hold past its
expiry is released by the expiry job, so a lost worker cannot keep a user's money reserved.
Every change goes through `transition`, which checks the edge and says which transfers to write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from domain.ledger.errors import LedgerErrorCode, conflict, invalid
from domain.ledger.transfers import Phase, TransferCode, TransferSpec


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"  # resolved by capture; any remainder was released with it
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    wallet_id: int  # the account debited
    counterparty_id: int  # the account credited on capture
    currency: str
    amount: int  # everything reserved so far (extensions add to it)
    captured: int
    code: TransferCode
    reference: str | None
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None = None
    version: int = 1

    @property
    def remaining(self) -> int:
        return self.amount - self.captured if self.status is HoldStatus.OPEN else 0


@dataclass(frozen=True, slots=True)
class Capture:
    amount: int
    final: bool = False  # release the rest and close the hold


@dataclass(frozen=True, slots=True)
class Void:
    pass


@dataclass(frozen=True, slots=True)
class Extend:
    expires_at: datetime
    add_amount: int = 0


@dataclass(frozen=True, slots=True)
class Expire:
    pass


HoldAction = Capture | Void | Extend | Expire


def _spec(hold: Hold, amount: int, phase: Phase) -> TransferSpec:
    return TransferSpec(debit=hold.wallet_id, credit=hold.counterparty_id, amount=amount,
                        currency=hold.currency, code=hold.code, phase=phase, hold_id=hold.id,
                        reference=hold.reference)  # fmt: skip


def opening(hold: Hold) -> TransferSpec:
    """The pending transfer that reserves a new hold's amount."""
    return _spec(hold, hold.amount, Phase.PENDING)


def transition(hold: Hold, action: HoldAction, now: datetime) -> tuple[Hold, list[TransferSpec]]:
    """The one place a hold changes: the new hold and the transfers that record the change."""
    if hold.status is not HoldStatus.OPEN:
        raise conflict(LedgerErrorCode.HOLD_NOT_OPEN,
                       f"Hold {hold.id} is already {hold.status}.", "holdId")  # fmt: skip
    expired = now >= hold.expires_at
    if isinstance(action, Expire):
        if not expired:
            raise conflict(LedgerErrorCode.HOLD_NOT_EXPIRED, f"Hold {hold.id} has not expired yet.")
        return _close(hold, HoldStatus.EXPIRED, [], now)
    # Past its expiry a hold may still be released (that is what expiry does anyway), but no
    # longer captured or extended: the money is the user's again.
    if expired and not isinstance(action, Void):
        raise conflict(LedgerErrorCode.HOLD_EXPIRED, f"Hold {hold.id} has expired.", "holdId")
    match action:
        case Capture(amount=amount, final=final):
            if amount < 0 or (amount == 0 and not final):
                raise invalid(
                    LedgerErrorCode.INVALID_AMOUNT, "Capture a positive amount.", "amount"
                )
            if amount > hold.remaining:
                raise conflict(LedgerErrorCode.AMOUNT_EXCEEDS_HOLD,
                               f"Only {hold.remaining} is left on hold {hold.id}.", "amount")  # fmt: skip
            posted = [_spec(hold, amount, Phase.POST_PENDING)] if amount else []
            captured = hold.captured + amount
            if final or captured == hold.amount:
                return _close(hold, HoldStatus.CAPTURED, posted, now, captured)
            return replace(hold, captured=captured, version=hold.version + 1), posted
        case Void():
            return _close(hold, HoldStatus.VOIDED, [], now)
        case Extend(expires_at=expires_at, add_amount=add):
            if expires_at < hold.expires_at:
                raise invalid(LedgerErrorCode.INVALID_EXPIRY,
                              "An extension cannot bring the expiry forward.", "expiresAt")  # fmt: skip
            if add < 0:
                raise invalid(LedgerErrorCode.INVALID_AMOUNT, "Add zero or more.", "amount")
            extended = replace(hold, amount=hold.amount + add, expires_at=expires_at,
                               version=hold.version + 1)  # fmt: skip
            return extended, [_spec(hold, add, Phase.PENDING)] if add else []
    raise AssertionError(action)  # pragma: no cover


def _close(
    hold: Hold, status: HoldStatus, specs: list[TransferSpec], now: datetime,
    captured: int | None = None,
) -> tuple[Hold, list[TransferSpec]]:  # fmt: skip
    """Resolve the hold (one version step), releasing whatever was not captured."""
    captured = hold.captured if captured is None else captured
    rest = hold.amount - captured
    released = [*specs, _spec(hold, rest, Phase.VOID_PENDING)] if rest else specs
    closed = replace(hold, captured=captured, status=status, resolved_at=now,
                     version=hold.version + 1)  # fmt: skip
    return closed, released
