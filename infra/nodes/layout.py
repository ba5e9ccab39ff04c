"""Where things live on a GPU node. The defaults are a stock Ubuntu or Debian host; tests point
every path into the test node's own directory (see infra/fleet_settings.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A group name as groupadd accepts it by default; the GPU index is appended to the prefix.
GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_MAX_INDEX_DIGITS = 4  # room left in a 32-character group name for "<prefix><index>"

SSHD_RELOADS = ("auto", "signal")


@dataclass(frozen=True)
class NodeLayout:
    # sshd's TrustedUserCAKeys: the CA public keys the node trusts for user certificates.
    trusted_ca_file: str = "/etc/ssh/gpucloud_user_ca.pub"
    # A drop-in naming trusted_ca_file (Ubuntu 20.04+ and Debian 11+ include sshd_config.d/*).
    # None: sshd's config is not ours to manage (it already names trusted_ca_file).
    sshd_dropin: str | None = "/etc/ssh/sshd_config.d/60-gpucloud.conf"
    # sshd's main config (it includes the drop-in): `sshd -T -f` reads it to check the effective
    # TrustedUserCAKeys and to find sshd's PidFile.
    sshd_config: str = "/etc/ssh/sshd_config"
    # How a changed drop-in reaches the running sshd. "auto": through the init the host runs
    # (systemd, OpenRC, a SysV script), else SIGHUP to the pid in sshd's PidFile. "signal": the
    # PidFile and SIGHUP only, for an sshd no init manages (the test nodes).
    sshd_reload: str = "auto"
    device_dir: str = "/dev"  # holds nvidia0, nvidia1, ...
    # GPU N's device belongs to group <prefix>N, mode 0660: only that group's members (the user
    # of the allocation holding GPU N) can open it.
    gpu_group_prefix: str = "gpucloud-gpu"
    # Makes those permissions survive a reboot or a driver reload. None: not written.
    udev_rules: str | None = "/etc/udev/rules.d/70-gpucloud-gpu.rules"
    # `options nvidia NVreg_ModifyDeviceFiles=0`: without it the NVIDIA driver recreates
    # /dev/nvidia* with its own modes when it loads, undoing the groups above. None: not written.
    nvidia_modprobe: str | None = "/etc/modprobe.d/gpucloud-nvidia.conf"
    data_dir: str = "/home"  # where allocations keep their data; its disk is measured
    home_dir: str = "/home"  # allocation users' homes are made under it (useradd -b)

    def __post_init__(self) -> None:
        paths = [self.trusted_ca_file, self.sshd_config, self.device_dir]
        paths += [self.data_dir, self.home_dir]
        optional = (self.sshd_dropin, self.udev_rules, self.nvidia_modprobe)
        paths += [p for p in optional if p is not None]
        for path in paths:
            if not path.startswith("/") or "\n" in path or "\0" in path:
                raise ValueError(f"node paths must be absolute, single-line paths: {path!r}")
        if self.sshd_reload not in SSHD_RELOADS:
            raise ValueError(f"sshd_reload must be one of {', '.join(SSHD_RELOADS)}")
        if not GROUP_NAME.fullmatch(self.gpu_group_prefix + "9" * _MAX_INDEX_DIGITS):
            raise ValueError(f"{self.gpu_group_prefix!r} cannot prefix a Linux group name")

    @property
    def account_state_dir(self) -> str:
        """Root's directory of per-account locks, fences and tombstones (account_commands.py):
        beside the homes, under a name no account can have."""
        return f"{self.home_dir.rstrip('/')}/.gpucloud-accounts"

    def gpu_group(self, index: int) -> str:
        if not 0 <= index < 10**_MAX_INDEX_DIGITS:
            raise ValueError(f"GPU index {index} out of range")
        return f"{self.gpu_group_prefix}{index}"

    def gpu_device(self, index: int) -> str:
        return f"{self.device_dir.rstrip('/')}/nvidia{index}"
