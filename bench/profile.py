"""Where a hub worker's CPU time goes, from ``py-spy record --format raw`` output
(collapsed stacks, ``frame;frame;... count``), as ``hubctl bench --profile DIR`` writes.

    python -m bench.profile DIR/hub-1234.txt [--top 25]

Prints the share of samples by package (self time), the functions with the most
self time, and the functions with the most inclusive time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: Package of a frame, by the path of its file (first match wins).
_PACKAGES: tuple[tuple[str, str], ...] = (
    ("/hub/service/", "hub.service"),
    ("/hub/domain/", "hub.domain"),
    ("/hub/infra/", "hub.infra"),
    ("/hub/contract", "hub.contract"),
    ("/partner_sdk/", "partner_sdk"),
    ("/hub/", "hub"),
    ("/bson/", "bson"),
    ("/pymongo/", "pymongo"),
    ("/aio_pika/", "aio_pika"),
    ("/aiormq/", "aiormq"),
    ("/pamqp/", "pamqp"),
    ("/pydantic_core/", "pydantic"),
    ("/pydantic/", "pydantic"),
    ("/asyncio/", "asyncio"),
    ("/logging/", "logging"),
    ("/json/", "json"),
    ("/orjson", "orjson"),
    ("/site-packages/", "other libraries"),
    ("/lib/python3", "stdlib"),
)


#: What a sample was doing, by the first of these functions found on its stack (from
#: the innermost frame outwards): the hub's stages and the AMQP client's own work.
ACTIVITIES: tuple[tuple[str, str], ...] = (
    ("MongoPartnerDirectory.refresh", "partner directory refresh"),
    ("OutboxRelay.", "outbox relay"),
    ("MongoStore.mark_sent", "mark_sent"),
    ("RabbitPublisher.publish", "publish (outbox after commit)"),
    ("RabbitPublisher._one", "publish (outbox after commit)"),
    ("ack_all", "ack"),
    ("MongoStore._write", "transaction: write (BSON, bulkWrite)"),
    ("_MongoTx.", "transaction: reads"),
    ("_IntakeRun.", "transaction: intake decisions"),
    ("_UpdatesRun.", "transaction: update decisions"),
    ("AsyncClientSession.", "transaction: begin/commit"),
    ("MongoStore.transact", "transaction: other"),
    (".parse (hub/service/", "parse + validate (pydantic)"),
    ("to_incoming", "consume: deliveries to Incoming"),
    ("Connection.__reader", "AMQP client: reading frames"),
    ("Channel._reader", "AMQP client: reading frames"),
    ("Connection.__writer", "AMQP client: writing frames"),
    ("consumer (aio_pika/queue.py", "consume: delivery callbacks"),
    ("_on_deliver", "consume: delivery callbacks"),
    ("BatchConsumer._collect", "consume: collecting batches"),
    ("_UnixSelectorEventLoop", "event loop"),
    ("EpollSelector.select", "event loop"),
)


def _activity(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        for marker, name in ACTIVITIES:
            if marker in frame:
                return name
    return "other (event loop, tasks, futures)"


def _package(frame: str) -> str:
    m = _FRAME.match(frame)
    path = m.group("file") if m else frame
    for needle, name in _PACKAGES:
        if needle in path or path.startswith(needle[1:]):
            return name
    if path.startswith("<"):
        return "generated (dataclasses)"
    return "stdlib" if "/" not in path else "other"


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def read(paths: Iterable[Path]) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            # py-spy adds "process N:..." and "thread ..." roots; keep the code frames.
            frames = tuple(
                f for f in stack.split(";") if not f.startswith(("process ", "thread ("))
            )
            stacks[frames] += int(count)
    return stacks


def summary(stacks: Counter[tuple[str, ...]], top: int = 25) -> str:
    total = sum(stacks.values())
    if not total:
        return "no samples"
    by_package: Counter[str] = Counter()
    by_activity: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks.items():
        if not frames:
            continue
        by_package[_package(frames[-1])] += n
        by_activity[_activity(frames)] += n
        self_time[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            inclusive[f] += n
    out = [f"{total} samples"]
    out.append("\nby activity (first stage found on the stack, innermost first):")
    out += [f"  {n / total:6.1%}  {name}" for name, n in by_activity.most_common()]
    out.append("\nself time by package:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in by_package.most_common()]
    out.append(f"\ntop {top} functions by self time:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    out.append(f"\ntop {top} functions by inclusive time:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summary(read(args.files), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
