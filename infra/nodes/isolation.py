"""The GPU isolation check: which GPU devices a user of one GPU's group can open.

For each GPU N the node runs, as root, `setpriv` to become an unprivileged identity (`nobody`)
whose only supplementary group is GPU N's, and tries to open every GPU device for reading. It
must open exactly /dev/nvidiaN. An identity with no GPU group must open none. Permissions are
what the kernel checks at open(2) (root's capabilities are gone after setpriv changes the uid),
so this is what an allocation user holding GPU N meets, without making a Linux user.

Pure functions, like `commands.py`: the script, and the parser of what it prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import NodeCommandFailed
from infra.nodes.commands import q
from infra.nodes.layout import NodeLayout
from infra.nodes.ssh import clip

NOBODY = 65534  # the overflow uid/gid, used when the node has no `nobody` entry

# Prints the positions (0-based, in argument order) of the devices that opened. `true`, not `:`:
# a failed redirection on a special builtin ends a POSIX shell.
_TRY_OPEN = (
    'n=0; for d; do { true <"$d"; } 2>/dev/null && printf " %s" "$n"; n=$((n + 1)); done; echo'
)


def isolation_script(indices: Sequence[int], layout: NodeLayout) -> str:
    """One `sh -e` script printing `gpu N: <positions>` per GPU and `none: <positions>`."""
    ordered = sorted(set(indices))
    devices = " ".join(q(layout.gpu_device(i)) for i in ordered)
    lines = [
        "command -v setpriv >/dev/null || "
        "{ echo 'setpriv (util-linux) is not installed: GPU isolation cannot be checked' >&2; "
        "exit 3; }",
        f"uid=$(id -u nobody 2>/dev/null || echo {NOBODY})",
        f"gid=$(id -g nobody 2>/dev/null || echo {NOBODY})",
        f'try_as() {{ setpriv --reuid="$uid" --regid="$gid" "$@" sh -c {q(_TRY_OPEN)} sh {devices}; }}',
    ]
    for index in ordered:
        group = layout.gpu_group(index)
        lines.append(
            f"entry=$(getent group {q(group)}) || "
            f"{{ echo {q(f'group {group} is missing')} >&2; exit 3; }}"
        )
        lines.append("gpu_gid=${entry#*:*:}; gpu_gid=${gpu_gid%%:*}")
        lines.append(f'printf "gpu {index}:"; try_as --groups="$gpu_gid"')
    lines.append('printf "none:"; try_as --clear-groups')
    return "\n".join(lines) + "\n"


def isolation_problems(output: str, indices: Sequence[int], layout: NodeLayout) -> list[str]:
    """What is wrong, one sentence per device; empty when each GPU's group opens exactly its
    own device and a user of no GPU opens none."""
    ordered = sorted(set(indices))
    seen: dict[str, set[int]] = {}
    for line in output.splitlines():
        who, sep, positions = line.partition(":")
        if not sep:
            continue
        try:
            seen[who.strip()] = {ordered[int(p)] for p in positions.split()}
        except (ValueError, IndexError):
            raise NodeCommandFailed(f"the isolation check printed {line[:80]!r}") from None
    for who in [*(f"gpu {i}" for i in ordered), "none"]:
        if who not in seen:
            raise NodeCommandFailed(f"the isolation check printed nothing for {who!r}")
    problems = []
    for index in ordered:
        device = layout.gpu_device(index)
        if index in seen["none"]:
            problems.append(f"{device} opens for any user")
        elif others := [i for i in ordered if i != index and index in seen[f"gpu {i}"]]:
            groups = ", ".join(str(i) for i in others)
            problems.append(f"{device} opens for the group of GPU {groups}")
        if index not in seen[f"gpu {index}"]:
            problems.append(f"{device} does not open for its own group")
    return problems


def isolation_failure(problems: Sequence[str]) -> NodeCommandFailed:
    message = "GPU isolation is broken: " + "; ".join(problems)
    return NodeCommandFailed(clip(message, 600), ReasonCode.ISOLATION_BROKEN)
