"""Allocation accounts on a real OpenSSH sshd on loopback: the user logs in with its own keys or
a platform certificate, sees CUDA_VISIBLE_DEVICES, opens only its own GPUs' devices, and is gone
with its processes after removal; one pooled connection per node, within the per-node limit.

These make real Linux users (as root), named with a random prefix and deleted afterwards."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest

from domain.compute.accounts import AccountSpec, AccountState, account_name
from domain.fleet.ca import CertificateRequest
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import (
    FenceRefused,
    HostKeyMismatch,
    KeyLogin,
    NodeCommandFailed,
    NodePrep,
    NodeTarget,
    NodeUnreachable,
)
from infra.nodes import operations
from infra.nodes.connector import SshNodeConnector
from infra.nodes.layout import NodeLayout
from infra.nodes.operations import SshNodeOperations
from infra.nodes.ssh import SshDialer, run_command
from infra.nodes.ssh_ca import AsyncsshCaSigner
from tests.support.accounts import open_node_root, serve_user_keys, sshd_children, user_prefix
from tests.support.engine_workers import calls, slow_node_commands
from tests.support.fleet import fake_devices, group_prefix
from tests.support.processes import free_port
from tests.support.ssh_node import SshNode, running_node

SIGNER = AsyncsshCaSigner()
GPUS = 4


@dataclass(frozen=True)
class Env:
    node: SshNode
    layout: NodeLayout
    platform_group: str
    prefix: str  # account names are <prefix><allocation id>
    ca_private_key: bytes

    @property
    def target(self) -> NodeTarget:
        login = KeyLogin(self.node.client_key.read_bytes())
        return NodeTarget(7, self.node.host, self.node.port, self.node.user, login,
                          self.node.host_key_public)  # fmt: skip

    def name(self, allocation_id: int) -> str:
        return account_name(self.prefix, allocation_id)

    def operations(self, per_node_limit: int = 4, idle_seconds: float = 60) -> SshNodeOperations:
        return SshNodeOperations(SshDialer(None, connect_timeout=5), self.layout,
                                 self.platform_group, self.prefix, per_node_limit=per_node_limit,
                                 idle_seconds=idle_seconds)  # fmt: skip

    def device(self, index: int) -> str:
        return self.layout.gpu_device(index)


@pytest.fixture
def env() -> Iterator[Env]:
    ca = SIGNER.generate_key()
    with (open_node_root() as root, group_prefix() as groups, user_prefix() as prefix,
          running_node(root, trusted_ca_keys=[ca.public_key]) as node):  # fmt: skip
        serve_user_keys(node)
        fake_devices(node, GPUS)
        layout = NodeLayout(
            trusted_ca_file=str(node.trusted_ca_file),
            sshd_dropin=None,
            device_dir=str(root / "dev"),
            gpu_group_prefix=f"{groups}g",
            udev_rules=None,
            data_dir=str(root),
            home_dir=str(root / "home"),
            nvidia_modprobe=str(root / "gpucloud-nvidia.conf"),
        )
        yield Env(node, layout, f"{groups}p", prefix, ca.private_key)


@pytest.fixture
async def ops(env: Env) -> AsyncIterator[SshNodeOperations]:
    async with SshNodeConnector(None, env.layout).session(env.target) as session:
        await session.prepare(NodePrep(env.platform_group, list(range(GPUS)),
                                       [env.node.trusted_ca_file.read_text().strip()]))  # fmt: skip
    made = env.operations()
    yield made
    await made.aclose()


def _key() -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_public_key().decode().strip()


@dataclass(frozen=True)
class Ran:
    status: int | None
    out: str
    err: str


async def _as_user(env: Env, user: str, key: asyncssh.SSHKey, command: str,
                   cert: asyncssh.SSHCertificate | None = None) -> Ran:  # fmt: skip
    """Log in as `user`, as a customer would, and run `command` (asyncssh.PermissionDenied if
    the login is refused)."""
    node = env.node
    known = asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {node.host_key_public}\n")
    client_key: object = key if cert is None else (key, cert)
    async with asyncssh.connect(node.host, node.port, username=user, known_hosts=known,
                                client_keys=[client_key], agent_path=None, config=None,
                                connect_timeout=10) as conn:  # fmt: skip
        result = await conn.run(command)
    return Ran(result.exit_status, str(result.stdout).strip(), str(result.stderr).strip())


async def _refused(env: Env, user: str, key: asyncssh.SSHKey,
                   cert: asyncssh.SSHCertificate | None = None) -> bool:  # fmt: skip
    try:
        await _as_user(env, user, key, "true", cert)
    except asyncssh.PermissionDenied:
        return True
    return False


def _groups_of(user: str) -> set[str]:
    return set(subprocess.run(["id", "-nG", user], capture_output=True, text=True,
                              check=True).stdout.split())  # fmt: skip


def _exists(user: str) -> bool:
    return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0


async def test_an_account_logs_in_with_its_own_key_and_sees_its_gpus(
    env: Env, ops: SshNodeOperations
) -> None:
    user, (key, public) = env.name(11), _key()
    await ops.ensure_account(env.target, AccountSpec(user, [public], [3, 2]), 1)

    ran = await _as_user(env, user, key, "whoami; echo $CUDA_VISIBLE_DEVICES")
    assert ran.out.splitlines() == [user, "2,3"], ran
    # Login shells, and sh as well as bash, with an environment that did not inherit it.
    for shell in ("bash -lc", "sh -lc"):
        ran = await _as_user(env, user, key,
                             f"env -i HOME=\"$HOME\" {shell} 'echo $CUDA_VISIBLE_DEVICES'")  # fmt: skip
        assert ran.out == "2,3", (shell, ran)
    assert _groups_of(user) == {user, env.platform_group, f"{env.layout.gpu_group_prefix}2",
                                f"{env.layout.gpu_group_prefix}3"}  # fmt: skip

    home = Path(pwd.getpwnam(user).pw_dir)
    assert home.parent == Path(env.layout.home_dir)
    uid = pwd.getpwnam(user).pw_uid
    for path, mode in ((home, 0o700), (home / ".ssh", 0o700),
                       (home / ".ssh" / "authorized_keys", 0o600)):  # fmt: skip
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, mode), path
    assert (home / ".ssh" / "authorized_keys").read_text() == f"{public}\n"
    assert not await _refused(env, user, key)
    assert await _refused(env, user, _key()[0])  # a stranger's key
    assert await _refused(env, env.name(12), key)  # no such account


async def test_each_account_opens_only_its_own_gpu(env: Env, ops: SshNodeOperations) -> None:
    a, b = env.name(21), env.name(22)
    (key_a, public_a), (key_b, public_b) = _key(), _key()
    await ops.ensure_account(env.target, AccountSpec(a, [public_a], [0]), 1)
    await ops.ensure_account(env.target, AccountSpec(b, [public_b], [1]), 1)

    for user, key, own, other in ((a, key_a, 0, 1), (b, key_b, 1, 0)):
        ran = await _as_user(env, user, key, f"cat {env.device(own)} && echo opened")
        assert (ran.status, ran.out) == (0, "opened"), ran
        # Setting the variable does not help: the device's permissions say no.
        ran = await _as_user(env, user, key,
                             f"CUDA_VISIBLE_DEVICES={other} cat {env.device(other)}")  # fmt: skip
        assert ran.status == 1 and "Permission denied" in ran.err, ran
    ran = await _as_user(env, a, key_a, f"cat {env.node.root / 'home' / b}/.ssh/authorized_keys")
    assert ran.status == 1 and "Permission denied" in ran.err  # nor each other's homes


async def test_ensure_repeats_safely_and_follows_changes(env: Env, ops: SshNodeOperations) -> None:
    user, (key, public), (new_key, new_public) = env.name(31), _key(), _key()
    spec = AccountSpec(user, [public, f"{public} a comment"], [2, 3])
    await ops.ensure_account(env.target, spec, 1)
    home = Path(pwd.getpwnam(user).pw_dir)
    files = [home / ".ssh" / "authorized_keys", home / ".bashrc", home / ".profile"]
    written = {path: path.stat().st_mtime_ns for path in files}
    await ops.ensure_account(env.target, spec, 1)
    assert {path: path.stat().st_mtime_ns for path in files} == written  # nothing rewritten
    assert files[0].read_text() == f"{public}\n"  # the same key once, without its comment
    temp = (".bashrc.", ".profile.", "authorized_keys.")  # mktemp's names beside each file
    assert not [p for p in home.rglob("*") if p.name.startswith(temp)]

    await ops.ensure_account(env.target, AccountSpec(user, [new_public], [1]), 1)
    assert await _refused(env, user, key)
    ran = await _as_user(env, user, new_key, "echo $CUDA_VISIBLE_DEVICES; id -nG")
    assert ran.out.splitlines()[0] == "1"
    gpu_groups = {g for g in ran.out.split() if g.startswith(env.layout.gpu_group_prefix)}
    assert gpu_groups == {f"{env.layout.gpu_group_prefix}1"}  # GPUs 2 and 3 revoked
    ran = await _as_user(env, user, new_key, f"cat {env.device(2)}")
    assert "Permission denied" in ran.err
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith("export CUDA_VISIBLE_DEVICES=1  # managed by gpucloud\n")
    assert bashrc.count("CUDA_VISIBLE_DEVICES") == 1
    assert bashrc.endswith(Path("/etc/skel/.bashrc").read_text())  # the rest is untouched
    assert await ops.accounts(env.target) == [AccountState(user, (1,))]


async def test_a_platform_certificate_logs_in_as_the_account_it_names(
    env: Env, ops: SshNodeOperations
) -> None:
    a, b = env.name(41), env.name(42)
    await ops.ensure_account(env.target, AccountSpec(a, [], [0]), 1)  # no keys: certificates only
    await ops.ensure_account(env.target, AccountSpec(b, [], [1]), 1)
    key, _ = _key()

    def certificate(principal: str) -> asyncssh.SSHCertificate:
        request = CertificateRequest.starting(datetime.now(UTC), [principal], f"terminal:{a}")
        line = SIGNER.sign_user_certificate(env.ca_private_key,
                                            key.export_public_key().decode(), request, 1)  # fmt: skip
        return asyncssh.import_certificate(line)

    ran = await _as_user(env, a, key, "whoami; echo $CUDA_VISIBLE_DEVICES", certificate(a))
    assert ran.out.splitlines() == [a, "0"]
    assert await _refused(env, b, key, certificate(a))  # it names a, not b
    assert await _refused(env, a, key)  # the key alone is not enough


async def _start_sleeper(env: Env, user: str, key: asyncssh.SSHKey) -> int:
    ran = await _as_user(env, user, key,
                         "setsid nohup sleep 300 </dev/null >/dev/null 2>&1 & echo $!")  # fmt: skip
    return int(ran.out)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead: this machine's init may never reap it


@pytest.mark.parametrize("keep_home", [False, True])
async def test_remove_ends_processes_and_the_user(env: Env, ops: SshNodeOperations,
                                                  keep_home: bool) -> None:  # fmt: skip
    user, (key, public) = env.name(51), _key()
    await ops.ensure_account(env.target, AccountSpec(user, [public], [2]), 1)
    home = Path(pwd.getpwnam(user).pw_dir)
    sleeper = await _start_sleeper(env, user, key)
    assert _alive(sleeper)

    await ops.remove_account(env.target, user, 1, keep_home=keep_home)
    assert not _alive(sleeper)
    assert not _exists(user)
    assert user not in {g.gr_name for g in grp.getgrall()}  # nor its own group
    assert all(user not in g.gr_mem for g in grp.getgrall())  # nor any membership
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        await _as_user(env, user, key, "true")
    if keep_home:
        info = home.stat()  # kept, and closed to whoever gets the uid next
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)
        assert (home / ".ssh" / "authorized_keys").exists()
    else:
        assert not home.exists()
    await ops.remove_account(env.target, user, 1, keep_home=keep_home)  # gone already: fine
    assert await ops.accounts(env.target) == []


async def test_accounts_lists_the_platform_users_and_their_gpus(
    env: Env, ops: SshNodeOperations
) -> None:
    specs = [AccountSpec(env.name(61), [], [0]), AccountSpec(env.name(62), [], [2, 1]),
             AccountSpec(env.name(63), [], [])]  # fmt: skip
    for spec in specs:
        await ops.ensure_account(env.target, spec, 1)
    # Users the prefix does not make an account name of are not ours to list.
    subprocess.run(["useradd", "-M", "-G", f"{env.layout.gpu_group_prefix}3",
                    f"{env.prefix}x1"], check=True)  # fmt: skip
    assert await ops.accounts(env.target) == [
        AccountState(env.name(61), (0,)), AccountState(env.name(62), (1, 2)),
        AccountState(env.name(63), ()),
    ]  # fmt: skip


async def test_names_not_ours_and_failed_scripts(env: Env, ops: SshNodeOperations) -> None:
    for name in ("root", f"{env.prefix}x1", f"{env.prefix}1;reboot"):
        with pytest.raises(NodeCommandFailed) as refused:
            await ops.remove_account(env.target, name, 1, keep_home=False)
        assert "not a platform account name" in str(refused.value)
    assert _exists("root")
    # GPU 7 was never prepared: its group is missing, and the script says so.
    with pytest.raises(NodeCommandFailed) as failed:
        await ops.ensure_account(env.target, AccountSpec(env.name(71), [], [7]), 1)
    message = str(failed.value)
    assert failed.value.code is ReasonCode.COMMAND_FAILED
    assert f"group {env.layout.gpu_group_prefix}7 is missing: prepare the node first" in message
    assert "Traceback" not in message and "\n" not in message and len(message) <= 300
    assert not _exists(env.name(71))


async def test_one_connection_per_node_within_the_limit(
    env: Env, ops: SshNodeOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 3
    pool = env.operations(per_node_limit=limit, idle_seconds=0)
    dialed: list[object] = []
    original_connect = SshDialer.connect

    async def counting_connect(self: SshDialer, *args: object, **kwargs: object) -> object:
        made = await original_connect(self, *args, **kwargs)  # type: ignore[arg-type]
        dialed.append(made[0])
        return made

    running = peak = 0
    full = asyncio.Event()  # the first `limit` commands wait for each other: proof they overlap
    original_run = run_command  # what operations.py calls, replaced below

    async def counting_run(conn: object, command: str, **kwargs: object) -> object:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            if running >= limit:
                full.set()
            await full.wait()
            return await original_run(conn, command, **kwargs)  # type: ignore[arg-type]
        finally:
            running -= 1

    monkeypatch.setattr(SshDialer, "connect", counting_connect)
    monkeypatch.setattr(operations, "run_command", counting_run)
    specs = [AccountSpec(env.name(100 + i), [], [i % GPUS]) for i in range(10)]
    await asyncio.gather(*(pool.ensure_account(env.target, spec, 1) for spec in specs))
    assert (len(dialed), peak) == (1, limit)

    # Idle: closed after idle_seconds (0 here), and dialled again when needed.
    first = dialed[0]
    assert isinstance(first, asyncssh.SSHClientConnection)
    await asyncio.wait_for(first.wait_closed(), 5)
    listed = await pool.accounts(env.target)
    assert [s.username for s in listed] == [s.username for s in specs]
    assert len(dialed) == 2

    # A connection the node dropped is replaced, and the command still runs.
    pool = env.operations()
    await pool.accounts(env.target)
    for pid in sshd_children(env.node):
        os.kill(pid, signal.SIGKILL)
    await pool.ensure_account(env.target, AccountSpec(env.name(120), [], [0]), 1)
    assert len(dialed) == 4 and _exists(env.name(120))
    await pool.aclose()
    assert dialed[-1].is_closed()  # type: ignore[attr-defined]


async def test_a_node_that_does_not_answer_as_itself(env: Env, ops: SshNodeOperations) -> None:
    nowhere = NodeTarget(8, "127.0.0.1", free_port(), env.node.user, env.target.login, None)
    with pytest.raises(NodeUnreachable):
        await ops.accounts(nowhere)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    impostor = NodeTarget(9, env.node.host, env.node.port, env.node.user, env.target.login,
                          other)  # fmt: skip
    with pytest.raises(HostKeyMismatch):
        await ops.accounts(impostor)

    # The node's sshd stops (listener and connections): the pooled connection is no help.
    await ops.accounts(env.target)
    listener = int((env.node.root / "sshd.pid").read_text())
    for pid in [*sshd_children(env.node), listener]:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(NodeUnreachable):
        await ops.ensure_account(env.target, AccountSpec(env.name(81), [], [0]), 1)


async def test_a_teardown_waits_for_an_ensure_in_flight_and_nothing_older_or_later_remakes_it(
    env: Env, ops: SshNodeOperations, tmp_path: Path
) -> None:
    user, log = env.name(90), tmp_path / "node-commands.log"
    slow_node_commands(env.node, log, 2.0)
    ensuring = asyncio.create_task(ops.ensure_account(env.target, AccountSpec(user, [], [0]), 1))
    while not calls(log, "useradd", user):  # the ensure holds the account's lock now
        await asyncio.sleep(0.01)
    await ops.remove_account(env.target, user, 2, keep_home=False)
    # The teardown waited on the node for the ensure to finish (which therefore succeeded:
    # had the teardown gone first, its tombstone would have refused it), then removed it all.
    await asyncio.wait_for(ensuring, 30)
    assert not _exists(user)
    # A late ensure of the superseded generation, or even a newer one, finds the tombstone.
    for fence in (1, 2, 3):
        with pytest.raises(FenceRefused) as refused:
            await ops.ensure_account(env.target, AccountSpec(user, [], [0]), fence)
        assert refused.value.code is ReasonCode.COMMAND_FAILED
    assert "torn down" in str(refused.value)
    # A teardown older than the node has seen is refused too; a repeat of the newest is fine.
    with pytest.raises(FenceRefused, match="older than 2"):
        await ops.remove_account(env.target, user, 1, keep_home=False)
    await ops.remove_account(env.target, user, 2, keep_home=False)
    assert not _exists(user) and len(calls(log, "useradd", user)) == 1


async def test_an_ensure_older_than_the_node_has_seen_changes_nothing(
    env: Env, ops: SshNodeOperations
) -> None:
    user = env.name(91)
    await ops.ensure_account(env.target, AccountSpec(user, [], [0]), 5)
    with pytest.raises(FenceRefused, match="older than 5"):
        await ops.ensure_account(env.target, AccountSpec(user, [], [0, 1]), 4)
    assert f"{env.layout.gpu_group_prefix}1" not in _groups_of(user)  # not applied
    await ops.ensure_account(env.target, AccountSpec(user, [], [0, 1]), 5)  # the holder's repeat
    assert f"{env.layout.gpu_group_prefix}1" in _groups_of(user)
