"""GraphiQL in a real headless Chromium against a running `gpucloud serve`: the page renders
under its CSP with every asset from the app, a user signs up and runs a mutation from the
page's own editor (cookie session + the page's CSRF header), and subscribes over
graphql-transport-ws signed in by the same cookie. Opt-in: `make test-browser`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.chromium import Page, chromium
from tests.support.identity import PASSWORD, unique_email
from tests.support.processes import gpucloud
from tests.support.stack import Stack, served

RESULT = """(() => { const el = document.querySelector('.result-window .CodeMirror');
  return el && el.CodeMirror ? el.CodeMirror.getValue() : ''; })()"""
RUN = "document.querySelector('.graphiql-execute-button').click(), true"


@pytest.fixture(scope="module")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with served(service_env, tmp_path_factory.mktemp("browser"), "browser") as found:
        yield found


async def run_in_graphiql(page: Page, base: str, operation: str) -> str:
    """Open GraphiQL with the operation in its editor (a shared link), press Run, and return
    what the result pane shows."""
    await page.call("Page.navigate", url=f"{base}/graphql?q={quote(operation)}")
    await page.wait_for("!!document.querySelector('.graphiql-execute-button')")
    await page.wait_for(RUN)
    return str(await page.wait_for(RESULT))


async def test_graphiql_signs_up_and_runs_a_mutation_in_chromium(
    stack: Stack, tmp_path: Path
) -> None:
    base = stack.http[0]
    email = unique_email("browser")
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    async with chromium() as page:
        signed = await run_in_graphiql(
            page,
            base,
            f'mutation {{ signUp(input: {{email: "{email}", password: "{PASSWORD}"}}) '
            "{ __typename } }",
        )
        assert '"SessionPayload"' in signed, signed
        made = await run_in_graphiql(
            page,
            base,
            f'mutation {{ createApiToken(input: {{name: "from-chromium", scopes: [ACCOUNT_READ], '
            f'expiresAt: "{expires}"}}) {{ __typename ... on CreateApiTokenPayload '
            "{ token { name } } ... on AccountError { code } } }",
        )
        assert '"CreateApiTokenPayload"' in made and '"from-chromium"' in made, made
        viewer = await run_in_graphiql(page, base, "{ viewer { email } }")
        assert email.lower() in viewer.lower(), viewer
        # The schema loaded (introspection ran through the page's fetcher), and nothing was
        # refused: no CSP or integrity violation, no script error.
        assert await page.evaluate("!!document.querySelector('.graphiql-container')")
        await page.screenshot(tmp_path / "graphiql.png")
        assert page.problems() == []


async def test_graphiql_subscribes_over_graphql_transport_ws_with_the_cookie(stack: Stack) -> None:
    base = stack.http[0]
    async with chromium() as page:
        await run_in_graphiql(
            page,
            base,
            f'mutation {{ signUp(input: {{email: "{unique_email("sub")}", password: "{PASSWORD}"}}) '
            "{ __typename } }",
        )
        operation = "subscription { catalogChanged { kind sku { name } } }"
        await page.call("Page.navigate", url=f"{base}/graphql?q={quote(operation)}")
        await page.wait_for("!!document.querySelector('.graphiql-execute-button')")
        await page.wait_for(RUN)
        # The browser cannot say when the server has registered the subscription: add SKUs
        # until one arrives, then check that it is one of ours.
        shown = ""
        for attempt in range(20):
            added = await asyncio.to_thread(
                gpucloud,
                "sku",
                "add",
                "--name",
                f"browser-{attempt}",
                "--gpu-model",
                "h200",
                "--gpu-count",
                "1",
                "--vcpus",
                "8",
                "--ram-gib",
                "64",
                "--disk-gib",
                "500",
                "--region",
                "eu-west",
                "--price-minor",
                "300",
                "--currency",
                "USD",
                env=stack.env,
            )
            assert added.returncode == 0, added.stderr
            with contextlib.suppress(AssertionError):
                shown = str(await page.wait_for(RESULT, timeout=3))
            if shown:
                break
        assert '"ADDED"' in shown and '"browser-' in shown, shown
        assert page.problems() == []
