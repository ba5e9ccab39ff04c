"""Placement on snapshots: best fit, index choice, and (Hypothesis) that for random fleets and
request sequences no GPU is handed out twice and every assignment matches the request."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.fleet.placement import GpuRequest, NoCapacity, NodeCapacity, Placement, place

H200 = "H200"


def node(node_id: int, free: set[int], model: str = H200, region: str = "eu") -> NodeCapacity:
    return NodeCapacity(node_id, region, model, frozenset(free))


def test_best_fit_prefers_the_fuller_node_and_keeps_whole_nodes_free() -> None:
    whole = node(1, set(range(8)))
    half = node(2, {4, 5, 6, 7})
    assert place([whole, half], GpuRequest(H200, 2, "eu")) == Placement(2, (4, 5))
    # A whole-node request still finds the untouched node.
    assert place([whole, half], GpuRequest(H200, 8, "eu")) == Placement(1, tuple(range(8)))


def test_a_contiguous_run_is_preferred_over_the_lowest_indices() -> None:
    assert place([node(1, {0, 2, 3, 5})], GpuRequest(H200, 2, "eu")) == Placement(1, (2, 3))
    assert place([node(1, {0, 2, 4, 6})], GpuRequest(H200, 2, "eu")) == Placement(1, (0, 2))


def test_model_and_region_must_match() -> None:
    fleet = [node(1, {0, 1}, model="H100"), node(2, {0, 1}, region="us")]
    outcome = place(fleet, GpuRequest(H200, 1, "eu"))
    assert outcome == NoCapacity(GpuRequest(H200, 1, "eu"), largest_free=0)


def test_no_capacity_says_how_far_off_the_request_is() -> None:
    outcome = place([node(1, {0, 1, 2}), node(2, {5})], GpuRequest(H200, 4, "eu"))
    assert isinstance(outcome, NoCapacity)
    assert outcome.largest_free == 3


def test_a_request_asks_for_at_least_one_gpu() -> None:
    with pytest.raises(ValueError, match="at least one GPU"):
        GpuRequest(H200, 0, "eu")


MODELS = st.sampled_from(["H200", "H100", "A100"])
REGIONS = st.sampled_from(["eu", "us"])
FLEETS = st.lists(st.tuples(MODELS, REGIONS, st.sampled_from([1, 2, 4, 8])), min_size=1, max_size=6)
REQUESTS = st.lists(st.tuples(MODELS, REGIONS, st.integers(1, 8)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(fleet=FLEETS, requests=REQUESTS)
def test_random_fleets_never_share_a_gpu_and_every_assignment_matches(
    fleet: list[tuple[str, str, int]], requests: list[tuple[str, str, int]]
) -> None:
    shape = {i: (model, region, size) for i, (model, region, size) in enumerate(fleet)}
    free = {i: set(range(size)) for i, (_, _, size) in shape.items()}
    taken: set[tuple[int, int]] = set()
    for model, region, count in requests:
        request = GpuRequest(model, count, region)
        snapshot = [
            NodeCapacity(i, shape[i][1], shape[i][0], frozenset(f)) for i, f in free.items()
        ]
        outcome = place(snapshot, request)
        fits = [n for n in snapshot if n.gpu_model == model and n.region == region
                and len(n.free) >= count]  # fmt: skip
        if isinstance(outcome, NoCapacity):
            assert not fits  # refused only when nothing fits
            continue
        assert shape[outcome.node_id][:2] == (model, region)
        assert len(outcome.gpu_indices) == count == len(set(outcome.gpu_indices))
        for index in outcome.gpu_indices:
            assert index in free[outcome.node_id]  # a GPU that exists and is free
            assert (outcome.node_id, index) not in taken  # never handed out twice
            taken.add((outcome.node_id, index))
        # Best fit: no fitting node would have been left with fewer free GPUs.
        leftover = len(free[outcome.node_id]) - count
        assert all(len(n.free) - count >= leftover for n in fits)
        free[outcome.node_id] -= set(outcome.gpu_indices)
