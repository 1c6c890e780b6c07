"""The country catalog: legal steps, limitation periods and late-payment rules as data.

One YAML file per country in ``hub/data/countries/<CC>.yaml`` (ISO 3166-1 alpha-2, upper
case) and ``default.yaml`` for every country without its own file, so that supporting a
new country is adding a file. A file has these keys (``legal_steps`` may be left out, and
the default's steps apply)::

    name: Germany
    currency: EUR                      # ISO 4217; null only in default.yaml
    limitation: {years: 3, rule: "...", source: "..."}   # years may be null: it varies
    late_payment:
      statutory: true                  # false: none; null: unknown
      applies_to: b2b                  # b2b | b2b_and_b2c | none | unknown
      compensation: {currency: EUR, tiers: [{up_to: null, amount: "40.00"}]}
      interest: {reference: "...", points: "9"}
      rule: "..."
      source: "..."
    legal_steps:
      mahnbescheid: {phase: legal, name: "...", deadline_days: 14, description: "..."}

Every file is validated on load; a ``CatalogError`` names the file and the field. Amounts
are strings or integers (never floats). Pure: only the standard library and PyYAML.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import yaml

__all__ = [
    "DEFAULT",
    "PHASES",
    "Catalog",
    "CatalogError",
    "CompensationTier",
    "Country",
    "LatePayment",
    "LegalStep",
    "Limitation",
    "load_catalog",
]

#: The name of the fallback file, without ``.yaml``.
DEFAULT = "default"
PHASES = frozenset({"amicable", "legal", "enforcement"})
APPLIES_TO = frozenset({"b2b", "b2b_and_b2c", "none", "unknown"})

_COUNTRY_FILE = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# The same rule as the contract's ``case.legal_step`` ``step`` field.
_STEP_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class CatalogError(ValueError):
    """A catalog file is missing, unreadable or invalid; the message names file and field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class LegalStep:
    """A country's legal or enforcement step, as partners report it in ``case.legal_step``."""

    code: str
    phase: str
    name: str
    description: str
    #: Typical days until the step's outcome or the next step (e.g. the debtor's time to
    #: object); ``None`` where no typical period exists.
    deadline_days: int | None = None

    def as_mapping(self) -> Mapping[str, Any]:
        return MappingProxyType(
            {
                "phase": self.phase,
                "name": self.name,
                "deadline_days": self.deadline_days,
                "description": self.description,
            }
        )


@dataclass(frozen=True)
class Limitation:
    years: int | None
    rule: str
    source: str | None = None


@dataclass(frozen=True)
class CompensationTier:
    """A fixed sum owed for late payment of a debt of at most ``up_to`` (``None``: any)."""

    amount: Decimal
    up_to: Decimal | None = None


@dataclass(frozen=True)
class LatePayment:
    """Statutory compensation for late payment: fixed sums and interest over a reference."""

    statutory: bool | None
    applies_to: str
    rule: str
    compensation_currency: str | None = None
    compensation: tuple[CompensationTier, ...] = ()
    interest_reference: str | None = None
    interest_points: Decimal | None = None
    source: str | None = None

    def compensation_for(self, debt: Decimal) -> Decimal | None:
        """The fixed compensation owed for ``debt`` (in the country's currency), if any."""
        for tier in self.compensation:
            if tier.up_to is None or debt <= tier.up_to:
                return tier.amount
        return None


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    currency: str | None
    limitation: Limitation
    late_payment: LatePayment
    legal_steps: Mapping[str, LegalStep]
    #: False when the country has no ``legal_steps`` of its own (the default's apply).
    own_steps: bool = True
    source: str = field(default="", compare=False)


class Catalog:
    """Countries by ISO code, with ``default`` for every country without a file."""

    def __init__(self, countries: Mapping[str, Country], default: Country) -> None:
        self._countries = dict(countries)
        self.default = default
        self._steps: dict[str, Mapping[str, Mapping[str, Any]]] = {}

    def __contains__(self, cc: object) -> bool:
        return isinstance(cc, str) and cc.upper() in self._countries

    def countries(self) -> tuple[str, ...]:
        """The ISO codes of the countries with their own file, sorted."""
        return tuple(sorted(self._countries))

    def country(self, cc: str) -> Country:
        """The country ``cc``, or the default for a country without its own file."""
        return self._countries.get(cc.upper(), self.default)

    def legal_steps(self, cc: str) -> Mapping[str, Mapping[str, Any]]:
        """Step code -> ``{phase, name, deadline_days, description}`` for country ``cc``
        (the default's steps for a country without its own)."""
        country = self.country(cc)
        steps = self._steps.get(country.code)
        if steps is None:
            steps = MappingProxyType(
                {code: step.as_mapping() for code, step in country.legal_steps.items()}
            )
            self._steps[country.code] = steps
        return steps


# --- loading -------------------------------------------------------------------------------


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate every ``*.yaml`` of ``path`` (default: the packaged catalog)."""
    root: Traversable = (
        resources.files("hub").joinpath("data", "countries") if path is None else Path(path)
    )
    if not root.is_dir():
        raise CatalogError(str(root), "", "the catalog directory does not exist")
    files = sorted((f for f in root.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    by_code: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for f in files:
        code = f.name.removesuffix(".yaml")
        source = str(f)
        if code != DEFAULT and not _COUNTRY_FILE.match(code):
            raise CatalogError(
                source, "", "a country file is named by its ISO 3166-1 alpha-2 code, e.g. DE.yaml"
            )
        by_code[code] = (source, _read(source, f.read_text(encoding="utf-8")))
    if DEFAULT not in by_code:
        raise CatalogError(str(root), "", f"{DEFAULT}.yaml is missing")
    default = _country(DEFAULT, *by_code.pop(DEFAULT), fallback=None)
    countries = {
        code: _country(code, source, doc, fallback=default)
        for code, (source, doc) in by_code.items()
    }
    return Catalog(countries, default)


def _read(source: str, text: str) -> Mapping[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CatalogError(source, "", f"not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise CatalogError(source, "", "the file must hold a mapping of fields")
    return doc


class _Fields:
    """Typed access to one mapping of a file, with errors naming the file and the field."""

    def __init__(self, source: str, prefix: str, doc: object, allowed: set[str]) -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(doc, dict):
            self.fail("", "must be a mapping")
        self.doc: dict[str, Any] = doc
        unknown = sorted(str(k) for k in doc if k not in allowed)
        if unknown:
            self.fail("", f"unknown field(s) {', '.join(unknown)}; allowed: {sorted(allowed)}")

    def path(self, key: str) -> str:
        return ".".join(p for p in (self.prefix, key) if p)

    def fail(self, key: str, problem: str) -> NoReturn:
        raise CatalogError(self.source, self.path(key) or "(file)", problem)

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.doc.get(key)
        if value is None:
            return self.fail(key, "is required") if required else None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a non-empty string")
        return value.strip()

    def required_text(self, key: str) -> str:
        value = self.text(key)
        assert value is not None
        return value

    def integer(self, key: str, *, required: bool = True) -> int | None:
        value = self.doc.get(key)
        if value is None:
            if required and key not in self.doc:
                self.fail(key, "is required (null if unknown)")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, f"must be a whole number >= 0, not {value!r}")
        return int(value)

    def amount(self, key: str, *, required: bool = True) -> Decimal | None:
        value = self.doc.get(key)
        if value is None:
            return self.fail(key, "is required") if required else None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(key, f'must be a decimal string such as "40.00", not {value!r}')
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0:
            self.fail(key, f"must be a decimal amount >= 0, not {value!r}")
        return amount

    def currency(self, key: str, *, required: bool) -> str | None:
        value = self.text(key, required=required)
        if value is not None and not _CURRENCY.match(value):
            self.fail(key, f"must be an ISO 4217 code such as EUR, not {value!r}")
        return value

    def choice(self, key: str, options: frozenset[str]) -> str:
        value = self.doc.get(key)
        if value not in options:
            self.fail(key, f"must be one of {', '.join(sorted(options))}, not {value!r}")
        return str(value)

    def nested(self, key: str, allowed: set[str]) -> _Fields:
        return _Fields(self.source, self.path(key), self.doc.get(key), allowed)


def _country(
    code: str, source: str, doc: Mapping[str, Any], *, fallback: Country | None
) -> Country:
    top = _Fields(
        source, "", dict(doc), {"name", "currency", "limitation", "late_payment", "legal_steps"}
    )
    name = top.required_text("name")
    currency = top.currency("currency", required=fallback is not None)
    lim = top.nested("limitation", {"years", "rule", "source"})
    limitation = Limitation(
        lim.integer("years"), lim.required_text("rule"), lim.text("source", required=False)
    )
    late_payment = _late_payment(top.nested("late_payment", _LATE_PAYMENT_FIELDS))
    if "legal_steps" in top.doc or fallback is None:
        raw_steps = top.doc.get("legal_steps")
        names = (
            {k for k in raw_steps if isinstance(k, str)} if isinstance(raw_steps, dict) else set()
        )
        steps = _legal_steps(top.nested("legal_steps", names))
        own = True
    else:
        steps, own = fallback.legal_steps, False
    return Country(
        code=code,
        name=name,
        currency=currency,
        limitation=limitation,
        late_payment=late_payment,
        legal_steps=steps,
        own_steps=own,
        source=source,
    )


_LATE_PAYMENT_FIELDS = {
    "statutory",
    "applies_to",
    "compensation",
    "interest",
    "rule",
    "source",
}


def _late_payment(f: _Fields) -> LatePayment:
    statutory = f.doc.get("statutory")
    if "statutory" not in f.doc or not (statutory is None or isinstance(statutory, bool)):
        f.fail("statutory", "is required: true, false, or null if unknown")
    compensation: tuple[CompensationTier, ...] = ()
    comp_currency = None
    if f.doc.get("compensation") is not None:
        comp = f.nested("compensation", {"currency", "tiers"})
        comp_currency = comp.currency("currency", required=True)
        tiers = comp.doc.get("tiers")
        if not isinstance(tiers, list) or not tiers:
            comp.fail("tiers", "must be a non-empty list of {up_to, amount}")
        parsed = []
        for i, tier in enumerate(tiers):
            t = _Fields(f.source, comp.path(f"tiers[{i}]"), tier, {"up_to", "amount"})
            parsed.append(
                CompensationTier(
                    t.amount("amount") or Decimal(0), t.amount("up_to", required=False)
                )
            )
        for i, (a, b) in enumerate(itertools.pairwise(parsed)):
            if a.up_to is None or (b.up_to is not None and b.up_to <= a.up_to):
                comp.fail(f"tiers[{i + 1}]", "tiers must go up by up_to, only the last open-ended")
        compensation = tuple(parsed)
    reference = points = None
    if f.doc.get("interest") is not None:
        interest = f.nested("interest", {"reference", "points"})
        reference = interest.required_text("reference")
        points = interest.amount("points")
    return LatePayment(
        statutory=statutory,
        applies_to=f.choice("applies_to", APPLIES_TO),
        rule=f.required_text("rule"),
        compensation_currency=comp_currency,
        compensation=compensation,
        interest_reference=reference,
        interest_points=points,
        source=f.text("source", required=False),
    )


def _legal_steps(f: _Fields) -> Mapping[str, LegalStep]:
    if not f.doc:
        f.fail("", "must list at least one step")
    steps: dict[str, LegalStep] = {}
    for code in f.doc:
        if not isinstance(code, str) or not _STEP_CODE.match(code):
            f.fail(str(code), "a step code is lower case letters, digits and _ (2-64 chars)")
        s = f.nested(code, {"phase", "name", "deadline_days", "description"})
        steps[code] = LegalStep(
            code=code,
            phase=s.choice("phase", PHASES),
            name=s.required_text("name"),
            description=s.required_text("description"),
            deadline_days=s.integer("deadline_days"),
        )
    return MappingProxyType(steps)
