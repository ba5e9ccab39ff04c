"""Reading `nvidia-smi`: the CSV query first, the XML report as a fallback.

The fixtures in shared/fixtures/nvidia-smi/ are the real tool's output; the parsers are tested
against them. Anything unexpected is an `InventoryError` naming the line or element, so a node
printing garbage becomes a clear node event, never a silent "ready".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from domain.fleet.inventory import GpuInfo, InventoryError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

QUERY_FIELDS = ("index", "uuid", "name", "pci.bus_id", "memory.total", "memory.used",
                "utilization.gpu", "temperature.gpu", "power.draw", "power.limit",
                "driver_version", "mig.mode.current", "ecc.errors.uncorrected.volatile.total")  # fmt: skip
QUERY_COMMAND = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
XML_COMMAND = "nvidia-smi -q -x"
MAX_REPORT = 4 * 1024 * 1024  # a report this large is not one; refuse before parsing it

_NOT_A_VALUE = {"[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]"}


def _optional_int(text: str) -> int | None:
    text = text.strip()
    if text in _NOT_A_VALUE:
        return None
    return int(float(text))


def _mig(text: str) -> bool:
    value = text.strip()
    if value in ("Enabled", "Disabled"):
        return value == "Enabled"
    if value in _NOT_A_VALUE:  # GPUs without MIG report N/A: not in MIG mode
        return False
    raise ValueError(f"MIG mode {value!r}")


def parse_query_csv(report: str) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`."""
    if len(report) > MAX_REPORT:
        raise InventoryError("nvidia-smi printed more than any GPU report")
    gpus = []
    for number, line in enumerate(report.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_FIELDS):
            raise InventoryError(f"nvidia-smi line {number}: expected {len(QUERY_FIELDS)} "
                                 f"fields, got {len(cells)}")  # fmt: skip
        f = dict(zip(QUERY_FIELDS, cells, strict=True))
        try:
            gpus.append(GpuInfo(
                index=int(f["index"]), uuid=_uuid(f["uuid"]), model=f["name"],
                pci_bus_id=f["pci.bus_id"], memory_mib=int(f["memory.total"]),
                driver_version=f["driver_version"], mig_enabled=_mig(f["mig.mode.current"]),
                temperature_c=_optional_int(f["temperature.gpu"]),
                uncorrected_ecc_errors=_optional_int(f["ecc.errors.uncorrected.volatile.total"]),
                memory_used_mib=_optional_int(f["memory.used"]),
                utilization_pct=_optional_int(f["utilization.gpu"]),
            ))  # fmt: skip
        except ValueError as exc:
            raise InventoryError(f"nvidia-smi line {number}: {exc}") from None
    if not gpus:
        raise InventoryError("nvidia-smi reported no GPUs")
    return _checked(gpus)


def _uuid(text: str) -> str:
    if not text.startswith(("GPU-", "MIG-")) or len(text) < 10:
        raise ValueError(f"not a GPU UUID: {text[:60]!r}")
    return text


def _text(gpu: Element, path: str) -> str:
    found = gpu.findtext(path)
    if found is None:
        raise InventoryError(f"nvidia-smi XML: <gpu> has no <{path}>")
    return found.strip()


def _number(text: str, unit: str) -> int | None:
    value = text.removesuffix(unit).strip()
    return _optional_int(value)


def parse_xml(report: str) -> list[GpuInfo]:
    """`nvidia-smi -q -x`, for drivers whose query fields differ."""
    if len(report) > MAX_REPORT:
        raise InventoryError("nvidia-smi printed more than any GPU report")
    try:
        # A node is not trusted: entity declarations (expansion bombs, external entities) are
        # refused; the DOCTYPE's DTD name is allowed and never fetched.
        root = SafeET.fromstring(report)
    except (SafeET.ParseError, DefusedXmlException) as exc:
        raise InventoryError(f"nvidia-smi XML is not a report: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise InventoryError(f"nvidia-smi XML: unexpected root <{root.tag}>")
    driver = (root.findtext("driver_version") or "").strip()
    gpus = []
    # nvidia-smi lists GPUs in index order (PCI bus order), as the CSV numbers them; the
    # <minor_number> is the /dev/nvidiaN number instead, which need not be the same.
    for position, gpu in enumerate(root.findall("gpu")):
        try:
            memory = _number(_text(gpu, "fb_memory_usage/total"), "MiB")
            if memory is None:
                raise ValueError("no memory size")
            gpus.append(GpuInfo(
                index=position, uuid=_uuid(_text(gpu, "uuid")),
                model=_text(gpu, "product_name"), pci_bus_id=_text(gpu, "pci/pci_bus_id"),
                memory_mib=memory, driver_version=driver,
                mig_enabled=_mig(_text(gpu, "mig_mode/current_mig")),
                temperature_c=_number(_text(gpu, "temperature/gpu_temp"), "C"),
                uncorrected_ecc_errors=_optional_int(
                    gpu.findtext("ecc_errors/volatile/dram_uncorrectable") or "N/A"),
                memory_used_mib=_number(gpu.findtext("fb_memory_usage/used") or "N/A", "MiB"),
                utilization_pct=_number(gpu.findtext("utilization/gpu_util") or "N/A", "%"),
            ))  # fmt: skip
        except ValueError as exc:
            raise InventoryError(f"nvidia-smi XML, GPU {gpu.get('id')}: {exc}") from None
    if not gpus:
        raise InventoryError("nvidia-smi XML lists no GPUs")
    return _checked(gpus)


def _checked(gpus: list[GpuInfo]) -> list[GpuInfo]:
    indices = [g.index for g in gpus]
    uuids = [g.uuid for g in gpus]
    if len(set(indices)) != len(indices) or len(set(uuids)) != len(uuids):
        raise InventoryError("nvidia-smi lists a GPU index or UUID twice")
    return sorted(gpus, key=lambda g: g.index)
