"""The store behaviour suite against ``MongoStore`` on the real server: one database per
test, dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from hub.config import Settings
from hub.infra import mongo
from hub.service.ports import Changeset
from tests.store_contract import (
    CREDITOR,
    FAR,
    ContractStore,
    StoreContract,
    build_reconciliation,
    fixed,
)

pytestmark = pytest.mark.services


class TestMongoStore(StoreContract):
    store_error: ClassVar[type[Exception]] = mongo.StoreError

    @pytest.fixture
    async def store(self, services: None) -> AsyncIterator[ContractStore]:
        client = mongo.connect(Settings().mongo_url)
        name = f"test_store_{uuid.uuid4().hex[:10]}"
        store = mongo.MongoStore(client, name, max_attempts=5)
        await mongo.ensure_indexes(store.db)
        try:
            yield store
        finally:
            await client.drop_database(name)
            await client.close()

    async def test_a_reconciled_batch_stays_closed_after_a_restart(
        self, store: ContractStore
    ) -> None:
        assert isinstance(store, mongo.MongoStore)
        counts = Changeset()
        counts.count(CREDITOR, "B1", 1, "accepted")
        await store.transact(fixed(counts))
        assert await store.reconcile(CREDITOR, "B1", build_reconciliation(CREDITOR, "B1"))

        restarted = mongo.MongoStore(store.client, store.db.name)
        late = Changeset()
        late.count(CREDITOR, "B1", 1, "duplicate")  # the creditor re-sent a claim
        await restarted.transact(fixed(late))
        assert await restarted.open_batches() == []
        assert len(await restarted.unsent(FAR)) == 1
