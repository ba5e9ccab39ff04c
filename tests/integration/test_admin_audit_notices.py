"""Administrators are told of audit rows that change the platform, in the same transaction as
the row, and not of their own actions or of users' everyday ones (domain/notifications/audit.py)."""

from __future__ import annotations

import uuid
from typing import Any

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.identity.accounts import AccountStatus
from domain.identity.admin import set_status
from domain.identity.scopes import Role
from domain.notifications.audit import tells_admins
from domain.notifications.notices import NoticeType
from domain.notifications.services import after_many
from tests.support.compute import signed_in, stored_user

META = RequestMeta(request_id="test")


async def _told(uow: Any, user_id: int) -> list[dict[str, Any]]:
    found = (await after_many(uow(), [(user_id, 0)], 100))[(user_id, 0)]
    return [dict(n.payload) for n in found if n.type is NoticeType.AUDIT_RECORDED]


async def test_other_admins_hear_of_a_platform_change_and_the_actor_does_not(uow: Any) -> None:
    acting, other = await stored_user(uow, Role.ADMIN), await stored_user(uow, Role.ADMIN)
    customer = await stored_user(uow)
    spec = SkuSpec.create(name=f"told-{uuid.uuid4().hex[:6]}", gpu_model="H100", gpu_count=1,
                          vcpus=8, ram_gib=64, disk_gib=100, region="us-east",
                          hourly_price_minor=100, currency="USD")  # fmt: skip
    sku = await add_sku(uow(), spec, signed_in(acting, Role.ADMIN), META)
    await set_status(uow(), signed_in(acting, Role.ADMIN), customer, AccountStatus.SUSPENDED,
                     "abuse", META)  # fmt: skip

    told = await _told(uow, other)
    assert [t["action"] for t in told] == ["catalog.sku.added", "admin.user.suspended"]
    assert told[0]["targetType"] == "sku" and told[0]["targetId"] == str(sku.id)
    assert told[0]["actorUserId"] == acting and told[0]["auditEventId"] > 0
    async with uow() as u:  # the row it names is the audit row written with it
        rows = await u.audit.get_many([told[0]["auditEventId"]])
    assert rows[told[0]["auditEventId"]].record.action == "catalog.sku.added"
    assert await _told(uow, acting) == []  # not of one's own action
    assert await _told(uow, customer) == []  # and never a non-admin


def test_what_administrators_are_told_of() -> None:
    for action in ("catalog.sku.added", "fleet.node.registered", "node.orphan_account_removed",
                   "keys.rotated", "ssh_ca.rotated", "admin.user.role_changed",
                   "billing.credit.granted", "billing.refund.requested"):  # fmt: skip
        assert tells_admins(action), action
    for action in ("auth.login.succeeded", "auth.login.failed", "token.created", "ssh_key.added",
                   "terminal.opened", "allocation.created", "ssh_ca.certificate_issued",
                   "fleet.node.cordoned", "fleet.node.probe_unreachable"):  # as NODE_* notices  # fmt: skip
        assert not tells_admins(action), action
