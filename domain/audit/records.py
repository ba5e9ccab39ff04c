"""Audit records: who did what to which object, from where, and what changed.

Each stored row is chained to the one before it by hash, so editing, deleting or inserting a
row anywhere but the end breaks the chain at that row, which `verify` reports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.identity.principal import Principal, PrincipalKind

GENESIS = bytes(32)


@dataclass(frozen=True)
class RequestMeta:
    """Where a request came from; recorded on every audit row it causes."""

    request_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None


CLI = RequestMeta(request_id="cli")  # an operator at the command line
WORKER = RequestMeta(request_id="worker")  # the platform's own background work


@dataclass(frozen=True)
class AuditRecord:
    action: str
    actor_type: str
    actor_user_id: int | None
    actor_token_id: int | None
    target_type: str | None
    target_id: str | None
    request_id: str | None
    client_ip: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    occurred_at: datetime

    def canonical(self) -> bytes:
        """The exact bytes the hash covers: sorted keys, no whitespace, UTC microseconds."""
        body = {
            "action": self.action,
            "actorType": self.actor_type,
            "actorUserId": self.actor_user_id,
            "actorTokenId": self.actor_token_id,
            "targetType": self.target_type,
            "targetId": self.target_id,
            "requestId": self.request_id,
            "clientIp": self.client_ip,
            "before": self.before,
            "after": self.after,
            "occurredAt": self.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class AuditEvent:
    id: int
    record: AuditRecord
    prev_hash: bytes
    hash: bytes


def chain_hash(prev: bytes, record: AuditRecord) -> bytes:
    return hashlib.sha256(prev + record.canonical()).digest()


def audit(
    principal: Principal,
    meta: RequestMeta,
    action: str,
    target: tuple[str, object] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> AuditRecord:
    actor = "user" if principal.kind is PrincipalKind.SESSION else str(principal.kind)
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return AuditRecord(
        action=action,
        actor_type=actor,
        actor_user_id=principal.user_id,
        actor_token_id=principal.token_id,
        target_type=None if target is None else target[0],
        target_id=None if target is None else str(target[1]),
        request_id=meta.request_id,
        client_ip=meta.client_ip,
        before=before,
        after=after,
        occurred_at=when,  # microseconds, as Postgres keeps them: the hash survives a read back
    )


@dataclass
class ChainVerifier:
    """Feed rows in id order, in as many batches as needed; `broken_at` names the first row
    whose hash or link does not match."""

    prev: bytes = GENESIS
    checked: int = 0
    broken_at: int | None = None

    def feed(self, events: Iterable[AuditEvent]) -> bool:
        """Returns False once a broken row is found."""
        for event in events:
            if event.prev_hash != self.prev or chain_hash(self.prev, event.record) != event.hash:
                self.broken_at = event.id
                return False
            self.prev = event.hash
            self.checked += 1
        return True


@dataclass(frozen=True)
class AuditFilter:
    actor_user_id: int | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("auth." matches auth.*)
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
