"""`gpucloud dev`: run the whole stack locally, with embedded Postgres/Redis unless URLs are given.

Every child runs in its own process group, so a Ctrl-C in the terminal reaches only this
supervisor, which then stops the children and servers in order and leaves nothing running.
"""

import contextlib
import fcntl
import getpass
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO

from infra.crypto.local_kms import KeyFileError, LocalKms
from infra.embedded import EmbeddedPostgres, EmbeddedRedis, checked_state_dir

Command = list[str]
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SERVE_GRACE_S = 10.0  # GPUCLOUD_SHUTDOWN_GRACE_SECONDS' default


def _stop_grace(env: dict[str, str]) -> float:
    """How long children get after SIGTERM before SIGKILL: `serve` lets its sockets close for
    its shutdown grace, then gives requests in flight as long again (uvicorn's own timeout)."""
    try:
        serve_grace = float(env.get("GPUCLOUD_SHUTDOWN_GRACE_SECONDS", _SERVE_GRACE_S))
    except ValueError:  # `serve` refuses such a value at start: nothing to wait for
        serve_grace = _SERVE_GRACE_S
    return 2 * serve_grace + 5


def dev_commands() -> tuple[list[Command], dict[str, Command]]:
    """Setup steps, run one after another to completion, then the long-running services."""
    setup = [_gpucloud("migrate"), _gpucloud("sku", "seed-demo")]
    services = {"serve": _gpucloud("serve"), "worker": _gpucloud("worker")}
    return setup, services


def dev_key_file(env: dict[str, str], state_dir: Path) -> Path:
    """Point GPUCLOUD_KMS_KEY_FILE at a key file in the state dir (made on the first run)
    unless it is set; either way the file must load."""
    if not env.get("GPUCLOUD_KMS_KEY_FILE"):
        path = state_dir / "kms-keys.json"
        if not path.exists():
            LocalKms.create(path)
        env["GPUCLOUD_KMS_KEY_FILE"] = str(path)
    return LocalKms(env["GPUCLOUD_KMS_KEY_FILE"]).path


def _gpucloud(*args: str) -> Command:
    return [sys.executable, "-m", "gpucloud", *args]


class _Shutdown(BaseException):
    """Raised by the SIGINT/SIGTERM handler, so even a blocking start-up step unwinds at once."""


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signal.Signals(signum).name)


def run_dev(argv_env: Mapping[str, str] | None = None) -> int:
    """Run the dev stack until SIGINT/SIGTERM or until a child exits; return the exit code."""
    env = dict(os.environ if argv_env is None else argv_env)
    env.setdefault("GPUCLOUD_HOST", "127.0.0.1")
    env.setdefault("GPUCLOUD_PORT", "8000")
    # Local http: a browser would drop Secure cookies, so sign-in would not stick.
    env.setdefault("GPUCLOUD_COOKIE_SECURE", "false")
    try:
        default_dir = f"/var/tmp/gpucloud-{getpass.getuser()}"  # noqa: S108 - checked below
        state_dir = checked_state_dir(Path(env.get("GPUCLOUD_STATE_DIR") or default_dir))
    except ValueError as exc:
        _say(str(exc))
        return 2
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # /var/tmp is shared: refuse a dir that another user created there before us.
    if state_dir.stat().st_uid != os.geteuid():
        _say(f"state dir {state_dir} belongs to another user; set GPUCLOUD_STATE_DIR")
        return 2
    lock = _lock(state_dir)
    if lock is None:
        _say(f"another gpucloud dev is already running with state dir {state_dir}")
        return 1

    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    children: dict[str, subprocess.Popen[bytes]] = {}
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    code = 1  # stays 1 if an unexpected exception escapes
    with lock:
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, _raise_shutdown)
            code = _run(env, state_dir, servers, children)
        except _Shutdown as stop:
            _say(f"{stop} received, shutting down")
            code = 0
        finally:
            # Ignore further signals: the cleanup is bounded and must not be cut short.
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            clean = _stop_children(children, _stop_grace(env))
            clean = _stop_servers(servers) and clean
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code if code or clean else 1


def _run(
    env: dict[str, str],
    state_dir: Path,
    servers: list[EmbeddedPostgres | EmbeddedRedis],
    children: dict[str, subprocess.Popen[bytes]],
) -> int:
    try:
        _say(f"KMS key file: {dev_key_file(env, state_dir)}")
    except KeyFileError as exc:
        _say(f"GPUCLOUD_KMS_KEY_FILE: {exc}")
        return 2
    # Servers are registered before start() so that a half-finished start is stopped too.
    if not env.get("DATABASE_URL"):
        postgres = EmbeddedPostgres(state_dir)
        servers.append(postgres)
        env["DATABASE_URL"] = postgres.start()
        _say(f"embedded Postgres: {env['DATABASE_URL']}")
    if not env.get("REDIS_URL"):
        redis = EmbeddedRedis(state_dir, port=int(env.get("GPUCLOUD_DEV_REDIS_PORT", "6390")))
        servers.append(redis)
        env["REDIS_URL"] = redis.start()
        _say(f"embedded Redis: {env['REDIS_URL']}")

    setup, services = dev_commands()
    for command in setup:
        children["setup"] = proc = _spawn(command, env)
        if returncode := proc.wait():
            _say(f"{' '.join(command[2:])} failed with exit code {returncode}")
            return _failure(returncode)
        del children["setup"]
    for name, command in services.items():
        children[name] = _spawn(command, env)
    _say(f"GraphiQL: http://{env['GPUCLOUD_HOST']}:{env['GPUCLOUD_PORT']}/graphql")

    while True:  # a service exiting on its own, even with 0, ends the dev run
        for name, proc in children.items():
            if (exited := proc.poll()) is not None:
                _say(f"{name} exited with code {exited}, stopping everything")
                return _failure(exited)
        time.sleep(0.2)


def _spawn(command: Command, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own argv list, no shell
        command, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )


def _stop_children(children: dict[str, subprocess.Popen[bytes]], grace: float) -> bool:
    """SIGTERM every child's process group, SIGKILL what is left after the grace period.

    Returns False if a child had to be killed or failed while stopping.
    """
    for proc in children.values():
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    clean = True
    for name, proc in children.items():
        try:
            returncode = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} ignored SIGTERM for {grace:.0f} s, killing it")
            _signal_group(proc, signal.SIGKILL)
            returncode = proc.wait()
        # Grandchildren outlive their group leader unless killed too.
        _signal_group(proc, signal.SIGKILL)
        clean = clean and returncode in (0, -signal.SIGTERM)
    return clean


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the pid is the group id: start_new_session=True


def _stop_servers(servers: list[EmbeddedPostgres | EmbeddedRedis]) -> bool:
    clean = True
    for server in reversed(servers):  # Redis before Postgres, the reverse of start order
        try:
            server.stop()
        except Exception as exc:  # keep going: the other server must still be stopped
            _say(f"could not stop {type(server).__name__}: {exc}")
            clean = False
    return clean


def _lock(state_dir: Path) -> IO[str] | None:
    """An open, exclusively locked state_dir/dev.lock, or None if another runner holds it.

    A second runner on the same state dir would take the first one's servers for leftovers of a
    crash and stop them. The kernel drops the lock when we exit, however we exit.
    """
    lock = open(state_dir / "dev.lock", "w")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _failure(returncode: int) -> int:
    # Negative codes mean "killed by a signal"; report them as a plain failure.
    return returncode if returncode > 0 else 1


def _say(message: str) -> None:
    print(f"dev: {message}", flush=True)
