"""Transfers: the only way money moves.

A transfer debits one account and credits another by the same positive amount in one currency,
so its two postings sum to zero by construction. A pending transfer reserves money (a hold); a
post-pending transfer turns part of a hold into a posted movement; a void-pending transfer
releases the rest. Rows are never changed: a mistake is corrected by a reversing transfer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.ledger.accounts import Balance


class TransferCode(StrEnum):
    """Which flow moved the money; statements group by it."""

    TOP_UP = "top_up"
    USAGE = "usage"
    REFUND = "refund"
    CREDIT = "credit"
    REVERSAL = "reversal"


class Phase(StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    POST_PENDING = "post_pending"
    VOID_PENDING = "void_pending"


@dataclass(frozen=True, slots=True)
class TransferSpec:
    debit: int  # account ids
    credit: int
    amount: int
    currency: str
    code: TransferCode
    phase: Phase = Phase.POSTED
    hold_id: int | None = None
    reverses_id: int | None = None
    reference: str | None = None  # what it was for: "payment:12", "allocation:7"
    memo: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise ValueError("a transfer moves a positive whole number of minor units")
        if self.debit == self.credit:
            raise ValueError("a transfer moves money between two different accounts")

    def effects(self) -> tuple[tuple[int, Balance], tuple[int, Balance]]:
        """How the debit and the credit account's running sums change."""
        a = self.amount
        match self.phase:
            case Phase.POSTED:
                return (self.debit, Balance(debits_posted=a)), (
                    self.credit,
                    Balance(credits_posted=a),
                )
            case Phase.PENDING:
                return (self.debit, Balance(debits_pending=a)), (
                    self.credit,
                    Balance(credits_pending=a),
                )
            case Phase.POST_PENDING:
                return (
                    (self.debit, Balance(debits_posted=a, debits_pending=-a)),
                    (self.credit, Balance(credits_posted=a, credits_pending=-a)),
                )
            case Phase.VOID_PENDING:
                return (self.debit, Balance(debits_pending=-a)), (
                    self.credit,
                    Balance(credits_pending=-a),
                )
        raise AssertionError(self.phase)  # pragma: no cover


def net_effects(specs: Iterable[TransferSpec]) -> dict[int, Balance]:
    """The change to each account's running sums if all of `specs` are applied together."""
    out: dict[int, Balance] = defaultdict(Balance)
    for spec in specs:
        for account_id, change in spec.effects():
            out[account_id] = out[account_id] + change
    return dict(out)


@dataclass(frozen=True, slots=True)
class Transfer:
    id: int
    spec: TransferSpec
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of a transfer as one account sees it: signed, credits positive."""

    transfer: Transfer
    account_id: int

    @property
    def amount(self) -> int:
        spec = self.transfer.spec
        return spec.amount if self.account_id == spec.credit else -spec.amount

    @property
    def pending(self) -> bool:
        return self.transfer.spec.phase in (Phase.PENDING, Phase.VOID_PENDING)


@dataclass(frozen=True, slots=True)
class WalletEntry:
    """A transfer as the wallet it moved sees it, and whose wallet that is: what one entry's
    global ID names (a transfer touches at most one wallet; were it two, the credited one)."""

    entry: Entry
    owner_id: int
