"""What we keep of Stripe: the events already applied, and reconciliation findings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.pagination import Page, PageRequest
from domain.payments.findings import Finding, IssueKind, ReconciliationIssue
from infra.db.money_tables import reconciliation_issues, stripe_events
from infra.db.paging import keyset_page


def _issue(row: Any) -> ReconciliationIssue:
    finding = Finding(kind=IssueKind(row.kind), stripe_object_id=row.stripe_object_id,
                      detail=row.detail, payment_id=row.payment_id, refund_id=row.refund_id,
                      expected=row.expected, actual=row.actual)  # fmt: skip
    return ReconciliationIssue(id=row.id, finding=finding, detected_at=row.detected_at)


class SqlStripeRecords:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record_event(self, event_id: str, event_type: str, created: datetime,
                           outcome: str) -> bool:  # fmt: skip
        # A concurrent delivery of the same event waits on the primary key, then inserts nothing.
        stmt = (
            insert(stripe_events)
            .values(id=event_id, type=event_type, created=created, outcome=outcome)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(stripe_events.c.id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def note_outcome(self, event_id: str, outcome: str) -> None:
        await self._conn.execute(
            update(stripe_events).where(stripe_events.c.id == event_id).values(outcome=outcome)
        )

    async def known_events(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        stmt = select(stripe_events.c.id).where(stripe_events.c.id.in_(list(event_ids)))
        return set((await self._conn.execute(stmt)).scalars())

    async def flag(self, finding: Finding) -> bool:
        stmt = (
            insert(reconciliation_issues)
            .values(
                kind=str(finding.kind),
                stripe_object_id=finding.stripe_object_id,
                payment_id=finding.payment_id,
                refund_id=finding.refund_id,
                expected=finding.expected,
                actual=finding.actual,
                detail=finding.detail,
            )
            .on_conflict_do_nothing(index_elements=["kind", "stripe_object_id"])
            .returning(reconciliation_issues.c.id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def issues_by_id(self, issue_ids: Sequence[int]) -> dict[int, ReconciliationIssue]:
        stmt = select(reconciliation_issues).where(reconciliation_issues.c.id.in_(list(issue_ids)))
        return {row.id: _issue(row) for row in await self._conn.execute(stmt)}

    async def issues(self, page: PageRequest) -> Page[ReconciliationIssue]:
        stmt = select(reconciliation_issues)
        return await keyset_page(
            self._conn, stmt, reconciliation_issues.c.id, page, _issue, descending=True
        )
