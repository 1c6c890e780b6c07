"""The store behaviour suite against ``MongoStore`` on the real server: one database per
test, dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from pymongo.errors import OperationFailure

from hub.config import Settings
from hub.domain.routing import PartnerProfile
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

    async def test_a_silent_workers_open_transaction_is_ended_by_the_others_heartbeat(
        self, store: ContractStore
    ) -> None:
        """A worker killed mid-transaction leaves it open and its documents locked; once it
        has been silent for ``stale_after_s``, another worker's heartbeat ends it."""
        assert isinstance(store, mongo.MongoStore)
        await store.db.counters.insert_one({"_id": "c", "n": 0})
        dead = mongo.MongoStore(store.client, store.db.name, worker_id="killed")
        session = store.client.start_session()
        await dead.heartbeat(stale_after_s=60)
        await dead._note_session(session)  # as transact does once the lease runs
        await session.start_transaction()
        await store.db.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}}, session=session)

        async def bump() -> bool:
            """One try at the locked document: False on a write conflict."""
            async with store.client.start_session() as other:
                await other.start_transaction()
                try:
                    await store.db.counters.update_one(
                        {"_id": "c"}, {"$inc": {"n": 10}}, session=other
                    )
                    await other.commit_transaction()
                except OperationFailure as e:
                    assert e.has_error_label("TransientTransactionError"), e
                    return False
            return True

        assert not await bump()  # locked by the silent worker's open transaction
        assert await store.heartbeat(stale_after_s=60) == []  # not silent long enough yet
        assert not await bump()
        assert await store.heartbeat(stale_after_s=0) == ["killed"]
        assert await bump()
        assert (await store.db.counters.find_one({"_id": "c"}) or {})["n"] == 10
        assert await store.db.workers.count_documents({"_id": "killed"}) == 0
        await session.end_session()


async def test_the_partner_directory_counts_each_partners_open_cases(services: None) -> None:
    client = mongo.connect(Settings().mongo_url)
    name = f"test_directory_{uuid.uuid4().hex[:10]}"
    db = client[name]
    try:
        directory = mongo.MongoPartnerDirectory(db)
        for pid in ("acme", "lex", "idle"):
            await directory.upsert(PartnerProfile(partner_id=pid, countries=frozenset({"DE"})))
        rows = [
            ("acme", "assigned"),
            ("acme", "accepted"),
            ("acme", "in_progress"),
            ("acme", "on_hold"),
            ("acme", "closed"),  # not open
            ("acme", "declined"),  # back with the hub
            ("lex", "accepted"),
            ("gone", "accepted"),  # a partner without a profile: not routed to
            (None, "unassigned"),
        ]
        await db.cases.insert_many(
            [{"_id": f"c{i}", "partner_id": p, "lifecycle": lc} for i, (p, lc) in enumerate(rows)]
        )
        await directory.refresh()
        assert directory.open_cases() == {"acme": 4, "lex": 1}
        directory.note_assigned("lex", 2)
        assert directory.open_cases() == {"acme": 4, "lex": 3}
    finally:
        await client.drop_database(name)
        await client.close()


async def test_start_up_drops_indexes_nothing_uses_any_more(services: None) -> None:
    client = mongo.connect(Settings().mongo_url)
    name = f"test_indexes_{uuid.uuid4().hex[:10]}"
    db = client[name]
    try:
        await db.events.create_index("recorded_at")  # as an earlier version made it
        await db.events.create_index([("kind", 1), ("occurred_at", 1)])
        await mongo.ensure_indexes(db)
        await mongo.ensure_indexes(db)  # and again: nothing left to drop
        names = {d["name"] async for d in await db.events.list_indexes()}
        assert names == {"_id_", "case_id_1_seq_1"}
    finally:
        await client.drop_database(name)
        await client.close()
