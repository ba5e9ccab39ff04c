"""The decommissioning script (domain/fleet/decommission.py) and its asyncssh adapter.

Every step is tried on its own; one that fails prints a `LEFTOVER <what>` line instead of
stopping the script, so the operator learns everything left on the machine in one run. Paths
come from the node layout, as bootstrap's do (infra/nodes/commands.py, whose quoting and `sh -e`
wrapper this reuses), so a test node's paths stay inside its own directory.

Device files go back to root:root mode 0666: what the NVIDIA driver makes by default
(NVreg_DeviceFileUID=0, NVreg_DeviceFileGID=0, NVreg_DeviceFileMode=0666).
"""

from __future__ import annotations

import contextlib

from domain.fleet.decommission import DecommissionPlan
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import NodeCommandFailed, NodeTarget
from infra.nodes.commands import q, reload_pending_marker, shell, sshd_reload_functions
from infra.nodes.layout import GROUP_NAME, NodeLayout
from infra.nodes.ssh import SSH_ERRORS, SshDialer, lost, run_command

MARK = "LEFTOVER "
_OUTPUT_LIMIT = 64 * 1024


def _left(what: str) -> str:
    return f"printf '%s\\n' {q(MARK + what)}"


def _remove(path: str, what: str) -> str:
    return f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then rm -f -- {q(path)} || {_left(what)}; fi"


def decommission_script(plan: DecommissionPlan, layout: NodeLayout) -> str:
    """`sh -e` script: remove the CA trust, the sshd drop-in (then reload sshd as bootstrap does),
    the NVIDIA driver option, the udev rule,
    give the GPU devices back to root:root 0666 and delete the platform's groups."""
    steps = [_remove(layout.trusted_ca_file, f"CA trust file {layout.trusted_ca_file}")]
    if layout.sshd_dropin is not None:
        dropin = layout.sshd_dropin
        steps.append(
            f"if [ -e {q(dropin)} ]; then rm -f -- {q(dropin)} && reload=1 || "
            f"{_left(f'sshd drop-in {dropin}')}; fi"
        )
        steps.append(_remove(reload_pending_marker(dropin), "sshd reload marker"))
        steps.append(sshd_reload_functions(layout))
        steps.append(
            f'if [ "${{reload:-0}}" = 1 ]; then reload_sshd || '
            f"{_left('sshd reload: the running sshd keeps the old settings until it restarts')}; fi"
        )
    if layout.nvidia_modprobe is not None:
        # The driver keeps device modes until its next load; then it manages them itself again.
        steps.append(_remove(layout.nvidia_modprobe, f"NVIDIA option {layout.nvidia_modprobe}"))
    if layout.udev_rules is not None:
        steps.append(_remove(layout.udev_rules, f"udev rule {layout.udev_rules}"))
        steps.append(
            "if command -v udevadm >/dev/null; then "
            "udevadm control --reload-rules 2>/dev/null || true; fi"
        )
    for index in plan.gpu_indices:
        device = layout.gpu_device(index)
        steps.append(
            f"if [ -e {q(device)} ]; then chown root:root {q(device)} && "
            f"chmod 0666 {q(device)} || {_left(f'ownership of {device}')}; fi"
        )
    groups = [layout.gpu_group(i) for i in plan.gpu_indices] + [plan.platform_group]
    for group in groups:
        if not GROUP_NAME.fullmatch(group):
            steps.append(_left(f"group {group[:40]!r}: not a group name, not touched"))
            continue
        steps.append(
            f"if getent group {q(group)} >/dev/null; then groupdel {q(group)} "
            f"2>/dev/null || {_left(f'group {group}')}; fi"
        )
    return "\n".join(steps) + "\n"


def parse_leftovers(output: str) -> list[str]:
    return [line[len(MARK) :].strip() for line in output.splitlines() if line.startswith(MARK)]


class SshNodeDecommissioner:
    """`domain.fleet.decommission.NodeDecommissioner` on asyncssh: one connection per run."""

    def __init__(self, dialer: SshDialer, layout: NodeLayout, command_timeout: float = 60) -> None:
        self._dialer = dialer
        self._layout = layout
        self._timeout = command_timeout

    async def decommission(self, target: NodeTarget, plan: DecommissionPlan) -> list[str]:
        command = shell(decommission_script(plan, self._layout), sudo=target.user != "root")
        conn, _ = await self._dialer.connect(target)
        try:
            output = await run_command(
                conn,
                command,
                what="decommissioning",
                limit=_OUTPUT_LIMIT,
                code=ReasonCode.COMMAND_FAILED,
                timeout=self._timeout,
            )
        except SSH_ERRORS as exc:
            raise lost(f"{target.host}:{target.port}", exc) from None
        finally:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        leftovers = parse_leftovers(output.stdout)
        if output.status != 0 or output.overflow:
            if not leftovers:
                raise NodeCommandFailed(f"decommissioning failed ({output.failure()})")
            leftovers.append(f"the rest: the script stopped early ({output.failure()})")
        return leftovers
