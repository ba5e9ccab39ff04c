"""Ledger operations inside a caller's transaction: they never commit, so a use case can move
money and change its own state in one unit of work.

Overdraft is prevented twice: here, with the guarded balances locked in ascending id order (a
typed `InsufficientFunds`), and by the database's CHECK on the balance row, which holds even if
this code is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.ledger.accounts import Account, AccountKey, AccountKind, platform, wallet
from domain.ledger.errors import InsufficientFunds, LedgerErrorCode, conflict, invalid, not_found
from domain.ledger.holds import Capture, Extend, Hold, HoldAction, Void, opening, transition
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import Phase, Transfer, TransferCode, TransferSpec, net_effects
from domain.money import Money, is_known_currency
from domain.ports import LedgerRepository, NewHold


def check_amount(amount: int, currency: str, field: str = "amount") -> None:
    if not is_known_currency(currency):
        raise invalid(LedgerErrorCode.UNKNOWN_CURRENCY, f"Unknown currency {currency!r}.",
                      "currency")  # fmt: skip
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise invalid(LedgerErrorCode.INVALID_AMOUNT,
                      "The amount is a positive whole number of minor units.", field)  # fmt: skip


async def post(ledger: LedgerRepository, specs: Sequence[TransferSpec]) -> list[Transfer]:
    """Write transfers atomically, refusing any that would overdraw a wallet."""
    effects = net_effects(specs)
    guarded = await ledger.lock_guarded(sorted(effects))
    for account_id, before in guarded.items():
        after = before + effects[account_id]
        if after.available < 0:
            currency = next(s.currency for s in specs if account_id in (s.debit, s.credit))
            raise InsufficientFunds(
                account_id, before.available, before.available - after.available, currency
            )
    return await ledger.write(specs)


async def account_pair(
    ledger: LedgerRepository, user_id: int, other: AccountKind, currency: str
) -> tuple[Account, Account]:
    found = await ledger.accounts([wallet(user_id, currency), platform(other, currency)])
    return found[wallet(user_id, currency)], found[platform(other, currency)]


async def move(
    ledger: LedgerRepository, debit: AccountKey, credit: AccountKey, amount: int,
    code: TransferCode, reference: str | None = None, memo: str | None = None,
) -> Transfer:  # fmt: skip
    """One posted transfer between two accounts named by key."""
    check_amount(amount, debit.currency)
    if credit.currency != debit.currency:
        raise invalid(LedgerErrorCode.CURRENCY_MISMATCH,
                      "Both accounts of a transfer hold the same currency.", "currency")  # fmt: skip
    found = await ledger.accounts([debit, credit])
    spec = TransferSpec(debit=found[debit].id, credit=found[credit].id, amount=amount,
                        currency=debit.currency, code=code, reference=reference, memo=memo)  # fmt: skip
    return (await post(ledger, [spec]))[0]


async def _check_spend(
    ledger: LedgerRepository, policy: LedgerPolicy, account: Account, adding: int, now: datetime
) -> None:
    limit = account.hourly_spend_limit
    limit = policy.default_hourly_spend_limit if limit is None else limit
    spent = await ledger.spent_since(account.id, now - policy.spend_window)
    if spent + adding > limit:
        raise conflict(
            LedgerErrorCode.SPEND_LIMIT_REACHED,
            f"This would pass the hourly spend limit of {_money(limit, account)} "
            f"({_money(spent, account)} already used this hour).",
            "amount",
        )


def _money(minor: int, account: Account) -> str:
    return str(Money(minor, account.key.currency))


async def open_hold(
    ledger: LedgerRepository, policy: LedgerPolicy, user_id: int, counterparty: AccountKind,
    amount: int, currency: str, *, code: TransferCode, reference: str | None, ttl: timedelta,
    now: datetime,
) -> Hold:  # fmt: skip
    """Reserve `amount` of the user's wallet for work that will be captured later."""
    check_amount(amount, currency)
    if not timedelta(0) < ttl <= policy.max_hold_ttl:
        raise invalid(LedgerErrorCode.INVALID_EXPIRY,
                      f"A hold lasts more than 0 s and at most {policy.max_hold_ttl}.", "ttl")  # fmt: skip
    source, target = await account_pair(ledger, user_id, counterparty, currency)
    # Lock and check before the hold row exists, so a refusal leaves nothing behind even in a
    # caller's transaction that goes on.
    before = (await ledger.lock_guarded([source.id]))[source.id]
    if before.available < amount:
        raise InsufficientFunds(source.id, before.available, amount, currency)
    if code is TransferCode.USAGE:
        await _check_spend(ledger, policy, source, amount, now)
    hold = await ledger.add_hold(
        NewHold(source.id, target.id, currency, amount, code, reference, now + ttl)
    )
    await post(ledger, [opening(hold)])
    return hold


async def _get(ledger: LedgerRepository, hold_id: int) -> Hold:
    hold = (await ledger.holds([hold_id], for_update=True)).get(hold_id)
    if hold is None:
        raise not_found(LedgerErrorCode.HOLD_NOT_FOUND, f"No hold {hold_id}.", "holdId")
    return hold


async def act(
    ledger: LedgerRepository, hold_id: int, action: HoldAction, now: datetime,
    policy: LedgerPolicy | None = None,
) -> tuple[Hold, list[Transfer]]:  # fmt: skip
    """Apply one action to one hold: `Capture`, `Void`, `Extend` or `Expire`."""
    hold = await _get(ledger, hold_id)
    changed, specs = transition(hold, action, now)
    added = sum(s.amount for s in specs if s.phase is Phase.PENDING)
    if added and policy is not None and hold.code is TransferCode.USAGE:
        account = (await ledger.accounts_by_id([hold.wallet_id]))[hold.wallet_id]
        await ledger.lock_guarded([hold.wallet_id])
        await _check_spend(ledger, policy, account, added, now)
    transfers = await post(ledger, specs) if specs else []
    await ledger.save_holds([changed])
    return changed, transfers


async def capture(
    ledger: LedgerRepository, hold_id: int, amount: int, now: datetime, *, final: bool = False
) -> Hold:
    """Post `amount` of the hold (a metering tick); `final` releases the rest and closes it."""
    return (await act(ledger, hold_id, Capture(amount, final), now))[0]


async def void(ledger: LedgerRepository, hold_id: int, now: datetime) -> Hold:
    """Release what is left of the hold and close it."""
    return (await act(ledger, hold_id, Void(), now))[0]


async def extend(
    ledger: LedgerRepository, policy: LedgerPolicy, hold_id: int, expires_at: datetime,
    now: datetime, add_amount: int = 0,
) -> Hold:  # fmt: skip
    """Keep the hold longer and/or reserve more (checked against funds and the spend limit)."""
    return (await act(ledger, hold_id, Extend(expires_at, add_amount), now, policy))[0]


async def act_many(
    ledger: LedgerRepository, actions: Sequence[tuple[int, HoldAction]], now: datetime
) -> list[Hold]:
    """Apply one action to each of many holds in one transaction (a metering tick). All or
    nothing: one refused action refuses the batch, so the caller can split and retry."""
    ids = [hold_id for hold_id, _ in actions]
    if len(set(ids)) != len(ids):
        raise invalid(LedgerErrorCode.INVALID_BATCH, "A hold appears twice in one batch.")
    found = await ledger.holds(ids, for_update=True)
    changed: list[Hold] = []
    specs: list[TransferSpec] = []
    for hold_id, action in actions:
        if hold_id not in found:
            raise not_found(LedgerErrorCode.HOLD_NOT_FOUND, f"No hold {hold_id}.", "holdId")
        new, written = transition(found[hold_id], action, now)
        if any(s.phase is Phase.PENDING for s in written):
            raise invalid(LedgerErrorCode.INVALID_BATCH, "Extend holds one at a time.")
        changed.append(new)
        specs.extend(written)
    if specs:
        await post(ledger, specs)
    await ledger.save_holds(changed)
    return changed


async def reverse(ledger: LedgerRepository, transfer_id: int, memo: str | None) -> Transfer:
    """Undo a posted transfer with a new one the other way, linked to it. A transfer is
    reversed at most once (the database's unique link enforces it under races)."""
    original = await ledger.transfer(transfer_id)
    if original is None or original.spec.phase not in (Phase.POSTED, Phase.POST_PENDING):
        raise not_found(LedgerErrorCode.TRANSFER_NOT_FOUND,
                        f"No posted transfer {transfer_id}.", "transferId")  # fmt: skip
    if await ledger.reversal_of(transfer_id) is not None:
        raise conflict(LedgerErrorCode.ALREADY_REVERSED,
                       f"Transfer {transfer_id} is already reversed.", "transferId")  # fmt: skip
    spec = original.spec
    back = TransferSpec(debit=spec.credit, credit=spec.debit, amount=spec.amount,
                        currency=spec.currency, code=TransferCode.REVERSAL,
                        reverses_id=original.id, reference=spec.reference, memo=memo)  # fmt: skip
    return (await post(ledger, [back]))[0]
