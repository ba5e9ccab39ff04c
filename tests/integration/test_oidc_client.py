"""OidcClient against a real OIDC provider on loopback: the whole code flow over sockets."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from domain.identity.errors import OidcError, OidcErrorCode
from infra.oidc import OidcClient, OidcConfig, OidcIdentity, OidcStart
from tests.support.oidc_provider import DELETE, REDIRECT_URI, OidcProvider, running_provider
from tests.support.processes import free_port

PROVIDER_ERROR = OidcErrorCode.OIDC_PROVIDER_ERROR
TOKEN_INVALID = OidcErrorCode.OIDC_TOKEN_INVALID


class FakeClock:
    """Monotonic seconds a test can step forward (past the JWKS refetch limit)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_provider() as running:
        yield running


def config_for(provider: OidcProvider, **changes: Any) -> OidcConfig:
    config = OidcConfig(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        redirect_uri=REDIRECT_URI,
    )
    return replace(config, **changes)


@pytest.fixture
async def client(provider: OidcProvider) -> AsyncIterator[OidcClient]:
    made = OidcClient(config_for(provider))
    yield made
    await made.aclose()


async def authorize(start: OidcStart) -> tuple[str, str]:
    """Play the browser: follow the authorization URL once, return the callback's code, state."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(start.authorization_url)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == REDIRECT_URI
    return location.params["code"], location.params["state"]


async def login(client: OidcClient) -> OidcIdentity:
    start = await client.start()
    code, state = await authorize(start)
    assert state == start.state
    return await client.finish(code, nonce=start.nonce, code_verifier=start.code_verifier)


async def failed_login(client: OidcClient) -> OidcError:
    with pytest.raises(OidcError) as caught:
        await login(client)
    return caught.value


async def test_login_returns_the_identity_of_the_signed_in_user(
    provider: OidcProvider, client: OidcClient
) -> None:
    start = await client.start()
    params = httpx.URL(start.authorization_url).params
    assert start.authorization_url.startswith(f"{provider.issuer}/authorize?")
    assert params["response_type"] == "code"
    assert params["client_id"] == provider.client_id
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["scope"].split() == ["openid", "email", "profile"]
    assert params["state"] == start.state
    assert params["nonce"] == start.nonce
    assert params["code_challenge_method"] == "S256"
    digest = hashlib.sha256(start.code_verifier.encode()).digest()
    assert params["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert start.code_verifier not in start.authorization_url

    code, state = await authorize(start)
    assert state == start.state
    identity = await client.finish(code, nonce=start.nonce, code_verifier=start.code_verifier)

    assert identity == OidcIdentity(
        issuer=provider.issuer,
        subject="user-1",
        email="ada@example.com",
        email_verified=True,
        name="Ada Lovelace",
    )
    assert provider.requests["client_secret_basic"] == 1  # the secret needs no encoding


async def test_nothing_is_fetched_before_first_use_and_each_start_is_fresh(
    provider: OidcProvider, client: OidcClient
) -> None:
    assert provider.requests["discovery"] == 0  # construction does no I/O
    first, second = await client.start(), await client.start()
    assert provider.requests["discovery"] == 1  # discovery is cached
    assert provider.requests["jwks"] == 0  # keys wait for the first ID token
    for a, b in [(first.state, second.state), (first.nonce, second.nonce)]:
        assert a != b
        assert len(base64.urlsafe_b64decode(a + "==")) >= 16  # at least 128 bits
    assert first.code_verifier != second.code_verifier
    assert 43 <= len(first.code_verifier) <= 128  # RFC 7636 4.1


async def test_discovery_and_keys_are_cached_across_logins(
    provider: OidcProvider, client: OidcClient
) -> None:
    provider.user.sub = "first"
    assert (await login(client)).subject == "first"
    provider.user.sub = "second"
    assert (await login(client)).subject == "second"
    assert provider.requests["discovery"] == 1
    assert provider.requests["jwks"] == 1
    assert provider.requests["token"] == 2


async def test_a_secret_that_needs_encoding_is_sent_in_the_body(provider: OidcProvider) -> None:
    provider.client_secret = "p%ss:wörd+/="
    client = OidcClient(config_for(provider))
    try:
        assert (await login(client)).subject == "user-1"
    finally:
        await client.aclose()
    assert provider.requests["client_secret_post"] == 1
    assert provider.requests["client_secret_basic"] == 0


async def test_the_wrong_pkce_verifier_is_refused_by_the_provider(client: OidcClient) -> None:
    start = await client.start()
    code, _ = await authorize(start)
    other = await client.start()
    with pytest.raises(OidcError) as caught:
        await client.finish(code, nonce=start.nonce, code_verifier=other.code_verifier)
    assert caught.value.code is PROVIDER_ERROR


async def test_a_code_works_only_once(client: OidcClient) -> None:
    start = await client.start()
    code, _ = await authorize(start)
    identity = await client.finish(code, nonce=start.nonce, code_verifier=start.code_verifier)
    assert identity.subject == "user-1"
    with pytest.raises(OidcError) as caught:
        await client.finish(code, nonce=start.nonce, code_verifier=start.code_verifier)
    assert caught.value.code is PROVIDER_ERROR


async def test_a_wrong_client_secret_is_a_provider_error(provider: OidcProvider) -> None:
    client = OidcClient(config_for(provider, client_secret="not-the-secret"))
    try:
        error = await failed_login(client)
    finally:
        await client.aclose()
    assert error.code is PROVIDER_ERROR


@pytest.mark.parametrize(
    "switch",
    ["sign_with_other_key", "wrong_issuer", "wrong_audience", "expired", "alg_none",
     "hs256_with_public_key"],
)  # fmt: skip
async def test_a_tampered_id_token_is_refused(
    provider: OidcProvider, client: OidcClient, switch: str
) -> None:
    setattr(provider, switch, True)
    error = await failed_login(client)
    assert error.code is TOKEN_INVALID
    # Generic: nothing of the token or the user reaches the message.
    assert error.problems[0].message == "The sign-in could not be verified."
    assert provider.requests["token"] == 1  # it got as far as a token


@pytest.mark.parametrize(
    ("switch", "advertised"),
    [("alg_none", ["RS256", "none"]), ("hs256_with_public_key", ["RS256", "HS256"])],
)
async def test_unsigned_and_symmetric_tokens_are_refused_even_when_advertised(
    provider: OidcProvider, client: OidcClient, switch: str, advertised: list[str]
) -> None:
    provider.signing_algs = advertised
    setattr(provider, switch, True)
    assert (await failed_login(client)).code is TOKEN_INVALID


async def test_an_algorithm_the_provider_does_not_advertise_is_refused(
    provider: OidcProvider, client: OidcClient
) -> None:
    provider.signing_algs = ["ES256"]  # the token is RS256
    assert (await failed_login(client)).code is TOKEN_INVALID


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"iat": 4_102_444_800}, id="issued-in-2100"),
        pytest.param({"nonce": DELETE}, id="no-nonce"),
        pytest.param({"sub": DELETE}, id="no-subject"),
        pytest.param({"exp": DELETE}, id="no-expiry"),
        pytest.param({"aud": ["gpucloud-test", "another-client"]}, id="two-audiences-no-azp"),
        pytest.param({"azp": "another-client"}, id="azp-of-another-client"),
        pytest.param({"aud": ["another-client"]}, id="audience-list-without-us"),
    ],
)
async def test_a_token_with_bad_claims_is_refused(
    provider: OidcProvider, client: OidcClient, overrides: dict[str, object]
) -> None:
    provider.claim_overrides = overrides
    assert (await failed_login(client)).code is TOKEN_INVALID


async def test_the_nonce_must_match(provider: OidcProvider, client: OidcClient) -> None:
    provider.override_nonce = "a-nonce-we-never-sent"
    assert (await failed_login(client)).code is TOKEN_INVALID


async def test_a_nonce_from_another_login_is_refused(client: OidcClient) -> None:
    mine, theirs = await client.start(), await client.start()
    code, _ = await authorize(theirs)
    with pytest.raises(OidcError) as caught:
        await client.finish(code, nonce=mine.nonce, code_verifier=theirs.code_verifier)
    assert caught.value.code is TOKEN_INVALID


async def test_several_audiences_are_accepted_when_azp_is_this_client(
    provider: OidcProvider, client: OidcClient
) -> None:
    provider.claim_overrides = {"aud": [provider.client_id, "api"], "azp": provider.client_id}
    assert (await login(client)).subject == "user-1"


async def test_a_minute_of_clock_skew_is_tolerated(
    provider: OidcProvider, client: OidcClient
) -> None:
    now = int(time.time())
    provider.claim_overrides = {"iat": now + 30, "exp": now - 30}
    assert (await login(client)).subject == "user-1"


@pytest.mark.parametrize("claimed", [False, "true", 1, DELETE])
async def test_email_verified_counts_only_when_it_is_true(
    provider: OidcProvider, client: OidcClient, claimed: object
) -> None:
    provider.claim_overrides = {"email_verified": claimed}
    identity = await login(client)
    assert identity.email == "ada@example.com"
    assert identity.email_verified is False


async def test_missing_email_and_name_come_back_as_none(
    provider: OidcProvider, client: OidcClient
) -> None:
    provider.user.email = None
    provider.user.name = None
    identity = await login(client)
    assert (identity.email, identity.name) == (None, None)


async def test_a_login_still_works_after_key_rotation(provider: OidcProvider) -> None:
    clock = FakeClock()
    client = OidcClient(config_for(provider), clock=clock)
    try:
        await login(client)
        old_kid = provider.kid
        provider.rotate_key()
        assert provider.kid != old_kid
        clock.now += 31
        assert (await login(client)).subject == "user-1"
    finally:
        await client.aclose()
    assert provider.requests["jwks"] == 2  # one refetch, for the unknown kid


async def test_an_unknown_kid_refetches_keys_at_most_every_30_seconds(
    provider: OidcProvider,
) -> None:
    clock = FakeClock()
    client = OidcClient(config_for(provider), clock=clock)
    try:
        await login(client)
        provider.rotate_key()
        clock.now += 10  # the keys were fetched 10 s ago: too soon to fetch again
        assert (await failed_login(client)).code is TOKEN_INVALID
        assert provider.requests["jwks"] == 1
        clock.now += 25
        assert (await login(client)).subject == "user-1"
        assert provider.requests["jwks"] == 2
    finally:
        await client.aclose()


async def test_a_token_signed_by_an_unpublished_key_is_refused(provider: OidcProvider) -> None:
    clock = FakeClock()
    client = OidcClient(config_for(provider), clock=clock)
    try:
        await login(client)
        clock.now += 31  # a refetch would be allowed, but the kid is known: no refetch
        provider.sign_with_other_key = True  # same kid as published, other key
        assert (await failed_login(client)).code is TOKEN_INVALID
    finally:
        await client.aclose()
    assert provider.requests["jwks"] == 1


async def test_a_provider_that_is_down_is_a_provider_error() -> None:
    config = OidcConfig(
        issuer=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        client_id="gpucloud-test",
        client_secret="secret",
        redirect_uri=REDIRECT_URI,
    )
    client = OidcClient(config)
    try:
        with pytest.raises(OidcError) as caught:
            await client.start()
    finally:
        await client.aclose()
    assert caught.value.code is PROVIDER_ERROR


async def test_a_provider_that_goes_down_mid_login_is_a_provider_error() -> None:
    with running_provider() as provider:
        client = OidcClient(config_for(provider))
        start = await client.start()
        code, _ = await authorize(start)
    try:
        with pytest.raises(OidcError) as caught:
            await client.finish(code, nonce=start.nonce, code_verifier=start.code_verifier)
    finally:
        await client.aclose()
    assert caught.value.code is PROVIDER_ERROR


async def test_a_slow_token_endpoint_times_out(provider: OidcProvider) -> None:
    provider.token_delay_seconds = 1.5
    client = OidcClient(config_for(provider, timeout_seconds=0.3))
    try:
        error = await failed_login(client)
    finally:
        await client.aclose()
    assert error.code is PROVIDER_ERROR
    assert provider.requests["token"] == 1


@pytest.mark.parametrize("published", ["http://127.0.0.1:1", "{issuer}/"])
async def test_discovery_naming_another_issuer_is_refused(
    provider: OidcProvider, client: OidcClient, published: str
) -> None:
    provider.discovery_issuer = published.format(issuer=provider.issuer)
    with pytest.raises(OidcError) as caught:
        await client.start()
    assert caught.value.code is PROVIDER_ERROR
    assert provider.requests["discovery"] == 1
    assert provider.requests["authorize"] == 0
