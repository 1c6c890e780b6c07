"""``hubctl bench``: the hub measured against the broker's own limit, in one run.

Phases, on one broker and one database: the limit (a raw aio-pika relay and the raw bulk
write rate), intake (a batch of claims until every receipt and assignment is out),
partner updates (accepted, then activities, until applied) and latency (claim to
assignment at a steady offered load). See ``BENCHMARKS.md``.
"""

from bench.options import Options
from bench.run import run

__all__ = ["Options", "run"]
