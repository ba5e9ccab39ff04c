"""The audit hash chain: any edit, deletion, insertion or reordering is found at its row."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.audit.records import (
    GENESIS,
    AuditEvent,
    AuditRecord,
    ChainVerifier,
    RequestMeta,
    audit,
    chain_hash,
)
from domain.identity.principal import ANONYMOUS, Principal
from domain.identity.scopes import Role

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def chain(records: list[AuditRecord]) -> list[AuditEvent]:
    events, prev = [], GENESIS
    for i, record in enumerate(records, start=1):
        digest = chain_hash(prev, record)
        events.append(AuditEvent(i, record, prev, digest))
        prev = digest
    return events


def records(n: int) -> list[AuditRecord]:
    actor = Principal.for_session(7, Role.USER, 3, T0)
    return [
        audit(
            actor,
            RequestMeta(f"req-{i}", "10.0.0.1"),
            "auth.login.succeeded",
            ("user", 7),
            after={"n": i},
            now=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def verify(events: list[AuditEvent], batch: int = 3) -> ChainVerifier:
    verifier = ChainVerifier()
    for start in range(0, len(events), batch):
        if not verifier.feed(events[start : start + batch]):
            break
    return verifier


def test_an_intact_chain_verifies_in_batches() -> None:
    result = verify(chain(records(10)))
    assert result.broken_at is None and result.checked == 10


@given(st.integers(0, 9), st.sampled_from(["action", "target_id", "client_ip", "after", "when"]))
def test_editing_any_field_of_any_row_is_found_at_that_row(index: int, what: str) -> None:
    events = chain(records(10))
    record = events[index].record
    changed = {
        "action": replace(record, action="auth.logout"),
        "target_id": replace(record, target_id="8"),
        "client_ip": replace(record, client_ip="10.0.0.2"),
        "after": replace(record, after={"n": -1}),
        "when": replace(record, occurred_at=record.occurred_at + timedelta(microseconds=1)),
    }[what]
    events[index] = replace(events[index], record=changed)
    assert verify(events).broken_at == index + 1


def test_deleting_or_reordering_rows_is_found() -> None:
    events = chain(records(6))
    assert verify(events[:2] + events[3:]).broken_at == 4
    assert verify([events[0], events[2], events[1], *events[3:]]).broken_at == 3


def test_rewriting_a_row_with_a_fresh_hash_breaks_the_next_link() -> None:
    events = chain(records(5))
    forged = replace(events[1].record, action="auth.logout")
    events[1] = AuditEvent(2, forged, events[1].prev_hash, chain_hash(events[1].prev_hash, forged))
    assert verify(events).broken_at == 3


def test_the_canonical_form_is_stable_and_covers_the_actor() -> None:
    record = audit(ANONYMOUS, RequestMeta("r", None), "auth.login.failed",
                   after={"b": 1, "a": 2}, now=T0)  # fmt: skip
    assert record.canonical() == replace(record, after={"a": 2, "b": 1}).canonical()
    assert record.actor_type == "anonymous"
    assert chain_hash(GENESIS, record) != chain_hash(GENESIS, replace(record, actor_user_id=1))
