"""Administrators hear of the audit rows they should see, in the transaction that writes them.

Not every row: logins, tokens, SSH keys, terminals and allocations are each user's own business
(and would bury the rest), and certificates are issued for every provisioning step and terminal.
What is told is what changes the platform: catalog, nodes registered, keys and CA, roles and
suspensions, credits and refunds (node states have notices of their own). The acting
administrator is not told of their own action.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.audit.records import AuditEvent, AuditFilter, AuditRecord
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify_admins
from domain.pagination import Page, PageRequest
from domain.ports import AuditLog, UnitOfWork

_TOLD = ("admin.", "catalog.", "keys.", "ssh_ca.", "billing.credit.", "billing.refund.",
         "fleet.node.registered", "fleet.node.host_key_pinned", "node.")  # fmt: skip
# Certificates are issued for every provisioning step and terminal. A node's changes of state
# (`fleet.node.<trigger>`, by probes or admins) are told already, as NODE_STATE_CHANGED and
# NODE_ALERT (domain/fleet/changes.py): telling them again here would double every one.
_NOT_TOLD = ("ssh_ca.certificate_issued",)


def tells_admins(action: str) -> bool:
    return action.startswith(_TOLD) and not action.startswith(_NOT_TOLD)


class AdminAuditNotices:
    """The `AuditLog` port: appends through `log`, then notifies administrators in `uow`."""

    def __init__(self, log: AuditLog, uow: UnitOfWork) -> None:
        self._log = log
        self._uow = uow

    async def append(self, record: AuditRecord) -> AuditEvent:
        event = await self._log.append(record)
        if tells_admins(record.action):
            await notify_admins(self._uow, NoticeType.AUDIT_RECORDED, {
                "auditEventId": event.id, "action": record.action,
                "actorType": record.actor_type, "actorUserId": record.actor_user_id,
                "targetType": record.target_type, "targetId": record.target_id,
            }, besides=record.actor_user_id)  # fmt: skip
        return event

    async def list(self, audit_filter: AuditFilter, page: PageRequest) -> Page[AuditEvent]:
        return await self._log.list(audit_filter, page)

    async def get_many(self, event_ids: Sequence[int]) -> dict[int, AuditEvent]:
        return await self._log.get_many(event_ids)

    async def scan(self, after_id: int, limit: int) -> Sequence[AuditEvent]:
        return await self._log.scan(after_id, limit)
