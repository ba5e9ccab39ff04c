"""Allocation settings: account names, billing window, deadlines and the engine's pace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComputeSettings:
    user_prefix: str  # Linux accounts on nodes are "<prefix><allocation id>"
    billing_window_seconds: float  # the hold reserves this much running time ahead
    provision_deadline_seconds: float  # provisioning is given up (and undone) after this
    engine_tick_seconds: float  # how often the worker looks for allocations with work due
    engine_lease_seconds: float  # a claimed step a dead worker left is taken again after this
    keep_home: bool  # keep a stopped allocation's home directory on the node
    node_concurrency: int  # node operations at once per node
    metering_tick_seconds: float  # running time is captured and the hold extended this often
    low_balance_grace_seconds: float  # warned when the next window cannot be held; stopped after
    reconcile_seconds: float  # how often every node's accounts are compared with the database
