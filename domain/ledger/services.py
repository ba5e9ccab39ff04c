"""Ledger use cases: each opens its own transaction (retried on contention) and commits.

Compute and storage use `book` inside their own units of work instead, so that moving money and
changing an allocation's state commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.errors import InvalidInput, NotFound, Problem
from domain.idempotency import Keyed, check_key, once, request_hash
from domain.identity.principal import Principal
from domain.ledger import book
from domain.ledger.accounts import AccountKind, Balance, platform, wallet
from domain.ledger.errors import LedgerErrorCode, invalid
from domain.ledger.holds import Expire, Hold
from domain.ledger.transfers import Entry, Transfer, TransferCode
from domain.pagination import Page, PageRequest
from domain.ports import LedgerCheck, UnitOfWork
from domain.retry import retrying

MAX_REASON = 500
MAX_STATEMENT_MONTHS = 36
CREDIT_OPERATION = "grantCredit"


@dataclass(frozen=True)
class WalletView:
    currency: str
    balance: int
    available: int
    held: int

    @classmethod
    def of(cls, currency: str, sums: Balance) -> WalletView:
        return cls(currency, sums.balance, sums.available, sums.held)


async def wallet_view(uow: UnitOfWork, user_id: int, currency: str) -> WalletView:
    """A user's wallet in one currency; an unused wallet reads as zero, and is not created.
    An unknown currency is refused rather than read as an empty wallet."""
    book.check_amount(1, currency)
    async with uow:
        account = await uow.ledger.find_account(wallet(user_id, currency))
        if account is None:
            return WalletView.of(currency, Balance())
        sums = (await uow.ledger.balances([account.id])).get(account.id, Balance())
        return WalletView.of(currency, sums)


async def wallets(uow: UnitOfWork, user_id: int) -> list[WalletView]:
    async with uow:
        accounts = await uow.ledger.wallets_of(user_id)
        sums = await uow.ledger.balances([a.id for a in accounts])
        return [WalletView.of(a.key.currency, sums.get(a.id, Balance())) for a in accounts]


async def entries(uow: UnitOfWork, user_id: int, page: PageRequest) -> Page[Entry]:
    """Every posting on the user's wallets, newest first."""
    async with uow:
        accounts = await uow.ledger.wallets_of(user_id)
        if not accounts:
            return Page.empty(page)
        return await uow.ledger.entries([a.id for a in accounts], page)


@dataclass(frozen=True)
class UsageLine:
    reference: str  # "allocation:7", "volume:3"
    amount: int  # charged, positive


@dataclass
class Statement:
    """One month of one wallet's posted movements, by flow."""

    month: str
    currency: str
    top_ups: int = 0
    refunds: int = 0  # money sent back to the card (positive)
    credits: int = 0
    reversals: int = 0  # signed: corrections in either direction
    usage: list[UsageLine] = field(default_factory=list)

    @property
    def usage_total(self) -> int:
        return sum(line.amount for line in self.usage)

    @property
    def net(self) -> int:
        return self.top_ups + self.credits + self.reversals - self.refunds - self.usage_total


async def statements(uow: UnitOfWork, user_id: int, months: int) -> list[Statement]:
    """Monthly statements, newest month first, for the last `months` months."""
    if isinstance(months, bool) or not 1 <= months <= MAX_STATEMENT_MONTHS:
        raise InvalidInput(Problem("INVALID_MONTHS",
                                   f"months is 1 to {MAX_STATEMENT_MONTHS}.", "months"))  # fmt: skip
    async with uow:
        accounts = await uow.ledger.wallets_of(user_id)
        totals = await uow.ledger.month_totals([a.id for a in accounts], months) if accounts else []
    found: dict[tuple[str, str], Statement] = {}
    for t in totals:
        s = found.setdefault((t.month, t.currency), Statement(t.month, t.currency))
        match t.code:
            case TransferCode.TOP_UP:
                s.top_ups += t.amount
            case TransferCode.REFUND:
                s.refunds -= t.amount
            case TransferCode.CREDIT:
                s.credits += t.amount
            case TransferCode.REVERSAL:
                s.reversals += t.amount
            case TransferCode.USAGE:
                s.usage.append(UsageLine(t.reference or "unattributed", -t.amount))
    return sorted(found.values(), key=lambda s: (s.month, s.currency), reverse=True)


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise invalid(LedgerErrorCode.INVALID_REASON,
                      f"Give a reason of 1 to {MAX_REASON} characters.", "reason")  # fmt: skip
    return reason


async def grant_credit(
    uow: UnitOfWork, actor: Principal, meta: RequestMeta, user_id: int, amount: int,
    currency: str, reason: str, idempotency_key: str,
) -> Transfer:  # fmt: skip
    """An admin's credit from the promotional account: audited with actor and reason, and
    never confused with a refund (its own transfer code)."""
    book.check_amount(amount, currency)
    reason = _reason(reason)
    key = check_key(idempotency_key)
    owner = actor.user_id
    assert owner is not None, "credits are granted by a signed-in admin"
    digest = request_hash(CREDIT_OPERATION, {"userId": user_id, "amount": amount,
                                             "currency": currency, "reason": reason})  # fmt: skip

    request = Keyed(owner, key, CREDIT_OPERATION, digest, "transfer")

    async def credit() -> Transfer:
        if await uow.users.get(user_id) is None:
            raise NotFound(Problem(LedgerErrorCode.USER_NOT_FOUND, "No such user.", "userId"))
        return await book.move(
            uow.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, currency),
            wallet(user_id, currency), amount, TransferCode.CREDIT,
            reference=f"user:{user_id}", memo=reason,
        )  # fmt: skip

    async def attempt() -> Transfer:
        async with uow:
            transfer, fresh = await once(uow, request, credit, uow.ledger.transfer)
            if fresh:
                await uow.audit.append(audit(
                    actor, meta, "billing.credit.granted", ("user", user_id),
                    after={"amount": amount, "currency": currency, "reason": reason,
                           "transferId": transfer.id},
                ))  # fmt: skip
                await uow.commit()
            return transfer

    return await retrying(attempt)


async def set_spend_limit(
    uow: UnitOfWork, actor: Principal, meta: RequestMeta, user_id: int, currency: str,
    limit: int | None,
) -> None:  # fmt: skip
    """Set (or with None, clear back to the default) a user's hourly spend limit."""
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise invalid(LedgerErrorCode.INVALID_AMOUNT, "A limit is zero or more.", "limit")
    book.check_amount(1, currency)
    async with uow:
        if await uow.users.get(user_id) is None:
            raise NotFound(Problem(LedgerErrorCode.USER_NOT_FOUND, "No such user.", "userId"))
        account = (await uow.ledger.accounts([wallet(user_id, currency)]))[
            wallet(user_id, currency)
        ]
        await uow.ledger.set_spend_limit(account.id, limit)
        await uow.audit.append(audit(
            actor, meta, "billing.spend_limit.set", ("user", user_id),
            before={"limit": account.hourly_spend_limit}, after={"limit": limit, "currency": currency},
        ))  # fmt: skip
        await uow.commit()


async def expire_holds(uow: UnitOfWork, now: datetime | None = None, batch: int = 500) -> int:
    """Release every hold past its expiry; returns how many. Safe to run on many workers."""
    now = now or datetime.now(UTC)
    released = 0
    while True:

        async def attempt() -> Sequence[Hold]:
            async with uow:
                due = await uow.ledger.claim_expired_holds(now, batch)
                if due:
                    await book.act_many(uow.ledger, [(h.id, Expire()) for h in due], now)
                    await uow.commit()
                return due

        done = await retrying(attempt)
        released += len(done)
        if len(done) < batch:
            return released


async def verify(uow: UnitOfWork) -> LedgerCheck:
    async with uow:
        return await uow.ledger.verify()
