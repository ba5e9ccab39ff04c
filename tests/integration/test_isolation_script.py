"""scripts/check-gpu-isolation.sh on stand-in devices (regular files: groups and modes work the
same): it prepares, reports what one allocation user opens and sees, and puts everything back.
On a real NVIDIA host it is run by hand; see the README."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.accounts import open_node_root
from tests.support.processes import REPO

SCRIPT = REPO / "scripts" / "check-gpu-isolation.sh"
NVIDIA_SMI = """#!/bin/sh
echo "GPU 0: stand-in H200, asked by $(id -un)"
"""


@pytest.fixture
def root() -> Iterator[Path]:
    with open_node_root() as made:
        yield made


def _run(root: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GPUCLOUD_CHECK_DEVICE_DIR": str(root / "dev"),
        "GPUCLOUD_CHECK_PREFIX": prefix,
        "NVIDIA_SMI": str(root / "nvidia-smi"),
        "GPUCLOUD_CHECK_MODPROBE": str(root / "gpucloud-nvidia.conf"),
    }
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def _exists(database: str, name: str) -> bool:
    return subprocess.run(["getent", database, name], capture_output=True).returncode == 0


def test_the_script_reports_one_users_gpus_and_restores_the_host(root: Path) -> None:
    dev = root / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl"):
        (dev / name).touch(mode=0o666)  # as a driver without our option leaves them
        (dev / name).chmod(0o666)
    (root / "nvidia-smi").write_text(NVIDIA_SMI)
    (root / "nvidia-smi").chmod(0o755)
    prefix = f"gpck{secrets.token_hex(2)}"

    done = _run(root, prefix)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"{dev}/nvidia0: opens (its own GPU)" in lines
    assert f"{dev}/nvidia1: refused (another GPU)" in lines
    assert f"{dev}/nvidia2: refused (another GPU)" in lines
    assert f"{dev}/nvidiactl: opens (shared)" in lines
    assert f"GPU 0: stand-in H200, asked by {prefix}user" in lines
    assert any(line.startswith("RESULT: PASS") for line in lines)
    # Put back: no user or group left, each device as it was, no modprobe file.
    assert not _exists("passwd", f"{prefix}user")
    assert not any(_exists("group", f"{prefix}gpu{i}") for i in range(3))
    for name in ("nvidia0", "nvidia1", "nvidia2"):
        info = (dev / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o666 and info.st_gid == 0
    assert not (root / "gpucloud-nvidia.conf").exists()


def test_the_script_says_when_it_cannot_run(root: Path) -> None:
    (root / "dev").mkdir()
    done = _run(root, f"gpck{secrets.token_hex(2)}")
    assert done.returncode == 2
    assert "no GPU devices under" in done.stderr
