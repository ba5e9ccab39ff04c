"""The ledger repository: accounts, the balance projection, transfers and holds.

Writes are set-based (one statement per table however many transfers), so a metering tick over
thousands of holds costs a handful of round trips.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.ledger.accounts import Account, AccountKey, AccountKind, Balance
from domain.ledger.errors import InsufficientFunds, LedgerErrorCode, conflict
from domain.ledger.holds import Hold, HoldStatus
from domain.ledger.transfers import (
    Entry,
    Phase,
    Transfer,
    TransferCode,
    TransferSpec,
    WalletEntry,
)
from domain.pagination import Page, PageRequest
from domain.ports import LedgerCheck, MonthTotal, NewHold
from infra.db import ledger_verify
from infra.db.arrays import among
from infra.db.money_tables import (
    PLATFORM_SHARDS,
    ledger_accounts,
    ledger_balances,
    ledger_holds,
    ledger_transfers,
)
from infra.db.paging import keyset_page

_SUMS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


def _account(row: Any) -> Account:
    key = AccountKey(AccountKind(row.kind), row.currency, row.user_id)
    return Account(row.id, key, row.hourly_spend_limit)


def _hold(row: Any) -> Hold:
    return Hold(id=row.id, wallet_id=row.wallet_id, counterparty_id=row.counterparty_id,
                currency=row.currency, amount=row.amount, captured=row.captured,
                code=TransferCode(row.code), reference=row.reference,
                status=HoldStatus(row.status), expires_at=row.expires_at,
                created_at=row.created_at, resolved_at=row.resolved_at,
                version=row.version)  # fmt: skip


def _transfer(row: Any) -> Transfer:
    spec = TransferSpec(debit=row.debit_account_id, credit=row.credit_account_id,
                        amount=row.amount, currency=row.currency, code=TransferCode(row.code),
                        phase=Phase(row.phase), hold_id=row.hold_id,
                        reverses_id=row.reverses_id, reference=row.reference,
                        memo=row.memo)  # fmt: skip
    return Transfer(row.id, spec, row.created_at)


_WALLET_ENTRIES = text("""
    SELECT t.*, a.id AS wallet_id, a.user_id AS owner_id
      FROM ledger_transfers t
      JOIN ledger_accounts a ON a.id IN (t.credit_account_id, t.debit_account_id)
                            AND a.kind = 'wallet'
     WHERE t.id = ANY(CAST(:ids AS bigint[]))
     ORDER BY t.id, a.id = t.credit_account_id DESC
""")


def _shard(spec: TransferSpec) -> int:
    # A hold's pending sums must come off the same platform row they went on, so every
    # transfer of one hold uses one shard; the rest spread at random.
    if spec.hold_id is not None:
        return spec.hold_id % PLATFORM_SHARDS
    return random.randrange(PLATFORM_SHARDS)  # noqa: S311  (load spreading, not a secret)


def _is_overdraft(exc: IntegrityError) -> bool:
    return "ck_ledger_balances_no_overdraft" in str(exc.orig)


def _is_second_reversal(exc: IntegrityError) -> bool:
    return "uq_ledger_transfers_reverses_id" in str(exc.orig)


# The transfers and their effects on the balances in one statement (one round trip): the
# balance CHECKs fire on the UPDATE, the foreign keys on the INSERT, and both run in full.
_WRITE = text("""
    WITH applied AS (
        UPDATE ledger_balances b
           SET debits_posted = b.debits_posted + d.dp,
               credits_posted = b.credits_posted + d.cp,
               debits_pending = b.debits_pending + d.dpe,
               credits_pending = b.credits_pending + d.cpe
          FROM unnest(CAST(:account AS bigint[]), CAST(:shard AS smallint[]),
                      CAST(:dp AS bigint[]), CAST(:cp AS bigint[]), CAST(:dpe AS bigint[]),
                      CAST(:cpe AS bigint[])) AS d(account_id, shard, dp, cp, dpe, cpe)
         WHERE b.account_id = d.account_id AND b.shard = d.shard
        RETURNING 1
    ), inserted AS (
        INSERT INTO ledger_transfers (debit_account_id, credit_account_id, amount, currency,
                                      code, phase, hold_id, reverses_id, reference, memo)
        SELECT * FROM unnest(CAST(:debit AS bigint[]), CAST(:credit AS bigint[]),
                             CAST(:amount AS bigint[]), CAST(:currency AS text[]),
                             CAST(:code AS text[]), CAST(:phase AS text[]),
                             CAST(:hold AS bigint[]), CAST(:reverses AS bigint[]),
                             CAST(:reference AS text[]), CAST(:memo AS text[]))
        RETURNING id, created_at
    )
    SELECT id, created_at, (SELECT count(*) FROM applied) AS applied FROM inserted ORDER BY id
""")

# Accounts by key, in one statement whatever the number of keys (no per-call SQL construction).
_FIND_ACCOUNTS = text("""
    SELECT a.id, a.kind, a.currency, a.user_id, a.hourly_spend_limit
      FROM unnest(CAST(:kind AS text[]), CAST(:currency AS text[]), CAST(:owner AS bigint[]))
           AS k(kind, currency, owner)
      JOIN ledger_accounts a
        ON a.kind = k.kind AND a.currency = k.currency AND coalesce(a.user_id, 0) = k.owner
""")

_LOCK_GUARDED = text("""
    SELECT account_id, debits_posted, credits_posted, debits_pending, credits_pending
      FROM ledger_balances
     WHERE account_id = ANY(CAST(:ids AS bigint[])) AND guarded
     ORDER BY account_id
       FOR UPDATE
""")

# Each account's limit and usage reserved or charged since a time, as `spent_since` counts it.
_SPENDING = text("""
    SELECT a.id, a.hourly_spend_limit, coalesce(sum(t.amount), 0) AS spent
      FROM ledger_accounts a
      LEFT JOIN ledger_transfers t
        ON t.debit_account_id = a.id AND t.code = 'usage' AND t.phase IN ('pending', 'posted')
       AND t.created_at >= :since
     WHERE a.id = ANY(CAST(:ids AS bigint[]))
     GROUP BY a.id
""")

_SAVE_HOLDS = text("""
    UPDATE ledger_holds h
       SET amount = d.amount, captured = d.captured, status = d.status,
           expires_at = d.expires_at, resolved_at = d.resolved_at, version = d.version
      FROM unnest(CAST(:id AS bigint[]), CAST(:amount AS bigint[]), CAST(:captured AS bigint[]),
                  CAST(:status AS text[]), CAST(:expires_at AS timestamptz[]),
                  CAST(:resolved_at AS timestamptz[]), CAST(:version AS int[]))
           AS d(id, amount, captured, status, expires_at, resolved_at, version)
     WHERE h.id = d.id
""")


class SqlLedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        # Accounts known to be single-row (wallets) or sharded (platform), learnt when they
        # were locked or loaded; `write` looks up any it does not know yet.
        self._guarded: set[int] = set()
        self._unguarded: set[int] = set()

    # -- accounts ---------------------------------------------------------------------------

    async def accounts(self, keys: Sequence[AccountKey]) -> dict[AccountKey, Account]:
        found = await self._find(keys)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            await self._create(missing)
            found.update(await self._find(missing))
        return found

    async def _find(self, keys: Sequence[AccountKey]) -> dict[AccountKey, Account]:
        if not keys:
            return {}
        rows = await self._conn.execute(_FIND_ACCOUNTS, {
            "kind": [str(k.kind) for k in keys], "currency": [k.currency for k in keys],
            "owner": [k.user_id or 0 for k in keys],
        })  # fmt: skip
        accounts = [_account(row) for row in rows]
        self._guarded.update(a.id for a in accounts if a.key.must_not_overdraw)
        self._unguarded.update(a.id for a in accounts if not a.key.must_not_overdraw)
        return {a.key: a for a in accounts}

    async def _create(self, keys: Sequence[AccountKey]) -> None:
        for key in sorted(keys, key=lambda k: (k.kind, k.currency, k.user_id or 0)):
            # A concurrent creator wins the unique index; ours then does nothing.
            row = (await self._conn.execute(text("""
                INSERT INTO ledger_accounts (kind, currency, user_id) VALUES (:k, :c, :u)
                ON CONFLICT (kind, currency, coalesce(user_id, 0)) DO NOTHING RETURNING id
            """), {"k": str(key.kind), "c": key.currency, "u": key.user_id})).first()  # fmt: skip
            if row is None:
                continue
            shards = [0] if key.must_not_overdraw else list(range(PLATFORM_SHARDS))
            await self._conn.execute(insert(ledger_balances), [
                {"account_id": row.id, "shard": s, "guarded": key.must_not_overdraw}
                for s in shards
            ])  # fmt: skip

    async def find_account(self, key: AccountKey) -> Account | None:
        return (await self._find([key])).get(key)

    async def accounts_by_id(self, account_ids: Sequence[int]) -> dict[int, Account]:
        stmt = select(ledger_accounts).where(among(ledger_accounts.c.id, account_ids))
        return {row.id: _account(row) for row in await self._conn.execute(stmt)}

    async def wallets_of(self, user_id: int) -> Sequence[Account]:
        stmt = (
            select(ledger_accounts)
            .where(ledger_accounts.c.user_id == user_id, ledger_accounts.c.kind == "wallet")
            .order_by(ledger_accounts.c.currency)
        )
        return [_account(row) for row in await self._conn.execute(stmt)]

    async def set_spend_limit(self, account_id: int, limit: int | None) -> Account:
        stmt = (
            ledger_accounts.update()
            .where(ledger_accounts.c.id == account_id)
            .values(hourly_spend_limit=limit)
            .returning(*ledger_accounts.c)
        )
        return _account((await self._conn.execute(stmt)).one())

    # -- balances and transfers ----------------------------------------------------------------

    async def lock_guarded(self, account_ids: Sequence[int]) -> dict[int, Balance]:
        rows = (await self._conn.execute(_LOCK_GUARDED, {"ids": sorted(set(account_ids))})).all()
        self._guarded.update(row.account_id for row in rows)
        # Asked for and not returned: sharded (or absent, which the write's foreign keys refuse).
        self._unguarded.update(set(account_ids) - {row.account_id for row in rows})
        return {row.account_id: Balance(*(getattr(row, s) for s in _SUMS)) for row in rows}

    async def balances(self, account_ids: Sequence[int]) -> dict[int, Balance]:
        sums = [func.sum(ledger_balances.c[s]) for s in _SUMS]
        stmt = (
            select(ledger_balances.c.account_id, *sums)
            .where(ledger_balances.c.account_id.in_(list(account_ids)))
            .group_by(ledger_balances.c.account_id)
        )
        return {
            row[0]: Balance(*(int(v) for v in row[1:])) for row in await self._conn.execute(stmt)
        }

    async def write(self, specs: Sequence[TransferSpec]) -> list[Transfer]:
        if not specs:
            return []
        await self._learn_guarded({a for s in specs for a in (s.debit, s.credit)})
        # Each balance row's four sums' changes, as plain ints (a tick writes thousands).
        effects: dict[tuple[int, int], list[int]] = {}
        guarded = self._guarded
        for spec in specs:
            shard = _shard(spec)
            for account_id, change in spec.effects():
                at = (account_id, 0 if account_id in guarded else shard)
                sums = effects.get(at)
                if sums is None:
                    effects[at] = [getattr(change, s) for s in _SUMS]
                else:
                    for i, s in enumerate(_SUMS):
                        sums[i] += getattr(change, s)
        columns = {
            "debit": [s.debit for s in specs], "credit": [s.credit for s in specs],
            "amount": [s.amount for s in specs], "currency": [s.currency for s in specs],
            "code": [str(s.code) for s in specs], "phase": [str(s.phase) for s in specs],
            "hold": [s.hold_id for s in specs], "reverses": [s.reverses_id for s in specs],
            "reference": [s.reference for s in specs], "memo": [s.memo for s in specs],
        }  # fmt: skip
        keys = sorted(effects)
        try:
            rows = (await self._conn.execute(_WRITE, {
                **columns, "account": [k[0] for k in keys], "shard": [k[1] for k in keys],
                **{name: [effects[k][i] for k in keys]
                   for i, name in enumerate(("dp", "cp", "dpe", "cpe"))},
            })).all()  # fmt: skip
        except IntegrityError as exc:
            if _is_overdraft(exc):
                raise InsufficientFunds() from exc
            if _is_second_reversal(exc):  # a concurrent reversal of the same transfer won
                raise conflict(LedgerErrorCode.ALREADY_REVERSED,
                               "The transfer is already reversed.", "transferId") from exc  # fmt: skip
            raise
        if rows[0].applied != len(keys):
            raise RuntimeError("a ledger balance row is missing")
        # Identity values follow the order of the rows inserted; the rows come back in id order.
        return [Transfer(row.id, spec, row.created_at)
                for row, spec in zip(rows, specs, strict=True)]  # fmt: skip

    async def _learn_guarded(self, account_ids: set[int]) -> None:
        """Which of these accounts have one guarded balance row, for those not seen yet (a
        caller that writes without locking or loading first would otherwise aim a wallet's
        change at a platform shard that it does not have)."""
        unknown = sorted(account_ids - self._guarded - self._unguarded)
        if not unknown:
            return
        b = ledger_balances.c
        stmt = select(b.account_id, b.guarded).where(b.account_id.in_(unknown), b.shard == 0)
        for row in await self._conn.execute(stmt):
            (self._guarded if row.guarded else self._unguarded).add(row.account_id)

    async def transfer(self, transfer_id: int) -> Transfer | None:
        row = (await self._conn.execute(
            select(ledger_transfers).where(ledger_transfers.c.id == transfer_id))).first()  # fmt: skip
        return _transfer(row) if row else None

    async def reversal_of(self, transfer_id: int) -> Transfer | None:
        row = (await self._conn.execute(
            select(ledger_transfers).where(ledger_transfers.c.reverses_id == transfer_id))).first()  # fmt: skip
        return _transfer(row) if row else None

    async def transfers_for(self, reference: str) -> Sequence[Transfer]:
        stmt = (
            select(ledger_transfers)
            .where(ledger_transfers.c.reference == reference)
            .order_by(ledger_transfers.c.id)
        )
        return [_transfer(row) for row in await self._conn.execute(stmt)]

    async def spent_since(self, account_id: int, since: datetime) -> int:
        t = ledger_transfers.c
        stmt = select(func.coalesce(func.sum(t.amount), 0)).where(
            t.debit_account_id == account_id, t.code == "usage",
            t.phase.in_(("pending", "posted")), t.created_at >= since,
        )  # fmt: skip
        return int((await self._conn.execute(stmt)).scalar_one())

    async def spending(
        self, account_ids: Sequence[int], since: datetime
    ) -> dict[int, tuple[int | None, int]]:
        rows = await self._conn.execute(_SPENDING, {"ids": list(account_ids), "since": since})
        return {row.id: (row.hourly_spend_limit, int(row.spent)) for row in rows}

    async def wallet_entries(self, transfer_ids: Sequence[int]) -> dict[int, WalletEntry]:
        # One statement for any number of ids: each transfer with the wallet(s) it touches,
        # the credited side first.
        rows = await self._conn.execute(_WALLET_ENTRIES, {"ids": list(transfer_ids)})
        found: dict[int, WalletEntry] = {}
        for row in rows:
            found.setdefault(
                row.id, WalletEntry(Entry(_transfer(row), row.wallet_id), row.owner_id)
            )
        return found

    async def entries(self, account_ids: Sequence[int], page: PageRequest) -> Page[Entry]:
        ids = list(account_ids)
        t = ledger_transfers.c
        stmt = select(ledger_transfers).where(
            or_(t.debit_account_id.in_(ids), t.credit_account_id.in_(ids))
        )

        def entry(row: Any) -> Entry:
            mine = row.credit_account_id if row.credit_account_id in ids else row.debit_account_id
            return Entry(_transfer(row), mine)

        return await keyset_page(self._conn, stmt, t.id, page, entry, descending=True)

    async def month_totals(self, account_ids: Sequence[int], months: int) -> Sequence[MonthTotal]:
        rows = await self._conn.execute(text("""
            SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, currency, code,
                   reference,
                   sum(CASE WHEN credit_account_id = ANY(:ids) THEN amount ELSE -amount END)
                       AS amount
              FROM ledger_transfers
             WHERE (debit_account_id = ANY(:ids) OR credit_account_id = ANY(:ids))
               AND phase IN ('posted', 'post_pending')
               AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC')
                                 AT TIME ZONE 'UTC' - make_interval(months => :back)
             GROUP BY 1, 2, 3, 4
             ORDER BY 1 DESC, 2, 3, 4
        """), {"ids": list(account_ids), "back": months - 1})  # fmt: skip
        return [MonthTotal(r.month, r.currency, TransferCode(r.code), r.reference, int(r.amount))
                for r in rows]  # fmt: skip

    # -- holds ----------------------------------------------------------------------------------

    async def add_hold(self, hold: NewHold) -> Hold:
        stmt = insert(ledger_holds).values(
            wallet_id=hold.wallet_id, counterparty_id=hold.counterparty_id,
            currency=hold.currency, amount=hold.amount, code=str(hold.code),
            reference=hold.reference, expires_at=hold.expires_at,
        ).returning(*ledger_holds.c)  # fmt: skip
        return _hold((await self._conn.execute(stmt)).one())

    async def holds(self, hold_ids: Sequence[int], *, for_update: bool = False) -> dict[int, Hold]:
        stmt = select(ledger_holds).where(among(ledger_holds.c.id, hold_ids))
        if for_update:
            stmt = stmt.order_by(ledger_holds.c.id).with_for_update()
        return {row.id: _hold(row) for row in await self._conn.execute(stmt)}

    async def save_holds(self, holds: Sequence[Hold]) -> None:
        if not holds:
            return
        await self._conn.execute(_SAVE_HOLDS, {
            "id": [h.id for h in holds], "amount": [h.amount for h in holds],
            "captured": [h.captured for h in holds], "status": [str(h.status) for h in holds],
            "expires_at": [h.expires_at for h in holds],
            "resolved_at": [h.resolved_at for h in holds], "version": [h.version for h in holds],
        })  # fmt: skip

    async def claim_expired_holds(self, now: datetime, limit: int) -> Sequence[Hold]:
        h = ledger_holds.c
        stmt = (
            select(ledger_holds)
            .where(and_(h.status == "open", h.expires_at <= now, h.code != "refund"))
            .order_by(h.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_hold(row) for row in await self._conn.execute(stmt)]

    async def verify(self) -> LedgerCheck:
        return await ledger_verify.verify(self._conn)
