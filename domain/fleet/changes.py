"""Storing a node's change with everything that goes with it, in the caller's transaction: the
row (version-checked), a node event, an audit row for a change of state, and an outbox event
so admins watching the fleet hear of it."""

from __future__ import annotations

from datetime import datetime

from domain.audit.records import WORKER, RequestMeta, audit
from domain.events import DomainEvent
from domain.fleet.nodes import Node, NodeState
from domain.fleet.records import NewNodeEvent, NodeEventKind
from domain.identity.principal import SYSTEM, Principal
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork

FLEET_TOPIC = "fleet"
# Changes an admin must look at: raised as alerts on the fleet topic, besides the state change.
ALERT_STATES = (NodeState.QUARANTINED, NodeState.UNREACHABLE, NodeState.UNHEALTHY)


def view(node: Node) -> dict[str, object]:
    """A node as audit rows and events show it: no credential, ever."""
    return {"state": str(node.state), "version": node.version, "health": str(node.health),
            "reason": None if node.reason is None else str(node.reason.code)}  # fmt: skip


def fleet_event(name: str, node: Node, **extra: object) -> DomainEvent:
    return DomainEvent(topic=FLEET_TOPIC, name=name,
                       payload={"nodeId": node.id, "nodeName": node.name, "state": str(node.state),
                                "version": node.version, **extra})  # fmt: skip


async def store(
    uow: UnitOfWork, before: Node, after: Node, action: str, *, message: str | None = None,
    actor: Principal = SYSTEM, meta: RequestMeta = WORKER, now: datetime | None = None,
) -> Node:  # fmt: skip
    """Save `after` (made from `before`). A change of state is always evented and audited; a
    change of health alone only on a node an admin holds, whose state does not move."""
    saved = await uow.nodes.save(after)
    reason = after.reason
    if after.state is not before.state:
        text = message or f"{before.state.name} -> {after.state.name}"  # as the API's enums
        if reason is not None and after.state is not NodeState.READY:
            text = f"{text}: {reason.message}"
        await uow.nodes.add_event(NewNodeEvent(
            after.id, NodeEventKind.STATE_CHANGED, text, state=after.state,
            reason_code=None if reason is None else str(reason.code)))  # fmt: skip
        await uow.audit.append(audit(actor, meta, action, ("node", after.id), before=view(before),
                                     after=view(saved), now=now))  # fmt: skip
        uow.record(fleet_event("node.state_changed", saved, previous=str(before.state),
                               reason=None if reason is None else str(reason.code)))  # fmt: skip
        news = {"nodeId": saved.id, "name": saved.name, "state": str(saved.state),
                "previous": str(before.state),
                "reason": None if reason is None else str(reason.code)}  # fmt: skip
        admins = await uow.notifications.admin_ids()
        await notify(uow, admins, NoticeType.NODE_STATE_CHANGED, news)
        if after.state in ALERT_STATES:
            uow.record(fleet_event("node.alert", saved, reason=None if reason is None
                                   else str(reason.code), message=text))  # fmt: skip
            await notify(uow, admins, NoticeType.NODE_ALERT, {**news, "message": text})
    elif after.health is not before.health or _code(after) != _code(before):
        text = message or f"health {before.health.name} -> {after.health.name}"
        if reason is not None:
            text = f"{text}: {reason.message}"
        await uow.nodes.add_event(NewNodeEvent(
            after.id, NodeEventKind.HEALTH_CHANGED, text, state=after.state,
            reason_code=None if reason is None else str(reason.code)))  # fmt: skip
        uow.record(fleet_event("node.health_changed", saved, health=str(after.health)))
    return saved


def _code(node: Node) -> str | None:
    # Compared by code: a message carrying a reading (a temperature) changes on every probe.
    return None if node.reason is None else str(node.reason.code)
