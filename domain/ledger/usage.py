"""Usage holds in batches: one metering tick captures what each hold owes and reserves the
window ahead for many holds in one transaction, with set-based writes.

Still double-entry (the same hold transitions and transfers as one at a time) and still never
an overdraft: the holds are locked (ascending ids), then their wallets' guarded balances
(ascending ids), and each extension is granted only while its wallet's available balance and
hourly spend limit cover it, in hold id order. An extension that cannot be covered is refused
for that hold alone: the hold is still kept alive for what it already holds. The database's
CHECK on the balance refuses any overdraft even if this code were wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.ledger.accounts import Balance
from domain.ledger.errors import LedgerErrorCode, invalid, not_found
from domain.ledger.holds import Capture, Extend, Hold, HoldStatus, transition
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import TransferCode, TransferSpec
from domain.ports import LedgerRepository


@dataclass(frozen=True, slots=True)
class UsageTick:
    """What one hold should look like after the tick."""

    hold_id: int
    due: int  # the cost of all time billed so far: captured up to this (at most what is held)
    reserve: int  # the whole amount it should hold: `due` plus the window ahead
    expires_at: datetime  # kept alive until at least then


@dataclass(frozen=True, slots=True)
class Ticked:
    hold: Hold  # after the tick
    captured: int  # by this tick
    covered: bool  # it now reserves `reserve`; False: funds or the spend limit fell short


def _usable(hold: Hold, now: datetime) -> bool:
    # Past its expiry a hold may no longer be captured or extended (holds.transition).
    return hold.status is HoldStatus.OPEN and now < hold.expires_at


async def tick_holds(
    ledger: LedgerRepository, policy: LedgerPolicy, ticks: Sequence[UsageTick], now: datetime
) -> dict[int, Ticked]:
    """Capture and extend each hold in the caller's transaction; by hold id."""
    ids = [t.hold_id for t in ticks]
    if len(set(ids)) != len(ids):
        raise invalid(LedgerErrorCode.INVALID_BATCH, "A hold appears twice in one batch.")
    found = await ledger.holds(ids, for_update=True)
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(LedgerErrorCode.HOLD_NOT_FOUND, f"No hold {missing[0]}.", "holdId")
    specs: list[TransferSpec] = []
    captured: dict[int, int] = {}
    held: dict[int, Hold] = {}
    for t in sorted(ticks, key=lambda t: t.hold_id):
        hold = found[t.hold_id]
        owed = min(max(t.due - hold.captured, 0), hold.remaining) if _usable(hold, now) else 0
        if owed:  # captures move pending to posted: they never change what is available
            hold, written = transition(hold, Capture(owed), now)
            specs += written
        held[t.hold_id], captured[t.hold_id] = hold, owed
    asks = [(h, max(t.reserve - h.amount, 0)) for t in ticks if _usable(h := held[t.hold_id], now)]
    # Lock every wallet written (ascending ids) before deciding, so the write that follows
    # takes no balance row lock out of order.
    wallets = {h.wallet_id for h in held.values() if _usable(h, now) or captured[h.id]}
    balances = await ledger.lock_guarded(sorted(wallets))
    asks.sort(key=lambda ask: ask[0].id)
    grant = await _grantable(ledger, policy, balances, asks, now)
    out: dict[int, Ticked] = {}
    for t in ticks:
        hold = held[t.hold_id]
        if not _usable(hold, now):
            out[t.hold_id] = Ticked(hold, captured[t.hold_id], False)
            continue
        add = grant[t.hold_id]
        wanted = max(t.reserve - hold.amount, 0)
        hold, written = transition(hold, Extend(max(t.expires_at, hold.expires_at), add), now)
        specs += written
        out[t.hold_id] = Ticked(hold, captured[t.hold_id], add == wanted)
    # Every wallet written is locked and its extensions checked: no `book.post` (a second lock
    # and check); the balance CHECK still stands.
    await ledger.write(specs)
    changed = [o.hold for o in out.values() if o.hold is not found[o.hold.id]]
    await ledger.save_holds(changed)
    return out


async def _grantable(
    ledger: LedgerRepository,
    policy: LedgerPolicy,
    balances: dict[int, Balance],
    asks: Sequence[tuple[Hold, int]],
    now: datetime,
) -> dict[int, int]:
    """How much of each ask (hold, amount to add) can be reserved, in the order given: all of
    it or nothing. `balances`: the wallets' guarded balances, locked."""
    available = {w: b.available for w, b in balances.items()}
    usage = sorted({h.wallet_id for h, add in asks if add and h.code is TransferCode.USAGE})
    spending = await ledger.spending(usage, now - policy.spend_window) if usage else {}
    spent = {w: used for w, (_, used) in spending.items()}
    granted: dict[int, int] = {}
    for hold, add in asks:
        w = hold.wallet_id
        ok = add == 0 or available.get(w, add) >= add
        if ok and add and w in spending:
            limit = spending[w][0]
            limit = policy.default_hourly_spend_limit if limit is None else limit
            ok = spent[w] + add <= limit
            spent[w] += add if ok else 0
        if ok and w in available:
            available[w] -= add
        granted[hold.id] = add if ok else 0
    return granted
