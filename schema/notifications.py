"""Notification types: what a user (or an administrator) is told, and its cursor."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

import strawberry
from strawberry.scalars import JSON

from domain.notifications.notices import NoticeType
from domain.notifications.notices import Notification as DomainNotification
from domain.pagination import encode_cursor
from schema.errors import Error
from schema.notification_details import NotificationDetails, details_of
from schema.relay import Connection

NotificationType = strawberry.enum(
    NoticeType,
    name="NotificationType",
    description="What a notification is about. ALLOCATION_*, PAYMENT_* and REFUND_* go to the "
    "owner; NODE_* and AUDIT_RECORDED (platform changes: catalog, fleet, keys and CA, roles "
    "and suspensions, credits and refunds; not one's own) to every administrator.",
)


def _details(root: Notification) -> NotificationDetails:
    return details_of(root.type, root.stored)


@strawberry.type(description="One thing you were told. Notifications are never edited.")
class Notification:
    cursor: str = strawberry.field(
        description="Where this one stands in your notifications: pass it as `after` to the "
        "`notifications` subscription to get only what came later, or to "
        "`markNotificationsRead(upTo:)`."
    )
    type: NotificationType  # type: ignore[valid-type]
    details: NotificationDetails = strawberry.field(
        resolver=_details,
        description="What happened, as typed fields: a member per `type` (see NotificationDetails)"
        ", with global IDs for `node(id:)`, enum values and Money.",
    )
    payload: JSON = strawberry.field(
        description="The facts as stored, with database ids, lower-case states and minor units.",
        deprecation_reason="Use `details`: typed, with global IDs, enum values and Money.",
    )
    created_at: datetime
    read_at: datetime | None
    stored: strawberry.Private[Mapping[str, Any]]

    @classmethod
    def from_domain(cls, notification: DomainNotification) -> Notification:
        payload: Any = dict(notification.payload)
        return cls(
            cursor=encode_cursor(notification.seq),
            type=notification.type,
            payload=payload,
            created_at=notification.created_at,
            read_at=notification.read_at,
            stored=notification.payload,
        )


NotificationConnection = Connection[Notification]


class Delivery(NamedTuple):
    """A notification as the subscription delivers it: its view is made once per read and shared
    by every socket of the user at that cursor (resolvers/broadcast.py)."""

    seq: int
    type: NoticeType
    view: Notification


@strawberry.type(description="How many notifications were marked read.")
class MarkNotificationsReadPayload:
    marked: int


class DomainNotificationErrorCode(StrEnum):
    INVALID_CURSOR = "INVALID_CURSOR"


NotificationErrorCode = strawberry.enum(
    DomainNotificationErrorCode,
    name="NotificationErrorCode",
    description="Why a notifications request was refused.",
)


@strawberry.type(description="One problem with a notifications request.")
class NotificationProblem:
    code: NotificationErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="A notifications request was refused.")
class NotificationError(Error):
    code: NotificationErrorCode  # type: ignore[valid-type]
    problems: list[NotificationProblem]


MarkNotificationsReadResult = Annotated[
    MarkNotificationsReadPayload | NotificationError,
    strawberry.union("MarkNotificationsReadResult"),
]
