"""What a node has, as its GPUs report it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    uuid: str
    model: str  # as the driver names it, e.g. "NVIDIA H200"
    pci_bus_id: str
    memory_mib: int
    driver_version: str
    mig_enabled: bool
    temperature_c: int | None = None  # None where the tool reports N/A
    uncorrected_ecc_errors: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: int | None = None


class InventoryError(Exception):
    """The node's report could not be read; the message says what was wrong and where."""
