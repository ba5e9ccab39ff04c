"""The shell scripts that give an allocation its Linux account on a node, and the parser of what
`accounts` prints. Pure functions: nothing here talks to a node.

Safety: the user name is checked against the platform's own pattern (`is_account_name`) before
it goes anywhere, public keys are reduced to "type base64" after checking their shape, and every
value is quoted with `shlex.quote`. Files in the user's home are written by a shell running as
that user (`setpriv`), never as root: the home is the user's to shape, and a symlink it planted
(~/.ssh -> /root/.ssh) must not turn our write into root's.

Serialized and fenced: every script first takes a per-account lock on the node (`flock` on
`<account_state_dir>/<user>.lock`, so an ensure and a teardown of one account never interleave:
the later waits for the earlier), then compares its fencing token (the allocation's lease
generation) with the highest the node has seen for the account (`<user>.fence`): an older one
is refused with FENCE_EXIT and changes nothing. A teardown leaves a tombstone (`<user>.gone`)
before deleting anything, and an ensure finds it and refuses: a late or superseded ensure can
never make the account again once its teardown began.

GPU access is by group (see `prepare_script`): GPU N's device is `<gpu_group_prefix>N`, mode
0660, so `usermod -G` with exactly the account's GPU groups grants those devices and, since it
replaces the whole list, revokes any other. A process keeps the groups it started with, so
revoking from running processes means ending them, which `remove_account_script` does.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from domain.compute.accounts import AccountSpec, AccountState, account_name, is_account_name
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import NodeCommandFailed
from infra.nodes.commands import FENCE_EXIT, FENCE_LOCK_WAIT_SECONDS, q, shell
from infra.nodes.layout import GROUP_NAME, NodeLayout

# Marks the lines we own in the user's shell start-up files, so a repeat replaces them.
MARKER = "# managed by gpucloud"
_KEY = re.compile(r"((?:ssh|ecdsa|sk)-[A-Za-z0-9@._-]{1,60}) ([A-Za-z0-9+/]{16,16384}={0,3})"
                  r"(?: [^\r\n\0]*)?")  # fmt: skip
_SEPARATOR = "--groups--"
_KILL_TRIES = 100  # with 0.1s pauses: ten seconds for the user's processes to be gone


def _refused(message: str) -> NodeCommandFailed:
    return NodeCommandFailed(message, ReasonCode.COMMAND_FAILED)


def check_prefix(prefix: str) -> str:
    account_name(prefix, 1)  # raises ValueError for a prefix no account name can have
    return prefix


def checked_user(prefix: str, username: str) -> str:
    """`username` if it is one of the platform's account names; never a name from input."""
    if not is_account_name(prefix, username):
        raise _refused(f"{username[:40]!r} is not a platform account name")
    return username


def authorized_keys(keys: Sequence[str]) -> str:
    """The authorized_keys content: one "type base64" line per distinct key. Options and
    comments are dropped, and a line that is not one plain public key is refused, so no key
    can grant itself `command=` or `from=` or smuggle a second line."""
    lines: list[str] = []
    for key in keys:
        match = _KEY.fullmatch(key.strip())
        if match is None or not _blob_names(match.group(2), match.group(1)):
            raise _refused("a public key is not one OpenSSH public key line")
        line = f"{match.group(1)} {match.group(2)}"
        if line not in lines:
            lines.append(line)
    return "".join(f"{line}\n" for line in lines)


def _blob_names(blob: str, kind: str) -> bool:
    """Whether the base64 key blob begins with its own type name, as every SSH key does."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    size = int.from_bytes(raw[:4], "big")
    return raw[4 : 4 + size] == kind.encode("ascii")


def cuda_line(indices: Sequence[int]) -> str:
    # An empty value hides every GPU from CUDA, which is right for an account holding none.
    return f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in indices)}  {MARKER}"


# Replaces FILE with stdin atomically (a temp file beside it, then rename) and only when it
# differs, so a repeat leaves the file alone. Runs as the user, inside its home.
_PUT = """\
put() {  # FILE MODE < CONTENT
  tmp=$(mktemp "$1.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  cat >"$tmp"
  chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; chmod "$2" "$1"; else mv -f "$tmp" "$1"; fi
  trap - EXIT
}
"""


def _home_script(keys: str, line: str) -> str:
    """As the user, in its home ($1): exactly these keys, and CUDA_VISIBLE_DEVICES for its shells.

    sshd runs a command as `$SHELL -c command`; Debian's and Ubuntu's bash then reads ~/.bashrc
    (built with SSH_SOURCE_BASHRC), whose stock copy returns at once when not interactive, so
    our line goes first. Login shells read ~/.profile (its bash branch reads ~/.bashrc too, and
    the repeat is harmless); sh login shells read only ~/.profile."""
    steps = [_PUT, 'cd "$1"', "umask 077", "mkdir -p .ssh", "chmod 0700 .ssh",
             f"printf '%s' {q(keys)} | put .ssh/authorized_keys 0600"]  # fmt: skip
    for name in (".bashrc", ".profile"):
        steps.append(f"{{ printf '%s\\n' {q(line)}; grep -vF {q(MARKER)} {name} 2>/dev/null || "
                     f"true; }} | put {name} 0644")  # fmt: skip
    return "\n".join(steps) + "\n"


def _fenced(user: str, fence: int, layout: NodeLayout, *, teardown: bool) -> list[str]:
    """The script's opening: the account's lock taken (held until the script exits), the
    fence checked and raised to `fence`; a teardown then leaves its tombstone, an ensure
    refuses one."""
    if isinstance(fence, bool) or not isinstance(fence, int) or fence < 0:
        raise _refused(f"{fence!r} is not a fencing token")
    refuse = f'{{ echo "$u: $1" >&2; exit {FENCE_EXIT}; }}'
    steps = [
        f"u={q(user)}",
        f"fence={fence}",
        f"d={q(layout.account_state_dir)}",
        f"refuse() {refuse}",
        'mkdir -p "$d" && chmod 0700 "$d"',
        'exec 9>>"$d/$u.lock"',
        f"flock -w {FENCE_LOCK_WAIT_SECONDS} 9 || "
        '{ echo "$u: another operation on the account holds its lock" >&2; exit 1; }',
        'seen=$(cat "$d/$u.fence" 2>/dev/null || echo 0)',
        '[ "$fence" -ge "$seen" ] || refuse "fencing token $fence is older than $seen: '
        'a newer worker owns the account"',
    ]
    if not teardown:
        steps.append('[ ! -e "$d/$u.gone" ] || refuse "the account was torn down"')
    steps.append(
        'printf \'%s\\n\' "$fence" >"$d/$u.fence.new" && mv -f "$d/$u.fence.new" "$d/$u.fence"'
    )
    if teardown:
        steps.append(': >>"$d/$u.gone"')
    return steps


def ensure_account_script(
    account: AccountSpec, fence: int, *, prefix: str, platform_group: str, layout: NodeLayout
) -> str:
    """One `sh -e` script of "ensure" steps, as root: the user exists with its own group, the
    platform group and exactly its GPUs' groups; its login is by key or certificate only; its
    home is private and holds exactly its keys and its CUDA_VISIBLE_DEVICES.

    Certificates need nothing here: sshd's TrustedUserCAKeys (set at bootstrap) accepts a
    platform certificate whose principal is the user's name, and without an
    AuthorizedPrincipalsFile that name is the only principal it accepts for this user."""
    user = checked_user(prefix, account.username)
    indices = sorted(set(account.gpu_indices))
    try:
        groups = [platform_group, *(layout.gpu_group(i) for i in indices)]
    except ValueError as exc:
        raise _refused(str(exc)) from None
    if not all(GROUP_NAME.fullmatch(g) for g in groups):
        raise _refused(f"{platform_group[:40]!r} is not a Linux group name")
    home = _home_script(authorized_keys(account.public_keys), cuda_line(indices))
    add = f"useradd -m -b {q(layout.home_dir)} -s /bin/bash -p '*'"
    steps = [
        *_fenced(user, fence, layout, teardown=False),
        f'for g in {" ".join(q(g) for g in groups)}; do getent group "$g" >/dev/null || '
        '{ echo "group $g is missing: prepare the node first" >&2; exit 1; }; done',
        'if ! getent passwd "$u" >/dev/null; then',
        f"  mkdir -p {q(layout.home_dir)}",
        # A leftover group of the user's name (a run cut short) becomes its own group.
        f'  if getent group "$u" >/dev/null; then {add} -g "$u" "$u"; '
        f'else {add} -U "$u"; fi || getent passwd "$u" >/dev/null',  # made meanwhile: fine
        "fi",
        # "*", not useradd's "!": no password can match it, and sshd without PAM does not take
        # it for a locked account (which would refuse key logins too). -e '': never expires
        # (remove_account expires it first). -G replaces the list: other GPU groups go.
        f"usermod -p '*' -e '' -G {q(','.join(groups))} \"$u\"",
        'home=$(getent passwd "$u" | cut -d: -f6)',
        'if [ ! -d "$home" ]; then mkdir -p "$home" && cp -R /etc/skel/. "$home"/ && '
        'chown -R "$u:" "$home"; fi',  # useradd cut short before making it
        'chmod 0700 "$home"',  # allocations sharing a node do not read each other's files
        # 9>&-: the user's shell does not hold the account's lock.
        f'setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups sh -e -c {q(home)} sh "$home" 9>&-',
    ]
    return "\n".join(steps) + "\n"


def remove_account_script(
    username: str, fence: int, *, prefix: str, keep_home: bool, layout: NodeLayout
) -> str:
    """As root: no new logins, the user's processes ended, its GPU groups dropped, the user
    deleted. A kept home is handed to root (mode 0700) first, so whoever later gets the same
    uid cannot reach it."""
    user = checked_user(prefix, username)
    steps = [
        *_fenced(user, fence, layout, teardown=True),
        'getent passwd "$u" >/dev/null || exit 0',  # gone already: done
        'home=$(getent passwd "$u" | cut -d: -f6)',
        # Expired: sshd refuses it (key or certificate) while its processes are ended.
        "usermod -e 1 -G '' \"$u\"",
        "n=0",
        # Processes by real or effective uid, zombies aside (they hold nothing, and userdel
        # ignores them too; a node whose init does not reap keeps them).
        'while ps -o stat= -u "$u" -U "$u" | grep -qv \'^Z\'; do',
        f'  [ "$n" -lt {_KILL_TRIES} ] || {{ echo "processes of $u keep running" >&2; exit 1; }}',
        '  pkill -KILL -u "$u" || true; pkill -KILL -U "$u" || true',  # none left: fine
        "  n=$((n + 1)); sleep 0.1",
        "done",
    ]
    if keep_home:
        steps.append('if [ -d "$home" ]; then chown 0:0 "$home" && chmod 0700 "$home"; fi')
    # userdel's 6: no such user (a concurrent removal finished first).
    steps.append(f'userdel {"" if keep_home else "-r "}"$u" || [ "$?" -eq 6 ]')
    return "\n".join(steps) + "\n"


def accounts_command(prefix: str, layout: NodeLayout) -> str:
    """The platform's users and the GPU groups' members (reading needs no root)."""
    users = q(f"^{check_prefix(prefix)}[0-9]+:")
    gpus = q(f"^{layout.gpu_group_prefix}[0-9]+:")
    return (f"getent passwd | grep -E {users} || true; echo {_SEPARATOR}; "
            f"getent group | grep -E {gpus} || true")  # fmt: skip


def parse_accounts(output: str, prefix: str, layout: NodeLayout) -> list[AccountState]:
    users_part, separator, groups_part = output.partition(f"{_SEPARATOR}\n")
    if not separator:
        raise _refused("the account listing printed no group section")
    names = [line.split(":", 1)[0] for line in users_part.splitlines()]
    gpus: dict[str, set[int]] = {name: set() for name in names if is_account_name(prefix, name)}
    for line in groups_part.splitlines():
        fields = line.split(":")  # name:password:gid:members
        group = fields[0]
        index = group[len(layout.gpu_group_prefix) :]
        if len(fields) != 4 or not group.startswith(layout.gpu_group_prefix) or not index.isdigit():
            continue
        for member in fields[3].split(","):
            if member in gpus:
                gpus[member].add(int(index))
    return [AccountState(name, tuple(sorted(found))) for name, found in sorted(gpus.items())]


def ensure_account_command(
    account: AccountSpec,
    fence: int,
    *,
    prefix: str,
    platform_group: str,
    layout: NodeLayout,
    sudo: bool,
) -> str:
    script = ensure_account_script(
        account, fence, prefix=prefix, platform_group=platform_group, layout=layout
    )
    return shell(script, sudo=sudo)


def remove_account_command(
    username: str, fence: int, *, prefix: str, keep_home: bool, layout: NodeLayout, sudo: bool
) -> str:
    script = remove_account_script(
        username, fence, prefix=prefix, keep_home=keep_home, layout=layout
    )
    return shell(script, sudo=sudo)
