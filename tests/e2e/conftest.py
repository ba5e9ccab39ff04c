"""Run `gpucloud dev` (or a stand-in) as a real process tree and find anything it leaves behind."""

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from infra.embedded import alive
from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DevRun:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    http_port: int
    redis_port: int
    log: Path
    descendants: dict[int, psutil.Process] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, f"dev exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.output()}"
            time.sleep(0.1)

    def remember_descendants(self) -> None:
        """Record the process tree now, so its members can be checked after shutdown."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.descendants[child.pid] = child
        except psutil.NoSuchProcess:
            pass

    def survivors(self) -> list[psutil.Process]:
        """Live processes of this run: former descendants, or naming its state dir or ports."""
        ports = (self.http_port, self.redis_port)
        port_re = re.compile(rf":({'|'.join(map(str, ports))})\b")
        found = {p.pid: p for p in self.descendants.values() if alive(p)}
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.pid != os.getpid() and (
                str(self.state_dir) in cmdline or port_re.search(cmdline)
            ):
                found[proc.pid] = proc
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid:
                found[conn.pid] = psutil.Process(conn.pid)
        return [p for p in found.values() if alive(p)]

    def describe(self, procs: list[psutil.Process]) -> str:
        lines = []
        for proc in procs:
            try:
                lines.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            except psutil.Error:
                lines.append(f"{proc.pid} (gone)")
        return "\n".join(lines)


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Callable[[list[str]], DevRun]]:
    """Start a dev runner with no DATABASE_URL/REDIS_URL; whatever happens, kill what it left."""
    runs: list[DevRun] = []

    def start(command: list[str]) -> DevRun:
        state_dir = tmp_path / f"state{len(runs)}"
        http_port, redis_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {
            "GPUCLOUD_STATE_DIR": str(state_dir),
            "GPUCLOUD_HOST": "127.0.0.1",
            "GPUCLOUD_PORT": str(http_port),
            "GPUCLOUD_DEV_REDIS_PORT": str(redis_port),
            "PYTHONUNBUFFERED": "1",
        }
        log = tmp_path / f"dev{len(runs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        runs.append(DevRun(proc, state_dir.resolve(), http_port, redis_port, log))
        return runs[-1]

    yield start

    for run in runs:  # a failed test must not leave servers behind in CI
        run.remember_descendants()
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(30)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
        for proc in run.survivors():
            with contextlib.suppress(psutil.Error):
                proc.kill()
