"""The root schema: Query and Subscription assembled from the areas, with limits and masking."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from domain.identity.principal import PUBLIC, Requirement
from domain.identity.scopes import Scope
from resolvers import (
    account,
    admin,
    allocations,
    api_tokens,
    billing,
    catalog,
    fleet,
    node,
    notifications,
    ssh_keys,
    terminals,
)
from resolvers.access import ADMIN_READ
from resolvers.broadcast import SharedEventExecution
from resolvers.errors import ErrorShaping, StreamedErrorShaping, log_errors
from resolvers.extensions_runner import LeanExtensionsRunner
from resolvers.guards import CsrfGuard
from resolvers.node import MAX_NODE_IDS
from resolvers.node import nodes as find_nodes
from resolvers.plain_fields import PlainFieldExecution
from schema.account import (
    ApiToken,
    ApiTokenConnection,
    ApiTokenResult,
    CreateApiTokenResult,
    LogOutResult,
    SessionResult,
    User,
    UserConnection,
    UserResult,
)
from schema.allocations import Allocation, AllocationConnection, AllocationError, AllocationResult
from schema.audit import AuditEvent, AuditEventConnection
from schema.billing import (
    CreditResult,
    Payment,
    ReconciliationIssueConnection,
    Refund,
    RefundResult,
    SpendLimitResult,
    TopUpResult,
)
from schema.catalog import CatalogChange, Sku, SkuConnection, SkuResult
from schema.errors import SkuError
from schema.fleet import (
    FleetNode,
    FleetNodeConnection,
    NodeError,
    NodeResult,
)
from schema.fleet_views import FleetCapacity, FleetEvent
from schema.notifications import (
    MarkNotificationsReadResult,
    Notification,
    NotificationConnection,
    NotificationType,
)
from schema.permissions import declared
from schema.relay import Node
from schema.ssh_keys import SshKey, SshKeyConnection, SshKeyResult
from schema.terminals import TerminalTicketResult

ACCOUNT_READ = Requirement(Scope.ACCOUNT_READ)
ACCOUNT_WRITE = Requirement(Scope.ACCOUNT_WRITE)
OWN_CREDENTIALS = Requirement(Scope.ACCOUNT_WRITE, session_only=True)
SESSION = Requirement(session_only=True)
ADMIN_WRITE = Requirement(Scope.ADMIN_WRITE, admin=True)
BILLING_WRITE = Requirement(Scope.BILLING_WRITE)
# SSH keys open a user's machines, so they sit with compute: a token that may start machines
# may also install the key to reach them (as cloud APIs allow), and nothing less may.
COMPUTE_READ = Requirement(Scope.COMPUTE_READ)
COMPUTE_WRITE = Requirement(Scope.COMPUTE_WRITE)


def field(resolver: Any, requirement: Requirement, description: str) -> Any:
    return strawberry.field(resolver=resolver, **declared(requirement, description))


def mutation(resolver: Any, requirement: Requirement, description: str) -> Any:
    return strawberry.mutation(resolver=resolver, **declared(requirement, description))


@strawberry.type
class Query:
    node: Node | None = field(node.node, PUBLIC, "Any object by its global ID.")
    nodes: list[Node | None] = field(
        find_nodes,
        PUBLIC,
        f"Objects by global ID (at most {MAX_NODE_IDS}), in the order asked: null for one "
        "that does not exist or is not yours, and an error at its index for a malformed ID or "
        "a type you may not read.",
    )
    skus: SkuConnection = field(catalog.skus, PUBLIC, "The SKU catalog.")
    sku: Sku | None = field(catalog.sku, PUBLIC, "One SKU by ID, retired ones too.")
    viewer: User = field(account.viewer, ACCOUNT_READ, "The signed-in account.")
    notifications: NotificationConnection = field(
        notifications.notifications,
        ACCOUNT_READ,
        "What you were told (allocations, payments, refunds; node events for admins), newest "
        "first.",
    )
    api_tokens: ApiTokenConnection = field(
        api_tokens.api_tokens_list, ACCOUNT_READ, "Your API tokens, newest last."
    )
    ssh_keys: SshKeyConnection = field(
        ssh_keys.ssh_keys, COMPUTE_READ, "Your SSH public keys, newest last."
    )
    admin_allocations: AllocationConnection = field(
        allocations.admin_allocations,
        ADMIN_READ,
        "Every user's allocations, newest first; filter by owner, node or state.",
    )
    # `allocation` before `allocations`: in the class body, that name is the module only until
    # the field named after it is assigned.
    allocation: Allocation | None = field(
        allocations.allocation,
        COMPUTE_READ,
        "One of your allocations by ID (administrators holding admin:read: anyone's).",
    )
    allocations: AllocationConnection = field(
        allocations.allocations, COMPUTE_READ, "Your allocations, newest first."
    )
    users: UserConnection = field(admin.users, ADMIN_READ, "Every account.")
    audit_events: AuditEventConnection = field(
        admin.audit_events, ADMIN_READ, "The audit log, newest first."
    )
    reconciliation_issues: ReconciliationIssueConnection = field(
        billing.reconciliation_issues,
        ADMIN_READ,
        "Where Stripe and our records disagree, newest first.",
    )
    fleet_nodes: FleetNodeConnection = field(
        fleet.fleet_nodes, ADMIN_READ, "The GPU nodes, retired ones too, oldest first."
    )
    fleet_node: FleetNode | None = field(fleet.fleet_node, ADMIN_READ, "One GPU node by ID.")
    capacity: FleetCapacity = field(
        fleet.capacity, ADMIN_READ, "The fleet's GPUs: total, allocated, free and cordoned."
    )


@strawberry.type
class Mutation:
    sign_up: SessionResult = mutation(
        account.sign_up, PUBLIC, "Create an account and sign in (sets the session cookie)."
    )
    log_in: SessionResult = mutation(
        account.log_in, PUBLIC, "Sign in with email and password (sets a new session cookie)."
    )
    log_out: LogOutResult = mutation(account.log_out, SESSION, "End this session.")
    log_out_everywhere: LogOutResult = mutation(
        account.log_out_everywhere, OWN_CREDENTIALS, "End every session of this account."
    )
    change_password: SessionResult = mutation(
        account.change_password,
        OWN_CREDENTIALS,
        "Set a new password; every other session ends and this one is renewed.",
    )
    create_api_token: CreateApiTokenResult = mutation(
        api_tokens.create_api_token,
        OWN_CREDENTIALS,
        "Create an API token; its secret is shown once.",
    )
    revoke_api_token: ApiTokenResult = mutation(
        api_tokens.revoke_api_token, ACCOUNT_WRITE, "Revoke an API token at once."
    )
    mark_notifications_read: MarkNotificationsReadResult = mutation(
        notifications.mark_notifications_read,
        ACCOUNT_WRITE,
        "Mark your notifications up to and including `upTo` (a notification's cursor) read.",
    )
    add_ssh_key: SshKeyResult = mutation(
        ssh_keys.add_ssh_key,
        COMPUTE_WRITE,
        "Add an SSH public key (one OpenSSH line) for logging in to your machines. Refused: "
        "private keys, certificates, DSA, RSA under 2048 bits, a key or name you already have.",
    )
    remove_ssh_key: SshKeyResult = mutation(
        ssh_keys.remove_ssh_key, COMPUTE_WRITE, "Remove one of your SSH keys."
    )
    create_allocation: AllocationResult = mutation(
        allocations.create_allocation,
        COMPUTE_WRITE,
        "Allocate a SKU's GPUs on one node, with your SSH keys to log in: PLACED at once (GPUs "
        "reserved, the first billing window held from your wallet), then provisioned until "
        "RUNNING. Refused with nothing kept: NO_CAPACITY, INSUFFICIENT_FUNDS, "
        "SPEND_LIMIT_REACHED, a retired or unknown SKU, keys that are not yours. Repeating the "
        "idempotency key returns the same allocation.",
    )
    stop_allocation: AllocationResult = mutation(
        allocations.stop_allocation,
        COMPUTE_WRITE,
        "Stop one of your allocations: running time is billed to the second and the rest of the "
        "hold released now; the GPUs are freed once the node is cleaned. Stopping one that is "
        "already stopping or ended returns it unchanged.",
    )
    admin_stop_allocation: AllocationResult = mutation(
        allocations.admin_stop_allocation,
        ADMIN_WRITE,
        "Stop anyone's allocation with a reason (REASON_REQUIRED without one): billed and "
        "torn down as a user's stop, with stop reason ADMIN; audited, and the owner is notified "
        "with the reason. One already stopping or ended is returned unchanged.",
    )
    create_terminal_ticket: TerminalTicketResult = mutation(
        terminals.create_terminal_ticket,
        COMPUTE_WRITE,
        "A single-use ticket (30 s) to open a browser terminal to one of your RUNNING "
        "allocations at `/terminal?ticket=...`, bound to you, the allocation and this "
        "request's Origin; the websocket must come from the same Origin. Refused: "
        "ORIGIN_REQUIRED (no Origin header), NOT_FOUND, NOT_RUNNING.",
    )
    set_user_role: UserResult = mutation(
        admin.set_user_role, ADMIN_WRITE, "Change an account's role."
    )
    suspend_user: UserResult = mutation(
        admin.suspend_user,
        ADMIN_WRITE,
        "Suspend an account: its sessions end and its tokens stop working at once, its "
        "allocations are stopped (reason SUSPENDED: the Linux accounts go, ending SSH sessions) "
        "and its browser terminals close. Administrators cannot be suspended "
        "(CANNOT_SUSPEND_ADMIN): demote them first.",
    )
    reinstate_user: UserResult = mutation(
        admin.reinstate_user, ADMIN_WRITE, "Let a suspended account sign in again."
    )
    create_sku: SkuResult = mutation(catalog.create_sku, ADMIN_WRITE, "Add a SKU to the catalog.")
    retire_sku: SkuResult = mutation(
        catalog.retire_sku, ADMIN_WRITE, "Retire a SKU: it stays readable but cannot be ordered."
    )
    update_sku: SkuResult = mutation(
        catalog.update_sku,
        ADMIN_WRITE,
        "Change an active SKU's name, price, vCPUs, RAM or disk (audited). Its GPU model, GPU "
        "count and region cannot change: placement and running work depend on them.",
    )
    register_node: NodeResult = mutation(
        fleet.register_node,
        ADMIN_WRITE,
        "Register a GPU node; the worker then bootstraps it over SSH (BOOTSTRAPPING, then READY "
        "or a reason why not).",
    )
    cordon_node: NodeResult = mutation(
        fleet.cordon_node, ADMIN_WRITE, "Take no new work on a node; running work stays."
    )
    drain_node: NodeResult = mutation(
        fleet.drain_node,
        ADMIN_WRITE,
        "Take no new work on a node (DRAINING); the owners of its allocations are notified at "
        "once, work still running at the deadline is stopped (reason DRAINED), and the node "
        "becomes DRAINED once no GPU is assigned.",
    )
    uncordon_node: NodeResult = mutation(
        fleet.uncordon_node,
        ADMIN_WRITE,
        "Lift a cordon or drain (DRAINING or DRAINED); the node goes where its health says "
        "(READY when healthy).",
    )
    retire_node: NodeResult = mutation(
        fleet.retire_node,
        ADMIN_WRITE,
        "Retire a node for good and decommission it over SSH (CA trust, sshd drop-in, groups, "
        "udev rule and GPU device ownership removed; what could not be is in "
        "`decommissionLeftovers`). Refused (NODE_BUSY) while any of its GPUs is assigned, "
        "unless `force`.",
    )
    readmit_node: NodeResult = mutation(
        fleet.readmit_node,
        ADMIN_WRITE,
        "Bootstrap a node again, pinning the host key given (or the one met at the next "
        "contact): how a quarantined node whose key really changed comes back.",
    )
    create_top_up: TopUpResult = mutation(
        billing.create_top_up,
        BILLING_WRITE,
        "Start adding money to your wallet by card; the wallet is credited when Stripe reports "
        "the payment succeeded.",
    )
    refund_payment: RefundResult = mutation(
        billing.refund_payment,
        ADMIN_WRITE,
        "Send part or all of a payment back to its card; the amount leaves the wallet.",
    )
    grant_credit: CreditResult = mutation(
        billing.grant_credit, ADMIN_WRITE, "Credit a user's wallet, with a reason (audited)."
    )
    set_spend_limit: SpendLimitResult = mutation(
        billing.set_spend_limit, ADMIN_WRITE, "Set or clear a wallet's hourly spend limit."
    )


@strawberry.type
class Subscription:
    # Each resolver hands over its area's generator as it is: a wrapping generator would be one
    # more object held by every idle subscriber, and one more hop per event.

    @strawberry.subscription(  # type: ignore[untyped-decorator]
        **declared(PUBLIC, "SKUs added, updated or retired, as they happen."),
    )
    def catalog_changed(self, info: strawberry.Info) -> AsyncGenerator[CatalogChange, None]:
        return catalog.catalog_changed(info)

    @strawberry.subscription(  # type: ignore[untyped-decorator]
        **declared(
            ADMIN_READ,
            "Fleet events as they happen: registrations, changes of state and health, and "
            "alerts (node.alert) for nodes quarantined, unreachable or unhealthy.",
        ),
    )
    def fleet_events(self, info: strawberry.Info) -> AsyncGenerator[FleetEvent, None]:
        return fleet.fleet_events(info)

    @strawberry.subscription(  # type: ignore[untyped-decorator]
        **declared(
            ACCOUNT_READ,
            "Your notifications: first every one after `after` (a notification's cursor; none: "
            "from now on), then each new one as it happens, in order, none missed or repeated "
            "across the switch. Reconnect with the last cursor you received to resume.",
        ),
    )
    def notifications(
        self,
        info: strawberry.Info,
        after: str | None = None,
        types: list[NotificationType] | None = None,  # type: ignore[valid-type]
    ) -> AsyncGenerator[Notification, None]:
        return notifications.notifications_stream(info, after, types)

    @strawberry.subscription(  # type: ignore[untyped-decorator]
        **declared(
            COMPUTE_READ,
            "One of your allocations: first as it is, then each time it changes, until it has "
            "ended (STOPPED or FAILED), from whichever API process you are connected to.",
        ),
    )
    def allocation_updated(
        self,
        info: strawberry.Info,
        id: strawberry.ID,  # noqa: A002
    ) -> AsyncGenerator[Allocation, None]:
        return allocations.allocation_updated(info, id)


# Distinct documents kept parsed and validated (LRU, keyed by the document's text): each is
# parsed and validated once, however often it is sent.
DOCUMENT_CACHE_SIZE = 512


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000


class Execution(SharedEventExecution, PlainFieldExecution):
    """Broadcast payloads executed once per event, and plain leaf fields read directly."""


# Set while `stream` builds an operation: operations streamed over the websocket get
# `GpuCloudSchema.stream_extensions` (below), the others `extensions`.
_STREAMING: ContextVar[bool] = ContextVar("streaming", default=False)


class GpuCloudSchema(strawberry.Schema):
    # The limits go on each operation's context as it is made. As extensions (AddValidationRules,
    # MaxTokensLimiter) their on_operation hooks stay open as long as a subscription does: part
    # of every idle subscriber's memory (bench/fanout.py).
    limit_rules: tuple[type[ASTValidationRule], ...] = ()
    max_tokens: int | None = None
    # Each extension, and each of its hooks left open, is held by a subscription for its life.
    # Over the websocket: no CSRF guard (no cookie-authenticated context there: a socket signs
    # in with connection_init, its origin checked at the handshake), no result cache (one
    # socket's queries are few), and errors shaped result by result.
    stream_extensions: Sequence[Callable[[], SchemaExtension]] = ()

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        streaming = _STREAMING.set(True)
        try:
            return await super().stream(*args, **kwargs)
        finally:
            _STREAMING.reset(streaming)

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return LeanExtensionsRunner(execution_context, extensions)

    def get_extensions(self, sync: bool = False) -> list[SchemaExtension]:
        if _STREAMING.get() and not sync:
            return [make() for make in self.stream_extensions]
        return super().get_extensions(sync)

    def _create_execution_context(self, *args: Any, **kwargs: Any) -> ExecutionContext:
        context = super()._create_execution_context(*args, **kwargs)
        context.validation_rules = context.validation_rules + self.limit_rules
        if self.max_tokens is not None:
            context.parse_options["max_tokens"] = self.max_tokens
        return context

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


def build_schema(
    limits: Limits = Limits(),
    extra_extensions: Sequence[type[SchemaExtension]] = (),
    stream_extensions: Sequence[type[SchemaExtension]] = (),
) -> strawberry.Schema:
    # Extensions are given as factories so each request gets fresh extension state. The limit
    # rules are built once: the validation cache is keyed by the rule classes, and limiters made
    # per request would mint new classes and miss the cache every time.
    rules = (
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    )
    parser_cache = lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE)  # noqa: E731
    validation_cache = lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE)  # noqa: E731
    extensions: list[Any] = [
        parser_cache,
        validation_cache,
        ErrorShaping,
        CsrfGuard,
        *extra_extensions,
    ]
    schema = GpuCloudSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[
            Sku,
            SkuError,
            User,
            ApiToken,
            SshKey,
            Allocation,
            AllocationError,
            AuditEvent,
            Payment,
            Refund,
            FleetNode,
            NodeError,
        ],
        extensions=extensions,
        # A broadcast event's selection is executed once for all its subscribers, and plain
        # scalar fields skip the per-field machinery (resolvers/plain_fields.py).
        execution_context_class=Execution,
    )
    schema.limit_rules, schema.max_tokens = rules, limits.max_tokens
    schema.stream_extensions = [
        parser_cache,
        validation_cache,
        StreamedErrorShaping,
        *stream_extensions,
    ]
    return schema
