"""Values the fleet's repositories store and return besides the node itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.fleet.nodes import NodeAuth, NodeState


class NodeEventKind(StrEnum):
    REGISTERED = "registered"
    HOST_KEY_PINNED = "host_key_pinned"  # recorded at first contact; shown to the admin
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STATE_CHANGED = "state_changed"
    HEALTH_CHANGED = "health_changed"  # on a cordoned or draining node, whose state stays
    INVENTORY_CHANGED = "inventory_changed"
    DECOMMISSIONED = "decommissioned"  # retired: what was removed from the machine, what not
    ACTION_NEEDED = "action_needed"  # the operator must act (e.g. reload the NVIDIA driver)


class BootstrapStep(StrEnum):
    CONNECT = "connect"
    OS = "os"
    GPUS = "gpus"
    FACTS = "facts"
    PREPARE = "prepare"
    ISOLATION = "isolation"  # each GPU opens for its own group only
    CERT_LOGIN = "cert_login"  # a fresh platform certificate logs in: sshd loaded the CA


@dataclass(frozen=True, slots=True)
class NewNodeEvent:
    node_id: int
    kind: NodeEventKind
    message: str
    step: BootstrapStep | None = None
    state: NodeState | None = None  # the state after the event
    reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class NodeEvent:
    id: int
    node_id: int
    kind: NodeEventKind
    message: str
    step: BootstrapStep | None
    state: NodeState | None
    reason_code: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class NewNode:
    name: str
    host: str
    port: int
    ssh_user: str
    auth: NodeAuth
    credential_secret_id: int | None
    host_key: str | None
    region: str
    labels: Mapping[str, str]
    next_probe_at: datetime  # bootstrap is due then (now, at registration)


@dataclass(frozen=True, slots=True)
class NodeFilter:
    state: NodeState | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class GpuAssignment:
    """One GPU given to one holder (an allocation, later); at most one active per GPU."""

    id: int
    node_id: int
    gpu_index: int
    holder: str
    created_at: datetime
    released_at: datetime | None


@dataclass(frozen=True, slots=True)
class CapacityRow:
    """GPUs of one node, for the admin's capacity view. `free` counts only on a ready node;
    `cordoned` counts the unassigned GPUs of a cordoned or draining one."""

    node_id: int
    node_name: str
    region: str
    state: NodeState
    gpu_model: str
    total: int
    allocated: int

    @property
    def free(self) -> int:
        return self.total - self.allocated if self.state is NodeState.READY else 0

    @property
    def cordoned(self) -> int:
        held = self.state in (NodeState.CORDONED, NodeState.DRAINING, NodeState.DRAINED)
        return self.total - self.allocated if held else 0
