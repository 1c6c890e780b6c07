"""The raw relay of the limit measurement, run as its own process like a hub worker:
consume ``--source``, republish each message with publisher confirms to ``--exchange``
and acknowledge it only once its copy is confirmed. ``--prefetch 1``: a message at a
time (the limit the benchmark's ratios are taken against); more: pipelined, up to
``--prefetch`` messages in flight, each still confirmed and acknowledged on its own.

    python -m bench.relay --amqp URL --source Q --exchange X --routing-key K
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage


async def relay(amqp_url: str, source: str, exchange: str, routing_key: str, prefetch: int) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # The aiormq layer, as the hub's publisher uses it (no per-message drain wait).
        target = await publish_channel.get_underlay_channel()
        assert isinstance(target, aiormq.Channel)
        queue = await consume_channel.get_queue(source, ensure=False)

        async def on_message(msg: AbstractIncomingMessage) -> None:
            try:
                result = await target.basic_publish(
                    msg.body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=aiormq.spec.Basic.Properties(
                        content_type=msg.content_type,
                        message_id=msg.message_id,
                        message_type=msg.type,
                        delivery_mode=2,
                    ),
                    mandatory=True,
                    wait=False,
                )
                if not isinstance(result, aiormq.spec.Basic.Ack):
                    raise RuntimeError(f"not confirmed: {result!r}")
            except Exception:
                await msg.nack(requeue=True)
                raise
            await msg.ack()

        await queue.consume(on_message)
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--prefetch", type=int, default=512)
    args = parser.parse_args(argv)
    asyncio.run(relay(args.amqp, args.source, args.exchange, args.routing_key, args.prefetch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
