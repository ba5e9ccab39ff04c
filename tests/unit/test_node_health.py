"""Judging a node's readings from the real H200 report, and the probe backoff."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from domain.fleet.health import HealthPolicy, assess, backoff, inventory_problem
from domain.fleet.inventory import NodeGpu, canonical_model, model_matches
from domain.fleet.nodes import NodeFacts, ReasonCode
from infra.nodes.nvidia_smi import parse_query_csv
from tests.support.ssh_node import EIGHT_H200

GPUS = parse_query_csv(EIGHT_H200["query"].read_text())
FACTS = NodeFacts("ubuntu", "22.04", "6.8.0", 192, 2_000_000, 4_000_000, 3_000_000)
POLICY = HealthPolicy()


def recorded() -> list[NodeGpu]:
    return [NodeGpu(1, g.index, g.uuid, g.model, g.memory_mib, g.driver_version, g.mig_enabled,
                    g.pci_bus_id) for g in GPUS]  # fmt: skip


def test_the_real_report_is_healthy() -> None:
    assert len(GPUS) == 8
    assert inventory_problem(GPUS) is None
    assert assess(recorded(), GPUS, FACTS, POLICY) == []


def test_a_gpu_gone_between_probes_is_named() -> None:
    problems = assess(recorded(), GPUS[:7], FACTS, POLICY)
    assert [p.code for p in problems] == [ReasonCode.GPU_MISSING]
    assert GPUS[7].uuid in problems[0].message


def test_heat_ecc_and_disk_are_each_reported_worst_first() -> None:
    bad = [replace(GPUS[0], temperature_c=95, uncorrected_ecc_errors=3), *GPUS[1:]]
    low = replace(FACTS, disk_free_mib=100)
    codes = [p.code for p in assess(recorded(), bad, low, POLICY)]
    assert codes == [ReasonCode.ECC_ERRORS, ReasonCode.GPU_TOO_HOT, ReasonCode.DISK_LOW]


def test_no_gpus_or_mixed_models_cannot_be_offered() -> None:
    assert inventory_problem([]).code is ReasonCode.NO_GPUS  # type: ignore[union-attr]
    mixed = [GPUS[0], replace(GPUS[1], model="NVIDIA H100 80GB HBM3")]
    assert inventory_problem(mixed).code is ReasonCode.MIXED_GPU_MODELS  # type: ignore[union-attr]


def test_backoff_doubles_from_the_interval_up_to_the_cap() -> None:
    policy = HealthPolicy(probe_interval=timedelta(seconds=10), max_backoff=timedelta(seconds=60))
    waits = [backoff(n, policy).total_seconds() for n in range(6)]
    assert waits == [10, 10, 20, 40, 60, 60]


def test_models_are_named_as_skus_name_them() -> None:
    assert canonical_model(GPUS[0].model) == "H200"
    assert canonical_model("NVIDIA  H100 80GB HBM3") == "H100 80GB HBM3"
    assert model_matches("H100", "H100 80GB HBM3") and model_matches("h100", "H100-SXM5-80GB")
    assert not model_matches("H100", "H1000") and not model_matches("H200", "H100")


def test_billing_pauses_only_after_the_grace_period() -> None:
    from datetime import UTC, datetime

    from domain.fleet.health import billing_paused

    policy = HealthPolicy(unreachable_grace=timedelta(minutes=5))
    since = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert not billing_paused(None, since, policy)
    assert not billing_paused(since, since + timedelta(minutes=5), policy)
    assert billing_paused(since, since + timedelta(minutes=5, seconds=1), policy)
