"""Fleet settings: the health loop's pace and thresholds, and where things live on a node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetSettings:
    tick_seconds: float  # how often the worker looks for nodes due a bootstrap or probe
    probe_interval_seconds: float
    probe_max_backoff_seconds: float
    unreachable_grace_seconds: float  # running work on an unreachable node stops being billed
    max_gpu_temperature_c: int
    min_disk_free_mib: int
    platform_group: str
    ssh_connect_timeout_seconds: float
    ssh_command_timeout_seconds: float
    # Paths on the node (see infra/nodes/layout.py); tests point them into the test node.
    trusted_ca_file: str
    sshd_dropin: str  # empty: do not manage sshd's config (it already names trusted_ca_file)
    device_dir: str
    gpu_group_prefix: str
    udev_rules: str  # empty: do not write a udev rule
    data_dir: str
    home_dir: str  # allocation users' homes are made under this
    sshd_config: str = "/etc/ssh/sshd_config"  # sshd's main config (`sshd -T -f`)
    sshd_reload: str = "auto"  # "auto": the host's init, else SIGHUP; "signal": SIGHUP only
    nvidia_modprobe: str = "/etc/modprobe.d/gpucloud-nvidia.conf"  # empty: not written
