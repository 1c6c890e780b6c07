"""The store behaviour suite against ``InMemoryStore``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from hub.service.memory import InMemoryStore, StoreError
from tests.store_contract import ContractStore, StoreContract


class TestInMemoryStore(StoreContract):
    store_error: ClassVar[type[Exception]] = StoreError

    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:
        yield InMemoryStore(max_attempts=5)
