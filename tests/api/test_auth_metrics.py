"""Authentication outcomes and the credential cache show up in /metrics."""

from __future__ import annotations

from tests.support.identity import Accounts

QUERY = {"query": "{ skus(first: 1) { edges { cursor } } }"}


async def test_auth_outcomes_are_counted(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    secret = await account.token(["ACCOUNT_READ"])
    bearer = await accounts.bearer(secret)
    for _ in range(3):
        assert (await bearer.post("/graphql", json=QUERY)).status_code == 200
    forged = await accounts.bearer("gpc_not-a-real-token")
    assert (await forged.post("/graphql", json=QUERY)).status_code == 200  # public field
    text = (await bearer.get("/metrics")).text
    assert 'gpucloud_auth_requests_total{credential="bearer",outcome="ok"} 3.0' in text
    assert 'gpucloud_auth_requests_total{credential="bearer",outcome="rejected"} 1.0' in text
    assert 'gpucloud_auth_requests_total{credential="cookie",outcome="ok"}' in text
    # The token was looked up once and then served from the per-process cache.
    assert 'gpucloud_auth_cache_total{outcome="hit"}' in text
