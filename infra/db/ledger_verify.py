"""`gpucloud ledger verify`: prove the balance projection equals the sums over the transfers,
that every transfer balances in one currency, that no wallet is overdrawn and that each hold's
row agrees with its transfers. Read-only; it reports, it never repairs."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.ports import LedgerCheck

_PROJECTION = text("""
    WITH legs AS (
        SELECT debit_account_id AS account_id,
               CASE WHEN phase IN ('posted', 'post_pending') THEN amount ELSE 0 END AS dp,
               0::bigint AS cp,
               CASE phase WHEN 'pending' THEN amount WHEN 'posted' THEN 0 ELSE -amount END AS dpe,
               0::bigint AS cpe
          FROM ledger_transfers
        UNION ALL
        SELECT credit_account_id, 0,
               CASE WHEN phase IN ('posted', 'post_pending') THEN amount ELSE 0 END, 0,
               CASE phase WHEN 'pending' THEN amount WHEN 'posted' THEN 0 ELSE -amount END
          FROM ledger_transfers
    ), expected AS (
        SELECT account_id, sum(dp) dp, sum(cp) cp, sum(dpe) dpe, sum(cpe) cpe
          FROM legs GROUP BY account_id
    ), actual AS (
        SELECT account_id, sum(debits_posted) dp, sum(credits_posted) cp,
               sum(debits_pending) dpe, sum(credits_pending) cpe
          FROM ledger_balances GROUP BY account_id
    )
    SELECT a.account_id, a.dp, a.cp, a.dpe, a.cpe,
           coalesce(e.dp, 0) AS edp, coalesce(e.cp, 0) AS ecp,
           coalesce(e.dpe, 0) AS edpe, coalesce(e.cpe, 0) AS ecpe
      FROM actual a LEFT JOIN expected e USING (account_id)
     WHERE (a.dp, a.cp, a.dpe, a.cpe)
           IS DISTINCT FROM (coalesce(e.dp, 0), coalesce(e.cp, 0), coalesce(e.dpe, 0),
                             coalesce(e.cpe, 0))
""")

# A transfer balances when both its legs are real accounts in its own currency.
_UNBALANCED = text("""
    SELECT t.id FROM ledger_transfers t
      LEFT JOIN ledger_accounts d ON d.id = t.debit_account_id
      LEFT JOIN ledger_accounts c ON c.id = t.credit_account_id
     WHERE t.amount <= 0 OR d.currency IS DISTINCT FROM t.currency
        OR c.currency IS DISTINCT FROM t.currency OR t.debit_account_id = t.credit_account_id
""")

_OVERDRAWN = text("""
    SELECT account_id FROM ledger_balances
     WHERE guarded AND credits_posted - debits_posted - debits_pending < 0
""")

# Per currency, all accounts together must net to zero, posted and pending.
_NET = text("""
    SELECT a.currency, sum(b.credits_posted - b.debits_posted) AS posted,
           sum(b.credits_pending - b.debits_pending) AS pending
      FROM ledger_balances b JOIN ledger_accounts a ON a.id = b.account_id
     GROUP BY a.currency
    HAVING sum(b.credits_posted - b.debits_posted) <> 0
        OR sum(b.credits_pending - b.debits_pending) <> 0
""")

# An open hold has released nothing; a resolved one has captured or released all it held.
_HOLDS = text("""
    SELECT * FROM (
        SELECT h.id, h.status, h.amount, h.captured,
               coalesce(sum(t.amount) FILTER (WHERE t.phase = 'pending'), 0) AS reserved,
               coalesce(sum(t.amount) FILTER (WHERE t.phase = 'post_pending'), 0) AS posted,
               coalesce(sum(t.amount) FILTER (WHERE t.phase = 'void_pending'), 0) AS released
          FROM ledger_holds h LEFT JOIN ledger_transfers t ON t.hold_id = h.id
         GROUP BY h.id
    ) s
     WHERE amount <> reserved OR captured <> posted
        OR (status = 'open' AND (released <> 0 OR captured >= amount))
        OR (status <> 'open' AND amount <> captured + released)
""")


async def verify(conn: AsyncConnection) -> LedgerCheck:
    # One snapshot for every check, so concurrent writers cannot make them disagree.
    await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    problems: list[str] = []
    for row in await conn.execute(_PROJECTION):
        problems.append(
            f"account {row.account_id}: balance row says debits/credits posted "
            f"{row.dp}/{row.cp}, pending {row.dpe}/{row.cpe}; transfers say "
            f"{row.edp}/{row.ecp}, pending {row.edpe}/{row.ecpe}"
        )
    for row in await conn.execute(_UNBALANCED):
        problems.append(f"transfer {row.id} does not balance in one currency")
    for row in await conn.execute(_OVERDRAWN):
        problems.append(f"wallet account {row.account_id} is overdrawn")
    for row in await conn.execute(_NET):
        problems.append(
            f"{row.currency}: accounts net to {row.posted} posted, {row.pending} pending"
        )
    for row in await conn.execute(_HOLDS):
        problems.append(
            f"hold {row.id} ({row.status}): row says {row.amount} held, {row.captured} captured; "
            f"transfers say {row.reserved} held, {row.posted} captured, {row.released} released"
        )
    accounts = (await conn.execute(text("SELECT count(*) FROM ledger_accounts"))).scalar_one()
    transfers = (await conn.execute(text("SELECT count(*) FROM ledger_transfers"))).scalar_one()
    return LedgerCheck(int(accounts), int(transfers), problems)
