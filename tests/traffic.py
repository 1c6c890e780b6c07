"""Real traffic for the dashboard and report tests: claims published as the creditor,
reports published as the partners' own AMQP users, waits on the hub's store."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import aio_pika

from hub.bootstrap import Hub
from hub.domain.model import CaseState, Lifecycle, case_id_for
from partner_sdk import messages as m
from tests.support import claim_body, eventually, publish_json


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def place_claim(hub: Hub, n: int, **claim: Any) -> str:
    """Publish claim ``n`` (see ``claim_body``) on ``claims.in``; return its case id."""
    body = claim_body(n, **claim)
    parsed = m.ClaimPlaced.model_validate_json(json.dumps(body))
    async with hub.connection.channel() as ch:
        await publish_json(ch, hub.topology.claims_in, "claim.placed", body, type="claim.placed")
    return case_id_for(parsed.creditor_entity, parsed.debtor.model_dump())


async def wait_case(
    hub: Hub, case_id: str, *lifecycles: Lifecycle, within: float = 20
) -> CaseState:
    found: list[CaseState] = []

    async def check() -> bool:
        state = await hub.store.case(case_id)
        if state is not None and (not lifecycles or state.lifecycle in lifecycles):
            found.append(state)
            return True
        return False

    await eventually(check, within=within)
    return found[-1]


async def wait_events(hub: Hub, case_id: str, count: int, within: float = 20) -> None:
    async def check() -> bool:
        return await hub.store.db.events.count_documents({"case_id": case_id}) >= count

    await eventually(check, within=within)


class PartnerClient:
    """A partner publishing as its own AMQP user (``user_id`` checked by the broker)."""

    def __init__(self, hub: Hub, partner_id: str) -> None:
        self.hub = hub
        self.partner_id = partner_id
        self.url = f"amqp://{partner_id}:pw-{partner_id}@127.0.0.1:5672/"

    async def send(self, msg: m.Message) -> str:
        connection = await aio_pika.connect(self.url)
        try:
            ch = await connection.channel()
            return await publish_json(
                ch,
                self.hub.topology.partners_in,
                f"{self.partner_id}.{msg.TYPE}",
                msg.to_json(),
                type=msg.TYPE,
                user_id=self.partner_id,
            )
        finally:
            await connection.close()

    async def report(self, cls: type[m.Message], case_id: str, **fields: Any) -> str:
        body = {"case_id": case_id, "occurred_at": now().isoformat(), **fields}
        return await self.send(cls.model_validate_json(json.dumps(body)))

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:12]


# --- the dashboard, served for real --------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedApp:
    """An ASGI app on uvicorn in a background thread (its own event loop), on a free
    localhost port, with its lifespan run."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread: Any = None

    def start(self, within: float = 30) -> None:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)
        self.thread.start()
        end = time.monotonic() + within
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
