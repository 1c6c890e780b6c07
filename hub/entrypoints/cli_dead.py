"""``hubctl dead``: the dead-letter queue ``hub.dead``.

``list`` peeks through the RabbitMQ management API (``ONEWINDOW_AMQP_MANAGEMENT_URL``):
the letters stay in the queue. ``replay`` republishes letters over AMQP
(``ONEWINDOW_AMQP_URL``) to where they were first published, and removes each once the
broker confirmed its copy. Replaying a partner's message needs an AMQP user tagged
``impersonator`` (the copy keeps the partner's ``user_id``).
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from hub.config import Settings
from hub.entrypoints.cli_cases import err, fail, out, run
from hub.infra.dead_letters import DeadLetter, DeadLetterError, DeadLetters
from hub.service.deadletters import DeadLetterService, ReplayReport

dead_app = typer.Typer(
    help="Dead letters (hub.dead): messages the hub could not process, and their replay.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(dead_app, name="dead")


def _queue(settings: Settings) -> DeadLetters:
    from hub.infra.rabbit_admin import vhost_of
    from hub.infra.topology import Topology

    return DeadLetters(
        settings.amqp_management_url,
        Topology(settings.namespace, settings.delivery_limit).hub_dead,
        namespace=settings.namespace,
        vhost=vhost_of(settings.amqp_url),
    )


def _who() -> str:
    try:
        return f"{getpass.getuser()}@hubctl"
    except (KeyError, OSError):
        return "hubctl"


@dead_app.command("list")
def list_letters(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document per line.")] = False,
) -> None:
    """List the letters in hub.dead, oldest first (they stay in the queue).

    For each: message id, type, the exchange and routing key it was published with, why
    and in which queue it died, how many times, and when."""
    settings = Settings()

    async def main() -> list[DeadLetter]:
        return await DeadLetterService(_queue(settings), None, by=_who()).list(limit)

    try:
        letters = run(main())
    except DeadLetterError as e:
        raise fail(str(e)) from None
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.to_json(), ensure_ascii=False))
        return
    if not letters:
        out().print("hub.dead is empty")
        return
    more = f", the first {limit}" if len(letters) == limit else ""
    table = Table(title=f"hub.dead: {len(letters)} letter(s){more}")
    for column in ("message id", "type", "exchange", "routing key", "reason", "count", "died at"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.message_id or "-",
            letter.type or "-",
            letter.exchange or "(default)",
            letter.routing_key or "-",
            f"{letter.reason} in {letter.queue}" if letter.queue else letter.reason,
            str(letter.count),
            letter.died_at.isoformat(timespec="seconds") if letter.died_at else "-",
        )
    out().print(table)


@dead_app.command("replay")
def replay(
    message_ids: Annotated[
        list[str] | None, typer.Argument(help="Message ids of the letters to replay.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every letter now in hub.dead.")
    ] = False,
) -> None:
    """Replay letters: republish each where it was first published, then remove it.

    The copy keeps the message id and properties, without the x-death headers; a letter
    the broker refuses stays in hub.dead."""
    from hub.infra import rabbit

    if replay_all == bool(message_ids):
        raise fail("give the message ids to replay, or --all (not both)")
    settings = Settings()

    async def main() -> ReplayReport[DeadLetter]:
        connection = await rabbit.connect(settings.amqp_url)
        try:
            service = DeadLetterService(_queue(settings), connection, by=_who())
            return await service.replay(None if replay_all else message_ids)
        finally:
            await connection.close()

    try:
        report = run(main())
    except DeadLetterError as e:
        raise fail(str(e)) from None
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: ReplayReport[DeadLetter]) -> None:
    for letter in report.replayed:
        out().print(
            f"replayed {letter.message_id} ({letter.type}) to "
            f"{letter.exchange or '(default)'} / {letter.routing_key}",
            markup=False,
        )
    for mid in report.missing:
        err().print(f"not in hub.dead: {mid}", markup=False)
    for letter, why in report.refused:
        err().print(f"not replayed: {letter.message_id}: {why}", markup=False)
    if not (report.replayed or report.missing or report.refused):
        out().print("hub.dead is empty: nothing to replay")
