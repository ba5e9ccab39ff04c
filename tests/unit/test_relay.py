"""Relay helpers: opaque global ids and connections built from keyset pages."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.pagination import Page, decode_cursor, encode_cursor
from schema.relay import Connection, expect_global_id, from_global_id, to_global_id

TYPE_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,30}", fullmatch=True)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def codes(exc: InvalidInput) -> list[tuple[str, str | None]]:
    return [(p.code, p.field) for p in exc.problems]


@given(TYPE_NAMES, st.integers(min_value=0, max_value=2**63 - 1))
def test_global_id_round_trip(type_name: str, key: int) -> None:
    gid = to_global_id(type_name, key)
    assert from_global_id(gid) == (type_name, key)
    assert expect_global_id(gid, type_name) == key
    assert "=" not in gid


def test_global_id_is_opaque() -> None:
    assert "Sku" not in to_global_id("Sku", 7)


def test_expect_global_id_refuses_another_type() -> None:
    with pytest.raises(InvalidInput) as caught:
        expect_global_id(to_global_id("Node", 7), "Sku", field="skuId")
    assert codes(caught.value) == [("INVALID_ID", "skuId")]
    assert "Sku" in caught.value.problems[0].message


@pytest.mark.parametrize(
    "gid",
    [
        "",
        "!!!",
        "not base64 at all",
        b64("Sku"),
        b64("Sku:"),
        b64(":5"),
        b64("Sku:abc"),
        b64("Sku:-1"),
        b64("Sku:1.5"),
        b64("Sku:²"),
        b64("Sku:" + "9" * 5000),
        base64.urlsafe_b64encode(b"\xff\xfe:1").decode(),
    ],
)
def test_garbage_ids_are_invalid_id(gid: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        from_global_id(gid, field="skuId")
    assert codes(caught.value) == [("INVALID_ID", "skuId")]


@given(st.text())
def test_any_text_is_refused_or_decodes(gid: str) -> None:
    try:
        type_name, key = from_global_id(gid)
    except InvalidInput as exc:
        assert codes(exc) == [("INVALID_ID", "id")]
    else:
        assert type_name
        assert key >= 0


def test_connection_from_page() -> None:
    page: Page[str] = Page([(3, "a"), (7, "b")], has_next_page=True, has_previous_page=False)
    conn = Connection.from_page(page, str.upper)
    assert [e.node for e in conn.edges] == ["A", "B"]
    assert [decode_cursor(e.cursor) for e in conn.edges] == [3, 7]
    assert conn.page_info.start_cursor == encode_cursor(3)
    assert conn.page_info.end_cursor == encode_cursor(7)
    assert conn.page_info.has_next_page is True
    assert conn.page_info.has_previous_page is False


def test_connection_from_single_item_page() -> None:
    page: Page[int] = Page([(9, 90)], has_next_page=False, has_previous_page=True)
    conn = Connection.from_page(page, lambda n: n + 1)
    assert [e.node for e in conn.edges] == [91]
    assert conn.page_info.start_cursor == conn.page_info.end_cursor == encode_cursor(9)
    assert conn.page_info.has_previous_page is True


def test_connection_from_empty_page() -> None:
    page: Page[str] = Page([], has_next_page=False, has_previous_page=True)
    conn = Connection.from_page(page, str.upper)
    assert conn.edges == []
    assert conn.page_info.start_cursor is None
    assert conn.page_info.end_cursor is None
    assert conn.page_info.has_next_page is False
    assert conn.page_info.has_previous_page is True
