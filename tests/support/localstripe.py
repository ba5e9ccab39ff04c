"""localstripe, the Stripe stand-in, as a subprocess on loopback, and a buyer to drive it.

`running_localstripe()` starts `tests.support.localstripe_server` (127.0.0.1 only, no pickle
on disk) on a free port and stops it on exit; the session fixture `localstripe` wraps it.
`LocalStripe.pay` / `decline` play the buyer's side that a browser and Stripe.js would.

Known limits of localstripe 1.15 (what tests cannot ask of it): no Checkout Sessions; refunds
are `succeeded` at once and send no event; the only payment events it sends are
`payment_intent.succeeded` and `payment_intent.payment_failed`, about 1 s after the fact;
it ignores `Idempotency-Key`; list endpoints other than events refuse `created` filters.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.support.processes import REPO, free_port

API_KEY = "sk_test_gpucloud"  # localstripe takes any key that starts with sk_
GOOD_CARD = "4242424242424242"
# localstripe declines the charge (confirm answers 402 card_declined) for this one. Its other
# "declined" numbers, such as 4000000000000002, are only declined when attached to a customer.
DECLINED_CARD = "4000000000000341"


class LocalStripe:
    def __init__(self, url: str, api_key: str = API_KEY) -> None:
        self.url = url
        self.api_key = api_key

    def configure_webhook(
        self, url: str, secret: str, *, webhook_id: str = "gpucloud",
        events: list[str] | None = None,
    ) -> None:  # fmt: skip
        """Send events to `url`, signed with `secret`. Registering `webhook_id` again replaces
        it; localstripe has no way to remove one, and flush() keeps them."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        httpx.post(f"{self.url}/_config/webhooks/{webhook_id}", json=body).raise_for_status()

    def flush(self) -> None:
        """Forget every object (not the webhooks)."""
        httpx.delete(f"{self.url}/_config/data").raise_for_status()

    async def api(
        self, method: str, path: str, data: dict[str, str] | None = None
    ) -> httpx.Response:
        """A raw call to the API, as a buyer's browser or a test would make it."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers) as client:
            return await client.request(method, path, data=data)

    async def pay(self, intent_id: str) -> dict[str, Any]:
        """Attach a good card to the PaymentIntent and confirm it: it succeeds at once."""
        response = await self._confirm_with(intent_id, GOOD_CARD)
        response.raise_for_status()
        return dict(response.json())

    async def decline(self, intent_id: str) -> dict[str, Any]:
        """Attach a card that is declined and confirm: the intent goes back to
        `requires_payment_method` with a `last_payment_error`. Returns the intent."""
        response = await self._confirm_with(intent_id, DECLINED_CARD)
        assert response.status_code == 402, response.text
        return dict((await self.api("GET", f"/v1/payment_intents/{intent_id}")).json())

    async def _confirm_with(self, intent_id: str, number: str) -> httpx.Response:
        # localstripe's PaymentMethod wants exactly these four card fields.
        card = {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"}
        method = await self.api(
            "POST", "/v1/payment_methods",
            {"type": "card", **{f"card[{k}]": v for k, v in card.items()}},
        )  # fmt: skip
        method.raise_for_status()
        attached = await self.api(
            "POST", f"/v1/payment_intents/{intent_id}", {"payment_method": method.json()["id"]}
        )
        attached.raise_for_status()
        return await self.api("POST", f"/v1/payment_intents/{intent_id}/confirm")


@contextmanager
def running_localstripe(timeout: float = 30) -> Iterator[LocalStripe]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.localstripe_server", "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            running = LocalStripe(f"http://127.0.0.1:{port}")
            _wait_until_answering(running, proc, log, timeout)
            yield running
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_until_answering(
    running: LocalStripe, proc: subprocess.Popen[bytes], log: Any, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {running.api_key}"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(
                f"localstripe exited early:\n{log.read().decode(errors='replace')}"
            )
        try:
            if httpx.get(f"{running.url}/v1/events", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"localstripe did not answer within {timeout} s")


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    with running_localstripe() as running:
        yield running


__all__ = ["LocalStripe", "localstripe", "running_localstripe"]
