"""Routing (``hub.domain.routing``): which partners fit a case, and which one gets it."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from hub.domain.routing import PartnerProfile, RoutingRequest, choose_partner
from partner_sdk.messages import Phase

ALL_PHASES = frozenset(Phase)


def partner(pid: str, *countries: str, **changes: object) -> PartnerProfile:
    values: dict[str, object] = {"countries": frozenset(countries or ("DE",))}
    values.update(changes)
    return PartnerProfile(pid, **values)  # type: ignore[arg-type]


def request(
    case_id: str = "C-1",
    *,
    country: str = "DE",
    phase: Phase = Phase.AMICABLE,
    amount: str = "1000.00",
    exclude: frozenset[str] = frozenset(),
) -> RoutingRequest:
    return RoutingRequest(case_id, country, phase, Decimal(amount), exclude)


def test_only_a_partner_covering_the_country_gets_the_case() -> None:
    partners = [partner("de", "DE", "AT"), partner("fr", "FR")]
    assert choose_partner(request(country="FR"), partners, {}).partner_id == "fr"
    assert choose_partner(request(country="AT"), partners, {}).partner_id == "de"
    decision = choose_partner(request(country="IT"), partners, {})
    assert decision.partner_id is None
    assert decision.candidates == ()
    assert "IT" in decision.reason


def test_the_phase_must_be_covered() -> None:
    partners = [
        partner("soft", phases=frozenset({Phase.AMICABLE})),
        partner("lawyer", phases=frozenset({Phase.LEGAL, Phase.ENFORCEMENT})),
    ]
    assert choose_partner(request(phase=Phase.LEGAL), partners, {}).partner_id == "lawyer"
    assert choose_partner(request(phase=Phase.ENFORCEMENT), partners, {}).partner_id == "lawyer"
    assert choose_partner(request(phase=Phase.AMICABLE), partners, {}).partner_id == "soft"
    only_soft = choose_partner(request(phase=Phase.LEGAL), partners[:1], {})
    assert only_soft.partner_id is None
    assert "legal" in only_soft.reason


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.01", "small"),
        ("4999.99", "small"),
        ("5000.00", "small"),  # bands include their bounds
        ("5000.01", "large"),
        ("250000", "large"),
        ("250000.01", None),
    ],
)
def test_amount_bands(amount: str, expected: str | None) -> None:
    partners = [
        partner("small", max_amount=Decimal("5000")),
        partner("large", min_amount=Decimal("5000.01"), max_amount=Decimal("250000")),
    ]
    assert choose_partner(request(amount=amount), partners, {}).partner_id == expected


def test_an_inactive_partner_gets_nothing() -> None:
    partners = [partner("asleep", active=False), partner("awake")]
    for n in range(50):
        assert choose_partner(request(f"C-{n}"), partners, {}).partner_id == "awake"
    assert choose_partner(request(), partners[:1], {}).partner_id is None


def test_capacity() -> None:
    partners = [partner("full", max_open_cases=10), partner("room", max_open_cases=10)]
    counts = {"full": 10, "room": 9}
    for n in range(50):
        assert choose_partner(request(f"C-{n}"), partners, counts).partner_id == "room"
    decision = choose_partner(request(), partners, {"full": 10, "room": 11})
    assert decision.partner_id is None
    assert decision.reason == "every fitting partner is at capacity"
    assert decision.candidates == ("full", "room")


def test_excluded_partners_are_passed_over() -> None:
    partners = [partner("a"), partner("b"), partner("c")]
    for n in range(100):
        req = request(f"C-{n}", exclude=frozenset({"a", "b"}))
        assert choose_partner(req, partners, {}).partner_id == "c"
    decision = choose_partner(request(exclude=frozenset({"a", "b", "c"})), partners, {})
    assert decision.partner_id is None


def test_the_same_case_always_goes_to_the_same_partner() -> None:
    partners = [partner(f"p{i}") for i in range(5)]
    first = {n: choose_partner(request(f"C-{n}"), partners, {}).partner_id for n in range(200)}
    shuffled = list(reversed(partners))
    again = {n: choose_partner(request(f"C-{n}"), shuffled, {}).partner_id for n in range(200)}
    assert first == again
    assert len(set(first.values())) == 5


def test_adding_a_partner_moves_only_the_cases_it_wins() -> None:
    """Rendezvous hashing: a new partner takes cases; no case moves between the old ones."""
    old = [partner(f"p{i}") for i in range(4)]
    before = {n: choose_partner(request(f"C-{n}"), old, {}).partner_id for n in range(2000)}
    after = {
        n: choose_partner(request(f"C-{n}"), [*old, partner("new")], {}).partner_id
        for n in range(2000)
    }
    moved = {n for n in before if before[n] != after[n]}
    assert all(after[n] == "new" for n in moved)
    assert 0.15 < len(moved) / 2000 < 0.25


def test_weights_spread_the_cases() -> None:
    partners = [partner("heavy", weight=3.0), partner("light", weight=1.0)]
    counts = Counter(
        choose_partner(request(f"C-{n:05d}"), partners, {}).partner_id for n in range(10_000)
    )
    assert set(counts) == {"heavy", "light"}
    assert 0.72 <= counts["heavy"] / 10_000 <= 0.78


def test_equal_weights_spread_evenly() -> None:
    partners = [partner(f"p{i}") for i in range(4)]
    counts = Counter(
        choose_partner(request(f"C-{n:05d}"), partners, {}).partner_id for n in range(8_000)
    )
    assert all(1_800 <= c <= 2_200 for c in counts.values()), counts


def test_no_partner_at_all() -> None:
    decision = choose_partner(request(country="JP", phase=Phase.LEGAL, amount="12.50"), [], {})
    assert decision.partner_id is None
    assert decision.reason == "no active partner covers JP / legal for 12.50"


def test_a_match_names_the_candidates() -> None:
    partners = [partner("b"), partner("a"), partner("fr", "FR")]
    decision = choose_partner(request(), partners, {})
    assert decision.reason == "matched"
    assert decision.candidates == ("a", "b")
    assert decision.partner_id in ("a", "b")


def test_profile_document_round_trip() -> None:
    profile = PartnerProfile(
        "acme-de",
        frozenset({"DE", "AT"}),
        ALL_PHASES,
        max_open_cases=50,
        sla_hours=12.5,
        active=False,
        weight=2.0,
        min_amount=Decimal("100.00"),
        max_amount=Decimal("5000"),
        name="Acme Inkasso",
    )
    doc = profile.to_document()
    assert doc["countries"] == ["AT", "DE"]
    assert doc["min_amount"] == "100.00"
    assert PartnerProfile.from_document(doc) == profile
    minimal = PartnerProfile.from_document({"_id": "x-fr", "countries": ["fr"]})
    assert minimal == PartnerProfile("x-fr", frozenset({"FR"}))
