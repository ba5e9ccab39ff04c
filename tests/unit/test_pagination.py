"""Keyset cursors and page-size bounds."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_KEY,
    MAX_PAGE_SIZE,
    PageRequest,
    decode_cursor,
    encode_cursor,
)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def assert_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)
    assert [(p.code, p.field) for p in caught.value.problems] == [("INVALID_CURSOR", "after")]


@given(st.integers(min_value=0, max_value=MAX_KEY))
def test_cursor_round_trip(key: int) -> None:
    cursor = encode_cursor(key)
    assert decode_cursor(cursor) == key
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_is_opaque() -> None:
    assert "42" not in encode_cursor(42)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage!",
        "====",
        "k1:5",  # the raw text, not its encoding
        b64("k1:"),
        b64("k1:-5"),
        b64("k1:+5"),
        b64("k1: 5"),
        b64("k1:5.0"),
        b64("k2:5"),
        b64("5"),
        b64("hello"),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_garbage_cursors_are_refused(cursor: str) -> None:
    assert_invalid_cursor(cursor)


@given(st.text().filter(lambda t: not (t.startswith("k1:") and t[3:].isdigit())))
def test_valid_base64_of_other_text_is_refused(text: str) -> None:
    assert_invalid_cursor(b64(text))


@given(st.text())
def test_random_text_is_refused_or_decodes_to_a_key(text: str) -> None:
    # Never an unexpected exception: either a typed INVALID_CURSOR or a non-negative key.
    try:
        key = decode_cursor(text)
    except InvalidInput as exc:
        assert [(p.code, p.field) for p in exc.problems] == [("INVALID_CURSOR", "after")]
    else:
        assert isinstance(key, int)
        assert key >= 0


def test_superscript_digit_cursor_is_refused_not_crashing() -> None:
    assert_invalid_cursor(b64("k1:²"))


def test_overlong_cursor_is_refused_not_crashing() -> None:
    assert_invalid_cursor(b64("k1:" + "9" * 5000))


def test_page_request_default_size() -> None:
    assert PageRequest.parse(None, None) == PageRequest(first=DEFAULT_PAGE_SIZE, after_key=None)
    assert DEFAULT_PAGE_SIZE == 20


@pytest.mark.parametrize("first", [0, 1, MAX_PAGE_SIZE])
def test_page_request_bounds_accepted(first: int) -> None:
    assert PageRequest.parse(first, None).first == first


@pytest.mark.parametrize("first", [-1, MAX_PAGE_SIZE + 1, -(10**9), 10**9])
def test_page_request_bounds_refused(first: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        PageRequest.parse(first, None)
    assert [(p.code, p.field) for p in caught.value.problems] == [("INVALID_PAGE_SIZE", "first")]


def test_page_request_decodes_after() -> None:
    assert PageRequest.parse(5, encode_cursor(17)) == PageRequest(first=5, after_key=17)


def test_page_request_bad_after_is_invalid_cursor() -> None:
    with pytest.raises(InvalidInput) as caught:
        PageRequest.parse(5, "nope")
    assert caught.value.problems[0].code == "INVALID_CURSOR"


@pytest.mark.parametrize("key", [MAX_KEY + 1, 10**30])
def test_keys_beyond_bigint_are_refused(key: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(encode_cursor(key))
    assert caught.value.problems[0].code == "INVALID_CURSOR"


def test_page_request_last_pages_backward_from_before() -> None:
    assert PageRequest.parse(None, None, 5, encode_cursor(17)) == PageRequest(
        first=5, after_key=None, before_key=17, backward=True
    )


@pytest.mark.parametrize(
    ("first", "last", "code", "field"),
    [
        (1, 1, "INVALID_PAGINATION", "last"),
        (None, -1, "INVALID_PAGE_SIZE", "last"),
        (None, MAX_PAGE_SIZE + 1, "INVALID_PAGE_SIZE", "last"),
    ],
)
def test_page_request_bad_last_is_refused(
    first: int | None, last: int, code: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        PageRequest.parse(first, None, last, None)
    assert [(p.code, p.field) for p in caught.value.problems] == [(code, field)]


def test_page_request_bad_before_names_before() -> None:
    with pytest.raises(InvalidInput) as caught:
        PageRequest.parse(None, None, 2, "nope")
    assert [(p.code, p.field) for p in caught.value.problems] == [("INVALID_CURSOR", "before")]
