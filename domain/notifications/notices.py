"""Notifications: what a user (or every administrator) is told, stored in the same transaction
as its cause, so a change and the news of it exist together or not at all.

Each recipient's notifications carry a sequence number of their own, handed out under a lock on
that recipient's counter that is held until the transaction ends. So sequence numbers become
visible in order and without gaps: a reader that sees number N knows every lower one of the
same recipient is already there. That is what lets a subscriber replay "everything after my
cursor" and then go live without missing or repeating one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.events import DomainEvent

NOTIFICATIONS_TOPIC = "notifications"


class NoticeType(StrEnum):
    ALLOCATION_STATE_CHANGED = "allocation.state_changed"
    ALLOCATION_LOW_BALANCE = "allocation.low_balance"
    ALLOCATION_STOPPED_BY_ADMIN = "allocation.stopped_by_admin"  # with the admin's reason
    ALLOCATION_NODE_DRAINING = "allocation.node_draining"  # it stops at the drain's deadline
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    NODE_ALERT = "node.alert"  # administrators: a node quarantined, unreachable or unhealthy
    NODE_STATE_CHANGED = "node.state_changed"  # administrators
    AUDIT_RECORDED = "audit.recorded"  # administrators: see domain/notifications/audit.py


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to write: to these users, of this type, with this JSON payload."""

    user_ids: Sequence[int]
    type: NoticeType
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    user_id: int
    seq: int  # the recipient's own sequence number: the subscription cursor
    type: NoticeType
    payload: Mapping[str, Any]
    created_at: datetime
    read_at: datetime | None


def poke(user_ids: Sequence[int]) -> DomainEvent:
    """The outbox event telling subscribers of these users to read what is new. It carries no
    content: a subscriber reads from the database, in sequence order, what it has not seen."""
    return DomainEvent(topic=NOTIFICATIONS_TOPIC, name="notifications.new",
                       payload={"userIds": sorted(set(user_ids))})  # fmt: skip
