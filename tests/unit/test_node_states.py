"""The node state machine: every edge, and what each refuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import Conflict
from domain.fleet.nodes import (
    KEEP,
    Node,
    NodeAuth,
    NodeErrorCode,
    NodeHealth,
    NodeState,
    NodeTrigger,
    Reason,
    ReasonCode,
    next_state,
    probed,
    transition,
)

NOW = datetime(2026, 11, 26, tzinfo=UTC)
S, T = NodeState, NodeTrigger


def node(state: NodeState = S.READY, health: NodeHealth = NodeHealth.OK,
         bootstrapped: bool = True) -> Node:  # fmt: skip
    return Node(
        id=1, name="gpu-1", host="10.0.0.1", port=22, ssh_user="root", auth=NodeAuth.KEY,
        credential_secret_id=1, host_key=None, region="eu-west", labels={}, state=state,
        version=3, health=health, reason=None, gpu_model="H200", gpu_count=8, facts=None,
        bootstrapped_at=NOW if bootstrapped else None, last_probe_at=None,
        unreachable_since=None, probe_failures=0, next_probe_at=None, created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip


EXPECTED = {
    (S.BOOTSTRAPPING, T.BOOTSTRAPPED): S.READY,
    (S.BOOTSTRAPPING, T.PROBE_UNHEALTHY): S.UNHEALTHY,
    (S.BOOTSTRAPPING, T.PROBE_UNREACHABLE): S.UNREACHABLE,
    (S.BOOTSTRAPPING, T.HOST_KEY_MISMATCH): S.QUARANTINED,
    (S.READY, T.PROBE_OK): S.READY,
    (S.READY, T.PROBE_UNREACHABLE): S.UNREACHABLE,
    (S.READY, T.PROBE_UNHEALTHY): S.UNHEALTHY,
    (S.READY, T.CORDON): S.CORDONED,
    (S.READY, T.DRAIN): S.DRAINING,
    (S.READY, T.RETIRE): S.RETIRED,
    (S.UNREACHABLE, T.PROBE_OK): S.READY,
    (S.UNREACHABLE, T.BOOTSTRAPPED): S.READY,
    (S.UNHEALTHY, T.PROBE_OK): S.READY,
    (S.CORDONED, T.PROBE_UNREACHABLE): S.CORDONED,  # the admin's hold outlives health changes
    (S.CORDONED, T.PROBE_OK): S.CORDONED,
    (S.CORDONED, T.DRAIN): S.DRAINING,
    (S.DRAINING, T.CORDON): S.CORDONED,
    (S.CORDONED, T.HOST_KEY_MISMATCH): S.QUARANTINED,  # security outranks the hold
    (S.QUARANTINED, T.READMIT): S.BOOTSTRAPPING,
    (S.QUARANTINED, T.RETIRE): S.RETIRED,
}


@pytest.mark.parametrize(("start", "trigger"), list(EXPECTED))
def test_each_edge_lands_where_expected(start: NodeState, trigger: NodeTrigger) -> None:
    assert next_state(node(start), trigger) is EXPECTED[(start, trigger)]


@pytest.mark.parametrize(("start", "trigger"), [
    (S.RETIRED, t) for t in T] + [
    (S.QUARANTINED, T.PROBE_OK), (S.QUARANTINED, T.CORDON), (S.QUARANTINED, T.UNCORDON),
    (S.READY, T.UNCORDON), (S.CORDONED, T.CORDON), (S.DRAINING, T.DRAIN),
    (S.BOOTSTRAPPING, T.PROBE_OK), (S.CORDONED, T.READMIT),
])  # fmt: skip
def test_refused_edges_name_the_state(start: NodeState, trigger: NodeTrigger) -> None:
    with pytest.raises(Conflict) as refused:
        transition(node(start), trigger, NOW)
    assert refused.value.problems[0].code == NodeErrorCode.TRANSITION_NOT_ALLOWED
    assert f"is {start.name};" in refused.value.problems[0].message  # as the API spells it


@pytest.mark.parametrize(("health", "bootstrapped", "lands"), [
    (NodeHealth.OK, True, S.READY), (NodeHealth.UNREACHABLE, True, S.UNREACHABLE),
    (NodeHealth.UNHEALTHY, True, S.UNHEALTHY), (NodeHealth.OK, False, S.BOOTSTRAPPING),
])  # fmt: skip
def test_uncordon_lands_on_what_the_health_says(
    health: NodeHealth, bootstrapped: bool, lands: NodeState
) -> None:
    for held in (S.CORDONED, S.DRAINING):
        assert next_state(node(held, health, bootstrapped), T.UNCORDON) is lands


def test_transition_bumps_the_version_and_keeps_or_clears_the_reason() -> None:
    hot = Reason(ReasonCode.GPU_TOO_HOT, "GPU 0 at 91 C")
    sick = transition(node(), T.PROBE_UNHEALTHY, NOW, hot)
    assert (sick.state, sick.version, sick.reason) == (S.UNHEALTHY, 4, hot)
    cordoned = transition(sick, T.CORDON, NOW)  # KEEP: the admin's action keeps the why
    assert cordoned.reason == hot and cordoned.version == 5
    well = transition(replace(sick, health=NodeHealth.OK), T.PROBE_OK, NOW, KEEP)
    assert well.reason is None and well.state is S.READY


def test_retiring_stamps_the_time_and_nothing_probes_retired_or_quarantined() -> None:
    gone = transition(node(), T.RETIRE, NOW)
    assert gone.retired_at == NOW
    assert not probed(S.RETIRED) and not probed(S.QUARANTINED) and probed(S.CORDONED)


@given(st.lists(st.sampled_from(list(T)), max_size=40))
def test_any_trigger_sequence_only_follows_edges(triggers: list[NodeTrigger]) -> None:
    """Whatever arrives in whatever order: the version counts the changes, retired is final,
    and a refused trigger changes nothing."""
    current = node(S.BOOTSTRAPPING, NodeHealth.UNKNOWN, bootstrapped=False)
    for trigger in triggers:
        try:
            moved = transition(current, trigger, NOW)
        except Conflict:
            continue
        assert moved.version == current.version + 1
        assert current.state is not S.RETIRED
        if moved.state is S.READY:
            assert moved.reason is None
        current = moved


def test_a_draining_node_becomes_drained_and_keeps_its_hold() -> None:
    due = datetime(2026, 11, 27, tzinfo=UTC)
    draining = transition(replace(node(), drain_deadline=due), T.DRAIN, NOW)
    assert (draining.state, draining.drain_deadline) == (S.DRAINING, due)
    drained = transition(draining, T.DRAINED, NOW)
    assert (drained.state, drained.drain_deadline) == (S.DRAINED, due)
    for trigger in (T.PROBE_OK, T.PROBE_UNHEALTHY, T.PROBE_UNREACHABLE):
        assert next_state(drained, trigger) is S.DRAINED  # health never lifts the hold
    back = transition(drained, T.UNCORDON, NOW)  # the hold ends: so does the drain
    assert (back.state, back.drain_deadline, back.retire_when_drained) == (S.READY, None, False)
    assert transition(drained, T.RETIRE, NOW).state is S.RETIRED
    for state in (S.READY, S.CORDONED, S.DRAINED, S.RETIRED):  # only from DRAINING
        with pytest.raises(Conflict):
            next_state(node(state), T.DRAINED)
