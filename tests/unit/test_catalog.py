"""The country catalog: every shipped file validates, fallbacks, a new country is a file."""

from __future__ import annotations

import re
import shutil
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from hub.bootstrap import legal_steps_from_catalog
from hub.domain.catalog import PHASES, Catalog, CatalogError, load_catalog
from partner_sdk.codes import CURRENCIES

SHIPPED = Path(str(resources.files("hub").joinpath("data", "countries")))
COUNTRIES = ("DE", "ES", "FR", "GB", "IT", "NL", "PL", "US")
STEP_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")  # the contract's case.legal_step.step


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_every_shipped_file_loads_and_validates(catalog: Catalog) -> None:
    assert catalog.countries() == COUNTRIES
    assert {p.name for p in SHIPPED.glob("*.yaml")} == {f"{c}.yaml" for c in COUNTRIES} | {
        "default.yaml"
    }
    for cc in COUNTRIES:
        country = catalog.country(cc)
        assert country.code == cc and country.own_steps
        assert country.currency in CURRENCIES
        assert country.limitation.rule
        assert country.late_payment.rule
        steps = catalog.legal_steps(cc)
        assert len(steps) >= 5
        assert {s["phase"] for s in steps.values()} == PHASES, cc  # all three phases
        for code, step in steps.items():
            assert STEP_CODE.match(code)
            assert step["name"] and step["description"]
            assert step["deadline_days"] is None or step["deadline_days"] >= 0


def test_germany_has_the_mahnverfahren(catalog: Catalog) -> None:
    de = catalog.country("DE")
    assert de.currency == "EUR"
    assert de.limitation.years == 3
    assert "end of the year" in de.limitation.rule
    steps = catalog.legal_steps("DE")
    assert steps["mahnbescheid"]["phase"] == "legal"
    assert steps["vollstreckungsbescheid"]["phase"] == "legal"
    assert steps["gerichtsvollzieher"]["phase"] == "enforcement"
    assert steps["mahnbescheid"]["deadline_days"] == 14


@pytest.mark.parametrize(
    ("cc", "step", "phase"),
    [
        ("FR", "injonction_de_payer", "legal"),
        ("FR", "mise_en_demeure", "amicable"),
        ("GB", "letter_before_action", "amicable"),
        ("GB", "county_court_claim", "legal"),
        ("GB", "ccj", "legal"),
        ("PL", "nakaz_zaplaty", "legal"),
        ("PL", "epu", "legal"),
        ("ES", "proceso_monitorio", "legal"),
        ("IT", "decreto_ingiuntivo", "legal"),
        ("NL", "dagvaarding", "legal"),
        ("US", "demand_letter", "amicable"),
        ("US", "small_claims", "legal"),
        ("US", "judgment", "legal"),
        ("US", "garnishment", "enforcement"),
    ],
)
def test_country_specific_steps(catalog: Catalog, cc: str, step: str, phase: str) -> None:
    assert catalog.legal_steps(cc)[step]["phase"] == phase


def test_late_payment_compensation(catalog: Catalog) -> None:
    gb = catalog.country("GB").late_payment
    assert gb.compensation_currency == "GBP"
    assert gb.interest_points == Decimal(8)
    assert [gb.compensation_for(Decimal(d)) for d in ("500", "999.99", "1000", "20000")] == [
        Decimal(40),
        Decimal(40),
        Decimal(70),
        Decimal(100),
    ]
    de = catalog.country("DE").late_payment
    assert de.statutory and de.compensation_for(Decimal("1.00")) == Decimal(40)
    for cc in ("ES", "IT", "NL"):
        lp = catalog.country(cc).late_payment
        assert lp.interest_points == Decimal(8) and lp.compensation_currency == "EUR"
    us = catalog.country("US").late_payment
    assert us.statutory is False and us.compensation_for(Decimal(100)) is None


def test_an_unknown_country_falls_back_to_default(catalog: Catalog) -> None:
    assert "BR" not in catalog
    assert catalog.country("BR") is catalog.default
    steps = catalog.legal_steps("BR")
    assert steps == catalog.legal_steps("default")
    assert {"letter_before_action", "court_claim", "judgment", "enforcement"} <= set(steps)
    assert steps["court_claim"]["phase"] == "legal"
    assert catalog.country("de") is catalog.country("DE")


def test_the_hub_checks_legal_steps_against_the_catalog() -> None:
    steps = legal_steps_from_catalog()
    de = steps("DE")
    assert de is not None and de["mahnbescheid"]["phase"] == "legal"
    assert "injonction_de_payer" not in de
    fallback = steps("BR")
    assert fallback is not None and "court_claim" in fallback


# --- a new country is a file --------------------------------------------------------------------

AUSTRIA = """
name: Austria
currency: EUR
limitation:
  years: 3
  rule: 3 years for claims for goods and services (§ 1486 ABGB).
late_payment:
  statutory: true
  applies_to: b2b
  compensation: {currency: EUR, tiers: [{amount: "40.00"}]}
  interest: {reference: ECB base rate (Basiszinssatz), points: "9.2"}
  rule: 40 EUR and base rate plus 9.2 points between businesses (§ 456 UGB).
legal_steps:
  mahnklage:
    phase: legal
    name: Mahnklage (Mahnverfahren)
    deadline_days: 28
    description: Claim in the automatic order-for-payment procedure; objection within 4 weeks.
"""


def test_a_new_country_is_just_a_file(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / "AT.yaml").write_text(AUSTRIA, encoding="utf-8")
    catalog = load_catalog(tmp_path)
    assert catalog.countries() == ("AT",)
    assert catalog.country("AT").name == "Austria"
    assert catalog.legal_steps("AT")["mahnklage"]["phase"] == "legal"
    assert catalog.country("AT").late_payment.interest_points == Decimal("9.2")


def test_a_country_without_steps_uses_the_default_steps(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "default.yaml", tmp_path / "default.yaml")
    text = AUSTRIA[: AUSTRIA.index("legal_steps:")]
    (tmp_path / "AT.yaml").write_text(text, encoding="utf-8")
    catalog = load_catalog(tmp_path)
    assert not catalog.country("AT").own_steps
    assert catalog.legal_steps("AT") == catalog.legal_steps("ZZ")


# --- validation names the file and the field ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("name: Austria\n", ""), "name"),
        (("currency: EUR\n", "currency: Euro\n"), "currency"),
        (("  years: 3\n", "  years: three\n"), "limitation.years"),
        (("  years: 3\n", ""), "limitation.years"),
        (("    phase: legal\n", "    phase: judicial\n"), "legal_steps.mahnklage.phase"),
        (
            ("    deadline_days: 28\n", "    deadline_days: -1\n"),
            "legal_steps.mahnklage.deadline_days",
        ),
        (("  mahnklage:\n", "  Mahn-Klage:\n"), "legal_steps.Mahn-Klage"),
        (('tiers: [{amount: "40.00"}]', "tiers: [{amount: 40.5}]"), "compensation.tiers[0].amount"),
        (("  applies_to: b2b\n", "  applies_to: everyone\n"), "late_payment.applies_to"),
        (("  statutory: true\n", "  statutory: 1\n"), "late_payment.statutory"),
        (("name: Austria\n", "name: Austria\nnmae: typo\n"), "nmae"),
    ],
)
def test_an_invalid_file_names_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    shutil.copy(SHIPPED / "default.yaml", tmp_path / "default.yaml")
    old, new = change
    assert old in AUSTRIA
    (tmp_path / "AT.yaml").write_text(AUSTRIA.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert caught.value.source.endswith("AT.yaml")
    assert field in str(caught.value)
    assert "AT.yaml" in str(caught.value)


def test_a_badly_named_file_or_a_missing_default_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "AT.yaml").write_text(AUSTRIA, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"default\.yaml is missing"):
        load_catalog(tmp_path)
    shutil.copy(SHIPPED / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / "austria.yaml").write_text(AUSTRIA, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"austria\.yaml.*alpha-2"):
        load_catalog(tmp_path)


def test_invalid_yaml_is_an_error(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / "AT.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"AT\.yaml.*not valid YAML"):
        load_catalog(tmp_path)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")
