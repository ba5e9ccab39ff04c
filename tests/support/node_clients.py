"""Run the node scripts in tests/clients/ (the unmodified npm clients, from the repository's
node_modules, which `make node` installs from package-lock.json) as real processes."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any, Self

from tests.support.processes import REPO

CLIENTS = REPO / "tests" / "clients"


def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is not on PATH (the suite drives the npm clients with it)"
    assert (REPO / "node_modules" / "graphql-ws").is_dir(), "run `make node` first"
    return found


class NodeClient:
    """A script that writes one JSON event per line to stdout and reads commands from stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, script: str, *args: str, stderr: Path) -> Self:
        proc = await asyncio.create_subprocess_exec(
            node(),
            str(CLIENTS / script),
            *args,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr.open("wb"),
        )
        return cls(proc, stderr)

    async def expect(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """The next event named `event`; those before it are kept in `events` too."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert line, f"the script ended before {event!r}:\n{self.stderr.read_text()}"
            found: dict[str, Any] = json.loads(line)
            self.events.append(found)
            if found["event"] == event:
                return found

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 30) -> int:
        """Waits for the script to exit (killed if it does not) and returns its exit status."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise


async def run_node(script: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Runs a script to its end: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(CLIENTS / script),
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return -1, out.decode(), err.decode()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
