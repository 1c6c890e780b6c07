"""Partners are kept apart by the broker itself: a partner cannot publish as another
partner's user (RabbitMQ validates ``user_id`` against the connection's user)."""

from __future__ import annotations

import aio_pika
import pytest

from hub.bootstrap import Hub
from tests.conftest import PartnerFactory
from tests.support import now_iso, publish_json

pytestmark = pytest.mark.services


async def test_a_partner_cannot_publish_as_another_partners_user(
    hub: Hub, partner: PartnerFactory
) -> None:
    a = await partner(["DE"])
    b = await partner(["FR"])
    ns = hub.settings.namespace
    conn = await aio_pika.connect(f"amqp://{a}:pw-{a}@127.0.0.1:5672/")
    try:
        channel = await conn.channel(publisher_confirms=True)
        body = {"case_id": "C-0000000000000000", "occurred_at": now_iso()}
        with pytest.raises(aio_pika.exceptions.ChannelClosed, match="user_id"):
            # its own routing key, but B's user id: the broker refuses and closes the channel
            await publish_json(
                channel,
                f"{ns}partners.in",
                f"{a}.case.accepted",
                body,
                type="case.accepted",
                user_id=b,
            )
    finally:
        await conn.close()
    assert await hub.store.db.inbox.count_documents({}) == 0
