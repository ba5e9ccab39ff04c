"""Sign in with OIDC through the real app: /auth/oidc/login and /auth/oidc/callback against a
real OIDC provider on loopback.

The app runs in-process (ASGI); the provider runs on a socket. A test plays the browser: it
follows the app's redirect to the provider's /authorize with a real HTTP client, reads the
code and state from the provider's redirect (to public_url, where nothing listens) and takes
them to the app's callback itself, with the same cookie jar that started the login.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.identity import admin
from domain.identity.accounts import AccountStatus
from domain.identity.principal import SYSTEM
from gpucloud.auth import CookieNames
from gpucloud.oidc_routes import BINDER_COOKIE
from infra.settings import Settings
from tests.support.identity import LOG_IN, PASSWORD, Accounts, body, unique_email
from tests.support.oidc_provider import OidcProvider, running_provider

VIEWER = "{ viewer { id email hasPassword status } }"
TRACE_MARKERS = ("Traceback", 'File "', ".py", "raise ", "Error(")


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_provider() as running:
        yield running


@pytest.fixture
def oidc_settings(settings: Settings, provider: OidcProvider) -> Settings:
    return dataclasses.replace(
        settings,
        oidc_issuer=provider.issuer,
        oidc_client_id=provider.client_id,
        oidc_client_secret=provider.client_secret,
    )


@pytest.fixture
async def oidc_app(oidc_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Any]:
    """The real app with OIDC configured; `engine` truncated the tables first."""
    from gpucloud.app import create_app

    application = create_app(oidc_settings)
    async with LifespanManager(application):
        yield application


class Browser:
    """One browser: a cookie jar on the app, and a plain client to visit the provider."""

    def __init__(self, app_client: AsyncClient, provider_client: httpx.AsyncClient,
                 settings: Settings) -> None:  # fmt: skip
        self.app, self.web, self.settings = app_client, provider_client, settings
        self.cookies = CookieNames.for_settings(settings)

    async def start(self, return_to: str | None = "/dashboard") -> httpx.Response:
        params = {} if return_to is None else {"returnTo": return_to}
        response = await self.app.get("/auth/oidc/login", params=params)
        assert response.status_code == 302, response.text
        return response

    async def authorize(self, authorization_url: str) -> tuple[str, str]:
        """At the provider: it signs its user in at once and redirects to our callback."""
        response = await self.web.get(authorization_url)
        assert response.status_code == 302, response.text
        location = httpx.URL(response.headers["location"])
        callback = f"{self.settings.public_url}/auth/oidc/callback"
        assert str(location.copy_with(query=None)) == callback
        return location.params["code"], location.params["state"]

    async def callback(self, code: str, state: str) -> httpx.Response:
        return await self.app.get("/auth/oidc/callback", params={"code": code, "state": state})

    async def to_provider(self, return_to: str | None = "/dashboard") -> tuple[str, str]:
        """Start a login and come back from the provider; the callback is not called yet."""
        started = await self.start(return_to)
        return await self.authorize(started.headers["location"])

    async def sign_in(self, return_to: str | None = "/dashboard") -> httpx.Response:
        code, state = await self.to_provider(return_to)
        return await self.callback(code, state)

    async def viewer(self) -> dict[str, Any]:
        response = await self.app.post("/graphql", json={"query": VIEWER})
        assert "Traceback" not in response.text
        return response.json()  # type: ignore[no-any-return]

    def session_cookie(self) -> str | None:
        return self.app.cookies.get(self.cookies.session)


@pytest.fixture
async def browsers(oidc_app: Any, oidc_settings: Settings) -> AsyncIterator[Any]:
    """Makes browsers; each has its own cookie jar (and so its own binder cookie)."""
    async with AsyncExitStack() as stack:

        async def make() -> Browser:
            app_client = await stack.enter_async_context(
                AsyncClient(transport=ASGITransport(app=oidc_app), base_url="http://testserver")
            )
            web = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=False))
            return Browser(app_client, web, oidc_settings)

        yield make


@pytest.fixture
async def browser(browsers: Any) -> Browser:
    return await browsers()  # type: ignore[no-any-return]


@pytest.fixture
async def accounts(oidc_app: Any) -> AsyncIterator[Accounts]:
    async with AsyncExitStack() as stack:
        yield Accounts(oidc_app, stack)


# -- helpers --------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """A JSON error of exactly {"error": {"code", "message"}}, and nothing of a stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    for marker in TRACE_MARKERS:
        assert marker not in response.text, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def set_cookie_names(response: httpx.Response) -> list[str]:
    return [h.split("=", 1)[0].strip() for h in response.headers.get_list("set-cookie")]


def assert_no_session_set(response: httpx.Response, browser: Browser) -> None:
    names = set_cookie_names(response)
    assert browser.cookies.session not in names
    assert browser.cookies.csrf not in names
    assert browser.session_cookie() is None


async def audit_rows(engine: AsyncEngine, action: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT action, actor_user_id, target_type, target_id, after FROM audit_events"
    params: dict[str, Any] = {}
    if action is not None:
        sql += " WHERE action = :action"
        params["action"] = action
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql + " ORDER BY id"), params)).mappings().all()
    return [dict(row) for row in rows]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def user_count(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM users"))


async def identities(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT user_id, issuer, subject FROM user_identities ORDER BY id")
        )
        return [dict(row) for row in rows.mappings().all()]


def b64url_sha256(value: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).rstrip(b"=").decode()


# -- the happy path -------------------------------------------------------------------------


async def test_a_new_user_gets_an_account_without_password_and_a_working_session(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine
) -> None:
    provider.user.sub = "new-user"
    provider.user.email = "Grace.Hopper@Example.com"

    response = await browser.sign_in("/jobs?tab=running")

    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/jobs?tab=running"
    names = set_cookie_names(response)
    assert browser.cookies.session in names and browser.cookies.csrf in names
    assert browser.session_cookie()
    assert BINDER_COOKIE not in browser.app.cookies  # the binder is spent

    result = await browser.viewer()
    assert "errors" not in result, result
    viewer = result["data"]["viewer"]
    assert viewer["email"] == "grace.hopper@example.com"  # normalised, as sign-up does
    assert viewer["hasPassword"] is False
    assert viewer["status"] == "ACTIVE"

    assert await user_count(engine) == 1
    user_id = await scalar(engine, "SELECT id FROM users")
    assert await scalar(engine, "SELECT password_hash FROM users") is None
    assert await identities(engine) == [
        {"user_id": user_id, "issuer": provider.issuer, "subject": "new-user"}
    ]

    signup = await audit_rows(engine, "auth.signup")
    assert len(signup) == 1
    assert signup[0]["after"]["method"] == "oidc"
    assert signup[0]["target_id"] == str(user_id)
    linked = await audit_rows(engine, "auth.oidc.linked")
    assert len(linked) == 1
    assert linked[0]["after"] == {"issuer": provider.issuer, "subject": "new-user"}
    assert linked[0]["target_id"] == str(user_id)
    succeeded = await audit_rows(engine, "auth.login.succeeded")
    assert len(succeeded) == 1
    assert succeeded[0]["after"]["method"] == "oidc"
    assert succeeded[0]["after"]["subject"] == "new-user"
    assert succeeded[0]["actor_user_id"] == user_id
    assert await audit_rows(engine, "auth.login.failed") == []


async def test_a_second_sign_in_reuses_the_account(
    browsers: Any, provider: OidcProvider, engine: AsyncEngine
) -> None:
    first, second = await browsers(), await browsers()
    assert (await first.sign_in()).status_code == 303
    assert (await second.sign_in()).status_code == 303
    one, two = (await first.viewer())["data"]["viewer"], (await second.viewer())["data"]["viewer"]
    assert one["id"] == two["id"]
    assert first.session_cookie() != second.session_cookie()  # a session each
    assert await user_count(engine) == 1
    assert len(await audit_rows(engine, "auth.signup")) == 1
    assert len(await audit_rows(engine, "auth.oidc.linked")) == 1
    assert len(await audit_rows(engine, "auth.login.succeeded")) == 2


async def test_the_authorization_url_carries_pkce_state_and_nonce(
    browser: Browser, provider: OidcProvider, oidc_app: Any, oidc_settings: Settings
) -> None:
    response = await browser.start("/somewhere")
    url = httpx.URL(response.headers["location"])
    params = url.params

    assert str(url.copy_with(query=None)) == f"{provider.issuer}/authorize"
    assert params["response_type"] == "code"
    assert params["client_id"] == provider.client_id
    assert params["redirect_uri"] == f"{oidc_settings.public_url}/auth/oidc/callback"
    assert "openid" in params["scope"].split()
    assert params["code_challenge_method"] == "S256"
    challenge = params["code_challenge"]
    assert len(challenge) == 43  # base64url of a SHA-256 digest, unpadded
    assert len(params["state"]) >= 22 and len(params["nonce"]) >= 22  # >= 128 bits
    assert params["state"] != params["nonce"]
    assert "code_verifier" not in params

    # The verifier stays server-side, and the challenge is its S256.
    res = oidc_app.state.resources
    digest = hashlib.sha256(params["state"].encode()).hexdigest()
    key = f"{oidc_settings.redis_namespace}:oidc:{digest}"
    record = orjson.loads(await res.redis.get(key))
    assert b64url_sha256(record["verifier"]) == challenge
    assert record["nonce"] == params["nonce"]
    assert record["verifier"] not in str(url)
    assert record["returnTo"] == "/somewhere"
    ttl = await res.redis.ttl(key)
    assert 0 < ttl <= 600

    # The binder cookie: HttpOnly, scoped to the OIDC routes, Lax; only its hash is stored.
    binder_headers = [
        h for h in response.headers.get_list("set-cookie") if h.startswith(f"{BINDER_COOKIE}=")
    ]
    assert len(binder_headers) == 1
    header = binder_headers[0].lower()
    assert "httponly" in header and "path=/auth/oidc" in header and "samesite=lax" in header
    binder = browser.app.cookies[BINDER_COOKIE]
    assert record["binder"] == hashlib.sha256(binder.encode()).hexdigest()
    assert binder not in str(record)

    # Every login is fresh.
    again = httpx.URL((await browser.start()).headers["location"]).params
    assert again["state"] != params["state"]
    assert again["nonce"] != params["nonce"]
    assert again["code_challenge"] != challenge


# -- linking --------------------------------------------------------------------------------


async def test_a_verified_email_links_the_existing_password_account(
    browsers: Any, accounts: Accounts, provider: OidcProvider, engine: AsyncEngine
) -> None:
    email = unique_email("ada")  # mixed case: links case-insensitively
    existing = await accounts.sign_up(email)
    provider.user.sub = "ada-sub"
    provider.user.email = email.upper()
    provider.user.email_verified = True

    browser = await browsers()
    assert (await browser.sign_in()).status_code == 303
    viewer = (await browser.viewer())["data"]["viewer"]
    assert viewer["id"] == existing.user_id
    assert viewer["email"] == email.lower()
    assert viewer["hasPassword"] is True  # the password still works alongside
    assert await user_count(engine) == 1
    assert await audit_rows(engine, "auth.signup") != []  # the password sign-up only
    assert all(r["after"].get("method") != "oidc" for r in await audit_rows(engine, "auth.signup"))
    assert len(await audit_rows(engine, "auth.oidc.linked")) == 1

    # Next time the identity is found by (issuer, sub), whatever the email says now.
    provider.user.email = "ada-renamed@example.com"
    provider.user.email_verified = False
    again = await browsers()
    assert (await again.sign_in()).status_code == 303
    assert (await again.viewer())["data"]["viewer"]["id"] == existing.user_id
    assert await user_count(engine) == 1
    assert len(await audit_rows(engine, "auth.oidc.linked")) == 1


async def test_an_unverified_email_makes_no_account(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine
) -> None:
    provider.user.email_verified = False

    response = await browser.sign_in()

    assert_error(response, 400, "OIDC_EMAIL_UNVERIFIED")
    assert_no_session_set(response, browser)
    assert await user_count(engine) == 0
    assert await identities(engine) == []
    failed = await audit_rows(engine, "auth.login.failed")
    assert len(failed) == 1
    assert failed[0]["after"]["reason"] == "OIDC_EMAIL_UNVERIFIED"
    assert failed[0]["actor_user_id"] is None


async def test_an_unverified_email_never_links_the_existing_account(
    browser: Browser, accounts: Accounts, provider: OidcProvider, engine: AsyncEngine
) -> None:
    email = unique_email("victim")
    victim = await accounts.sign_up(email)
    provider.user.sub = "attacker"
    provider.user.email = email
    provider.user.email_verified = False

    response = await browser.sign_in()

    assert_error(response, 400, "OIDC_EMAIL_UNVERIFIED")
    assert_no_session_set(response, browser)
    assert await identities(engine) == []
    assert await user_count(engine) == 1
    assert (await browser.viewer()).get("data") is None  # signed out
    assert (await victim.gql(VIEWER))["data"]["viewer"]["hasPassword"] is True


@pytest.mark.parametrize("claimed", ["true", 1])
async def test_email_verified_must_be_the_boolean_true(
    browser: Browser, accounts: Accounts, provider: OidcProvider, engine: AsyncEngine,
    claimed: object,
) -> None:  # fmt: skip
    email = unique_email("victim")
    await accounts.sign_up(email)
    provider.user.email = email
    provider.claim_overrides = {"email_verified": claimed}

    assert_error(await browser.sign_in(), 400, "OIDC_EMAIL_UNVERIFIED")
    assert await identities(engine) == []


async def test_a_missing_email_makes_no_account(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine
) -> None:
    provider.user.email = None
    assert_error(await browser.sign_in(), 400, "OIDC_EMAIL_UNVERIFIED")
    assert await user_count(engine) == 0


async def test_a_linked_identity_signs_in_even_when_the_email_is_no_longer_verified(
    browsers: Any, provider: OidcProvider, engine: AsyncEngine
) -> None:
    first = await browsers()
    assert (await first.sign_in()).status_code == 303
    provider.user.email_verified = False
    second = await browsers()
    assert (await second.sign_in()).status_code == 303
    assert await user_count(engine) == 1


async def test_an_oidc_only_account_cannot_log_in_with_a_password(
    browsers: Any, provider: OidcProvider
) -> None:
    browser, other = await browsers(), await browsers()
    provider.user.email = "oidc-only@example.com"
    assert (await browser.sign_in()).status_code == 303
    for password in (PASSWORD, ""):
        variables = {"email": "oidc-only@example.com", "password": password}
        response = await other.app.post("/graphql", json=body(LOG_IN, variables))
        assert "Traceback" not in response.text
        payload = response.json()["data"]["logIn"]
        assert payload["__typename"] == "AccountError", payload
        assert payload["code"] == "INVALID_CREDENTIALS"
    assert other.session_cookie() is None


# -- state and the binder cookie ------------------------------------------------------------


@pytest.mark.parametrize("state", ["", "not-a-state-we-issued"])
async def test_an_unknown_state_is_refused(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine, state: str
) -> None:
    code, _ = await browser.to_provider()  # a binder cookie is present

    response = await browser.callback(code, state)

    assert_error(response, 400, "OIDC_STATE_INVALID")
    assert_no_session_set(response, browser)
    assert provider.requests["token"] == 0  # the code was never exchanged
    assert await user_count(engine) == 0
    failed = await audit_rows(engine, "auth.login.failed")
    assert [r["after"] for r in failed] == [{"method": "oidc", "reason": "OIDC_STATE_INVALID"}]


async def test_a_callback_without_parameters_is_refused(browser: Browser) -> None:
    await browser.start()
    assert_error(await browser.app.get("/auth/oidc/callback"), 400, "OIDC_STATE_INVALID")


async def test_a_replayed_callback_is_refused(
    browsers: Any, provider: OidcProvider, engine: AsyncEngine
) -> None:
    browser, replayer = await browsers(), await browsers()
    started = await browser.start()
    binder = browser.app.cookies[BINDER_COOKIE]
    code, state = await browser.authorize(started.headers["location"])
    assert (await browser.callback(code, state)).status_code == 303

    # Even with the right binder cookie sent again, the state is spent.
    response = await replayer.app.get(
        "/auth/oidc/callback",
        params={"code": code, "state": state},
        headers={"cookie": f"{BINDER_COOKIE}={binder}"},
    )
    assert_error(response, 400, "OIDC_STATE_INVALID")
    assert_no_session_set(response, replayer)
    assert provider.requests["token"] == 1  # the replay never reached the provider

    # And the same browser replaying it gets the same answer.
    again = await browser.callback(code, state)
    assert_error(again, 400, "OIDC_STATE_INVALID")
    assert len(await audit_rows(engine, "auth.login.succeeded")) == 1


async def test_a_callback_in_a_browser_without_the_binder_is_refused(
    browsers: Any, provider: OidcProvider, engine: AsyncEngine
) -> None:
    """Login CSRF: the attacker's own code and state, planted in the victim's browser."""
    attacker, victim = await browsers(), await browsers()
    code, state = await attacker.to_provider()

    response = await victim.callback(code, state)

    assert_error(response, 400, "OIDC_STATE_INVALID")
    assert_no_session_set(response, victim)
    assert provider.requests["token"] == 0
    assert await user_count(engine) == 0


async def test_a_callback_in_a_browser_with_another_binder_is_refused(
    browsers: Any, provider: OidcProvider, engine: AsyncEngine
) -> None:
    attacker, victim = await browsers(), await browsers()
    code, state = await attacker.to_provider()
    await victim.start()  # the victim has a binder of its own login
    assert BINDER_COOKIE in victim.app.cookies

    response = await victim.callback(code, state)

    assert_error(response, 400, "OIDC_STATE_INVALID")
    assert_no_session_set(response, victim)
    assert provider.requests["token"] == 0
    assert await user_count(engine) == 0


async def test_a_provider_error_in_the_callback_is_reported(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine
) -> None:
    _, state = await browser.to_provider()
    response = await browser.app.get(
        "/auth/oidc/callback", params={"error": "access_denied", "state": state}
    )
    assert_error(response, 400, "OIDC_PROVIDER_ERROR")
    assert "access_denied" not in response.text
    assert_no_session_set(response, browser)
    failed = await audit_rows(engine, "auth.login.failed")
    assert [r["after"]["reason"] for r in failed] == ["OIDC_PROVIDER_ERROR"]


# -- the ID token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switch", "value"),
    [
        ("sign_with_other_key", True),
        ("wrong_audience", True),
        ("wrong_issuer", True),
        ("expired", True),
        ("alg_none", True),
        ("hs256_with_public_key", True),
        ("override_nonce", "a-nonce-we-never-sent"),
    ],
)
async def test_a_tampered_id_token_is_refused(
    browser: Browser, provider: OidcProvider, engine: AsyncEngine, switch: str, value: object
) -> None:
    setattr(provider, switch, value)

    response = await browser.sign_in()

    assert_error(response, 400, "OIDC_TOKEN_INVALID")
    assert response.json()["error"]["message"] == "The sign-in could not be verified."
    assert_no_session_set(response, browser)
    assert provider.requests["token"] == 1  # it got as far as the token
    assert await user_count(engine) == 0
    assert await identities(engine) == []
    failed = await audit_rows(engine, "auth.login.failed")
    assert len(failed) == 1
    assert failed[0]["after"] == {"method": "oidc", "reason": "OIDC_TOKEN_INVALID"}
    assert failed[0]["actor_user_id"] is None
    assert await audit_rows(engine, "auth.login.succeeded") == []


# -- account state --------------------------------------------------------------------------


async def test_a_suspended_linked_account_is_refused(
    browsers: Any, provider: OidcProvider, oidc_app: Any, engine: AsyncEngine
) -> None:
    first = await browsers()
    assert (await first.sign_in()).status_code == 303
    user_id = int(await scalar(engine, "SELECT id FROM users"))
    await admin.set_status(oidc_app.state.resources.uow(), SYSTEM, user_id,
                           AccountStatus.SUSPENDED, "test", RequestMeta(request_id="test"))  # fmt: skip

    second = await browsers()
    response = await second.sign_in()

    assert_error(response, 400, "OIDC_ACCOUNT_SUSPENDED")
    assert_no_session_set(response, second)
    failed = await audit_rows(engine, "auth.login.failed")
    assert len(failed) == 1
    assert failed[0]["after"]["reason"] == "OIDC_ACCOUNT_SUSPENDED"
    assert failed[0]["target_id"] == str(user_id)
    assert len(await audit_rows(engine, "auth.login.succeeded")) == 1  # the first only


async def test_a_suspended_password_account_is_not_unlocked_by_linking(
    browser: Browser, accounts: Accounts, provider: OidcProvider, oidc_app: Any,
    engine: AsyncEngine,
) -> None:  # fmt: skip
    email = unique_email("suspended")
    await accounts.sign_up(email)
    user_id = int(await scalar(engine, "SELECT id FROM users"))
    await admin.set_status(oidc_app.state.resources.uow(), SYSTEM, user_id,
                           AccountStatus.SUSPENDED, "test", RequestMeta(request_id="test"))  # fmt: skip
    provider.user.email = email

    response = await browser.sign_in()

    assert_error(response, 400, "OIDC_ACCOUNT_SUSPENDED")
    assert_no_session_set(response, browser)
    assert await user_count(engine) == 1
    # Not linked either: reinstating the account must not bring an unapproved identity along.
    assert await scalar(engine, "SELECT count(*) FROM user_identities") == 0


# -- returnTo -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "//evil.example/path",
        "https://evil.example",
        "http://testserver.evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
        None,
    ],
)
async def test_return_to_outside_the_site_goes_home(
    browser: Browser, return_to: str | None
) -> None:
    response = await browser.sign_in(return_to)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"


@pytest.mark.parametrize("return_to", ["/\t/evil.example", "/\n/evil.example", "/ /evil.example"])
async def test_return_to_with_whitespace_cannot_become_scheme_relative(
    browser: Browser, return_to: str
) -> None:
    """Browsers drop tabs and newlines from URLs: "/\\t/x" must not reach them as "//x"."""
    response = await browser.sign_in(return_to)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert not any(c in location for c in "\t\n\r")
    stripped = location.replace("\t", "").replace("\n", "").replace("\r", "")
    assert not stripped.startswith("//")
    assert not location.startswith("/ /")  # a raw space is not a path either


async def test_a_return_to_path_is_kept(browser: Browser) -> None:
    response = await browser.sign_in("/instances/42?view=logs#top")
    assert response.status_code == 303
    assert response.headers["location"] == "/instances/42?view=logs#top"


# -- the provider --------------------------------------------------------------------------


async def test_a_provider_that_is_down_at_login_is_a_provider_error(
    settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    with running_provider() as gone:
        configured = dataclasses.replace(settings, oidc_issuer=gone.issuer,
                                         oidc_client_id=gone.client_id,
                                         oidc_client_secret=gone.client_secret)  # fmt: skip
    application = create_app(configured)
    async with (
        LifespanManager(application),
        AsyncClient(transport=ASGITransport(app=application), base_url="http://testserver") as c,
    ):
        redis = application.state.resources.redis
        pattern = f"{settings.redis_namespace}:oidc:*"
        before = {k async for k in redis.scan_iter(match=pattern)}
        response = await c.get("/auth/oidc/login", params={"returnTo": "/x"})
        assert_error(response, 502, "OIDC_PROVIDER_ERROR")
        assert gone.issuer not in response.text
        assert BINDER_COOKIE not in c.cookies
        after = {k async for k in redis.scan_iter(match=pattern)}
    assert after == before  # nothing stored for a login that never started


# -- not configured -------------------------------------------------------------------------


async def test_without_oidc_configured_both_routes_are_404(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    login = await client.get("/auth/oidc/login", params={"returnTo": "/x"})
    assert_error(login, 404, "OIDC_NOT_CONFIGURED")
    assert BINDER_COOKIE not in client.cookies
    callback = await client.get("/auth/oidc/callback", params={"code": "c", "state": "s"})
    assert_error(callback, 404, "OIDC_NOT_CONFIGURED")
    assert await audit_rows(engine) == []


async def test_a_leaked_state_used_without_the_binder_does_not_spoil_the_real_login(
    browsers: Any, engine: AsyncEngine
) -> None:
    owner, stranger = await browsers(), await browsers()
    code, state = await owner.to_provider()
    assert_error(await stranger.callback(code, state), 400, "OIDC_STATE_INVALID")
    response = await owner.callback(code, state)  # the state was not consumed by the stranger
    assert response.status_code == 303, response.text
    assert owner.session_cookie()


async def test_an_oidc_login_rotates_the_browsers_existing_session(
    browser: Browser, engine: AsyncEngine
) -> None:
    assert (await browser.sign_in()).status_code == 303
    first = browser.session_cookie()
    assert first
    assert (await browser.sign_in()).status_code == 303
    assert browser.session_cookie() not in (None, first)
    revoked = await scalar(engine, "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL")
    assert revoked == 1


async def test_starting_logins_is_rate_limited_per_address(
    oidc_settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    limited = dataclasses.replace(oidc_settings, login_limit_per_ip=2,
                                  redis_namespace=f"oidc-rl-{uuid.uuid4().hex[:8]}")  # fmt: skip
    application = create_app(limited)
    async with (
        LifespanManager(application),
        AsyncClient(
            transport=ASGITransport(app=application), base_url="http://testserver"
        ) as client,
    ):
        codes = [(await client.get("/auth/oidc/login")).status_code for _ in range(3)]
        assert codes == [302, 302, 429]
        refused = await client.get("/auth/oidc/login")
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert int(refused.headers["retry-after"]) > 0
