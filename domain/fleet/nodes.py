"""A GPU node and its state machine.

`state` is the source of truth for what the platform may do with a node: only READY nodes take
new work. `health` is what the last probe saw; it is kept apart from the state so an admin's
cordon or drain survives the node going unreachable and coming back (uncordoning then lands on
whatever the health says). Every change of state goes through `transition`, which checks the
edge and bumps the version; the services write the event, the audit row and the outbox row in
the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from domain.errors import Conflict, NotFound, Problem


class NodeState(StrEnum):
    BOOTSTRAPPING = "bootstrapping"  # registered or re-admitted; inventory and preparation run
    READY = "ready"  # takes new work
    UNHEALTHY = "unhealthy"  # reachable, but a check failed (GPU lost, ECC, heat, disk, tool)
    UNREACHABLE = "unreachable"  # no SSH session; probed again with backoff, work left alone
    CORDONED = "cordoned"  # admin: no new work, running work stays
    DRAINING = "draining"  # admin: no new work, running work is stopped at the drain deadline
    DRAINED = "drained"  # a drain finished: no GPU assigned; uncordon or retire it
    QUARANTINED = "quarantined"  # the host key changed; nothing talks to it until an admin acts
    RETIRED = "retired"  # gone for good


class NodeHealth(StrEnum):
    UNKNOWN = "unknown"  # not probed yet
    OK = "ok"
    UNHEALTHY = "unhealthy"
    UNREACHABLE = "unreachable"


class NodeAuth(StrEnum):
    KEY = "key"  # a private key the admin gave us, stored sealed
    CA = "ca"  # short-lived certificates from the platform CA, which the node already trusts


class NodeTrigger(StrEnum):
    BOOTSTRAPPED = "bootstrapped"
    PROBE_OK = "probe_ok"
    PROBE_UNHEALTHY = "probe_unhealthy"
    PROBE_UNREACHABLE = "probe_unreachable"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    CORDON = "cordon"
    DRAIN = "drain"
    DRAINED = "drained"  # the last GPU of a draining node was released
    UNCORDON = "uncordon"
    READMIT = "readmit"  # admin: bootstrap again (after a quarantine, or to re-inventory)
    RETIRE = "retire"


class NodeErrorCode(StrEnum):
    INVALID_NAME = "INVALID_NAME"
    INVALID_HOST = "INVALID_HOST"
    INVALID_PORT = "INVALID_PORT"
    INVALID_SSH_USER = "INVALID_SSH_USER"
    INVALID_PRIVATE_KEY = "INVALID_PRIVATE_KEY"
    INVALID_HOST_KEY = "INVALID_HOST_KEY"
    INVALID_REGION = "INVALID_REGION"
    INVALID_LABELS = "INVALID_LABELS"
    CREDENTIAL_REQUIRED = "CREDENTIAL_REQUIRED"
    CA_NOT_FOUND = "CA_NOT_FOUND"
    NAME_TAKEN = "NAME_TAKEN"
    ADDRESS_TAKEN = "ADDRESS_TAKEN"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ID = "INVALID_ID"
    TRANSITION_NOT_ALLOWED = "TRANSITION_NOT_ALLOWED"
    NODE_BUSY = "NODE_BUSY"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    INVALID_DEADLINE = "INVALID_DEADLINE"


class ReasonCode(StrEnum):
    """Why a node is not ready (or why its health is not ok), for admins and alerts."""

    UNREACHABLE = "UNREACHABLE"
    AUTH_REFUSED = "AUTH_REFUSED"
    HOST_KEY_MISMATCH = "HOST_KEY_MISMATCH"
    OS_UNSUPPORTED = "OS_UNSUPPORTED"
    NVIDIA_SMI_MISSING = "NVIDIA_SMI_MISSING"
    NVIDIA_SMI_FAILED = "NVIDIA_SMI_FAILED"
    NO_GPUS = "NO_GPUS"
    MIXED_GPU_MODELS = "MIXED_GPU_MODELS"
    GPU_MISSING = "GPU_MISSING"
    ECC_ERRORS = "ECC_ERRORS"
    GPU_TOO_HOT = "GPU_TOO_HOT"
    DISK_LOW = "DISK_LOW"
    PREPARE_FAILED = "PREPARE_FAILED"
    # After preparing, sshd refused a fresh platform certificate (its CA not loaded, or none).
    CERT_LOGIN_REFUSED = "CERT_LOGIN_REFUSED"
    # A GPU's device opens for another GPU's group, or not for its own.
    ISOLATION_BROKEN = "ISOLATION_BROKEN"
    COMMAND_FAILED = "COMMAND_FAILED"


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    message: str


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What bootstrap learnt about the machine besides its GPUs."""

    os_id: str  # /etc/os-release ID, e.g. "ubuntu"
    os_version: str  # VERSION_ID, e.g. "22.04"
    kernel: str
    cpus: int
    ram_mib: int
    disk_total_mib: int
    disk_free_mib: int


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    name: str
    host: str
    port: int
    ssh_user: str
    auth: NodeAuth
    credential_secret_id: int | None  # sealed private key when auth is KEY
    host_key: str | None  # pinned "type base64"; None until first contact when not given
    region: str
    labels: Mapping[str, str]
    state: NodeState
    version: int
    health: NodeHealth
    reason: Reason | None
    gpu_model: str | None  # canonical, e.g. "H200"; set by inventory
    gpu_count: int
    facts: NodeFacts | None
    bootstrapped_at: datetime | None
    last_probe_at: datetime | None
    unreachable_since: datetime | None
    probe_failures: int
    next_probe_at: datetime | None  # None: not probed (quarantined, retired)
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None = None
    # The fleet's lease generation (domain/leases.py) on the node's checks; read-only here.
    lease_token: int = field(default=0, compare=False)
    ca_keys: tuple[str, ...] = ()  # the CA public keys the node was last given to trust
    # Draining: work still running then is stopped (reason DRAINED).
    drain_deadline: datetime | None = None
    retire_when_drained: bool = False  # retireNode(force: true): retire once empty
    # What retiring could not remove from the machine; None until decommissioning ran.
    decommission_leftovers: tuple[str, ...] | None = None

    @property
    def bootstrapped(self) -> bool:
        return self.bootstrapped_at is not None


def node_not_found(node_id: int | str) -> NotFound:
    return NotFound(Problem(NodeErrorCode.NOT_FOUND, f"No node with id {node_id}.", "id"))


def _refused(node: Node, trigger: NodeTrigger) -> Conflict:
    return Conflict(Problem(
        NodeErrorCode.TRANSITION_NOT_ALLOWED,
        f"Node {node.name} is {node.state.name}; it cannot {trigger.value.replace('_', ' ')}.", "id",
    ))  # fmt: skip


def _by_health(node: Node) -> NodeState:
    """Where a node lands when nothing but its health decides (an uncordon)."""
    if not node.bootstrapped:
        return NodeState.BOOTSTRAPPING
    return {
        NodeHealth.UNHEALTHY: NodeState.UNHEALTHY,
        NodeHealth.UNREACHABLE: NodeState.UNREACHABLE,
    }.get(node.health, NodeState.READY)


_S, _T = NodeState, NodeTrigger
_HELD = (_S.CORDONED, _S.DRAINING, _S.DRAINED)  # an admin's hold outlives health changes
_LIVE = (_S.BOOTSTRAPPING, _S.READY, _S.UNHEALTHY, _S.UNREACHABLE)

# (from, trigger) -> to. A probe result on a held node changes only its health, never its state.
_EDGES: dict[tuple[NodeState, NodeTrigger], NodeState] = {
    **{(s, _T.BOOTSTRAPPED): _S.READY for s in (_S.BOOTSTRAPPING, _S.UNHEALTHY, _S.UNREACHABLE)},
    **{(s, _T.PROBE_OK): _S.READY for s in (_S.READY, _S.UNHEALTHY, _S.UNREACHABLE)},
    **{(s, _T.PROBE_UNHEALTHY): _S.UNHEALTHY for s in _LIVE},
    **{(s, _T.PROBE_UNREACHABLE): _S.UNREACHABLE for s in _LIVE},
    **{(s, t): s for s in _HELD
       for t in (_T.BOOTSTRAPPED, _T.PROBE_OK, _T.PROBE_UNHEALTHY, _T.PROBE_UNREACHABLE)},
    **{(s, _T.HOST_KEY_MISMATCH): _S.QUARANTINED for s in (*_LIVE, *_HELD)},
    **{(s, _T.CORDON): _S.CORDONED for s in (*_LIVE, _S.DRAINING)},
    **{(s, _T.DRAIN): _S.DRAINING for s in (*_LIVE, _S.CORDONED)},
    (_S.DRAINING, _T.DRAINED): _S.DRAINED,
    **{(s, _T.READMIT): _S.BOOTSTRAPPING for s in (_S.QUARANTINED, _S.UNHEALTHY, _S.UNREACHABLE,
                                                     _S.READY)},
    **{(s, _T.RETIRE): _S.RETIRED for s in (*_LIVE, *_HELD, _S.QUARANTINED)},
}  # fmt: skip


def next_state(node: Node, trigger: NodeTrigger) -> NodeState:
    """The state `trigger` moves `node` to; raises `Conflict` (TRANSITION_NOT_ALLOWED)."""
    if trigger is NodeTrigger.UNCORDON:
        if node.state not in _HELD:
            raise _refused(node, trigger)
        return _by_health(node)
    to = _EDGES.get((node.state, trigger))
    if to is None:
        raise _refused(node, trigger)
    return to


class _Keep:
    """Marks "leave the reason as it is" (None means "clear it")."""


KEEP = _Keep()


def transition(node: Node, trigger: NodeTrigger, now: datetime,
               reason: Reason | _Keep | None = KEEP) -> Node:  # fmt: skip
    """The node after `trigger`: the one place a node's state changes. The version goes up on
    every call, so a writer holding an older copy cannot overwrite this one. Set the other
    fields the same step changes (health, inventory, schedule) with `replace` before calling.
    A READY node has no reason; otherwise `reason` replaces the old one unless left as KEEP."""
    to = next_state(node, trigger)
    if to is NodeState.READY:
        reason = None
    elif isinstance(reason, _Keep):
        reason = node.reason
    draining = to in (NodeState.DRAINING, NodeState.DRAINED)
    return replace(
        node,
        state=to,
        version=node.version + 1,
        reason=reason,
        updated_at=now,
        retired_at=now if to is NodeState.RETIRED else node.retired_at,
        drain_deadline=node.drain_deadline if draining else None,
        retire_when_drained=node.retire_when_drained and draining,
    )


def schedulable(node: Node) -> bool:
    return node.state is NodeState.READY


def probed(state: NodeState) -> bool:
    """Whether the health loop talks to a node in this state. Not to a quarantined one (it may
    be an impostor) nor a retired one."""
    return state not in (NodeState.QUARANTINED, NodeState.RETIRED)
