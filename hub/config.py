"""Settings, from environment variables (prefix ``ONEWINDOW_``) with safe local defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEWINDOW_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_management_url: str = "http://guest:guest@127.0.0.1:15672"
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "onewindow"

    #: Topology names can be prefixed so that tests (and tenants) never share state.
    namespace: str = ""

    #: Messages in flight per consumer channel (AMQP basic.qos prefetch).
    prefetch: int = Field(default=512, ge=1, le=65535)
    #: A consumer collects up to this many messages into one MongoDB transaction...
    batch_max: int = Field(default=256, ge=1, le=10_000)
    #: ...or waits at most this long for more after the first one, but only when at least
    #: ``batch_linger_min`` were already waiting (a flood); a trickle is handled at once.
    batch_wait_ms: int = Field(default=20, ge=0, le=10_000)
    batch_linger_min: int = Field(default=8, ge=1, le=10_000)
    #: Deliveries of one message before the broker dead-letters it (quorum queues).
    delivery_limit: int = Field(default=5, ge=1, le=100)
    #: Unsent outbox entries older than this are republished by the relay.
    outbox_grace_s: float = Field(default=10.0, ge=0.1)
    outbox_poll_s: float = Field(default=2.0, ge=0.1)
    #: Another writer's unsent entries are taken over after this long (writer presumed gone).
    outbox_orphan_s: float = Field(default=30.0, ge=0.1)
    #: A worker notes itself alive this often; one silent for ``worker_stale_s`` is presumed
    #: dead and the transactions it left open are ended (their locks released).
    worker_heartbeat_s: float = Field(default=1.0, ge=0.1)
    worker_stale_s: float = Field(default=6.0, ge=0.5)
    #: Largest body accepted on hub.claims (bytes); document messages have their own cap.
    max_claim_bytes: int = 64 * 1024
    max_update_bytes: int = 28 * 1024 * 1024

    creditor_id: str = "flexspace"
    log_level: str = "INFO"
    #: JSON log lines (with case, message and partner ids); plain text when false.
    log_json: bool = True
    #: Prometheus metrics of a worker on 127.0.0.1:<port>; 0 turns them off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
