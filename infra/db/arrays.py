"""`column = ANY($1)` with the ids bound as one array: one statement text whatever the number of
ids, so it is compiled and prepared once, unlike an IN list of as many parameters as ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, literal
from sqlalchemy.dialects.postgresql import ARRAY


def among(column: ColumnElement[Any], ids: Iterable[int]) -> ColumnElement[bool]:
    return column == any_(literal(list(ids), ARRAY(BigInteger)))
