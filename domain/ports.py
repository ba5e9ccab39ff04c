"""Ports: what the domain needs from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from domain.audit.records import AuditEvent, AuditFilter, AuditRecord
from domain.catalog.sku import Sku, SkuChanges, SkuFilter, SkuSpec, SkuStatus
from domain.compute.accounts import AccountSpec, AccountState
from domain.compute.allocations import Allocation, AllocationState
from domain.compute.records import AllocationEvent, AllocationFilter, Metered, NewAllocation
from domain.compute.ssh_keys import NewSshKey, ParsedPublicKey, SshKey
from domain.events import DomainEvent
from domain.fleet.ca import CaKeyStatus, CertificateRequest, GeneratedCaKey, SshCaKey
from domain.fleet.inventory import GpuInfo, NodeGpu
from domain.fleet.nodes import Node, NodeFacts
from domain.fleet.placement import GpuRequest, NodeCapacity
from domain.fleet.records import (
    CapacityRow,
    GpuAssignment,
    NewNode,
    NewNodeEvent,
    NodeEvent,
    NodeFilter,
)
from domain.fleet.remote import NodePrep, NodeTarget, OsInfo, Prepared
from domain.idempotency import IdempotencyRecord
from domain.identity.accounts import AccountStatus, User
from domain.identity.scopes import Role
from domain.identity.sessions import Session
from domain.identity.tokens import ApiToken, TokenSpec
from domain.leases import Leases
from domain.ledger.accounts import Account, AccountKey, Balance
from domain.ledger.holds import Hold
from domain.ledger.transfers import Entry, Transfer, TransferCode, TransferSpec, WalletEntry
from domain.notifications.notices import Notice, Notification
from domain.pagination import Page, PageRequest
from domain.payments.findings import Finding, ReconciliationIssue
from domain.payments.gateway import (
    GatewayBalanceTransaction,
    GatewayCheckout,
    GatewayEvent,
    GatewayIntent,
    GatewayRefund,
)
from domain.payments.payments import Payment
from domain.payments.refunds import Refund
from domain.secrets import NewSecret, SealedData, StoredSecret, WrappedKey


class SkuRepository(Protocol):
    async def add(self, spec: SkuSpec) -> Sku:
        """Insert; raises `Conflict` (NAME_TAKEN) when the name is used, case-insensitively."""
        ...

    async def get(self, sku_id: int, *, for_update: bool = False) -> Sku | None:
        """`for_update`: lock the row until the transaction ends."""
        ...

    async def get_many(self, sku_ids: Sequence[int]) -> dict[int, Sku]: ...

    async def get_by_name(self, name: str) -> Sku | None: ...

    async def list(self, sku_filter: SkuFilter, page: PageRequest) -> Page[Sku]: ...

    async def set_status(self, sku_id: int, status: SkuStatus) -> Sku: ...

    async def update(self, sku_id: int, changes: SkuChanges) -> Sku:
        """Store the fields `changes` gives, at least one (the price in the SKU's own
        currency); raises `Conflict` (NAME_TAKEN) when the new name is used, and `NotFound`
        when there is no such SKU."""
        ...

    async def count(self) -> int: ...


@dataclass(frozen=True)
class UserFilter:
    email_contains: str | None = None
    role: Role | None = None
    status: AccountStatus | None = None


class UserRepository(Protocol):
    async def add(self, email: str, password_hash: str | None, role: Role) -> User:
        """Insert; raises `Conflict` (EMAIL_TAKEN) when the email is used."""
        ...

    async def get(self, user_id: int, *, for_update: bool = False) -> User | None: ...

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]: ...

    async def get_by_email(self, email: str) -> User | None: ...

    async def list(self, user_filter: UserFilter, page: PageRequest) -> Page[User]: ...

    async def update(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        status: AccountStatus | None = None,
        password_hash: str | None = None,
    ) -> User: ...

    async def count_admins(self) -> int: ...

    async def find_by_identity(self, issuer: str, subject: str) -> User | None: ...

    async def link_identity(self, user_id: int, issuer: str, subject: str) -> None: ...


class SessionRepository(Protocol):
    async def add(self, user_id: int, secret_hash: bytes, expires_at: datetime,
                  client_ip: str | None, user_agent: str | None) -> Session: ...  # fmt: skip

    async def find(self, secret_hash: bytes) -> tuple[Session, User] | None: ...

    async def get(self, session_id: int) -> Session | None: ...

    async def touch(self, session_id: int, now: datetime) -> None: ...

    async def revoke(self, session_id: int, now: datetime) -> None: ...

    async def revoke_all(self, user_id: int, now: datetime, *, keep: int | None = None) -> int:
        """Revoke every live session of a user except `keep`; returns how many."""
        ...


class ApiTokenRepository(Protocol):
    async def add(self, user_id: int, spec: TokenSpec, secret_hash: bytes,
                  prefix: str) -> ApiToken: ...  # fmt: skip

    async def find(self, secret_hash: bytes) -> tuple[ApiToken, User] | None: ...

    async def get(self, token_id: int) -> ApiToken | None: ...

    async def get_many(self, token_ids: Sequence[int]) -> dict[int, ApiToken]: ...

    async def list_for(self, user_id: int, page: PageRequest) -> Page[ApiToken]: ...

    async def touch(self, token_id: int, now: datetime) -> None: ...

    async def revoke(self, token_id: int, now: datetime) -> ApiToken | None:
        """Revoke a live token; None when it was already revoked."""
        ...


class AuditLog(Protocol):
    async def append(self, record: AuditRecord) -> AuditEvent:
        """Chain and insert in the caller's transaction; appends are serialised, so the chain
        has exactly one order."""
        ...

    async def list(self, audit_filter: AuditFilter, page: PageRequest) -> Page[AuditEvent]: ...

    async def get_many(self, event_ids: Sequence[int]) -> dict[int, AuditEvent]: ...

    async def scan(self, after_id: int, limit: int) -> Sequence[AuditEvent]: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when it matches. With no hash, spends the same time and returns False, so an
        unknown account costs what a wrong password costs."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one attempt; None when within the limit, else seconds until it resets."""
        ...

    async def forgive(self, key: str) -> None:
        """Take back one counted attempt (it turned out to be a success)."""
        ...


@dataclass(frozen=True)
class NewHold:
    wallet_id: int
    counterparty_id: int
    currency: str
    amount: int
    code: TransferCode
    reference: str | None
    expires_at: datetime


@dataclass(frozen=True)
class LedgerCheck:
    """What `verify` found: each item names an account or transfer that is wrong."""

    accounts_checked: int
    transfers_checked: int
    problems: list[str]


@dataclass(frozen=True)
class MonthTotal:
    """Posted movements of one wallet in one month, summed by flow and reference."""

    month: str  # YYYY-MM
    currency: str
    code: TransferCode
    reference: str | None
    amount: int  # signed from the wallet's side: credits positive


class LedgerRepository(Protocol):
    async def accounts(self, keys: Sequence[AccountKey]) -> dict[AccountKey, Account]:
        """The accounts, created on first use (with their balance rows)."""
        ...

    async def find_account(self, key: AccountKey) -> Account | None: ...

    async def accounts_by_id(self, account_ids: Sequence[int]) -> dict[int, Account]: ...

    async def wallets_of(self, user_id: int) -> Sequence[Account]: ...

    async def lock_guarded(self, account_ids: Sequence[int]) -> dict[int, Balance]:
        """Lock, in ascending id order, the balances of those accounts that may not be
        overdrawn, and return them; the others are not locked and not returned."""
        ...

    async def balances(self, account_ids: Sequence[int]) -> dict[int, Balance]: ...

    async def write(self, specs: Sequence[TransferSpec]) -> list[Transfer]:
        """Insert the transfers and apply their effects to the balances. Raises
        `InsufficientFunds` if the database's no-overdraft constraint refuses."""
        ...

    async def add_hold(self, hold: NewHold) -> Hold: ...

    async def holds(self, hold_ids: Sequence[int], *, for_update: bool = False) -> dict[int, Hold]:
        """With `for_update`, rows are locked in ascending id order."""
        ...

    async def save_holds(self, holds: Sequence[Hold]) -> None: ...

    async def claim_expired_holds(self, now: datetime, limit: int) -> Sequence[Hold]:
        """Open holds past their expiry, locked with SKIP LOCKED so two workers share them.
        Refund holds are not among them: Stripe's answer resolves those (the settling job asks
        for it), because money that has left for the card must not become spendable again."""
        ...

    async def spent_since(self, account_id: int, since: datetime) -> int:
        """Usage reserved or charged from the account since `since` (holds at their full
        amount, so captures are not counted twice)."""
        ...

    async def spending(
        self, account_ids: Sequence[int], since: datetime
    ) -> dict[int, tuple[int | None, int]]:
        """For many accounts in one read: each one's own hourly spend limit (None: the default
        applies) and what `spent_since` would answer."""
        ...

    async def transfer(self, transfer_id: int) -> Transfer | None: ...

    async def reversal_of(self, transfer_id: int) -> Transfer | None: ...

    async def transfers_for(self, reference: str) -> Sequence[Transfer]: ...

    async def wallet_entries(self, transfer_ids: Sequence[int]) -> dict[int, WalletEntry]:
        """Transfers by id as their wallet sees them; those that touch no wallet are absent."""
        ...

    async def entries(self, account_ids: Sequence[int], page: PageRequest) -> Page[Entry]:
        """Both sides' postings on these accounts, newest first."""
        ...

    async def month_totals(
        self, account_ids: Sequence[int], months: int
    ) -> Sequence[MonthTotal]: ...

    async def set_spend_limit(self, account_id: int, limit: int | None) -> Account: ...

    async def verify(self) -> LedgerCheck: ...


class IdempotencyStore(Protocol):
    async def recall(self, owner_id: int, key: str) -> IdempotencyRecord | None: ...

    async def remember(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Store the record, or return the one already stored under that owner and key (a
        concurrent first request wins; the caller then rolls back its own work)."""
        ...


@dataclass(frozen=True)
class NewRefund:
    payment_id: int
    user_id: int
    amount: int
    currency: str
    reason: str
    hold_id: int
    requested_by: int | None


class PaymentRepository(Protocol):
    async def add(self, user_id: int, amount: int, currency: str) -> Payment: ...

    async def get(self, payment_id: int, *, for_update: bool = False) -> Payment | None: ...

    async def get_many(self, payment_ids: Sequence[int]) -> dict[int, Payment]: ...

    async def by_intent(self, intent_id: str, *, for_update: bool = False) -> Payment | None: ...

    async def save(self, payment: Payment) -> Payment:
        """Store the changed fields; `updated_at` is set to now."""
        ...

    async def of_user(self, user_id: int, page: PageRequest) -> Page[Payment]: ...

    async def add_refund(self, refund: NewRefund) -> Refund: ...

    async def refund(self, refund_id: int, *, for_update: bool = False) -> Refund | None: ...

    async def refunds_by_id(self, refund_ids: Sequence[int]) -> dict[int, Refund]: ...

    async def refund_by_stripe_id(
        self, stripe_refund_id: str, *, for_update: bool = False
    ) -> Refund | None: ...

    async def save_refund(self, refund: Refund) -> Refund: ...

    async def refunds_of_user(self, user_id: int, page: PageRequest) -> Page[Refund]: ...

    async def claim_unsettled_refunds(self, older_than: datetime, limit: int) -> Sequence[Refund]:
        """Pending or submitted refunds not touched since `older_than`, locked SKIP LOCKED."""
        ...


class StripeRecords(Protocol):
    async def record_event(self, event_id: str, event_type: str, created: datetime,
                           outcome: str) -> bool:  # fmt: skip
        """Remember an applied event; False when it was already there (apply nothing then)."""
        ...

    async def note_outcome(self, event_id: str, outcome: str) -> None: ...

    async def known_events(self, event_ids: Sequence[str]) -> set[str]: ...

    async def flag(self, finding: Finding) -> bool:
        """Record a finding once; False when the same kind was already flagged for the object."""
        ...

    async def issues(self, page: PageRequest) -> Page[ReconciliationIssue]: ...

    async def issues_by_id(self, issue_ids: Sequence[int]) -> dict[int, ReconciliationIssue]: ...


class SecretRepository(Protocol):
    """Sealed secrets: ciphertext, nonce and the wrapped data key; never a plaintext."""

    async def add(self, secret: NewSecret) -> StoredSecret: ...

    async def get(self, secret_id: int) -> StoredSecret | None: ...

    async def needing_rewrap(
        self, current: str, after_id: int, limit: int
    ) -> Sequence[StoredSecret]:
        """Secrets wrapped under any version but `current`, id above `after_id`, by id."""
        ...

    async def rewrap(self, secret_id: int, old: WrappedKey, new: WrappedKey) -> bool:
        """Replace the wrapped data key if it is still `old`; False when another writer changed
        it first (nothing is written then). The ciphertext and nonce are not touched."""
        ...

    async def count_by_version(self) -> dict[str, int]: ...

    async def hold_versions(self, *, exclusive: bool = False) -> None:
        """Until the transaction ends, hold the key-version lock: shared by every transaction
        that wraps a data key, exclusive while a version is retired. So a retirement sees every
        secret wrapped under the version, however stale the writer's view of the KMS was."""
        ...


class SshCaRepository(Protocol):
    """The SSH CA's keys: public halves and pointers to their sealed private halves."""

    async def lock(self) -> None:
        """Until the transaction ends, hold the CA lock, so creations, rotations and
        retirements happen one at a time (each reads the key set, then changes it)."""
        ...

    async def current(self) -> SshCaKey | None: ...

    async def trusted(self) -> Sequence[SshCaKey]:
        """The current key and the previous ones not yet retired, current first."""
        ...

    async def get(self, key_id: int) -> SshCaKey | None: ...

    async def add(self, secret_id: int, public_key: str, status: CaKeyStatus) -> SshCaKey:
        """Insert a current or previous key; at most one is current (a unique index refuses a
        second, as `Conflict` CA_EXISTS)."""
        ...

    async def set_status(self, key_id: int, status: CaKeyStatus) -> SshCaKey:
        """Change the status; `retired_at` is set to now when it becomes retired."""
        ...


class NodeRepository(Leases, Protocol):
    """Nodes; their leases are for the fleet's checks (due at next_probe_at)."""

    async def add(self, node: NewNode) -> Node:
        """Insert as BOOTSTRAPPING; raises `Conflict` NAME_TAKEN or ADDRESS_TAKEN (host and
        port) on a clash, races included."""
        ...

    async def get(self, node_id: int, *, for_update: bool = False) -> Node | None: ...

    async def get_many(self, node_ids: Sequence[int]) -> dict[int, Node]: ...

    async def list(self, node_filter: NodeFilter, page: PageRequest) -> Page[Node]: ...

    async def save(self, node: Node) -> Node:
        """Store every mutable field, if the stored version is `node.version - 1` (the copy
        the change was made from); raises `Conflict` VERSION_MISMATCH otherwise."""
        ...

    async def gpus(self, node_ids: Sequence[int]) -> dict[int, Sequence[NodeGpu]]:
        """Each node's recorded GPUs by index, present or not."""
        ...

    async def record_gpus(self, node_id: int, gpus: Sequence[GpuInfo]) -> None:
        """Make the recorded GPUs those of the report: insert or update each by index, mark
        the others not present."""
        ...

    async def add_event(self, event: NewNodeEvent) -> NodeEvent: ...

    async def events_by_id(self, event_ids: Sequence[int]) -> dict[int, NodeEvent]: ...

    async def events(self, node_id: int, page: PageRequest) -> Page[NodeEvent]:
        """Newest first."""
        ...

    async def lagging_ca(self, public_key: str) -> Sequence[str]:
        """Names of the nodes, retired ones aside, not yet given `public_key` to trust."""
        ...


class PlacementRepository(Protocol):
    async def candidates(self, request: GpuRequest, limit: int) -> Sequence[NodeCapacity]:
        """Ready nodes of the request's region and model with at least its count free, the
        best fits first (fewest free GPUs), at most `limit`. A snapshot: not locked."""
        ...

    async def largest_free(self, request: GpuRequest) -> int:
        """The most free GPUs any ready node of the request's region and model has."""
        ...

    async def lock_node(self, node_id: int, *, wait: bool = True) -> NodeCapacity | None:
        """Lock the node row until the transaction ends and read its free GPUs afresh; None
        when it is no longer ready, or (with `wait` False) when another transaction holds it."""
        ...

    async def assign(
        self, node_id: int, indices: Sequence[int], holder: str
    ) -> list[GpuAssignment]:
        """Record the assignments. The database allows one active assignment per node and GPU;
        a clash raises `Contention` (the caller places again)."""
        ...

    async def release(self, holder: str) -> int:
        """End the holder's active assignments; returns how many."""
        ...

    async def held_by(self, holder: str) -> Sequence[GpuAssignment]:
        """The holder's active assignments."""
        ...

    async def active_on(self, node_id: int) -> int:
        """How many GPUs of the node are assigned now."""
        ...

    async def capacity(self) -> Sequence[CapacityRow]:
        """Per node (not retired), by GPU model: total present GPUs and those assigned (on
        present GPUs, so total - allocated is what placement sees as free)."""
        ...

    async def available(self, skus: Sequence[tuple[int, str, str, int]]) -> dict[int, int]:
        """For (sku id, model, region, gpu count) tuples: how many more of each could be
        placed now on ready nodes (sum over nodes of free // count)."""
        ...


class AllocationRepository(Leases, Protocol):
    """Allocations; their leases are for the engine's steps (due at next_attempt_at)."""

    async def add(self, new: NewAllocation) -> Allocation:
        """Insert as REQUESTED."""
        ...

    async def get(self, allocation_id: int, *, for_update: bool = False) -> Allocation | None: ...

    async def get_many(self, allocation_ids: Sequence[int]) -> dict[int, Allocation]: ...

    async def of_user(self, user_id: int, allocation_filter: AllocationFilter,
                      page: PageRequest) -> Page[Allocation]:  # fmt: skip
        """Newest first."""
        ...

    async def save(self, allocation: Allocation) -> Allocation:
        """Store every mutable field if the stored version is `allocation.version - 1`;
        raises `Conflict` VERSION_MISMATCH otherwise (the caller lost a race)."""
        ...

    async def public_keys(self, allocation_ids: Sequence[int]) -> dict[int, list[str]]:
        """The OpenSSH public keys each allocation was made with, in one query."""
        ...

    async def add_event(self, allocation_id: int, kind: str, state: AllocationState,
                        message: str) -> None: ...  # fmt: skip

    async def events(self, allocation_ids: Sequence[int],
                     limit: int) -> dict[int, list[AllocationEvent]]:  # fmt: skip
        """Each allocation's latest `limit` events, newest first."""
        ...

    async def on_node(self, node_id: int) -> Sequence[Allocation]:
        """The node's allocations that have not ended."""
        ...

    async def running_ids(self, after_id: int, limit: int) -> list[int]:
        """Ids of RUNNING allocations above `after_id`, ascending."""
        ...

    async def lock_unbilled(
        self, allocation_ids: Sequence[int], billed_before: datetime
    ) -> Sequence[Metered]:
        """The billing of those of the allocations that are RUNNING with a hold and not billed
        since `billed_before`, ascending, locked until commit; rows another transaction holds
        are skipped, not waited for (so several metering workers split a tick, and none bills a
        row another is billing or has just billed)."""
        ...

    async def save_billing(self, billed: Sequence[Metered], now: datetime) -> None:
        """Store many allocations' billing (billed_until, billable_seconds, low_balance_since)
        with their new version, and `updated_at = now`, at once; each version-checked like
        `save` (the version stored must be one less)."""
        ...

    # Operator control (issue 16, item 6).
    async def search(
        self, allocation_filter: AllocationFilter, page: PageRequest
    ) -> Page[Allocation]:
        """Every user's allocations matching the filter (owner, node, states), newest first."""
        ...

    async def live_ids(
        self,
        *,
        user_id: int | None = None,
        node_id: int | None = None,
        suspended_owners: bool = False,
    ) -> list[int]:
        """Ids of allocations not stopping or ended (PLACED, PROVISIONING, RUNNING) of this
        user, on this node, or (`suspended_owners`) of any suspended user."""
        ...

    async def set_keys(
        self, allocation_id: int, key_ids: Sequence[int], public_keys: Sequence[str]
    ) -> None:
        """Replace the allocation's key ids and its snapshot of their OpenSSH lines."""
        ...


class SshKeyRepository(Protocol):
    async def lock_owner(self, user_id: int) -> bool:
        """Until the transaction ends, hold the owner's row, so one user's additions happen one
        at a time (each counts the keys, then adds); False when there is no such user."""
        ...

    async def add(self, user_id: int, key: NewSshKey) -> SshKey:
        """Insert; raises `Conflict` DUPLICATE_KEY (same fingerprint) or NAME_TAKEN (same name,
        case aside) when the owner already has one, races included."""
        ...

    async def get(self, key_id: int) -> SshKey | None: ...

    async def get_many(self, key_ids: Sequence[int]) -> dict[int, SshKey]: ...

    async def list_for(self, user_id: int, page: PageRequest) -> Page[SshKey]:
        """Oldest first."""
        ...

    async def all_for(self, user_id: int) -> Sequence[SshKey]:
        """Every key of the user, oldest first (at most MAX_KEYS): for the limit and duplicate
        checks, and for provisioning a machine's authorized keys."""
        ...

    async def remove(self, key_id: int) -> SshKey | None:
        """Delete; None when it was already gone."""
        ...


class NotificationRepository(Protocol):
    async def add(self, notice: Notice) -> list[Notification]:
        """One row per recipient, each with the recipient's next sequence number; the
        recipients' counters stay locked until the transaction ends (see notices.py)."""
        ...

    async def admin_ids(self) -> list[int]:
        """Active administrators, who receive the fleet's notifications."""
        ...

    async def after_many(self, wants: Sequence[tuple[int, int]],
                         limit: int) -> dict[tuple[int, int], list[Notification]]:  # fmt: skip
        """For each (user id, seq): that user's notifications above seq, in order, at most
        `limit`, of every type; one query for all of them."""
        ...

    async def page(self, user_id: int, unread_only: bool,
                   request: PageRequest) -> Page[Notification]:  # fmt: skip
        """Newest first, keyed by sequence number."""
        ...

    async def mark_read(self, user_id: int, up_to_seq: int) -> int: ...

    async def latest_seq(self, user_id: int) -> int:
        """The user's last sequence number handed out (0: none yet)."""
        ...


class UnitOfWork(Protocol):
    """One transaction. Use cases call `commit`; leaving the block without it rolls back.

    Events recorded with `record` are written to the outbox inside the same transaction, so a
    change and the news of it are stored together or not at all.
    """

    skus: SkuRepository
    users: UserRepository
    sessions: SessionRepository
    api_tokens: ApiTokenRepository
    audit: AuditLog
    ledger: LedgerRepository
    idempotency: IdempotencyStore
    payments: PaymentRepository
    stripe: StripeRecords
    secrets: SecretRepository
    ssh_ca: SshCaRepository
    nodes: NodeRepository
    placements: PlacementRepository
    allocations: AllocationRepository
    notifications: NotificationRepository
    ssh_keys: SshKeyRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, event: DomainEvent) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class EventStream(Protocol):
    """Live events of a topic from every process. The iterator raises `SubscriberLagged` when
    the subscriber fell too far behind."""

    def subscribe(
        self, topic: str
    ) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...


class PaymentGateway(Protocol):
    """Stripe, as the domain needs it. Every POST carries an idempotency key of ours, so a retry
    after a timeout cannot do a thing twice. Failures raise `GatewayUnavailable` (outcome
    unknown) or `GatewayRejected` (not done)."""

    async def create_payment_intent(
        self, amount: int, currency: str, *, idempotency_key: str, metadata: dict[str, str]
    ) -> GatewayIntent: ...

    async def create_checkout_session(
        self, amount: int, currency: str, *, idempotency_key: str, metadata: dict[str, str],
        success_url: str, cancel_url: str,
    ) -> GatewayCheckout: ...  # fmt: skip

    async def retrieve_payment_intent(self, intent_id: str) -> GatewayIntent: ...

    async def create_refund(
        self, payment_intent: str, amount: int, *, idempotency_key: str, metadata: dict[str, str]
    ) -> GatewayRefund: ...

    async def find_refund(self, payment_intent: str, refund_ref: str) -> GatewayRefund | None:
        """The refund of `payment_intent` whose metadata `gpucloud_refund` is `refund_ref`."""
        ...

    async def retrieve_refund(self, refund_id: str) -> GatewayRefund: ...

    async def payment_intents_since(self, since: datetime) -> Sequence[GatewayIntent]: ...

    async def refunds_since(self, since: datetime) -> Sequence[GatewayRefund]: ...

    async def balance_transactions_since(
        self, since: datetime
    ) -> Sequence[GatewayBalanceTransaction]: ...

    async def events_since(self, since: datetime) -> Sequence[GatewayEvent]: ...


class KeyService(Protocol):
    """The KMS: wraps and unwraps data keys with a key-encryption key that never leaves it.

    Versions are named by the KMS; `wrap` always uses the current one and says which in the
    result, and `unwrap` takes the version stored beside the wrapped bytes. `context` is
    associated data: a wrapped key unwraps only with the context it was wrapped with. Local key
    files, Vault Transit and cloud KMSs are adapters of this one port. Failures raise
    `SecretError` (KEY_VERSION_UNKNOWN, DECRYPT_FAILED).
    """

    async def current_version(self) -> str: ...

    async def versions(self) -> Sequence[str]: ...

    async def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey: ...

    async def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes: ...


class KeyAdmin(KeyService, Protocol):
    """Operator actions on the KMS's key versions."""

    async def add_version(self) -> str:
        """Make a new key version current; the older ones still unwrap. Returns its name."""
        ...

    async def remove_version(self, version: str) -> None:
        """Forget a version for good; refuses the current one (KEY_VERSION_CURRENT)."""
        ...


class SecretCipher(Protocol):
    """The authenticated encryption of one secret under a fresh data key of its own."""

    def seal(self, plaintext: bytes, aad: bytes) -> SealedData: ...

    def open(self, data_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; raises `SecretError` (DECRYPT_FAILED) if anything was altered."""
        ...


class CaSigner(Protocol):
    """SSH key arithmetic for the CA (asyncssh in infra): makes CA keys and signs user
    certificates. Stores nothing; the caller seals and opens the private key."""

    def generate_key(self) -> GeneratedCaKey: ...

    def sign_user_certificate(
        self, ca_private_key: bytes, user_public_key: str, request: CertificateRequest,
        serial: int,
    ) -> str:  # fmt: skip
        """The OpenSSH certificate line for `user_public_key`; raises `InvalidInput`
        (INVALID_CERTIFICATE_REQUEST, field publicKey) if that is not an OpenSSH public key."""
        ...


class CertificateAuthority(Protocol):
    """The platform's SSH CA, as provisioning and terminals use it."""

    async def public_keys(self) -> Sequence[str]:
        """The OpenSSH public key lines every node must trust (`TrustedUserCAKeys`)."""
        ...

    async def issue(self, public_key_openssh: str, request: CertificateRequest) -> str:
        """A certificate for the key, signed by the current CA key, as an OpenSSH line."""
        ...


class NodeSession(Protocol):
    """An SSH session to one node, open for the length of a bootstrap or probe. Commands that
    fail raise `NodeCommandFailed` with the check's reason code."""

    @property
    def host_key(self) -> str:
        """The host key the node presented ("type base64")."""
        ...

    async def os_info(self) -> OsInfo: ...

    async def gpus(self) -> list[GpuInfo]:
        """From the CSV query, else the XML report (NVIDIA_SMI_MISSING when the tool is not
        there, NVIDIA_SMI_FAILED when it fails or prints what we cannot read)."""
        ...

    async def facts(self, os: OsInfo) -> NodeFacts: ...

    async def prepare(self, prep: NodePrep) -> Prepared:
        """Ensure the platform group, GPU device groups and permissions, the NVIDIA driver's
        option to keep them, and CA trust with sshd reloaded (PREPARE_FAILED)."""
        ...

    async def check_isolation(self, gpu_indices: Sequence[int]) -> None:
        """As an unprivileged user in one GPU's group, exactly that GPU's device opens, for
        each GPU; with no GPU group, none (ISOLATION_BROKEN, else COMMAND_FAILED when the
        check cannot run)."""
        ...


class NodeConnector(Protocol):
    """Opens sessions to nodes. Entering the context raises `NodeUnreachable`,
    `NodeAuthRefused` or `HostKeyMismatch`, or a plain `NodeFailure` with code
    HOST_KEY_MISMATCH when the stored pin does not parse (all `NodeFailure`); an outage of our
    own (the CA's database) passes through as `ServiceUnavailable`."""

    def session(self, target: NodeTarget) -> AbstractAsyncContextManager[NodeSession]: ...


class NodeOperations(Protocol):
    """What provisioning does on a node (asyncssh in infra, a pooled connection per node and a
    per-node concurrency limit). Every operation is an "ensure": safe to repeat, and a repeat
    after a partial run finishes the job. Failures raise the `NodeFailure` family."""

    async def ensure_account(self, target: NodeTarget, account: AccountSpec, fence: int) -> None:
        """The user exists (its own group, the platform group, the groups of exactly its GPUs
        and no other GPU group), its authorized keys are exactly `public_keys`, and its shells
        see CUDA_VISIBLE_DEVICES for its GPUs.

        Serialized on the node with every other operation on this account, and fenced: raises
        `FenceRefused` (changing nothing) when the node has seen a newer `fence` (the
        allocation's lease generation) for the account, or the account was torn down."""
        ...

    async def remove_account(self, target: NodeTarget, username: str, fence: int, *,
                             keep_home: bool) -> None:  # fmt: skip
        """End the user's processes, take its GPU groups away, delete the user (and its home
        unless `keep_home`). A user already gone is fine. Serialized and fenced like
        `ensure_account`; it first leaves a tombstone, so no ensure ever makes the account
        again, and it waits for an ensure already running on the node to finish."""
        ...

    async def accounts(self, target: NodeTarget) -> Sequence[AccountState]:
        """The platform's accounts on the node (by the account-name prefix) and their GPUs."""
        ...


class SshKeyCodec(Protocol):
    def private_key_public_half(self, private_key: str) -> str:
        """The OpenSSH public key line of an unencrypted private key; raises `InvalidInput`
        (INVALID_PRIVATE_KEY, field privateKey) when it is not one. Never echoes the key."""
        ...

    def fingerprint(self, public_key: str) -> str:
        """ "SHA256:..." as ssh-keygen prints it; raises `InvalidInput` (INVALID_HOST_KEY)."""
        ...

    def parse_public_key(self, line: str) -> ParsedPublicKey:
        """Read one "type base64" line (`domain.compute.ssh_keys.screen_public_key` has already
        refused private keys, certificates, comments aside and several lines); raises
        `InvalidInput` (INVALID_PUBLIC_KEY, field publicKey) when the key does not parse or is
        not of the type the line names. Never echoes the key."""
        ...
