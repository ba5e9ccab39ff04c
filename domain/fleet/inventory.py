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


@dataclass(frozen=True, slots=True)
class NodeGpu:
    """A GPU as the platform records it. `present` turns False when a probe no longer finds
    it; the row stays so assignments that named it still make sense."""

    node_id: int
    index: int
    uuid: str
    model: str
    memory_mib: int
    driver_version: str
    mig_enabled: bool
    pci_bus_id: str
    present: bool = True


def canonical_model(name: str) -> str:
    """The model as SKUs name it: the driver's name without the vendor, upper case.
    "NVIDIA H200" -> "H200", "NVIDIA H100 80GB HBM3" -> "H100 80GB HBM3"."""
    name = " ".join(name.split()).upper()
    return name.removeprefix("NVIDIA ").strip()


def model_matches(sku_model: str, node_model: str) -> bool:
    """A SKU for "H100" runs on "H100 80GB HBM3" and "H100-SXM5-80GB" nodes, not on "H1000".
    Name the SKU more fully to tell variants apart."""
    sku, node = sku_model.upper(), node_model.upper()
    return node == sku or node.startswith((sku + " ", sku + "-"))
