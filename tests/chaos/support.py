"""Helpers of the fault-injection tests: extra RabbitMQ nodes and a separate
MongoDB-compatible server to break, fast queue draining, and the census that counts, after
a scenario, what was sent, what came out, what was lost and what was done twice.

The census derives every expectation from the batch generator's ground truth (what each
message *is*), never from the hub's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pymongo.asynchronous.database import AsyncDatabase

from hub.bootstrap import Hub
from hub.domain.routing import PartnerProfile
from hub.infra import topology
from hub.infra.topology import Topology
from partner_sdk.messages import Phase
from tests.e2e.batchgen import COUNTRIES, Batch, GenMessage, generate

ROOT = Path(__file__).resolve().parents[2]
RABBIT_NODE = ROOT / "scripts" / "rabbit-node"
TEST_CA = ROOT / "scripts" / "test-ca"

Doc = dict[str, Any]


# --- processes to break ---------------------------------------------------------------------


class CommandFailed(AssertionError):
    pass


async def run(*args: str | Path, within: float = 180.0) -> str:
    """Run a command without blocking the event loop; its output, or CommandFailed."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(f"{args} did not finish within {within} s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{text}")
    return text


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_dist: bool = False) -> int:
    """A free loopback port (and, ``with_dist``, the node's distribution port + 20000)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(6000, 30000)
        if with_dist and 35600 <= port + 20000 <= 35700:
            continue  # rabbitmqctl's own distribution ports
        if _free(port) and (not with_dist or _free(port + 20000)):
            return port
    raise RuntimeError("no free port found")


#: Node names carry the test process's id: runs on one machine never share a node, and
#: ``scripts/rabbit-node prune`` removes the nodes of a run that was killed.
RUN = str(os.getpid())


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own (``scripts/rabbit-node``), never the machine's main one.
    Name ``<base>-<pid>``; free ports unless given."""

    base: str
    port: int = 0
    tls_port: int | None = None
    certs: Path | None = None
    verify_peer: bool = False
    no_tcp: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.base}-{RUN}"
        self.port = self.port or free_port(with_dist=True)
        if self.certs is not None and self.tls_port is None:
            self.tls_port = free_port()

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"

    async def start(self) -> str:
        await run(RABBIT_NODE, "prune")  # the nodes of killed runs
        args: list[str | Path] = [
            RABBIT_NODE,
            "start",
            self.name,
            "--port",
            str(self.port),
            "--owner",
            RUN,
        ]
        if self.tls_port is not None:
            assert self.certs is not None
            args += ["--tls-port", str(self.tls_port), "--certs", self.certs]
        if self.verify_peer:
            args.append("--verify-peer")
        if self.no_tcp:
            args.append("--no-tcp")
        return await run(*args)

    async def remove(self) -> None:
        await run(RABBIT_NODE, "remove", self.name, within=120)

    async def stop(self) -> None:
        await run(RABBIT_NODE, "stop", self.name)

    async def kill(self) -> None:
        await run(RABBIT_NODE, "kill", self.name)

    async def restart(self) -> None:
        await run(RABBIT_NODE, "restart", self.name)

    async def join(self, seed: RabbitNode) -> None:
        await run(RABBIT_NODE, "join", self.name, seed.name)

    async def ctl(self, *args: str) -> str:
        return await run(RABBIT_NODE, "ctl", self.name, *args, within=60)

    async def add_user(self, user: str, password: str, *, tags: str = "") -> None:
        await self.ctl("add_user", user, password)
        if tags:
            await self.ctl("set_user_tags", user, tags)

    async def quorum_leaders(self, prefix: str) -> dict[str, str]:
        """Quorum queue name -> the node leading it, for queues whose name starts with prefix."""
        out = await self.ctl("--formatter", "json", "list_queues", "name", "leader")
        rows = json.loads(out[out.index("[") :]) if "[" in out else []
        return {r["name"]: r["leader"] for r in rows if r["name"].startswith(prefix)}


def secantusd_command() -> list[str]:
    """The MongoDB-compatible server: the Rust daemon when it is built, else the Python one."""
    rs = os.environ.get("ONEWINDOW_SECANTUSD_RS")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onewindow" / "bin"
    for candidate in [rs, *sorted(map(str, cache.glob("secantusd-rs-*[0-9]")), reverse=True)]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return [candidate]
    return [str(ROOT / ".venv" / "bin" / "secantusd-py")]


@dataclass
class DbServer:
    """A SecantusDB process of a test's own, on its own port and storage."""

    storage: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kind: str = field(default_factory=lambda: Path(secantusd_command()[0]).name)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def spawn(self) -> Path:
        """Start the process on the same storage (it does not wait); returns its log."""
        self.starts += 1
        self.storage.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"secantusd-{self.port}-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *secantusd_command(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--storage-path",
                    str(self.storage),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return log

    async def start(self, within: float = 120.0) -> float:
        """Start and wait until it answers a ping; the seconds that took."""
        t0 = time.monotonic()
        log = self.spawn()
        await asyncio.to_thread(self._wait_ping, log, t0 + within)
        return time.monotonic() - t0

    def _wait_ping(self, log: Path, deadline: float) -> None:
        # A synchronous client in a thread: cancelling an async client's connection
        # attempt leaks its socket (a ResourceWarning, an error under this suite).
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        assert self.proc is not None
        with MongoClient(self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as client:
            while True:
                if self.proc.poll() is not None:
                    raise CommandFailed(f"secantusd exited {self.proc.returncode}: see {log}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise CommandFailed(f"secantusd did not answer: see {log}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush beyond what each commit already wrote."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# --- partners -------------------------------------------------------------------------------


def partner_plan() -> list[list[str]]:
    """Partners covering every country of the batch generator, three countries each, plus
    a second partner in DE and in US."""
    countries = sorted(COUNTRIES)
    return [countries[i : i + 3] for i in range(0, len(countries), 3)] + [["DE"], ["US"]]


async def add_partners(
    hub: Hub, plan: Sequence[Sequence[str]], *, channel: AbstractChannel | None = None
) -> dict[str, set[str]]:
    """Register a partner profile per entry of ``plan`` and declare its queue (through
    ``channel`` when given, so that a quorum queue's leader is that channel's node);
    no AMQP users: these partners only receive. Returns country -> partner ids."""
    coverage: dict[str, set[str]] = {}
    for n, countries in enumerate(plan):
        pid = f"p{n:02d}{uuid.uuid4().hex[:4]}"
        await hub.partners.upsert(
            PartnerProfile(pid, frozenset(countries), frozenset(Phase), 100_000, 24.0, True, 1.0)
        )
        if channel is not None:
            await topology.declare_partner(channel, hub.topology, pid)
        else:
            async with hub.connection.channel() as ch:
                await topology.declare_partner(ch, hub.topology, pid)
        for c in countries:
            coverage.setdefault(c, set()).add(pid)
    return coverage


def partners_of(coverage: Mapping[str, set[str]]) -> list[str]:
    return sorted({p for ps in coverage.values() for p in ps})


# --- AMQP -----------------------------------------------------------------------------------


async def publish_messages(
    channel: AbstractChannel, exchange: str, messages: Sequence[GenMessage], in_flight: int = 500
) -> None:
    """Publish generated claims, persistent, each confirmed (the channel confirms)."""
    ex = await channel.get_exchange(exchange, ensure=False)

    async def one(msg: GenMessage) -> None:
        await ex.publish(
            aio_pika.Message(
                msg.body,
                message_id=msg.message_id,
                type=msg.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=msg.type,
        )

    for start in range(0, len(messages), in_flight):
        await asyncio.gather(*(one(m) for m in messages[start : start + in_flight]))


async def take_all(
    channel: AbstractChannel,
    queue: str,
    *,
    expect: int | None = None,
    idle: float = 1.0,
    limit: float = 120.0,
) -> list[AbstractIncomingMessage]:
    """Consume (auto-ack) everything in ``queue``: until ``expect`` messages came and then
    ``idle`` seconds passed without more, or (without ``expect``) until idle, or ``limit``."""
    q = await channel.get_queue(queue, ensure=False)
    got: list[AbstractIncomingMessage] = []
    last = [time.monotonic()]

    async def on_message(msg: AbstractIncomingMessage) -> None:
        got.append(msg)
        last[0] = time.monotonic()

    tag = await q.consume(on_message, no_ack=True)
    start = time.monotonic()
    try:
        while time.monotonic() - start < limit:
            quiet = time.monotonic() - last[0] > idle
            if quiet and (expect is None or len(got) >= expect):
                break
            await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(Exception):
            await q.cancel(tag)
    return got


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


# --- waiting on a running batch ---------------------------------------------------------------


async def inbox_count(db: AsyncDatabase[Doc]) -> int | None:
    """Messages the hub has recorded; None while the database does not answer."""
    from pymongo.errors import PyMongoError

    try:
        return await db.inbox.count_documents({})
    except PyMongoError:
        return None


async def wait_inbox(
    db: AsyncDatabase[Doc], at_least: int, *, within: float, alive: Callable[[], None]
) -> int:
    """Wait until the hub recorded ``at_least`` messages; ``alive`` asserts the worker runs."""
    end = time.monotonic() + within
    while True:
        alive()
        n = await inbox_count(db)
        if n is not None and n >= at_least:
            return n
        assert time.monotonic() < end, f"inbox at {n}, still below {at_least} after {within} s"
        await asyncio.sleep(0.05)


async def wait_done(
    db: AsyncDatabase[Doc], total: int, *, within: float, alive: Callable[[], None]
) -> None:
    """Wait until every message is recorded, the batch reconciled and the outbox sent."""
    from pymongo.errors import PyMongoError

    end = time.monotonic() + within
    while True:
        alive()
        try:
            if (
                await db.inbox.count_documents({}) == total
                and await db.batches.count_documents({}) == 1
                and await db.outbox.count_documents({"sent_at": None}) == 0
            ):
                return
        except PyMongoError:
            pass
        if time.monotonic() > end:
            state = {
                "inbox": await inbox_count(db),
                "batches": await db.batches.count_documents({}),
                "unsent": await db.outbox.count_documents({"sent_at": None}),
            }
            raise AssertionError(f"the batch of {total} was not done within {within} s: {state}")
        await asyncio.sleep(0.2)


async def collect(
    amqp_url: str, topo: Topology, partners: Sequence[str], expect_receipts: int
) -> tuple[
    list[AbstractIncomingMessage],
    dict[str, list[AbstractIncomingMessage]],
    list[AbstractIncomingMessage],
]:
    """Everything the hub sent: the creditor's queue, each partner's queue, ``hub.dead``."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        creditor = await take_all(
            channel, topo.creditor_queue("flexspace"), expect=expect_receipts, limit=180
        )
        assigned = {
            pid: await take_all(channel, topo.partner_queue(pid), idle=0.3) for pid in partners
        }
        dead = await take_all(channel, topo.hub_dead, idle=0.3)
    return creditor, assigned, dead


# --- the census -----------------------------------------------------------------------------


@dataclass
class Census:
    """What one scenario sent and what the hub made of it."""

    scenario: str
    sent: int
    cases: int
    receipts: int
    assignments: int
    lost: int
    duplicated: int
    redelivered: int
    problems: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (
            f"scenario={self.scenario} sent={self.sent} cases={self.cases} "
            f"receipts={self.receipts} assignments={self.assignments} lost={self.lost} "
            f"duplicated={self.duplicated} redelivered={self.redelivered}{extra}"
        )

    def check(self) -> None:
        assert not self.problems, f"{self.line()}\n" + "\n".join(self.problems[:40])
        assert self.lost == 0 and self.duplicated == 0, self.line()


def _distinct(
    msgs: Iterable[AbstractIncomingMessage], problems: list[str], what: str
) -> tuple[dict[str, bytes], int, int]:
    """Messages by AMQP message id; (distinct, identical copies, differing copies)."""
    first: dict[str, bytes] = {}
    copies = differing = 0
    for m in msgs:
        mid = m.message_id or ""
        if not mid:
            problems.append(f"a {what} without a message id: {m.body[:200]!r}")
            continue
        if mid in first:
            if m.body == first[mid]:
                copies += 1
            else:
                differing += 1
                problems.append(f"two different {what}s under one message id {mid}")
        else:
            first[mid] = m.body
    return first, copies, differing


def expected_groups(batch: Batch) -> dict[tuple[str, str], set[str]]:
    """(creditor entity, debtor registration id) -> invoice numbers, of the valid claims."""
    groups: dict[tuple[str, str], set[str]] = {}
    for msg in batch.messages:
        if msg.intent == "original":
            groups.setdefault((msg.entity, msg.debtor_reg), set()).add(msg.key.split("/", 1)[1])
    return groups


async def take_census(
    scenario: str,
    db: AsyncDatabase[Doc],
    batch: Batch,
    creditor_msgs: Sequence[AbstractIncomingMessage],
    partner_msgs: Mapping[str, Sequence[AbstractIncomingMessage]],
    coverage: Mapping[str, set[str]],
    **notes: Any,
) -> Census:
    """Count everything a batch of new claims (and invalid rows) must have produced:
    one receipt per message, one claim per valid row, one case per (entity, debtor) with
    exactly its claims, one ``assigned`` event and one ``case.assigned`` per case in a
    covered country, one reconciliation; nothing left unsent in the outbox."""
    assert {m.intent for m in batch.messages} <= {"original", "invalid"}, "new claims only"
    problems: list[str] = []
    lost = duplicated = 0
    sent_ids = {m.message_id for m in batch.messages}
    invalid_ids = {m.message_id for m in batch.messages if m.intent == "invalid"}
    groups = expected_groups(batch)

    # receipts
    receipt_msgs = [m for m in creditor_msgs if m.type == "claim.receipt"]
    receipts, receipt_copies, differing = _distinct(receipt_msgs, problems, "receipt")
    duplicated += differing
    per_claim: Counter[str] = Counter()
    for body in receipts.values():
        doc = json.loads(body)
        per_claim[doc["claim_message_id"]] += 1
        want = "rejected" if doc["claim_message_id"] in invalid_ids else "accepted"
        if doc["status"] != want:
            problems.append(f"receipt of {doc['claim_message_id']}: {doc['status']}, not {want}")
    twice = [k for k, n in per_claim.items() if n > 1]
    duplicated += len(twice)
    missing_receipts = sent_ids - per_claim.keys()
    lost += len(missing_receipts)
    if twice:
        problems.append(f"{len(twice)} claims with two receipts, e.g. {twice[:3]}")
    if missing_receipts:
        problems.append(f"{len(missing_receipts)} claims without a receipt")
    if per_claim.keys() - sent_ids:
        problems.append(f"receipts for claims never sent: {list(per_claim.keys() - sent_ids)[:3]}")

    reconciled, reconciled_copies, differing = _distinct(
        [m for m in creditor_msgs if m.type == "batch.reconciled"], problems, "reconciliation"
    )
    duplicated += differing
    if len(reconciled) != 1:
        problems.append(f"{len(reconciled)} batch reconciliations, not 1")
        lost += 0 if reconciled else 1
    else:
        summary = json.loads(next(iter(reconciled.values())))
        want_counts = (batch.size, batch.size, batch.size - len(invalid_ids), len(invalid_ids))
        got_counts = tuple(summary[k] for k in ("expected", "received", "accepted", "rejected"))
        if got_counts != want_counts:
            problems.append(f"reconciliation {got_counts} != {want_counts}")

    # the store: inbox, claims, cases, events, outbox
    inbox = await db.inbox.count_documents({})
    if inbox != batch.size:
        problems.append(f"inbox holds {inbox} message ids, not {batch.size}")
        lost += max(0, batch.size - inbox)
    want_keys = {m.key for m in batch.messages if m.intent == "original"}
    claim_keys = {d["_id"] async for d in db.claims.find({}, {"_id": 1})}
    if claim_keys != want_keys:
        lost += len(want_keys - claim_keys)
        problems.append(
            f"claims: {len(want_keys - claim_keys)} missing, {len(claim_keys - want_keys)} unknown"
        )
    docs = await db.cases.find({}, {"claims": 1, "creditor_entity": 1, "debtor": 1}).to_list()
    by_group: dict[tuple[str, str], list[Doc]] = {}
    for d in docs:
        by_group.setdefault((d["creditor_entity"], d["debtor"]["registration_id"]), []).append(d)
    for group, found in by_group.items():
        if len(found) > 1:
            duplicated += len(found) - 1
            problems.append(f"{len(found)} cases for one debtor {group}")
        if group not in groups:
            problems.append(f"a case nobody asked for: {group}")
        elif set(found[0]["claims"]) != groups[group]:
            problems.append(f"case of {group} holds {sorted(found[0]['claims'])[:5]}...")
    missing_cases = groups.keys() - by_group.keys()
    lost += len(missing_cases)
    if missing_cases:
        problems.append(f"{len(missing_cases)} debtors without a case")
    case_country = {
        d["_id"]: d["debtor"]["country"]
        for d in await db.cases.find({}, {"debtor.country": 1}).to_list()
    }
    state = {
        d["_id"]: (d.get("lifecycle"), d.get("partner_id"))
        for d in await db.cases.find({}, {"lifecycle": 1, "partner_id": 1}).to_list()
    }

    event_kinds: Counter[str] = Counter()
    assigned_events: Counter[str] = Counter()
    added_per_message: Counter[str] = Counter()
    async for e in db.events.find({}, {"case_id": 1, "kind": 1, "message_id": 1}):
        event_kinds[e["kind"]] += 1
        if e["kind"] == "assigned":
            assigned_events[e["case_id"]] += 1
        elif e["kind"] == "claim_added":
            added_per_message[e["message_id"]] += 1
    twice_added = [k for k, n in added_per_message.items() if n > 1]
    duplicated += len(twice_added)
    if twice_added:
        problems.append(f"{len(twice_added)} claims added twice, e.g. {twice_added[:3]}")
    twice_assigned = [k for k, n in assigned_events.items() if n > 1]
    duplicated += len(twice_assigned)
    if twice_assigned:
        problems.append(f"{len(twice_assigned)} cases assigned twice: {twice_assigned[:3]}")
    unsent = await db.outbox.count_documents({"sent_at": None})
    if unsent:
        problems.append(f"{unsent} outbox entries never sent")

    # assignments: one case.assigned per case of a covered country, in its partner's queue;
    # a claim that joins a case already assigned is told to its partner by case.updated
    ids_per_case: dict[str, set[str]] = {}
    assignment_copies = update_copies = updates = 0
    for pid, msgs in partner_msgs.items():
        assigned = [m for m in msgs if m.type == "case.assigned"]
        updated = [m for m in msgs if m.type == "case.updated"]
        others = {m.type for m in msgs} - {"case.assigned", "case.updated"}
        if others:
            problems.append(f"unexpected {sorted(map(str, others))} in the queue of {pid}")
        distinct, copies, differing = _distinct(assigned, problems, "assignment")
        assignment_copies += copies
        duplicated += differing
        for mid, body in distinct.items():
            doc = json.loads(body)
            ids_per_case.setdefault(doc["case_id"], set()).add(mid)
            if state.get(doc["case_id"], (None, None))[1] != pid or doc["partner_id"] != pid:
                problems.append(f"assignment of {doc['case_id']} in the queue of {pid}")
        distinct, copies, differing = _distinct(updated, problems, "case update")
        update_copies += copies
        duplicated += differing
        updates += len(distinct)
        for body in distinct.values():
            doc = json.loads(body)
            if state.get(doc["case_id"], (None, None))[1] != pid or doc["partner_id"] != pid:
                problems.append(f"update of {doc['case_id']} in the queue of {pid}")
    notes["case_updates"] = updates
    should_assign = {cid for cid, country in case_country.items() if country in coverage}
    for cid in should_assign:
        lifecycle, pid = state[cid]
        if lifecycle != "assigned" or pid not in coverage[case_country[cid]]:
            problems.append(f"case {cid}: {lifecycle} with {pid}")
    not_assigned = should_assign - ids_per_case.keys()
    lost += len(not_assigned)
    if not_assigned:
        problems.append(f"{len(not_assigned)} cases without their case.assigned")
    extra_ids = [c for c, ids in ids_per_case.items() if len(ids) > 1]
    duplicated += len(extra_ids)
    if extra_ids:
        problems.append(f"{len(extra_ids)} cases with two case.assigned: {extra_ids[:3]}")
    if ids_per_case.keys() - should_assign:
        unknown = list(ids_per_case.keys() - should_assign)
        problems.append(f"assignments of unknown cases: {unknown[:5]}")

    return Census(
        scenario=scenario,
        sent=batch.size,
        cases=len(docs),
        receipts=len(per_claim),
        assignments=sum(len(v) for v in ids_per_case.values()),
        lost=lost,
        duplicated=duplicated,
        redelivered=receipt_copies + assignment_copies + update_copies + reconciled_copies,
        problems=problems,
        notes=dict(notes),
    )


# --- the set-up every batch scenario shares --------------------------------------------


def scenario_batch(prefix: str, total: int, *, seed: int, invalid: int = 10) -> Batch:
    """A batch of ``total`` claims, 2 to 8 per debtor, ``invalid`` of them broken."""
    return generate(
        total,
        batch_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        resends=0,
        amendments=0,
        invalid=invalid,
        withdrawals=0,
        claims_per_debtor=(2, 8),
        seed=seed,
    )


async def publish_batch(amqp_url: str, hub: Hub, batch: Batch) -> None:
    """Publish the batch's claims on ``claims.in`` through the broker at ``amqp_url``."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await publish_messages(await connection.channel(), hub.topology.claims_in, batch.messages)


def scenario_worker(worker: Any) -> tuple[Any, Callable[[], None]]:
    """A hub worker process with small batches and a quick outbox relay, and a check that
    it is still running (it must never die by itself)."""
    w = worker(BATCH_MAX="100", OUTBOX_GRACE_S="2", OUTBOX_POLL_S="0.5")

    def alive() -> None:
        proc = w.current
        assert proc is not None and proc.poll() is None, "the worker died by itself"

    return w, alive
