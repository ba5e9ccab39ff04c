"""API-test fixtures: signed-in accounts against the in-process app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from tests.support.identity import Accounts


@pytest.fixture
async def accounts(app: object) -> AsyncIterator[Accounts]:
    async with AsyncExitStack() as stack:
        yield Accounts(app, stack)
