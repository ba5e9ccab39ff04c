"""The allocation state machine, account names and the billing arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.compute.accounts import account_name, is_account_name
from domain.compute.allocations import (
    ACTIVE,
    Allocation,
    AllocationErrorCode,
    AllocationState,
    AllocationTrigger,
    Failure,
    FailureCode,
    next_state,
    transition,
)
from domain.compute.kit import AllocationPolicy, usage_cost
from domain.errors import Conflict
from domain.money import Money

NOW = datetime(2026, 11, 26, tzinfo=UTC)
S, T = AllocationState, AllocationTrigger


def allocation(state: AllocationState = S.REQUESTED, failure: Failure | None = None) -> Allocation:
    return Allocation(
        id=7, user_id=1, sku_id=1, hourly_price=Money(3600, "USD"), state=state, version=1, node_id=None, gpu_indices=(),
        username=None, hold_id=None, ssh_key_ids=(1,), failure=failure, stop_reason=None,
        attempts=2, next_attempt_at=None, deadline=None, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(("start", "trigger", "lands"), [
    (S.REQUESTED, T.PLACE, S.PLACED), (S.PLACED, T.PROVISION, S.PROVISIONING),
    (S.PROVISIONING, T.PROVISIONED, S.RUNNING), (S.RUNNING, T.STOP, S.STOPPING),
    (S.PLACED, T.STOP, S.STOPPING), (S.PROVISIONING, T.STOP, S.STOPPING),
    (S.PROVISIONING, T.FAIL, S.STOPPING), (S.RUNNING, T.FAIL, S.STOPPING),
    (S.STOPPING, T.TORN_DOWN, S.STOPPED),
])  # fmt: skip
def test_each_edge(
    start: AllocationState, trigger: AllocationTrigger, lands: AllocationState
) -> None:
    assert next_state(allocation(start), trigger) is lands


def test_a_failure_tears_down_into_failed_not_stopped() -> None:
    failing = allocation(S.STOPPING, Failure(FailureCode.NODE_UNREACHABLE, "gone"))
    ended = transition(failing, T.TORN_DOWN, NOW)
    assert ended.state is S.FAILED and ended.ended_at == NOW and ended.next_attempt_at is None


@pytest.mark.parametrize(("start", "trigger"), [
    (S.REQUESTED, T.PROVISION), (S.RUNNING, T.PROVISION), (S.STOPPED, T.STOP),
    (S.FAILED, T.TORN_DOWN), (S.RUNNING, T.TORN_DOWN), (S.STOPPING, T.STOP),
    (S.PLACED, T.PROVISIONED),
])  # fmt: skip
def test_refused_edges(start: AllocationState, trigger: AllocationTrigger) -> None:
    with pytest.raises(Conflict) as refused:
        transition(allocation(start), trigger, NOW)
    assert refused.value.problems[0].code == AllocationErrorCode.TRANSITION_NOT_ALLOWED


def test_transition_bumps_the_version_resets_attempts_and_schedules_the_engine() -> None:
    provisioning = transition(allocation(S.PLACED), T.PROVISION, NOW)
    assert (provisioning.version, provisioning.attempts) == (2, 0)
    assert provisioning.next_attempt_at == NOW  # the engine has work: now
    running = transition(provisioning, T.PROVISIONED, NOW)
    assert running.next_attempt_at is None  # nothing for the engine while it runs


@given(st.lists(st.sampled_from(list(T)), max_size=30))
def test_any_sequence_ends_only_through_teardown(triggers: list[AllocationTrigger]) -> None:
    current = allocation()
    for trigger in triggers:
        try:
            moved = transition(current, trigger, NOW)
        except Conflict:
            continue
        assert moved.version == current.version + 1
        assert current.state not in (S.STOPPED, S.FAILED)  # ended is final
        if moved.state in (S.STOPPED, S.FAILED):
            assert current.state is S.STOPPING
        assert (moved.next_attempt_at is not None) == (moved.state in ACTIVE)
        current = moved


def test_account_names_are_ours_and_valid() -> None:
    assert account_name("gc", 42) == "gc42"
    assert is_account_name("gc", "gc42") and not is_account_name("gc", "gcx")
    assert not is_account_name("gc", "root") and not is_account_name("gc", "gc")
    for prefix, ident in (("Gc", 1), ("gc", 0), ("g-c", 1), ("", 1)):
        with pytest.raises(ValueError):
            account_name(prefix, ident)


def test_usage_is_billed_to_the_second_rounded_up_once() -> None:
    assert usage_cost(3600, 1) == 1 and usage_cost(399, 3600) == 399
    assert usage_cost(399, 1) == 1  # a started unit is paid
    assert usage_cost(399, 0) == 0 and usage_cost(399, -5) == 0
    # Billed per second tick, rounding each tick up would charge 3600 for an hour at 399;
    # cumulative billing (cost so far minus captured) charges exactly the hour's price.
    deltas = [usage_cost(399, s) - usage_cost(399, s - 1) for s in range(1, 3601)]
    assert all(d >= 0 for d in deltas) and sum(deltas) == 399
    assert sum(usage_cost(399, 1) for _ in range(3600)) == 3600


def test_retries_back_off_to_a_cap() -> None:
    policy = AllocationPolicy(retry_base=timedelta(seconds=1), retry_max=timedelta(seconds=10))
    assert [policy.retry_after(n).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
