"""The shell commands the platform runs on a node, and the parsers of what they print.

Pure functions: nothing here talks to a node. Every value placed in a command is quoted with
`shlex.quote` (and group names are checked first), so a path, key or name can never become
shell syntax. Parsers raise `NodeCommandFailed` naming what they could not read.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from domain.fleet.nodes import NodeFacts, ReasonCode
from domain.fleet.remote import NodeCommandFailed, NodePrep, OsInfo
from infra.nodes.layout import GROUP_NAME, NodeLayout

# os-release lives in /etc, or only in /usr/lib on some images (os-release(5)).
OS_COMMAND = "uname -s; uname -r; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release"

_MEMTOTAL = re.compile(r"^MemTotal:\s+(\d+)\s*kB\s*$", re.MULTILINE)
# `df -P` data line: filesystem (may hold spaces), 1024-blocks, used, available, capacity, mount.
_DF_LINE = re.compile(r"\s(\d+)\s+(\d+)\s+(\d+)\s+(?:\d+%|-)\s+/")


def _failed(message: str, code: ReasonCode = ReasonCode.COMMAND_FAILED) -> NodeCommandFailed:
    return NodeCommandFailed(message, code)


def q(value: str | int) -> str:
    return shlex.quote(str(value))


def shell(script: str, *, sudo: bool) -> str:
    """Run `script` with `sh -e`, as root through `sudo -n` (never prompting) when the login
    user is not root already."""
    command = f"sh -e -c {q(script)}"
    return f"sudo -n {command}" if sudo else command


def parse_os(output: str) -> OsInfo:
    lines = output.splitlines()
    if len(lines) < 2 or not lines[0].strip() or not lines[1].strip():
        raise _failed("uname printed no system name and kernel release")
    release: dict[str, str] = {}
    for line in lines[2:]:
        key, sep, raw = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z0-9_]+", key):
            continue  # comments, blank lines
        try:
            release[key] = " ".join(shlex.split(raw))  # values may be shell-quoted
        except ValueError:
            continue
    return OsInfo(system=lines[0].strip(), kernel=lines[1].strip(),
                  os_id=release.get("ID", "linux"),  # os-release(5): ID defaults to "linux"
                  os_version=release.get("VERSION_ID", ""))  # fmt: skip


def facts_command(layout: NodeLayout) -> str:
    # Online CPUs of the machine (nproc would follow OMP_NUM_THREADS and the login's affinity);
    # `--` so a data_dir starting with "-" is a path, not an option.
    return ("getconf _NPROCESSORS_ONLN && grep -m1 '^MemTotal:' /proc/meminfo && "
            f"df -Pk -- {q(layout.data_dir)}")  # fmt: skip


def parse_facts(output: str, os: OsInfo) -> NodeFacts:
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        cpus = int(lines[0])
    except (IndexError, ValueError):
        raise _failed("getconf printed no CPU count") from None
    memory = _MEMTOTAL.search(output)
    if memory is None:
        raise _failed("/proc/meminfo has no MemTotal line")
    disk = _DF_LINE.search(lines[-1])
    if len(lines) < 4 or disk is None:  # the header's words depend on the node's locale
        raise _failed("df -Pk printed no disk usage line")
    total_kib, _, available_kib = (int(g) for g in disk.groups())
    if cpus < 1:
        raise _failed(f"getconf printed {cpus} CPUs")
    return NodeFacts(os_id=os.os_id, os_version=os.os_version, kernel=os.kernel, cpus=cpus,
                     ram_mib=int(memory.group(1)) // 1024, disk_total_mib=total_kib // 1024,
                     disk_free_mib=available_kib // 1024)  # fmt: skip


# Says which step a failing `sh -e` script was in, last on stderr: the command's own complaint
# comes first, this names where it happened.
_STEP_TRAP = """\
step=starting
trap 'rc=$?; [ "$rc" = 0 ] || echo "gpucloud: failed while $step (exit $rc)" >&2' EXIT
"""

# Writes stdin-free content atomically (temp file in the same directory, then rename), and only
# when it differs, so `changed` tells whether a reload is due and a repeat run touches nothing.
_ENSURE_FILE = """\
ensure_file() {  # PATH MODE CONTENT
  tmp=$(mktemp "$1.XXXXXX")
  if ! { printf '%s' "$3" >"$tmp" && chmod "$2" "$tmp"; }; then rm -f "$tmp"; return 1; fi
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; chmod "$2" "$1"; changed=0
  else mv -f "$tmp" "$1"; changed=1; fi
}
"""

# What prepare prints (stdout) when the operator has something to do.
DRIVER_RELOAD_NEEDED = "gpucloud: nvidia-driver-reload-needed"
NVIDIA_OPTION = "options nvidia NVreg_ModifyDeviceFiles=0"
# The loaded driver's parameters; "ModifyDeviceFiles: 1" while it runs without our option.
_NVIDIA_PARAMS = "/proc/driver/nvidia/params"


# The exit status of a script refused by its fence (sysexits' EX_TEMPFAIL: nothing was done).
FENCE_EXIT = 75
FENCE_LOCK_WAIT_SECONDS = 90  # within a command's own timeout (120 s by default)


def node_fence_steps(fence: int, node_id: int, layout: NodeLayout) -> list[str]:
    """The opening of a script that changes the node as a whole (prepare): the lock of the
    platform's node `node_id` taken for the script's life, its fence checked and raised to
    `fence` (the node's lease generation). A superseded check's prepare (with the CA keys of
    before a rotation, say) exits FENCE_EXIT having changed nothing. Files are named by node
    id: a machine registered again starts a fresh fence with its new id."""
    for value in (fence, node_id):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _failed(f"{value!r} is not a fencing token", ReasonCode.PREPARE_FAILED)
    return [
        f"fence={fence}",
        f"d={q(layout.account_state_dir)}",
        f"n=node-{node_id}",
        'mkdir -p "$d" && chmod 0700 "$d"',
        'exec 8>>"$d/$n.lock"',
        f"flock -w {FENCE_LOCK_WAIT_SECONDS} 8 || "
        '{ echo "another prepare of this node holds its lock" >&2; exit 1; }',
        'seen=$(cat "$d/$n.fence" 2>/dev/null || echo 0)',
        '[ "$fence" -ge "$seen" ] || { echo "fencing token $fence is older than $seen: '
        f'a newer check owns the node" >&2; exit {FENCE_EXIT}; }}',
        'printf \'%s\\n\' "$fence" >"$d/$n.fence.new" && mv -f "$d/$n.fence.new" "$d/$n.fence"',
    ]


def _group(name: str) -> str:
    if not GROUP_NAME.fullmatch(name):
        raise _failed(f"{name[:40]!r} is not a Linux group name", ReasonCode.PREPARE_FAILED)
    return name


def _single_lines(keys: Sequence[str]) -> list[str]:
    lines = [key.strip() for key in keys]
    for line in lines:
        if not line or any(c in line for c in "\r\n\0"):
            raise _failed("a CA public key is not one line", ReasonCode.PREPARE_FAILED)
    return lines


def udev_rules(indices: Sequence[int], layout: NodeLayout) -> str:
    head = "# Managed by gpucloud: GPU N is usable only by members of its group.\n"
    return head + "".join(f'KERNEL=="nvidia{i}", GROUP="{layout.gpu_group(i)}", MODE="0660"\n'
                          for i in indices)  # fmt: skip


def prepare_script(prep: NodePrep, layout: NodeLayout) -> str:
    """One `sh -e` script of "ensure" steps, safe to run again: the groups exist, GPU N's
    device belongs to its own group with mode 0660, the NVIDIA driver is told to leave those
    permissions alone, the CA keys are trusted by sshd (reloaded until a reload succeeded).
    Prints DRIVER_RELOAD_NEEDED while the driver runs without our option."""
    indices = sorted(set(prep.gpu_indices))
    try:
        gpu_groups = [_group(layout.gpu_group(i)) for i in indices]
    except ValueError as exc:
        raise _failed(str(exc), ReasonCode.PREPARE_FAILED) from None
    keys = _single_lines(prep.ca_public_keys)
    steps = [
        _STEP_TRAP,
        _ENSURE_FILE,
        "step='taking the node lock'",
        *node_fence_steps(prep.fence, prep.node_id, layout),
        "step='making the platform and GPU groups'",
    ]
    for group in (_group(prep.platform_group), *gpu_groups):
        # -f: a group made meanwhile (a concurrent run) is success, not an error.
        steps.append(f"getent group {q(group)} >/dev/null || groupadd -f -r {q(group)}")
    steps.append("step='giving each GPU device to its group'")
    for index, group in zip(indices, gpu_groups, strict=True):
        device = layout.gpu_device(index)
        steps.append(f"[ -e {q(device)} ] || "
                     f"{{ echo {q(f'GPU device {device} is missing')} >&2; exit 1; }}")  # fmt: skip
        steps.append(f"chgrp {q(group)} {q(device)} && chmod 0660 {q(device)}")
    if layout.udev_rules is not None:
        steps.append("step='writing the udev rule'")
        steps.append(f"ensure_file {q(layout.udev_rules)} 0644 {q(udev_rules(indices, layout))}")
        # The rule matters at the next boot or driver load; udevd may be absent (containers).
        steps.append('if [ "$changed" = 1 ] && command -v udevadm >/dev/null; then '
                     "udevadm control --reload-rules || true; fi")  # fmt: skip
    if layout.nvidia_modprobe is not None:
        steps += _nvidia_steps(layout.nvidia_modprobe)
    content = "".join(f"{key}\n" for key in keys)
    steps.append("step='writing the trusted CA keys'")
    steps.append(f"ensure_file {q(layout.trusted_ca_file)} 0644 {q(content)}")
    if layout.sshd_dropin is not None:
        steps += _sshd_steps(layout)
    return "\n".join(steps) + "\n"


def _nvidia_steps(path: str) -> list[str]:
    content = (
        f"# Managed by gpucloud: keep the groups and modes of /dev/nvidia*.\n{NVIDIA_OPTION}\n"
    )
    return [
        "step='writing the NVIDIA driver option'",
        f"ensure_file {q(path)} 0644 {q(content)}",
        # Read when the module loads: until a driver reload or reboot the running driver may
        # still reset device permissions. Said on every run until it took effect.
        f'if [ "$changed" = 1 ] || grep -qsx {q("ModifyDeviceFiles: 1")} {_NVIDIA_PARAMS}; '
        f"then echo {q(DRIVER_RELOAD_NEEDED)}; fi",
    ]


def reload_pending_marker(dropin: str) -> str:
    """Exists from a drop-in change until a reload of sshd succeeded, so a failed reload is
    retried by the next run although the drop-in no longer changes. (Not `*.conf`: sshd's
    Include ignores it.)"""
    return f"{dropin}.reload-pending"


def _sshd_steps(layout: NodeLayout) -> list[str]:
    dropin, trusted_ca_file = layout.sshd_dropin, layout.trusted_ca_file
    assert dropin is not None
    if any(c.isspace() for c in trusted_ca_file):
        raise _failed("sshd cannot name a trusted CA file with spaces", ReasonCode.PREPARE_FAILED)
    line = f"TrustedUserCAKeys {trusted_ca_file}"
    config, pending = q(layout.sshd_config), q(reload_pending_marker(dropin))
    return [
        "step='writing the sshd drop-in'",
        f"ensure_file {q(dropin)} 0644 {q(f'# Managed by gpucloud.{chr(10)}{line}{chr(10)}')}",
        f'if [ "$changed" = 1 ]; then : >{pending}; fi',
        # An sshd_config without `Include sshd_config.d/*`, or naming another file first, would
        # ignore the drop-in and refuse every certificate later: fail now, saying so. This also
        # tests the config before a reload (a SIGHUP'd sshd with a broken config would exit).
        "step='checking the sshd config (sshd -T)'",
        f"if command -v sshd >/dev/null; then effective=$(sshd -T -f {config}); "
        f"printf '%s\\n' \"$effective\" | grep -qixF {q(line)} || "
        f"{{ echo {q(f'sshd does not use {trusted_ca_file} as TrustedUserCAKeys')} >&2; exit 1; }}; fi",
        sshd_reload_functions(layout),
        # Also due when the drop-in is newer than sshd's last start (sshd writes its pid file
        # then): one written before, by hand or by a run that died, but never loaded.
        f'pidfile=$(sshd_pidfile); if [ -e "$pidfile" ] && [ {q(dropin)} -nt "$pidfile" ]; '
        f"then : >{pending}; fi",
        f"if [ -e {pending} ]; then step='reloading sshd'; reload_sshd; rm -f {pending}; fi",
    ]


# SIGHUP makes sshd re-execute itself and read its config again (what the init scripts do).
# The pid must be a running sshd: never signal whatever process reused a stale pid.
_SSHD_HUP = """\
sshd_pidfile() {
  named=
  if command -v sshd >/dev/null; then
    named=$(sshd -T -f @CONFIG@ | awk '$1 == "pidfile" { print $2 }')
  fi
  echo "${named:-/run/sshd.pid}"
}
sshd_hup() {
  pidfile=$(sshd_pidfile)
  [ -r "$pidfile" ] || { echo "sshd has no pid file at $pidfile" >&2; return 1; }
  pid=$(head -n 1 "$pidfile")
  case "$pid" in ''|*[!0-9]*) echo "$pidfile holds no process id" >&2; return 1 ;; esac
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    sshd*) kill -HUP "$pid" ;;
    *) echo "process $pid (from $pidfile) is not a running sshd" >&2; return 1 ;;
  esac
}"""

_SIGNAL_RELOAD = "reload_sshd() { sshd_hup; }"

# The init that runs: systemd only when it is PID 1's (sd_booted(3)), so a host where systemctl
# is installed but not running ("System has not been booted with systemd") falls through.
_INIT_RELOAD = """\
reload_sshd() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if systemctl cat ssh.service >/dev/null 2>&1; then systemctl reload ssh
    else systemctl reload sshd; fi
  elif command -v rc-service >/dev/null && rc-service -e sshd; then rc-service sshd reload
  elif [ -x /etc/init.d/ssh ] && command -v service >/dev/null; then service ssh reload
  elif [ -x /etc/init.d/sshd ] && command -v service >/dev/null; then service sshd reload
  else sshd_hup; fi
}"""


def sshd_reload_functions(layout: NodeLayout) -> str:
    """Shell functions `sshd_pidfile` and `reload_sshd` (the host's init, or SIGHUP to the pid
    in sshd's pid file), as the layout's `sshd_reload` says: bootstrap and decommissioning
    reload sshd the same way."""
    reload = _SIGNAL_RELOAD if layout.sshd_reload == "signal" else _INIT_RELOAD
    return _SSHD_HUP.replace("@CONFIG@", q(layout.sshd_config)) + "\n" + reload


def prepare_command(prep: NodePrep, layout: NodeLayout, *, sudo: bool) -> str:
    return shell(prepare_script(prep, layout), sudo=sudo)
