"""The ledger's pure rules: transfer effects, balance arithmetic and every edge of a hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import Conflict, DomainError, InvalidInput
from domain.ledger.accounts import ZERO, AccountKey, AccountKind, Balance, platform, wallet
from domain.ledger.errors import LedgerErrorCode
from domain.ledger.holds import (
    Capture,
    Expire,
    Extend,
    Hold,
    HoldAction,
    HoldStatus,
    Void,
    opening,
    transition,
)
from domain.ledger.transfers import Phase, TransferCode, TransferSpec, net_effects

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=1)
WALLET, REVENUE = 1, 2


def make_hold(amount: int = 100, captured: int = 0, **changes: object) -> Hold:
    hold = Hold(id=7, wallet_id=WALLET, counterparty_id=REVENUE, currency="USD", amount=amount,
                captured=captured, code=TransferCode.USAGE, reference="allocation:3",
                status=HoldStatus.OPEN, expires_at=EXPIRES, created_at=T0)  # fmt: skip
    return replace(hold, **changes)  # type: ignore[arg-type]


def spec(phase: Phase = Phase.POSTED, amount: int = 10, **kw: object) -> TransferSpec:
    hold_id = None if phase is Phase.POSTED else 7
    return TransferSpec(debit=WALLET, credit=REVENUE, amount=amount, currency="USD",
                        code=TransferCode.USAGE, phase=phase, hold_id=hold_id, **kw)  # type: ignore[arg-type]  # fmt: skip


def code_of(exc: pytest.ExceptionInfo[DomainError]) -> str:
    return exc.value.problems[0].code


def wallet_effect(specs: list[TransferSpec]) -> Balance:
    return net_effects(specs).get(WALLET, ZERO)


# -- accounts and balances ---------------------------------------------------------------------


def test_account_keys_name_owner_only_for_wallets() -> None:
    assert wallet(5, "USD") == AccountKey(AccountKind.WALLET, "USD", 5)
    assert wallet(5, "USD").must_not_overdraw
    assert not platform(AccountKind.COMPUTE_REVENUE, "USD").must_not_overdraw
    with pytest.raises(ValueError):
        AccountKey(AccountKind.WALLET, "USD")
    with pytest.raises(ValueError):
        AccountKey(AccountKind.STRIPE_CLEARING, "USD", 5)


def test_balance_derives_balance_held_and_available() -> None:
    b = Balance(debits_posted=30, credits_posted=100, debits_pending=25, credits_pending=4)
    assert b.balance == 70
    assert b.held == 25
    assert b.available == 45
    assert ZERO.balance == ZERO.held == ZERO.available == 0


def test_balance_addition_is_componentwise() -> None:
    a = Balance(1, 2, 3, 4)
    b = Balance(10, 20, -3, 40)
    assert a + b == Balance(11, 22, 0, 44)
    assert a + ZERO == a


@given(st.lists(st.tuples(*[st.integers(-(10**12), 10**12)] * 4), max_size=8))
def test_balance_sums_are_associative_and_derived_values_add(
    parts: list[tuple[int, int, int, int]],
) -> None:
    balances = [Balance(*p) for p in parts]
    total = ZERO
    for b in balances:
        total = total + b
    assert total.balance == sum(b.balance for b in balances)
    assert total.held == sum(b.held for b in balances)
    assert total.available == sum(b.available for b in balances)


# -- transfers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "debit", "credit"),
    [
        (Phase.POSTED, Balance(debits_posted=10), Balance(credits_posted=10)),
        (Phase.PENDING, Balance(debits_pending=10), Balance(credits_pending=10)),
        (Phase.POST_PENDING, Balance(debits_posted=10, debits_pending=-10),
         Balance(credits_posted=10, credits_pending=-10)),
        (Phase.VOID_PENDING, Balance(debits_pending=-10), Balance(credits_pending=-10)),
    ],
)  # fmt: skip
def test_effects_per_phase(phase: Phase, debit: Balance, credit: Balance) -> None:
    (debit_id, debit_change), (credit_id, credit_change) = spec(phase).effects()
    assert (debit_id, credit_id) == (WALLET, REVENUE)
    assert debit_change == debit
    assert credit_change == credit


def test_a_hold_opened_captured_and_released_nets_to_its_capture() -> None:
    # Reserve 100, capture 30, release 70: the wallet paid 30 and holds nothing any more.
    moved = wallet_effect(
        [spec(Phase.PENDING, 100), spec(Phase.POST_PENDING, 30), spec(Phase.VOID_PENDING, 70)]
    )
    assert moved == Balance(debits_posted=30)
    assert net_effects([spec(Phase.PENDING, 100)])[REVENUE] == Balance(credits_pending=100)


def spec_between(debit: int, credit: int, amount: int, phase: Phase) -> TransferSpec:
    hold_id = None if phase is Phase.POSTED else 1
    return TransferSpec(debit=debit, credit=credit, amount=amount, currency="USD",
                        code=TransferCode.USAGE, phase=phase, hold_id=hold_id)  # fmt: skip


@given(
    st.lists(
        st.tuples(
            st.integers(1, 5), st.integers(1, 5), st.integers(1, 10**9), st.sampled_from(Phase)
        ).filter(lambda t: t[0] != t[1]),
        max_size=20,
    )
)
def test_every_transfer_and_every_batch_sums_to_zero(
    rows: list[tuple[int, int, int, Phase]],
) -> None:
    specs = [spec_between(d, c, a, p) for d, c, a, p in rows]
    for s in specs:
        (_, debit), (_, credit) = s.effects()
        both = debit + credit
        assert both.balance == 0  # posted: what one side loses the other gains
        assert both.credits_pending - both.debits_pending == 0
    effects = net_effects(specs)
    assert sum(b.balance for b in effects.values()) == 0
    assert sum(b.credits_pending - b.debits_pending for b in effects.values()) == 0
    assert set(effects) <= {d for d, *_ in rows} | {c for _, c, *_ in rows}


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "10"])
def test_transfer_spec_refuses_a_non_positive_or_non_integer_amount(amount: object) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        TransferSpec(debit=1, credit=2, amount=amount, currency="USD", code=TransferCode.USAGE)  # type: ignore[arg-type]


def test_transfer_spec_refuses_one_account_on_both_sides() -> None:
    with pytest.raises(ValueError, match="two different accounts"):
        TransferSpec(debit=3, credit=3, amount=1, currency="USD", code=TransferCode.TOP_UP)


def test_net_effects_of_nothing_is_empty() -> None:
    assert net_effects([]) == {}


# -- holds ---------------------------------------------------------------------------------------


def test_opening_reserves_the_whole_amount() -> None:
    o = opening(make_hold(100))
    assert (o.phase, o.amount, o.hold_id, o.debit, o.credit) == (Phase.PENDING, 100, 7, 1, 2)
    assert o.reference == "allocation:3"


def test_capture_partial_keeps_the_hold_open() -> None:
    hold, specs = transition(make_hold(100), Capture(30), T0)
    assert hold.status is HoldStatus.OPEN
    assert (hold.captured, hold.remaining, hold.version) == (30, 70, 2)
    assert hold.resolved_at is None
    assert [(s.phase, s.amount) for s in specs] == [(Phase.POST_PENDING, 30)]
    assert wallet_effect(specs) == Balance(debits_posted=30, debits_pending=-30)


def test_capture_final_releases_the_rest() -> None:
    hold, specs = transition(make_hold(100, captured=20), Capture(30, final=True), T0)
    assert hold.status is HoldStatus.CAPTURED
    assert (hold.captured, hold.remaining, hold.resolved_at) == (50, 0, T0)
    assert [(s.phase, s.amount) for s in specs] == [
        (Phase.POST_PENDING, 30),
        (Phase.VOID_PENDING, 50),
    ]
    assert wallet_effect(specs).debits_pending == -80  # nothing of this hold is held any more


def test_final_capture_of_nothing_only_releases() -> None:
    hold, specs = transition(make_hold(100, captured=40), Capture(0, final=True), T0)
    assert hold.status is HoldStatus.CAPTURED
    assert hold.captured == 40
    assert [(s.phase, s.amount) for s in specs] == [(Phase.VOID_PENDING, 60)]


def test_capture_of_everything_closes_without_a_release() -> None:
    hold, specs = transition(make_hold(100, captured=60), Capture(40), T0)
    assert hold.status is HoldStatus.CAPTURED
    assert hold.captured == 100
    assert [(s.phase, s.amount) for s in specs] == [(Phase.POST_PENDING, 40)]


def test_capture_over_the_remaining_is_refused() -> None:
    with pytest.raises(Conflict) as caught:
        transition(make_hold(100, captured=60), Capture(41), T0)
    assert code_of(caught) == LedgerErrorCode.AMOUNT_EXCEEDS_HOLD


@pytest.mark.parametrize("action", [Capture(0), Capture(-5), Capture(-5, final=True)])
def test_capture_of_a_non_positive_amount_is_invalid(action: Capture) -> None:
    with pytest.raises(InvalidInput) as caught:
        transition(make_hold(), action, T0)
    assert code_of(caught) == LedgerErrorCode.INVALID_AMOUNT


def test_void_releases_what_was_not_captured() -> None:
    hold, specs = transition(make_hold(100, captured=35), Void(), T0)
    assert hold.status is HoldStatus.VOIDED
    assert (hold.captured, hold.resolved_at, hold.remaining) == (35, T0, 0)
    assert [(s.phase, s.amount) for s in specs] == [(Phase.VOID_PENDING, 65)]


def test_extend_adds_amount_and_pushes_expiry() -> None:
    later = EXPIRES + timedelta(hours=2)
    hold, specs = transition(make_hold(100, captured=10), Extend(later, add_amount=50), T0)
    assert (hold.amount, hold.captured, hold.remaining) == (150, 10, 140)
    assert hold.expires_at == later
    assert hold.status is HoldStatus.OPEN
    assert [(s.phase, s.amount) for s in specs] == [(Phase.PENDING, 50)]


def test_extend_expiry_only_writes_nothing() -> None:
    later = EXPIRES + timedelta(minutes=5)
    hold, specs = transition(make_hold(), Extend(later), T0)
    assert hold.expires_at == later
    assert hold.amount == 100
    assert specs == []
    same, _ = transition(make_hold(), Extend(EXPIRES), T0)  # the same expiry is allowed
    assert same.expires_at == EXPIRES


def test_extend_cannot_bring_expiry_forward() -> None:
    with pytest.raises(InvalidInput) as caught:
        transition(make_hold(), Extend(EXPIRES - timedelta(seconds=1), add_amount=5), T0)
    assert code_of(caught) == LedgerErrorCode.INVALID_EXPIRY


def test_extend_cannot_take_amount_away() -> None:
    with pytest.raises(InvalidInput) as caught:
        transition(make_hold(), Extend(EXPIRES, add_amount=-1), T0)
    assert code_of(caught) == LedgerErrorCode.INVALID_AMOUNT


def test_expire_only_after_expiry() -> None:
    with pytest.raises(Conflict) as caught:
        transition(make_hold(), Expire(), EXPIRES - timedelta(microseconds=1))
    assert code_of(caught) == LedgerErrorCode.HOLD_NOT_EXPIRED
    hold, specs = transition(make_hold(100, captured=25), Expire(), EXPIRES)  # at expiry: due
    assert hold.status is HoldStatus.EXPIRED
    assert hold.resolved_at == EXPIRES
    assert [(s.phase, s.amount) for s in specs] == [(Phase.VOID_PENDING, 75)]


@pytest.mark.parametrize(
    "action", [Capture(1), Capture(0, final=True), Extend(EXPIRES + timedelta(hours=1))]
)
def test_an_expired_hold_is_neither_captured_nor_extended(action: HoldAction) -> None:
    with pytest.raises(Conflict) as caught:
        transition(make_hold(), action, EXPIRES + timedelta(seconds=1))
    assert code_of(caught) == LedgerErrorCode.HOLD_EXPIRED


def test_an_expired_hold_may_still_be_voided() -> None:
    hold, specs = transition(make_hold(100, captured=40), Void(), EXPIRES + timedelta(seconds=1))
    assert hold.status is HoldStatus.VOIDED
    assert [(s.phase, s.amount) for s in specs] == [(Phase.VOID_PENDING, 60)]


@pytest.mark.parametrize("status", [HoldStatus.CAPTURED, HoldStatus.VOIDED, HoldStatus.EXPIRED])
@pytest.mark.parametrize(
    "action",
    [Capture(1), Capture(0, final=True), Void(), Extend(EXPIRES + timedelta(hours=1), 5),
     Expire()],
)  # fmt: skip
def test_any_action_on_a_resolved_hold_is_refused(status: HoldStatus, action: HoldAction) -> None:
    resolved = make_hold(100, captured=40, status=status, resolved_at=T0)
    assert resolved.remaining == 0
    # Even when the hold is also past its expiry, "not open" is the answer.
    for now in (T0, EXPIRES + timedelta(days=1)):
        with pytest.raises(Conflict) as caught:
            transition(resolved, action, now)
        assert code_of(caught) == LedgerErrorCode.HOLD_NOT_OPEN


def test_transition_does_not_change_its_input() -> None:
    before = make_hold(100)
    transition(before, Capture(10), T0)
    transition(before, Void(), T0)
    assert before == make_hold(100)


# -- property: random action sequences on one hold --------------------------------------------

EXPIRIES = st.integers(-30, 90).map(lambda m: EXPIRES + timedelta(minutes=m))
ACTIONS = st.one_of(
    st.builds(Capture, st.integers(-5, 120), st.booleans()),
    st.just(Void()),
    st.builds(Extend, EXPIRIES, st.integers(-5, 60)),
    st.just(Expire()),
)


@given(
    amount=st.integers(1, 200),
    steps=st.lists(st.tuples(ACTIONS, st.integers(0, 120)), max_size=25),
)
def test_random_action_sequences_account_for_every_unit(
    amount: int, steps: list[tuple[HoldAction, int]]
) -> None:
    hold = make_hold(amount)
    specs = [opening(hold)]
    now = T0
    for action, advance in steps:
        now = now + timedelta(minutes=advance // 4)  # time moves forward only
        try:
            new, written = transition(hold, action, now)
        except DomainError:
            continue  # a refusal changes nothing (transition is pure)
        assert new.version == hold.version + 1
        assert all(s.amount > 0 and s.hold_id == hold.id for s in written)
        hold = new
        specs += written
        reserved = sum(s.amount for s in specs if s.phase is Phase.PENDING)
        captured = sum(s.amount for s in specs if s.phase is Phase.POST_PENDING)
        released = sum(s.amount for s in specs if s.phase is Phase.VOID_PENDING)
        assert released >= 0
        assert (hold.amount, hold.captured) == (reserved, captured)
        assert 0 <= hold.captured <= hold.amount
        effect = wallet_effect(specs)
        assert effect.debits_posted == captured
        assert effect.debits_pending == hold.remaining  # still held: what is left, if open
        if hold.status is HoldStatus.OPEN:
            assert released == 0
            assert hold.resolved_at is None
        else:
            assert reserved == captured + released
            assert hold.resolved_at == now
