"""Usage holds in batches: one metering tick captures what each hold owes and keeps it
reserving the window ahead, for many holds in one transaction, with set-based writes.

A hold that holds less than it must (`reserve`) is topped up a step beyond (`top_up`), or, when
the wallet cannot pay for the step, to exactly `reserve`; so most ticks only capture, and a
top-up (a pending transfer, the spend-limit read) comes once per step of running time.

Still double-entry (the same hold transitions and transfers as one at a time) and still never
an overdraft: the holds are locked (ascending ids), then their wallets' guarded balances
(ascending ids), and each top-up is granted only while its wallet's available balance and hourly
spend limit cover it, in hold id order. One that cannot be covered is refused for that hold
alone: the hold is still kept alive for what it already holds. The database's CHECK on the
balance refuses any overdraft even if this code were wrong.
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
    reserve: int  # the least it must hold in all: `due` plus the window ahead
    top_up: int  # what it is brought to when it holds less than `reserve` (a step more)
    keep_until: datetime  # it must not expire before this; when it would, or it is topped up,
    expires_at: datetime  # its expiry moves to this


@dataclass(frozen=True, slots=True)
class Ticked:
    hold: Hold  # after the tick
    captured: int  # by this tick
    covered: bool  # it holds `reserve` or more; False: funds or the spend limit fell short


def _usable(hold: Hold, now: datetime) -> bool:
    # Past its expiry a hold may no longer be captured or extended (holds.transition).
    return hold.status is HoldStatus.OPEN and now < hold.expires_at


async def tick_holds(
    ledger: LedgerRepository, policy: LedgerPolicy, ticks: Sequence[UsageTick], now: datetime
) -> dict[int, Ticked]:
    """Capture, top up and keep alive each hold in the caller's transaction; by hold id."""
    ids = [t.hold_id for t in ticks]
    if len(set(ids)) != len(ids):
        raise invalid(LedgerErrorCode.INVALID_BATCH, "A hold appears twice in one batch.")
    found = await ledger.holds(ids, for_update=True)
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(LedgerErrorCode.HOLD_NOT_FOUND, f"No hold {missing[0]}.", "holdId")
    ordered = sorted(ticks, key=lambda t: t.hold_id)
    specs: list[TransferSpec] = []
    captured: dict[int, int] = {}
    held: dict[int, Hold] = {}
    for t in ordered:
        hold = found[t.hold_id]
        owed = min(max(t.due - hold.captured, 0), hold.remaining) if _usable(hold, now) else 0
        if owed:  # captures move pending to posted: they never change what is available
            hold, written = transition(hold, Capture(owed), now)
            specs += written
        held[t.hold_id], captured[t.hold_id] = hold, owed
    # Lock every wallet written (ascending ids) before deciding, so the write that follows
    # takes no balance row lock out of order.
    wallets = {h.wallet_id for h in held.values() if _usable(h, now) or captured[h.id]}
    balances = await ledger.lock_guarded(sorted(wallets))
    short = [(held[t.hold_id], t) for t in ordered if _usable(held[t.hold_id], now)]
    short = [(h, t) for h, t in short if h.amount < t.reserve]
    grants = await _Grants.read(ledger, policy, balances, [h for h, _ in short], now)
    out: dict[int, Ticked] = {}
    for t in ordered:
        hold = held[t.hold_id]
        covered = _usable(hold, now)
        if covered and hold.amount < t.reserve:
            add = grants.first(hold, (t.top_up - hold.amount, t.reserve - hold.amount))
            hold, written = transition(hold, Extend(max(t.expires_at, hold.expires_at), add), now)
            specs += written
            covered = bool(add)
        elif covered and hold.expires_at < t.keep_until:
            hold, _ = transition(hold, Extend(t.expires_at), now)
        out[t.hold_id] = Ticked(hold, captured[t.hold_id], covered)
    # Every wallet written is locked and its top-ups checked: no `book.post` (a second lock
    # and check); the balance CHECK still stands.
    await ledger.write(specs)
    await ledger.save_holds([o.hold for o in out.values() if o.hold is not found[o.hold.id]])
    return out


class _Grants:
    """What the locked wallets can still reserve this tick: their available balance and, for
    usage, what their hourly spend limit leaves."""

    def __init__(
        self,
        policy: LedgerPolicy,
        available: dict[int, int],
        spending: dict[int, tuple[int | None, int]],
    ) -> None:
        self._default_limit = policy.default_hourly_spend_limit
        self._available = available
        self._spending = spending

    @classmethod
    async def read(
        cls,
        ledger: LedgerRepository,
        policy: LedgerPolicy,
        balances: dict[int, Balance],
        holds: Sequence[Hold],
        now: datetime,
    ) -> _Grants:
        usage = sorted({h.wallet_id for h in holds if h.code is TransferCode.USAGE})
        spending = await ledger.spending(usage, now - policy.spend_window) if usage else {}
        return cls(policy, {w: b.available for w, b in balances.items()}, spending)

    def first(self, hold: Hold, amounts: Sequence[int]) -> int:
        """The first of `amounts` the hold's wallet can reserve now, reserved; 0 if none."""
        w = hold.wallet_id
        for add in amounts:
            if add <= 0 or self._available.get(w, add) < add:
                continue
            if w in self._spending:
                limit, spent = self._spending[w]
                if spent + add > (self._default_limit if limit is None else limit):
                    continue
                self._spending[w] = (limit, spent + add)
            if w in self._available:
                self._available[w] -= add
            return add
        return 0
