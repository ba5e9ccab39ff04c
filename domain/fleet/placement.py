"""Placement: which node, and which of its GPUs, a request for `count` GPUs of one model in one
region gets.

Best fit: of the ready nodes that can hold the request, the one left with the fewest free GPUs
afterwards, so partly used nodes fill up first and whole nodes stay free for whole-node
requests. Within the node, the lowest free indices, as a contiguous run when there is one
(neighbouring GPUs usually share the fastest links).

This decides on a snapshot; the database makes the decision safe under concurrency (one active
assignment per node and GPU, rows locked while assigning), and a caller that loses a race
places again on a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A ready node as placement sees it: what it has and which GPU indices are free."""

    node_id: int
    region: str
    gpu_model: str
    free: frozenset[int]


@dataclass(frozen=True, slots=True)
class GpuRequest:
    gpu_model: str
    gpu_count: int
    region: str

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise ValueError("a request asks for at least one GPU")


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: int
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NoCapacity:
    """Nothing fits now. `largest_free` is the most GPUs of the model any matching node has
    free, so a client can say how far off the request is."""

    request: GpuRequest
    largest_free: int


def _indices(free: frozenset[int], count: int) -> tuple[int, ...]:
    ordered = sorted(free)
    for start in range(len(ordered) - count + 1):
        run = ordered[start : start + count]
        if run[-1] - run[0] == count - 1:
            return tuple(run)
    return tuple(ordered[:count])


def ranked(nodes: Iterable[NodeCapacity], request: GpuRequest) -> list[NodeCapacity]:
    """The nodes that can hold the request, best fit first (fewest free GPUs left after it,
    then the lowest id, so the order is stable)."""
    fitting = [n for n in nodes if n.region == request.region
               and n.gpu_model == request.gpu_model and len(n.free) >= request.gpu_count]  # fmt: skip
    return sorted(fitting, key=lambda n: (len(n.free) - request.gpu_count, n.node_id))


def place(nodes: Iterable[NodeCapacity], request: GpuRequest) -> Placement | NoCapacity:
    nodes = list(nodes)
    best = ranked(nodes, request)
    if not best:
        matching = [n for n in nodes
                    if n.region == request.region and n.gpu_model == request.gpu_model]  # fmt: skip
        return NoCapacity(request, max((len(n.free) for n in matching), default=0))
    return Placement(best[0].node_id, _indices(best[0].free, request.gpu_count))
