"""Headless Chromium driven over the DevTools protocol (the `websockets` client we already
use), for the few checks only a real browser can make: CSP, SRI, rendering, cookies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # console, exceptions, log entries, as sent

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if message.get("id") == call_id:
                assert "error" not in message, message
                return message.get("result", {})  # type: ignore[no-any-return]
            if message.get("method") in (
                "Runtime.consoleAPICalled",
                "Runtime.exceptionThrown",
                "Log.entryAdded",
            ):
                self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll until the expression is truthy; its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert loop.time() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Errors and warnings the page produced: CSP or SRI refusals, exceptions, errors."""
        found = []
        for event in self.events:
            params = event["params"]
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif event["method"] == "Log.entryAdded":
                if params["entry"]["level"] in ("error", "warning"):
                    found.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
            elif params["type"] in ("error", "warning", "assert"):
                found.append(json.dumps(params["args"])[:500])
        return found


@asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary is not None, "install chromium (apt-get install -y chromium)"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            port = await asyncio.to_thread(_devtools_port, proc)
            async with httpx.AsyncClient() as client:
                targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
            target = next(t for t in targets if t["type"] == "page")
            async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await page.call(f"{domain}.enable")
                yield page
        finally:
            # The whole group: renderer and helper processes outlive the browser's own and
            # would keep writing into the profile while it is being removed.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            await _group_gone(proc.pid)


async def _group_gone(pgid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"chromium's processes (group {pgid}) outlived SIGKILL")


def _devtools_port(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        found = re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            # Keep reading, or a chatty browser would block on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(found.group(1))
    raise AssertionError("chromium exited before listening")
