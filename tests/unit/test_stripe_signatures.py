"""verify_event: the Stripe-Signature check on the raw body, secret rotation and the clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from domain.payments.gateway import SignatureInvalid
from infra.stripe.signatures import verify_event
from tests.support.stripe_events import event, payment_intent, sign

SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
NOW = 1_750_000_000
TOLERANCE = 300


def signed(body: bytes, secret: str = SECRET, at: int = NOW) -> str:
    return sign(body, secret, at)


@pytest.fixture
def body() -> bytes:
    evt = payment_intent("succeeded", intent_id="pi_1", amount=1500, metadata={"p": "1"})
    evt.update(id="evt_1", created=NOW - 5)
    return json.dumps(evt).encode()


def test_good_signature_gives_the_event(body: bytes) -> None:
    verified = verify_event(body, signed(body), [SECRET], TOLERANCE, now=NOW)

    assert (verified.id, verified.type) == ("evt_1", "payment_intent.succeeded")
    assert verified.created == datetime.fromtimestamp(NOW - 5, tz=UTC)
    assert verified.object["id"] == "pi_1" and verified.object["amount"] == 1500


def test_second_secret_is_accepted_while_rotating(body: bytes) -> None:
    header = signed(body, secret=OLD_SECRET)

    assert verify_event(body, header, [SECRET, OLD_SECRET], TOLERANCE, now=NOW).id == "evt_1"
    with pytest.raises(SignatureInvalid):
        verify_event(body, header, [SECRET], TOLERANCE, now=NOW)


def test_header_with_several_signatures_matches_any(body: bytes) -> None:
    # Stripe sends one v1 per active secret while its own secret is being rolled.
    header = signed(body, secret="whsec_other") + "," + signed(body).split(",")[1]

    assert verify_event(body, header, [SECRET], TOLERANCE, now=NOW).id == "evt_1"


@pytest.mark.parametrize("skew", [-TOLERANCE, TOLERANCE])
def test_timestamp_at_the_edge_of_tolerance_is_accepted(body: bytes, skew: int) -> None:
    header = signed(body, at=NOW + skew)

    assert verify_event(body, header, [SECRET], TOLERANCE, now=NOW).id == "evt_1"


def test_stale_timestamp_is_refused(body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(body, signed(body, at=NOW - TOLERANCE - 1), [SECRET], TOLERANCE, now=NOW)


def test_future_timestamp_is_refused(body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(body, signed(body, at=NOW + TOLERANCE + 1), [SECRET], TOLERANCE, now=NOW)


def test_without_now_the_real_clock_is_used(body: bytes) -> None:
    # NOW is in the past of any machine running this: a real-clock check refuses it.
    with pytest.raises(SignatureInvalid):
        verify_event(body, signed(body), [SECRET], TOLERANCE)


def test_forged_signature_is_refused(body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(body, signed(body, secret="whsec_attacker"), [SECRET], TOLERANCE, now=NOW)


def test_signature_moved_to_another_timestamp_is_refused(body: bytes) -> None:
    # The timestamp is signed too: a replayed signature cannot be given a fresh time.
    stale = signed(body, at=NOW - 3600)
    moved = f"t={NOW},{stale.split(',')[1]}"

    with pytest.raises(SignatureInvalid):
        verify_event(body, moved, [SECRET], TOLERANCE, now=NOW)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", f"t={NOW}", "v1=00"])
def test_missing_or_malformed_header_is_refused(body: bytes, header: str | None) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(body, header, [SECRET], TOLERANCE, now=NOW)


def test_no_secrets_refuses_everything(body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(body, signed(body), [], TOLERANCE, now=NOW)
    with pytest.raises(SignatureInvalid):
        verify_event(body, sign(body, "", NOW), [""], TOLERANCE, now=NOW)


def test_tampered_body_is_refused(body: bytes) -> None:
    header = signed(body)
    tampered = body.replace(b'"amount": 1500', b'"amount": 9500')
    assert tampered != body

    with pytest.raises(SignatureInvalid):
        verify_event(tampered, header, [SECRET], TOLERANCE, now=NOW)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json at all",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        json.dumps({"id": "evt_1", "type": "x", "created": NOW}).encode(),  # no data.object
        json.dumps({"type": "x", "created": NOW, "data": {"object": {}}}).encode(),  # no id
        json.dumps(event("x", {"id": "o"}) | {"type": None}).encode(),
    ],
)
def test_correctly_signed_body_that_is_not_an_event_is_refused(raw: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        verify_event(raw, signed(raw), [SECRET], TOLERANCE, now=NOW)
