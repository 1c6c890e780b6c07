"""``hubctl partners``: the partner network. A partner is a routing profile in MongoDB
plus, normally, its own RabbitMQ user (named as the partner id) with least privilege."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from hub.config import Settings
from hub.domain.routing import PartnerProfile
from hub.entrypoints.cli_cases import Session, err, fail, out, run, session
from hub.infra.rabbit_admin import RabbitAdmin, check_partner_id, set_partner_active
from partner_sdk.codes import COUNTRIES
from partner_sdk.messages import Phase

partners_app = typer.Typer(help="Partner law firms and agencies.", no_args_is_help=True)

#: Fields of a partner in ``partners load`` files, and the aliases accepted for them.
_ALIASES = {"id": "partner_id", "max_open": "max_open_cases"}
_FIELDS = frozenset(
    {
        "partner_id",
        "name",
        "countries",
        "phases",
        "max_open_cases",
        "sla_hours",
        "weight",
        "min_amount",
        "max_amount",
        "active",
        "password",
    }
)


def register(app: typer.Typer) -> None:
    app.add_typer(partners_app, name="partners")


class ProfileError(ValueError):
    """A partner's profile (from options or a file) does not make sense."""


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [w.strip() for w in value.split(",") if w.strip()]
    if isinstance(value, Sequence):
        if any(isinstance(w, bool) for w in value):
            raise ProfileError(
                f"{value!r} holds a yes/no value: quote country codes such as 'NO' "
                "(YAML reads a bare NO as false)"
            )
        return [str(w).strip() for w in value if str(w).strip()]
    raise ProfileError(f"expected a list or a comma-separated string, not {value!r}")


def _amount(value: Any, field: str) -> Decimal | None:
    if value in (None, ""):
        return None
    if isinstance(value, float):  # YAML 1000.5: keep what was written, not the float
        value = repr(value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ProfileError(f"{field} {value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ProfileError(f"{field} must be a non-negative amount, not {value!r}")
    return amount


def build_profile(raw: Mapping[str, Any]) -> PartnerProfile:
    """A partner profile from a mapping of ``partners load`` / ``partners add`` fields."""
    doc = {_ALIASES.get(k, k): v for k, v in raw.items()}
    unknown = set(doc) - _FIELDS
    if unknown:
        raise ProfileError(f"unknown field(s) {', '.join(sorted(unknown))}")
    partner_id = str(doc.get("partner_id") or "")
    try:
        check_partner_id(partner_id)
    except ValueError as e:
        raise ProfileError(str(e)) from None
    countries = [c.upper() for c in _words(doc.get("countries"))]
    if not countries:
        raise ProfileError(f"partner {partner_id} covers no country")
    bad = [c for c in countries if c not in COUNTRIES]
    if bad:
        raise ProfileError(f"not ISO 3166-1 alpha-2 countries: {', '.join(bad)}")
    try:
        phases = frozenset(Phase(p.lower()) for p in _words(doc.get("phases") or "amicable"))
    except ValueError:
        raise ProfileError(
            f"phases must be among {', '.join(p.value for p in Phase)}, not {doc.get('phases')!r}"
        ) from None
    try:
        max_open = int(doc.get("max_open_cases", 1000))
        sla_hours = float(doc.get("sla_hours", 48.0))
        weight = float(doc.get("weight", 1.0))
    except (TypeError, ValueError) as e:
        raise ProfileError(f"partner {partner_id}: {e}") from None
    if max_open < 0 or sla_hours <= 0 or weight <= 0:
        raise ProfileError(
            f"partner {partner_id}: max_open_cases must be >= 0, sla_hours and weight > 0"
        )
    min_amount = _amount(doc.get("min_amount"), "min_amount")
    max_amount = _amount(doc.get("max_amount"), "max_amount")
    if min_amount is not None and max_amount is not None and min_amount > max_amount:
        raise ProfileError(f"partner {partner_id}: min_amount is above max_amount")
    return PartnerProfile(
        partner_id=partner_id,
        name=str(doc.get("name") or ""),
        countries=frozenset(countries),
        phases=phases,
        max_open_cases=max_open,
        sla_hours=sla_hours,
        active=bool(doc.get("active", True)),
        weight=weight,
        min_amount=min_amount,
        max_amount=max_amount,
    )


def _admin(settings: Settings) -> RabbitAdmin:
    return RabbitAdmin.from_settings(settings)


async def _provision(
    s: Session, profile: PartnerProfile, password: str | None, *, broker_user: bool
) -> str | None:
    """Save the profile and set up the partner's broker user: the AMQP URL to hand over,
    or None when no user was provisioned or an existing one keeps its password."""
    await s.partners.upsert(profile)
    if not broker_user:
        return None
    admin = _admin(s.settings)
    if password is None and await admin.user_exists(profile.partner_id):
        await admin.grant_partner(profile.partner_id)  # no silent password rotation
        return None
    return await admin.provision_partner(profile.partner_id, password or secrets.token_urlsafe(24))


@partners_app.command("add")
def add(
    partner_id: Annotated[str, typer.Argument(metavar="ID", help="Partner id, e.g. acme-de.")],
    countries: Annotated[str, typer.Option(help="Countries covered, e.g. DE,AT.")],
    phases: Annotated[str, typer.Option(help="Phases taken on.")] = "amicable",
    max_open: Annotated[int, typer.Option(help="Open cases it can hold.")] = 1000,
    sla_hours: Annotated[float, typer.Option(help="Hours it has to accept a case.")] = 48.0,
    weight: Annotated[float, typer.Option(help="Share of the cases it fits.")] = 1.0,
    min_amount: Annotated[str | None, typer.Option(help="Smallest case total it takes.")] = None,
    max_amount: Annotated[str | None, typer.Option(help="Largest case total it takes.")] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password: Annotated[
        str | None, typer.Option(help="AMQP password (default: generated).")
    ] = None,
    broker_user: Annotated[
        bool, typer.Option("--broker-user/--no-broker-user", help="Provision its RabbitMQ user.")
    ] = True,
) -> None:
    """Add or update a partner; provision its RabbitMQ user and print its AMQP URL.

    An existing broker user keeps its password unless --password is given (its rights
    are re-applied, which also re-enables a disabled partner's user)."""
    try:
        profile = build_profile(
            {
                "partner_id": partner_id,
                "countries": countries,
                "phases": phases,
                "max_open_cases": max_open,
                "sla_hours": sla_hours,
                "weight": weight,
                "min_amount": min_amount,
                "max_amount": max_amount,
                "name": name,
            }
        )
    except ProfileError as e:
        raise fail(str(e)) from None

    async def main() -> None:
        async with session() as s:
            url = await _provision(s, profile, password, broker_user=broker_user)
        out().print(
            f"partner [bold]{profile.partner_id}[/] saved: {', '.join(sorted(profile.countries))}"
        )
        if url:
            out().print(f"AMQP URL (give it to the partner; it is not stored): {url}")
        elif broker_user:
            out().print(
                "its broker user exists: rights re-applied, password unchanged "
                "(--password sets a new one)"
            )

    run(main())


@partners_app.command("list")
def list_partners() -> None:
    """Partners with their coverage, limits and open cases."""

    async def main() -> None:
        async with session() as s:
            await s.partners.refresh()
            profiles = await s.partners.profiles()
            counts = s.partners.open_cases()
        table = Table(title=f"{len(profiles)} partner(s)")
        for col in (
            "partner",
            "name",
            "countries",
            "phases",
            "open",
            "max",
            "sla h",
            "weight",
            "amounts",
            "active",
        ):
            table.add_column(col, justify="right" if col in ("open", "max", "weight") else "left")
        for p in sorted(profiles, key=lambda p: p.partner_id):
            band = f"{p.min_amount or 0}-{p.max_amount if p.max_amount is not None else '∞'}"
            table.add_row(
                p.partner_id,
                p.name,
                ",".join(sorted(p.countries)),
                ",".join(sorted(ph.value for ph in p.phases)),
                str(counts.get(p.partner_id, 0)),
                str(p.max_open_cases),
                f"{p.sla_hours:g}",
                f"{p.weight:g}",
                band,
                "yes" if p.active else "[red]no[/]",
            )
        out().print(table)

    run(main())


def read_profiles(path: Path) -> list[tuple[PartnerProfile, str | None]]:
    """Profiles (and optional passwords) from a YAML list, or a mapping with ``partners``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"cannot read {path}: {e}") from None
    if isinstance(data, Mapping):
        data = data.get("partners")
    if not isinstance(data, list):
        raise ProfileError(f"{path} must hold a list of partners (or a 'partners:' list)")
    out_: list[tuple[PartnerProfile, str | None]] = []
    seen: set[str] = set()
    for i, raw in enumerate(data, 1):
        if not isinstance(raw, Mapping):
            raise ProfileError(f"{path}: entry {i} is not a mapping")
        try:
            profile = build_profile(raw)
        except ProfileError as e:
            raise ProfileError(f"{path}: entry {i}: {e}") from None
        if profile.partner_id in seen:
            raise ProfileError(f"{path}: partner {profile.partner_id} appears twice")
        seen.add(profile.partner_id)
        password = raw.get("password")
        out_.append((profile, str(password) if password else None))
    return out_


@partners_app.command("load")
def load(
    file: Annotated[Path, typer.Argument(help="YAML list of partner profiles.")],
    broker_users: Annotated[
        bool,
        typer.Option("--broker-users/--no-broker-users", help="Provision their RabbitMQ users."),
    ] = True,
) -> None:
    """Add or update every partner of a YAML file (see examples/partners.yaml)."""
    try:
        entries = read_profiles(file)
    except ProfileError as e:
        raise fail(str(e)) from None

    async def main() -> None:
        table = Table(title=f"{len(entries)} partner(s) loaded from {file}")
        table.add_column("partner")
        table.add_column("countries")
        table.add_column("AMQP URL" if broker_users else "broker user")
        async with session() as s:
            for profile, password in entries:
                url = await _provision(s, profile, password, broker_user=broker_users)
                table.add_row(
                    profile.partner_id,
                    ",".join(sorted(profile.countries)),
                    url or "not provisioned",
                )
        out().print(table)
        if broker_users:
            out().print("Hand each partner its URL; the passwords are not stored by the hub.")

    run(main())


@partners_app.command("disable")
def disable(
    partner_id: Annotated[str, typer.Argument(metavar="ID")],
    settle: Annotated[
        float,
        typer.Option(
            help="Seconds to keep closing its connections the broker has not reported yet."
        ),
    ] = 6.0,
) -> None:
    """Stop routing to a partner, revoke its broker rights and close its connections.
    Its open cases stay with it: reassign them with `hubctl cases reassign`."""

    async def main() -> None:
        async with session() as s:
            if not await set_partner_active(s.partners, partner_id, False):
                raise fail(f"there is no partner {partner_id}")
            closed = await _admin(s.settings).disable_partner(partner_id, settle_s=settle)
            open_cases = s.partners.open_cases().get(partner_id, 0)
        out().print(f"partner {partner_id} disabled; {closed} connection(s) closed")
        if open_cases:
            err().print(
                f"[yellow]{open_cases} open case(s) are still with {partner_id}: "
                f"`hubctl cases list --partner {partner_id}` and reassign them.[/]"
            )

    run(main())


@partners_app.command("remove")
def remove(
    partner_id: Annotated[str, typer.Argument(metavar="ID")],
    force: Annotated[bool, typer.Option(help="Remove it even while it holds open cases.")] = False,
) -> None:
    """Delete a partner's profile and its RabbitMQ user (its queue is kept)."""

    async def main() -> None:
        async with session() as s:
            await s.partners.refresh()
            open_cases = s.partners.open_cases().get(partner_id, 0)
            if open_cases and not force:
                raise fail(
                    f"partner {partner_id} still holds {open_cases} open case(s); reassign "
                    "them first or use --force"
                )
            deleted = await s.store.db.partners.delete_one({"_id": partner_id})
            user = await _admin(s.settings).remove_partner(partner_id)
        if not deleted.deleted_count and not user:
            raise fail(f"there is no partner {partner_id}")
        out().print(
            f"partner {partner_id} removed (profile: {'deleted' if deleted.deleted_count else '-'}"
            f", broker user: {'deleted' if user else '-'})"
        )

    run(main())
