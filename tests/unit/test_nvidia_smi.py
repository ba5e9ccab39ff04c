"""Parsing nvidia-smi: the real H200 host's output (tests/fixtures/nvidia-smi, a copy of
shared/fixtures), an 8-GPU file built from it, and the ways a node's output can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.fleet.inventory import GpuInfo, InventoryError
from infra.nodes.nvidia_smi import QUERY_FIELDS, parse_query_csv, parse_xml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
H200 = FIXTURES / "h200"

REAL = GpuInfo(
    index=0, uuid="GPU-3719498b-52fb-728c-25a0-2cdc102d5b3b", model="NVIDIA H200",
    pci_bus_id="00000000:00:06.0", memory_mib=143771, driver_version="580.159.04",
    mig_enabled=False, temperature_c=44, uncorrected_ecc_errors=0, memory_used_mib=0,
    utilization_pct=0,
)  # fmt: skip


def test_the_real_csv_query_is_read() -> None:
    assert parse_query_csv((H200 / "nvidia-smi-query.csv").read_text()) == [REAL]


def test_the_real_xml_report_reads_the_same() -> None:
    assert parse_xml((H200 / "nvidia-smi-q.xml").read_text()) == [REAL]


def test_the_query_matches_the_fixture_s_command() -> None:
    readme = (FIXTURES / "README.md").read_text()
    assert f"--query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits" in readme


def test_eight_gpus_come_back_in_index_order() -> None:
    text = (FIXTURES / "h200x8-repeated-nvidia-smi-query.csv").read_text()
    lines = text.splitlines()
    gpus = parse_query_csv("\n".join(reversed(lines)))
    assert [g.index for g in gpus] == list(range(8))
    assert len({g.uuid for g in gpus}) == 8
    assert {g.model for g in gpus} == {"NVIDIA H200"}


def test_not_available_values_are_none() -> None:
    line = (H200 / "nvidia-smi-query.csv").read_text().strip()
    cells = [c.strip() for c in line.split(",")]
    cells[7], cells[11], cells[12] = "[N/A]", "[N/A]", "[Not Supported]"
    gpu = parse_query_csv(", ".join(cells))[0]
    assert (gpu.temperature_c, gpu.mig_enabled, gpu.uncorrected_ecc_errors) == (None, False, None)


@pytest.mark.parametrize(
    ("report", "says"),
    [
        ("", "no GPUs"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
         "line 1: expected 13 fields, got 1"),
        ("x, GPU-abc123456, NVIDIA H200, 0:6.0, 1, 0, 0, 44, 1, 1, 580, Disabled, 0",
         "line 1: invalid literal"),
        ("0, not-a-uuid, NVIDIA H200, 0:6.0, 1, 0, 0, 44, 1, 1, 580, Disabled, 0",
         "not a GPU UUID"),
        ("0, GPU-abc123456, NVIDIA H200, 0:6.0, 1, 0, 0, 44, 1, 1, 580, Maybe, 0", "MIG mode"),
    ],
)  # fmt: skip
def test_garbage_is_refused_naming_the_problem(report: str, says: str) -> None:
    with pytest.raises(InventoryError, match=says):
        parse_query_csv(report)


def test_the_same_gpu_twice_is_refused() -> None:
    line = (H200 / "nvidia-smi-query.csv").read_text().strip()
    with pytest.raises(InventoryError, match="twice"):
        parse_query_csv(f"{line}\n{line}")


@pytest.mark.parametrize(
    ("report", "says"),
    [
        ("<html>not xml", "not a report"),
        ("<other/>", "unexpected root"),
        ("<nvidia_smi_log><driver_version>1</driver_version></nvidia_smi_log>", "no GPUs"),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
         "<nvidia_smi_log>&b;</nvidia_smi_log>", "not a report"),
        ("<nvidia_smi_log><gpu id='1'><uuid>GPU-abcdef123</uuid></gpu></nvidia_smi_log>",
         "has no <fb_memory_usage/total>"),
    ],
)  # fmt: skip
def test_bad_xml_is_refused_and_entities_are_never_expanded(report: str, says: str) -> None:
    with pytest.raises(InventoryError, match=says):
        parse_xml(report)
