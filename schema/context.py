"""What every resolver gets: who is calling, a unit-of-work factory, event streams, loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from strawberry.dataloader import DataLoader

from domain.audit.records import AuditEvent, RequestMeta
from domain.catalog.sku import Sku
from domain.compute.allocations import Allocation
from domain.compute.kit import ComputeKit
from domain.compute.records import AllocationEvent
from domain.compute.ssh_keys import SshKey
from domain.compute.terminals import TerminalKit
from domain.fleet.inventory import NodeGpu
from domain.fleet.kit import FleetKit
from domain.fleet.nodes import Node
from domain.fleet.records import NodeEvent
from domain.identity.accounts import User
from domain.identity.errors import Refusal
from domain.identity.kit import AuthKit, SignedIn
from domain.identity.principal import ANONYMOUS, Principal
from domain.identity.tokens import ApiToken
from domain.ledger.services import Statement, WalletView
from domain.ledger.transfers import Entry, WalletEntry
from domain.pagination import Page, PageRequest
from domain.payments.findings import ReconciliationIssue
from domain.payments.kit import MoneyKit
from domain.payments.payments import Payment
from domain.payments.refunds import Refund
from domain.ports import EventStream, SshKeyCodec, UnitOfWork
from schema.catalog import CatalogChange
from schema.notifications import Delivery


@dataclass
class Loaders:
    """Per-request batching caches, so N objects cost one query, not N."""

    sku: DataLoader[int, Sku | None]
    user: DataLoader[int, User | None]
    api_token: DataLoader[int, ApiToken | None]
    ssh_key: DataLoader[int, SshKey | None]
    allocation: DataLoader[int, Allocation | None]
    # Each allocation's latest events (its history), for a page of allocations in one query.
    allocation_events: DataLoader[int, list[AllocationEvent] | None]
    audit_event: DataLoader[int, AuditEvent | None]
    payment: DataLoader[int, Payment | None]
    refund: DataLoader[int, Refund | None]
    # Nodes by id: the fleet's admin views, and the login host and port of running allocations.
    fleet_node: DataLoader[int, Node | None]
    # A node's GPUs, and a page of its events keyed by (node id, page request).
    node_gpus: DataLoader[int, Sequence[NodeGpu] | None]
    node_events: DataLoader[tuple[int, PageRequest], Page[NodeEvent]]
    # Objects that only node(id)/nodes(ids) fetch alone: an entry (by transfer id) with its
    # wallet's owner, a node event, a reconciliation issue.
    ledger_entry: DataLoader[int, WalletEntry | None]
    node_event: DataLoader[int, NodeEvent | None]
    reconciliation_issue: DataLoader[int, ReconciliationIssue | None]
    # How many more of a SKU could be placed now, for a whole page of SKUs in one query.
    sku_available: DataLoader[Sku, int]
    # A user's money, keyed by (user id, the field's arguments); the billing fields of User read
    # through these, so a field asked twice in one request is read once.
    wallet: DataLoader[tuple[int, str], WalletView]
    wallets: DataLoader[int, list[WalletView]]
    ledger_entries: DataLoader[tuple[int, PageRequest], Page[Entry]]
    payments_of: DataLoader[tuple[int, PageRequest], Page[Payment]]
    refunds_of: DataLoader[tuple[int, PageRequest], Page[Refund]]
    statements: DataLoader[tuple[int, int], list[Statement]]


class LiveCursor:
    """Where one live notifications subscription stands: its user and the last seq it sent."""

    __slots__ = ("last", "user_id")

    def __init__(self, user_id: int, last: int) -> None:
        self.user_id = user_id
        self.last = last


class LiveCursors:
    """The live notifications subscriptions of this process, by user."""

    def __init__(self) -> None:
        self._by_user: dict[int, set[LiveCursor]] = {}

    def hold(self, user_id: int, last: int) -> LiveCursor:
        cursor = LiveCursor(user_id, last)
        self._by_user.setdefault(user_id, set()).add(cursor)
        return cursor

    def release(self, cursor: LiveCursor) -> None:
        held = self._by_user.get(cursor.user_id)
        if held is not None:
            held.discard(cursor)
            if not held:
                del self._by_user[cursor.user_id]

    def keys(self, user_ids: Iterable[int]) -> set[tuple[int, int]]:
        """(user id, seq) for every subscription of these users, one per distinct seq."""
        return {(user, c.last) for user in user_ids for c in self._by_user.get(user, ())}


@dataclass(frozen=True)
class SharedReads:
    """Process-wide reads shared by every subscriber (resolvers/shared_reads.py)."""

    # (user id, seq) -> that user's notifications above seq, every type, at most a batch.
    notifications_after: DataLoader[tuple[int, int], list[Delivery]]
    # (event id, SKU id, kind) -> the event's change, read and made once: one object for all.
    catalog_change: Callable[[int, int, str], Awaitable[CatalogChange]]
    # (poke's event id, user id, seq) -> as notifications_after, read once per poke and key.
    notifications_on: Callable[[Any, int, int], Awaitable[list[Delivery]]]
    # The live subscriptions' cursors, so a poke's reads can be made before they wake.
    cursors: LiveCursors = field(default_factory=LiveCursors)


class SessionCookies(Protocol):
    """Sets and clears the session and CSRF cookies on the response being built."""

    def set(self, signed_in: SignedIn) -> None: ...

    def clear(self) -> None: ...


@dataclass
class AppContext:
    request_id: str
    uow: Callable[[], UnitOfWork]
    events: EventStream
    loaders: Loaders
    shared: SharedReads | None = None  # for subscriptions; the app always gives one
    # Units of work for use cases that only read (one round trip per statement); `uow` if None.
    reads: Callable[[], UnitOfWork] | None = None
    auth: AuthKit | None = None
    money: MoneyKit | None = None
    fleet: FleetKit | None = None  # None without a key service: fleet writes are unavailable
    compute: ComputeKit | None = None  # made with the fleet's kit: allocation writes need it
    terminals: TerminalKit | None = None  # browser terminal tickets
    key_codec: SshKeyCodec | None = None  # reads users' SSH keys; the app always gives one
    principal: Principal = ANONYMOUS
    meta: RequestMeta = field(default_factory=RequestMeta)
    cookies: SessionCookies | None = None
    via_cookie: bool = False  # authenticated by session cookie: mutations need the CSRF header
    csrf_ok: bool = False
    # A credential was sent but refused, and why (INVALID, EXPIRED, REVOKED, SUSPENDED).
    credential_refusal: Refusal | None = None
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init
    # Does the websocket's credential still stand? gpucloud/live.py asks on identity events and
    # at every heartbeat, and closes the socket (4401) once it does not.
    still_authorized: Callable[[], Awaitable[bool]] | None = None
    request: Any = None
    response: Any = None

    def read(self) -> UnitOfWork:
        """A unit of work for a use case that only reads."""
        return (self.reads or self.uow)()
