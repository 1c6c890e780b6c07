"""``hubctl adapters webhook|files`` and ``hubctl certify``.

- ``adapters webhook`` connects a partner with an HTTP API: hub messages become signed
  POSTs to its URL, its signed callbacks (``POST /callbacks`` on ``--listen``) go to the
  hub as its reports;
- ``adapters files`` connects a partner that exchanges CSV files through a drop folder,
  its status codes mapped to the hub's by ``--mapping``;
- ``certify`` runs the certification suite for a partner, directly through the SDK or
  through one of the adapters, and prints a pass/fail table (exit 1 unless all pass).

The adapters act as the partner: they connect with its own AMQP URL, read from the
environment variable named by ``--amqp-url-env`` (default ``ONEWINDOW_PARTNER_AMQP_URL``)
so that the password stays off the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.parse
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer
from rich.table import Table

from hub.config import Settings
from hub.entrypoints.cli_cases import err, fail, out

if TYPE_CHECKING:
    from adapters.files import FileAdapter

__all__ = ["register"]

adapters_app = typer.Typer(
    help="Adapters for partners with their own systems (HTTP API, CSV files).",
    no_args_is_help=True,
)

_URL_ENV = "ONEWINDOW_PARTNER_AMQP_URL"


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")
    app.command("certify")(certify)


class _Runnable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait(self) -> None: ...


async def _run_until_signal(adapter: _Runnable) -> None:
    """Run ``adapter`` until SIGINT/SIGTERM (or until it fails)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await adapter.start()
    try:
        running = asyncio.ensure_future(adapter.wait())
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running in done:
            running.result()
        else:
            running.cancel()
    finally:
        await adapter.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _amqp_url(partner_id: str, env: str) -> str:
    url = os.environ.get(env, "")
    if not url:
        raise fail(
            f"set {env} to partner {partner_id}'s AMQP URL (printed by "
            f"`hubctl partners add {partner_id}`)"
        )
    _check_user(partner_id, url)
    return url


def _check_user(partner_id: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise fail(f"the AMQP URL must start with amqp:// or amqps://, not {parts.scheme!r}")
    user = urllib.parse.unquote(parts.username or "")
    if user and user != partner_id:
        raise fail(
            f"the AMQP URL is user {user}'s, not partner {partner_id}'s: an adapter acts as "
            "its partner, with the partner's own user"
        )


def _run(coro: Awaitable[None]) -> None:
    from partner_sdk.errors import PartnerSDKError

    async def main() -> None:
        await coro

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        out().print("stopped")
    except PartnerSDKError as e:
        raise fail(str(e)) from None


@adapters_app.command("webhook")
def webhook(
    partner: Annotated[str, typer.Option(help="Partner id (its AMQP user).")],
    url: Annotated[str, typer.Option(help="The partner's URL that receives the hub's POSTs.")],
    secret_env: Annotated[
        str, typer.Option(help="Environment variable holding the shared signing secret.")
    ],
    listen: Annotated[
        str, typer.Option(help="HOST:PORT of the callback endpoint POST /callbacks.")
    ] = "127.0.0.1:8081",
    amqp_url_env: Annotated[
        str, typer.Option(help="Environment variable holding the partner's AMQP URL.")
    ] = _URL_ENV,
    attempts: Annotated[int, typer.Option(min=1, help="Delivery attempts per message.")] = 6,
    backoff_cap: Annotated[
        float, typer.Option(help="Longest wait between two attempts, in seconds.")
    ] = 30.0,
    timeout: Annotated[float, typer.Option(help="HTTP timeout per attempt, in seconds.")] = 10.0,
) -> None:
    """Connect a partner with an HTTP API: signed POSTs out, signed callbacks in."""
    from adapters.webhook import RetryPolicy, WebhookAdapter, WebhookSender, parse_listen
    from partner_sdk.client import PartnerClient

    secret = os.environ.get(secret_env, "")
    if not secret:
        raise fail(f"environment variable {secret_env} (the shared secret) is empty or unset")
    if len(secret) < 16:
        raise fail(f"the secret in {secret_env} is too short: use at least 16 characters")
    try:
        host, port = parse_listen(listen)
        sender = WebhookSender(
            url, secret, policy=RetryPolicy(attempts=attempts, cap=backoff_cap), timeout=timeout
        )
    except ValueError as e:
        raise fail(str(e)) from None
    amqp_url = _amqp_url(partner, amqp_url_env)
    settings = Settings()
    client = PartnerClient(amqp_url, partner, namespace=settings.namespace)
    adapter = WebhookAdapter(client, sender, secret, callback_host=host, callback_port=port)

    async def main() -> None:
        out().print(
            f"webhook adapter for [bold]{partner}[/]: POST {url}; callbacks on "
            f"http://{listen}/callbacks (Ctrl-C stops)"
        )
        await _run_until_signal(adapter)

    _run(main())


class _FilesRunner:
    """The file adapter with its MongoDB client (for the quarantine collection)."""

    def __init__(self, partner: str, amqp_url: str, drop: Path, mapping_file: Path) -> None:
        from adapters.files import MappingError, load_mapping

        try:
            self.mapping = load_mapping(mapping_file)
        except MappingError as e:
            raise fail(str(e)) from None
        self.partner = partner
        self.amqp_url = amqp_url
        self.drop = drop
        self.settings = Settings()

    @contextlib.asynccontextmanager
    async def adapter(self, poll: float, settle: float) -> AsyncIterator[FileAdapter]:
        from adapters.files import FileAdapter, MongoQuarantineLog
        from hub.infra import mongo
        from partner_sdk.client import PartnerClient

        client = mongo.connect(self.settings.mongo_url)
        try:
            yield FileAdapter(
                PartnerClient(self.amqp_url, self.partner, namespace=self.settings.namespace),
                self.drop,
                self.mapping,
                MongoQuarantineLog(client[self.settings.mongo_db]),
                poll_s=poll,
                settle_s=settle,
            )
        except ValueError as e:
            raise fail(str(e)) from None
        finally:
            await client.close()


@adapters_app.command("files")
def files(
    partner: Annotated[str, typer.Option(help="Partner id (its AMQP user).")],
    drop: Annotated[Path, typer.Option(help="The partner's drop folder.")],
    mapping: Annotated[Path, typer.Option(help="YAML mapping of the partner's status codes.")],
    amqp_url_env: Annotated[
        str, typer.Option(help="Environment variable holding the partner's AMQP URL.")
    ] = _URL_ENV,
    poll: Annotated[float, typer.Option(help="Seconds between two reads of incoming/.")] = 2.0,
    settle: Annotated[
        float, typer.Option(help="Seconds a return file must be unchanged before it is read.")
    ] = 1.0,
    once: Annotated[
        bool, typer.Option(help="One round each way (write waiting messages, read files), exit.")
    ] = False,
) -> None:
    """Connect a partner that exchanges CSV files: placements out, status returns in."""
    runner = _FilesRunner(partner, _amqp_url(partner, amqp_url_env), drop, mapping)

    async def main() -> None:
        async with runner.adapter(poll, settle) as adapter:
            if not once:
                out().print(
                    f"file adapter for [bold]{partner}[/] on {drop} "
                    f"({len(runner.mapping.codes)} status codes; Ctrl-C stops)"
                )
                await _run_until_signal(adapter)
                return
            await adapter.open()
            try:
                written = 0
                while taken := await adapter.pump_once(1.0):
                    written += taken
                reports = await adapter.poll_once()
            finally:
                await adapter.stop()
            out().print(
                f"{written} hub message(s) written to {drop / 'outgoing'}; "
                f"{len(reports)} return file(s) read"
            )

    _run(main())


def certify(
    partner: Annotated[str, typer.Option(help="Partner id (its AMQP user).")],
    url: Annotated[
        str,
        typer.Option(envvar=_URL_ENV, help="The partner's AMQP URL (or $" + _URL_ENV + ")."),
    ],
    adapter: Annotated[
        str, typer.Option(help="How the partner connects: sdk, webhook or files.")
    ] = "sdk",
    drop: Annotated[
        Path | None, typer.Option(help="files: drop folder to use (default: a temporary one).")
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="files: the partner's mapping (default: a minimal one).")
    ] = None,
    country: Annotated[
        str, typer.Option(help="Test country of the certification case (no real partner's).")
    ] = "AQ",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each expected outcome.")
    ] = 30.0,
    force: Annotated[
        bool, typer.Option(help="Run even if the partner already holds real open cases.")
    ] = False,
) -> None:
    """Certify a partner (or an adapter) against this hub before it goes live.

    Accept, report, upload, close and the error replies, on a test case placed for the
    purpose (creditor entity CERT-<partner>, test country --country). Needs a running
    hub worker on the same namespace. Exit 1 unless every scenario passes."""
    from adapters.certify import certify as run_certification
    from adapters.files import MappingError, load_mapping
    from hub.bootstrap import start_hub

    if adapter not in ("sdk", "webhook", "files"):
        raise fail(f"--adapter must be sdk, webhook or files, not {adapter!r}")
    _check_user(partner, url)
    status_mapping = None
    if mapping is not None:
        try:
            status_mapping = load_mapping(mapping)
        except MappingError as e:
            raise fail(str(e)) from None
    settings = Settings()
    passed = False

    async def main() -> None:
        nonlocal passed
        hub = await start_hub(settings, consume=False)
        try:
            report = await run_certification(
                hub,
                partner,
                url,
                via=adapter,  # type: ignore[arg-type]
                drop=drop,
                mapping=status_mapping,
                country=country.upper(),
                within=timeout,
                force=force,
            )
        finally:
            await hub.close()
        table = Table(title=f"certification of {partner} via {adapter}")
        for col in ("scenario", "result", "s", "detail"):
            table.add_column(col, justify="right" if col == "s" else "left")
        colours = {"pass": "green", "fail": "red", "skip": "yellow"}
        for r in report.results:
            table.add_row(
                r.name,
                f"[{colours[r.verdict]}]{r.verdict.upper()}[/]",
                f"{r.seconds:.2f}",
                r.detail,
            )
        out().print(table)
        for note in report.notes:
            err().print(f"[yellow]note:[/] {note}")
        if report.case_id:
            out().print(f"certification case: {report.case_id}")
        colour = "green" if report.passed else "red"
        out().print(f"[bold {colour}]{report.summary()}[/]")
        passed = report.passed

    _run(main())
    if not passed:
        raise typer.Exit(1)
