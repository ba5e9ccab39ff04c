"""The decommissioning script, without a node: what it removes, how it reports what it could
not, and that names and paths stay data, never shell syntax."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.fleet.decommission import DecommissionPlan
from infra.nodes.decommission import decommission_script, parse_leftovers
from infra.nodes.layout import NodeLayout
from schema.fleet_views import FleetEvent, FleetEventKind


def layout(root: Path) -> NodeLayout:
    return NodeLayout(
        trusted_ca_file=str(root / "ca.pub"),
        sshd_dropin=str(root / "dropin"),
        device_dir=str(root / "dev"),
        gpu_group_prefix="gpcx",
        udev_rules=str(root / "rules"),
    )


def test_the_script_names_every_step_quoted() -> None:
    script = decommission_script(DecommissionPlan("gpucloud", [0, 1]), NodeLayout())
    for expected in (
        "rm -f -- /etc/ssh/gpucloud_user_ca.pub",
        "rm -f -- /etc/ssh/sshd_config.d/60-gpucloud.conf",
        "rm -f -- /etc/udev/rules.d/70-gpucloud-gpu.rules",
        "rm -f -- /etc/modprobe.d/gpucloud-nvidia.conf",
        "rm -f -- /etc/ssh/sshd_config.d/60-gpucloud.conf.reload-pending",
        "reload_sshd ||",
        "chown root:root /dev/nvidia1 && chmod 0666 /dev/nvidia1",
        "groupdel gpucloud-gpu0",
        "groupdel gpucloud ",
        "kill -HUP",
    ):
        assert expected in script, expected


@pytest.fixture
def node_root() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="gpucloud-decom-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        root.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_what_could_not_be_removed_is_reported_one_line_each(node_root: Path) -> None:
    # As a user who may not delete from a read-only directory nor chown: everything that
    # exists is reported, nothing stops the script, what is absent is not mentioned.
    (node_root / "dev").mkdir()
    (node_root / "dev" / "nvidia0").touch()
    (node_root / "ca.pub").touch()
    script = decommission_script(
        DecommissionPlan("gpucloud-test-absent", [0, 1]), layout(node_root)
    )
    node_root.chmod(0o555)
    try:
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-e",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
        )
    finally:
        node_root.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert parse_leftovers(done.stdout) == [
        f"CA trust file {node_root}/ca.pub",
        f"ownership of {node_root}/dev/nvidia0",
    ]


def test_parse_ignores_other_output() -> None:
    assert parse_leftovers("noise\nLEFTOVER group x\n  LEFTOVER no\n") == ["group x"]


def test_the_fleet_stream_names_a_decommissioning() -> None:
    event = FleetEvent.from_message(
        "node.decommissioned",
        {
            "nodeId": 3,
            "nodeName": "gpu-3",
            "state": "retired",
            "version": 9,
            "message": "decommissioned, but could not remove: group gpucloud",
        },
    )
    assert event.kind is FleetEventKind.DECOMMISSIONED
    assert event.message == "decommissioned, but could not remove: group gpucloud"
