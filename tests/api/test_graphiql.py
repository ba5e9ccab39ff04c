"""The GraphiQL page at GET /graphql: served whole by the app (no CDN, every asset pinned and
checked by integrity), and usable by a browser signed in with the session cookie."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gpucloud.graphiql_assets import STATIC_DIR, VENDORED
from infra.settings import Settings
from tests.support.identity import CREATE_TOKEN, PASSWORD, SIGN_UP, body, unique_email

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"
HARNESS = REPO / "tests" / "support" / "graphiql_bootstrap.js"
BASE = "http://testserver"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class References(HTMLParser):
    """Every element of the page with the attributes that load something."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True

    def urls(self) -> list[tuple[str, str, dict[str, str]]]:
        return [
            (tag, attrs[key], attrs)
            for tag, attrs in self.elements
            for key in ("src", "href")
            if key in attrs
        ]


def parse(html: str) -> References:
    found = References()
    found.feed(html)
    return found


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


async def page_of(client: AsyncClient) -> tuple[Any, References]:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200, response.text
    return response, parse(response.text)


def bootstrap_tag(page: References) -> dict[str, str]:
    scripts = [attrs for tag, attrs in page.elements if tag == "script"]
    return scripts[-1]  # the page's own script runs last, after the libraries it starts


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


# --- the page and its assets -----------------------------------------------------------------


async def test_the_page_and_every_asset_it_references_come_from_the_app(client) -> None:
    response, page = await page_of(client)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "://" not in response.text  # no absolute URL at all: nothing to reach off-origin
    assert not page.inline_script  # the CSP below would refuse one
    csp = dict(
        d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'"

    # An empty inline icon, so the browser asks for no /favicon.ico; nothing else that is not
    # a stylesheet or a script.
    icons = [u for tag, u, attrs in page.urls() if tag == "link" and attrs["rel"] == "icon"]
    assert icons == ["data:,"]
    references = [(tag, u, attrs) for tag, u, attrs in page.urls() if attrs.get("rel") != "icon"]
    assert {tag for tag, _, _ in references} == {"script", "link"}
    served_names = set()
    for tag, url, attrs in references:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/graphiql/"), url
        assert tag == "script" or attrs["rel"] == "stylesheet"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        suffix = Path(parts.path).suffix
        assert asset.headers["content-type"] == MEDIA_TYPES[suffix]
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert attrs["integrity"] == sri(asset.content), url
        assert "crossorigin" not in attrs  # same origin: no CORS mode needed for integrity
        served_names.add(Path(parts.path).name)
        if not any(v.name == Path(parts.path).name for v in VENDORED):
            assert b"://" not in asset.content  # our own files name no other origin either
    # Every script and style the page needs, nothing else.
    assert served_names == {
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "plugin-explorer.umd.js",
        "graphiql.min.css",
        "plugin-explorer.css",
        "graphiql-page.css",
        "graphiql-bootstrap.js",
    }
    # React and ReactDOM load before GraphiQL, the explorer after it, our bootstrap last.
    scripts = [Path(url).name for tag, url, _ in references if tag == "script"]
    assert scripts == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "plugin-explorer.umd.js",
        "graphiql-bootstrap.js",
    ]


async def test_assets_are_addressed_by_digest_and_compressed_on_request(client) -> None:
    _, page = await page_of(client)
    url = next(u for _, u, _ in page.urls() if u.endswith("/graphiql.min.js"))
    _, prefix, digest, name = url.split("/")
    plain = await client.get(url, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == (STATIC_DIR / name).read_bytes()
    zipped = await client.get(url, headers={"accept-encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    # CORS adds Origin to Vary; the encoding must be there too, for caches.
    assert "accept-encoding" in [v.strip().lower() for v in zipped.headers["vary"].split(",")]
    assert zipped.content == plain.content  # httpx decodes: the same bytes after gzip
    assert int(zipped.headers["content-length"]) < len(plain.content) // 3
    refused = await client.get(url, headers={"accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers and refused.content == plain.content
    again = await client.get(url, headers={"if-none-match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    # Another digest (an older or newer release) or an unknown file: 404, never other bytes.
    for wrong in (
        f"/{prefix}/{'0' * 16}/{name}",
        f"/{prefix}/{digest}/graphiql.js",
        f"/{prefix}/{digest}/..%2F..%2Fapp.py",
        f"/{prefix}/{digest}/LICENSE.react",
    ):
        missing = await client.get(wrong)
        assert missing.status_code == 404, wrong
        assert b"React" not in missing.content


async def test_with_graphiql_off_the_page_and_its_assets_answer_404(
    client, settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    _, page = await page_of(client)  # the URLs an enabled app would serve
    off = create_app(replace(settings, graphiql=False))
    async with (
        LifespanManager(off),
        AsyncClient(transport=ASGITransport(app=off), base_url=BASE) as c,
    ):
        response = await c.get("/graphql", headers={"accept": "text/html"})
        assert response.status_code == 404
        assert "graphiql" not in response.text.lower()
        for _, url, _ in page.urls():
            if url.startswith("/"):
                assert (await c.get(url)).status_code == 404, url
        # The API itself is unaffected.
        answered = await c.post("/graphql", json=body("{ __typename }"))
        assert answered.json() == {"data": {"__typename": "Query"}}


def test_vendored_files_are_the_pinned_packages_files() -> None:
    """gpucloud/static/graphiql/ holds byte-identical copies of files of the packages that
    package.json and package-lock.json pin, at the versions gpucloud.graphiql_assets names
    (`make graphiql-assets` copies them; `make test` installs node_modules)."""
    assert (NODE_MODULES / ".package-lock.json").exists(), "run `make node` first"
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]
    locked = json.loads((REPO / "package-lock.json").read_text())["packages"]
    for item in VENDORED:
        assert pinned[item.package] == item.version, item
        assert locked[f"node_modules/{item.package}"]["version"] == item.version, item
        installed = json.loads((NODE_MODULES / item.package / "package.json").read_text())
        assert installed["version"] == item.version, item
        copy = (STATIC_DIR / item.name).read_bytes()
        assert copy == item.source(NODE_MODULES).read_bytes(), (
            f"{item.name} differs: run make graphiql-assets"
        )
    # Nothing else lies there but our own two files.
    own = {"graphiql-page.css", "graphiql-bootstrap.js"}
    assert {p.name for p in STATIC_DIR.iterdir()} == {v.name for v in VENDORED} | own


# --- a browser signed in with the session cookie ---------------------------------------------


def browser_visible(set_cookie_headers: list[str]) -> str:
    """document.cookie after these Set-Cookie headers: the cookies that are not HttpOnly."""
    visible = []
    for header in set_cookie_headers:
        first, *attributes = [p.strip() for p in header.split(";")]
        if "httponly" not in {a.lower() for a in attributes}:
            visible.append(first)
    return "; ".join(visible)


def run_bootstrap(
    source: str, script: dict[str, str], cookie: str, operation: dict[str, Any]
) -> Any:
    """The served bootstrap, run by node as a browser runs it (see the harness)."""
    node = shutil.which("node")
    assert node is not None, "node is needed (make node installs the pinned clients with it)"
    # The DOM's dataset: data-csrf-cookie -> csrfCookie, for every data-* attribute the page set.
    dataset = {
        re.sub(r"-([a-z])", lambda m: m.group(1).upper(), k[5:]): v
        for k, v in script.items()
        if k.startswith("data-")
    }
    given = {
        "bootstrap": source,
        "dataset": dataset,
        "cookie": cookie,
        "href": f"{BASE}/graphql",
        "operation": operation,
    }
    done = subprocess.run(
        [node, str(HARNESS)],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_a_cookie_session_runs_a_mutation_with_the_pages_own_header_scheme(
    client, engine: AsyncEngine
) -> None:
    _, page = await page_of(client)
    script = bootstrap_tag(page)
    source = (await client.get(script["src"])).text

    # Sign up from the page: the response sets the session cookie (HttpOnly) and the CSRF one.
    email = unique_email("graphiql")
    signed = await client.post(
        "/graphql", json=body(SIGN_UP, {"email": email, "password": PASSWORD})
    )
    assert signed.json()["data"]["signUp"]["__typename"] == "SessionPayload"
    cookie = browser_visible(signed.headers.get_list("set-cookie"))

    from tests.api.test_sessions_and_csrf import token_vars

    operation = body(CREATE_TOKEN, token_vars("from-graphiql"))
    sent = run_bootstrap(source, script, cookie, operation)
    assert sent["rendered"] and sent["hasFetch"]
    # Queries and mutations over HTTP to this page's path; subscriptions over
    # graphql-transport-ws (GraphiQL's bundled graphql-ws client) at the same path.
    assert sent["options"]["url"] == f"{BASE}/graphql"
    assert sent["options"]["subscriptionUrl"] == "ws://testserver/graphql"
    [call] = sent["calls"]
    assert call["url"] == f"{BASE}/graphql"
    init = call["init"]
    assert init["credentials"] == "same-origin" and init["method"] == "POST"

    # What the browser sends for it: the init's headers and body, and (same origin, credentials
    # "same-origin") every cookie in its jar, the HttpOnly session cookie included.
    response = await client.post("/graphql", content=init["body"], headers=init["headers"])
    payload = response.json()["data"]["createApiToken"]
    assert payload["__typename"] == "CreateApiTokenPayload", response.json()
    assert payload["token"]["name"] == "from-graphiql"
    assert await count(engine, "api_tokens") == 1

    # The header is what let it through: with the CSRF cookie hidden from the page's script,
    # the page sends none, and the same mutation is refused and changes nothing.
    bare = run_bootstrap(source, script, "", operation)["calls"][0]["init"]
    assert set(bare["headers"]) == {"content-type"}
    refused = await client.post("/graphql", content=bare["body"], headers=bare["headers"])
    assert [e["extensions"]["code"] for e in refused.json()["errors"]] == ["CSRF_FAILED"]
    assert await count(engine, "api_tokens") == 1


async def test_the_page_names_the_secure_cookie_when_cookies_are_secure(
    settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    secure = create_app(replace(settings, cookie_secure=True))
    async with (
        LifespanManager(secure),
        AsyncClient(transport=ASGITransport(app=secure), base_url=BASE) as c,
    ):
        _, page = await page_of(c)
        script = bootstrap_tag(page)
        source = (await c.get(script["src"])).text
        # The name the app sets its readable CSRF cookie under, as the sign-up response shows.
        signed = await c.post(
            "/graphql", json=body(SIGN_UP, {"email": unique_email(), "password": PASSWORD})
        )
        csrf_token = signed.json()["data"]["signUp"]["csrfToken"]
        cookie = browser_visible(signed.headers.get_list("set-cookie"))
        assert cookie == f"{script['data-csrf-cookie']}={csrf_token}"
        sent = run_bootstrap(source, script, cookie, body("{ __typename }"))
        assert sent["calls"][0]["init"]["headers"][script["data-csrf-header"]] == csrf_token


@pytest.mark.parametrize("accept", ["application/json", ""])
async def test_get_without_html_accept_gets_no_page(client, accept: str) -> None:
    response = await client.get("/graphql", headers={"accept": accept})
    assert "graphiql" not in response.text.lower()
    assert response.status_code in (400, 404, 405)
