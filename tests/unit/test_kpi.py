"""KPIs (``hub.service.kpi``) over cases told event by event through the domain's own
decide functions, checked against figures worked out by hand."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from hub.domain import lifecycle
from hub.domain.model import CaseState, Event, Lifecycle, case_id_for, fold
from hub.service.kpi import CaseFacts, case_facts, compute, month_bounds, rate
from partner_sdk import messages as m
from tests.support import claim_body


def t(day: str, hour: int = 9) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2026-{day}T{hour:02d}:00:00+00:00")


class Story:
    """One case: each step decided on the current state, recorded at ``recorded`` (default:
    when it occurred)."""

    def __init__(self, n: int, when: dt.datetime, **claim: Any) -> None:
        body = claim_body(n, **claim)
        msg = m.ClaimPlaced.model_validate_json(json.dumps(body))
        self.case_id = case_id_for(msg.creditor_entity, msg.debtor.model_dump())
        self.events: list[Event] = []
        self.partner = ""
        self._do(lifecycle.add_claim(None, self.case_id, msg, message_id=f"c{n}", now=when))

    @property
    def state(self) -> CaseState:
        s = fold(self.events)
        assert s is not None
        return s

    def _do(self, events: list[Event]) -> Story:
        self.events.extend(events)
        return self

    def assign(self, pid: str, when: dt.datetime, sla_hours: float = 24) -> Story:
        self.partner = pid
        return self._do(lifecycle.assign(self.state, pid, sla_hours=sla_hours, now=when))

    def unassigned(self, when: dt.datetime) -> Story:
        return self._do(lifecycle.leave_unassigned(self.state, reason="none", now=when))

    def report(
        self, cls: type[m.Message], when: dt.datetime, recorded: dt.datetime | None = None, **f: Any
    ) -> Story:
        body = {"case_id": self.case_id, "occurred_at": when.isoformat(), **f}
        msg = cls.model_validate_json(json.dumps(body))
        return self._do(
            lifecycle.report(
                self.state,
                self.partner,
                msg,
                message_id=f"{self.case_id}-{len(self.events)}",
                now=recorded or when,
            )
        )

    def decide(self, settlement_id: str, when: dt.datetime, approved: bool = True) -> Story:
        return self._do(
            lifecycle.decide_settlement(
                self.state, settlement_id, approved=approved, decided_by="kam", note=None, now=when
            )
        )


AS_OF = t("12-01", 0)


def stories() -> list[Story]:
    a = (
        Story(1, t("10-01"), country="DE", entity="E1")  # 1052.50 EUR
        .assign("p1", t("10-01", 10))
        .report(m.CaseAccepted, t("10-01", 12))
        .report(m.CaseActivity, t("10-01", 15), kind="call", outcome="right_party_contact")
        .report(m.CaseActivity, t("10-02"), kind="letter", outcome="sent")
        .report(m.CaseActivity, t("10-03"), kind="call", outcome="no_contact")
        .report(m.CasePromise, t("10-04"), amount="500.00", currency="EUR", due_date="2026-10-20")
        .report(m.CasePayment, t("10-15"), amount="500.00", currency="EUR")
        .report(m.CasePayment, t("11-03", 12), amount="552.50", currency="EUR")
        .report(m.CaseClosed, t("11-03", 12), close_code="paid")
    )
    b = (  # never answered: overdue
        Story(2, t("10-05"), country="FR", entity="E2", principal="2000.00").assign(
            "p2", t("10-05")
        )
    )
    c = (
        Story(3, t("11-02"), country="GB", entity="E3", currency="GBP", principal="800.00")
        .assign("p3", t("11-02"), sla_hours=2)
        .report(m.CaseAccepted, t("11-02", 15))  # late
        .report(m.CasePromise, t("11-03"), amount="300.00", currency="GBP", due_date="2026-11-10")
        .report(m.SettlementProposed, t("11-15"), settlement_id="S1", amount="400", currency="GBP")
        .decide("S1", t("11-16"))
        .report(m.CasePayment, t("11-20"), amount="400", currency="GBP")
        .report(m.CaseClosed, t("11-21"), close_code="settled")
    )
    d = Story(4, t("11-10"), country="DE", entity="E1").unassigned(t("11-10"))
    # a payment that happened in November but that the hub learned only in December
    e = (
        Story(5, t("11-01"), country="DE", entity="E1", principal="100.00")
        .assign("p1", t("11-01"))
        .report(m.CaseAccepted, t("11-01", 10))
        .report(m.CasePayment, t("11-20"), recorded=t("12-05"), amount="50", currency="EUR")
    )
    return [a, b, c, d, e]


def facts(as_of: dt.datetime = AS_OF) -> list[CaseFacts]:
    out = [case_facts(s.events, as_of) for s in stories()]
    return [f for f in out if f is not None]


def test_amounts_stay_per_currency_and_rates_are_collected_over_placed() -> None:
    k = compute(facts(), as_of=AS_OF, month="2026-11")
    eur_placed = Decimal("1052.50") + Decimal("2052.50") + Decimal("1052.50") + Decimal("152.50")
    totals = {(r.key, r.currency): r for r in k.totals}
    assert totals["all", "EUR"].placed == eur_placed
    assert totals["all", "EUR"].collected == Decimal("1052.50")  # the late payment is unknown yet
    assert totals["all", "EUR"].rate == Decimal("0.2442")  # 1052.50 / 4310.00 = 0.24420
    assert totals["all", "GBP"].placed == Decimal("852.50")
    assert totals["all", "GBP"].rate == Decimal("0.4692")
    assert k.cases == 5 and k.currencies == ["EUR", "GBP"]

    vintage = {(r.key, r.currency): (r.cases, r.placed, r.collected) for r in k.by_vintage}
    assert vintage == {
        ("2026-10", "EUR"): (2, Decimal("3105.00"), Decimal("1052.50")),
        ("2026-11", "EUR"): (2, Decimal("1205.00"), Decimal(0)),
        ("2026-11", "GBP"): (1, Decimal("852.50"), Decimal(400)),
    }
    curves = {(c.month, c.currency): c for c in k.vintage_curves}
    october = curves["2026-10", "EUR"]
    assert october.collected == (Decimal("500.00"), Decimal("1052.50"))
    assert october.rates == (rate(500, Decimal(3105)), rate(Decimal("1052.50"), Decimal(3105)))
    assert curves["2026-11", "GBP"].collected == (Decimal(400),)

    country = {(r.key, r.currency): r.placed for r in k.by_country}
    assert country["DE", "EUR"] == Decimal("2257.50") and country["FR", "EUR"] == Decimal("2052.50")
    entity = {(r.key, r.currency): r.cases for r in k.by_entity}
    assert entity == {("E1", "EUR"): 3, ("E2", "EUR"): 1, ("E3", "GBP"): 1}
    partner = {(r.key, r.currency): (r.cases, r.placed, r.collected) for r in k.by_partner}
    assert partner["p1", "EUR"] == (2, Decimal("1205.00"), Decimal("1052.50"))
    assert partner["p2", "EUR"] == (1, Decimal("2052.50"), Decimal(0))

    month = {r.currency: (r.cases, r.placed) for r in k.month_placed}
    assert month == {"EUR": (2, Decimal("1205.00")), "GBP": (1, Decimal("852.50"))}
    assert k.month_collected == {"EUR": Decimal("552.50"), "GBP": Decimal(400)}


def test_lifecycle_ageing_and_closure_figures() -> None:
    k = compute(facts(), as_of=AS_OF, month="2026-11")
    assert k.lifecycle == {"accepted": 1, "assigned": 1, "closed": 2, "unassigned": 1}
    assert k.status_by_country["DE"] == {"accepted": 1, "closed": 1, "unassigned": 1}
    assert k.phase == {"amicable": 5}
    ageing = {(r.bucket, r.currency): (r.cases, r.outstanding) for r in k.ageing}
    assert ageing == {
        ("0-30", "EUR"): (2, Decimal("1052.50") + Decimal("152.50")),
        ("31-90", "EUR"): (1, Decimal("2052.50")),
    }
    # A: 1 Oct 09:00 -> 3 Nov 12:00 = 33.125 days; C: 2 Nov -> 21 Nov = 19 days
    assert k.days_to_collect == Decimal("26.1") and k.collected_cases == 2
    (gbp,) = k.settlements
    assert (gbp.currency, gbp.approved, gbp.outstanding, gbp.settled) == (
        "GBP",
        1,
        Decimal("852.50"),
        Decimal(400),
    )
    assert gbp.discount == Decimal("0.5308")


def test_partner_league_table() -> None:
    k = compute(facts(), as_of=AS_OF, month="2026-11")
    rows = {r.partner_id: r for r in k.league}
    p1, p2, p3 = rows["p1"], rows["p2"], rows["p3"]
    assert (p1.sla.part, p1.sla.whole) == (2, 2)
    assert (p2.sla.part, p2.sla.whole) == (0, 1)  # silent past accept_by
    assert (p3.sla.part, p3.sla.whole) == (0, 1)  # accepted after its 2 hours
    assert (k.sla.part, k.sla.whole) == (2, 4) and k.sla.rate == Decimal("0.5")
    assert p1.first_action_hours == Decimal("5.0")  # assigned 10:00, first call 15:00
    assert p2.first_action_hours is None
    assert (p1.rpc.part, p1.rpc.whole) == (1, 2)  # the letter is not a contact attempt
    assert (p1.promises.part, p1.promises.whole) == (1, 1)
    assert (p3.promises.part, p3.promises.whole) == (0, 1)  # 300 due 10 Nov, paid 20 Nov
    assert p1.collected == {"EUR": Decimal("1052.50")}
    assert p1.recovery("EUR") == rate(Decimal("1052.50"), Decimal("1205.00"))
    assert [r.partner_id for r in k.league] == ["p1", "p3", "p2"]


def test_the_report_of_a_moment_uses_what_the_hub_knew_then() -> None:
    later = t("12-06")
    k = compute(facts(later), as_of=later, month="2026-11")
    eur = next(r for r in k.totals if r.currency == "EUR")
    assert eur.collected == Decimal("1102.50")  # the payment recorded on 5 Dec now counts
    assert k.month_collected["EUR"] == Decimal("602.50")
    early = t("10-06", 0)
    k = compute(facts(early), as_of=early, month="2026-10")
    assert k.cases == 2 and k.lifecycle == {"assigned": 1, "in_progress": 1}
    assert next(r for r in k.totals).collected == 0
    assert case_facts(stories()[2].events, early) is None  # not placed yet


def test_promise_not_yet_due_counts_for_nothing() -> None:
    s = (
        Story(9, t("11-01"))
        .assign("p9", t("11-01"))
        .report(m.CaseAccepted, t("11-01", 10))
        .report(
            m.CasePromise,
            t("11-02"),
            amount="100",
            currency="EUR",
            due_date="2026-11-05",
            installments=[{"due_date": "2026-12-20", "amount": "50"}],
        )
    )
    f = case_facts(s.events, AS_OF)
    assert f is not None and f.promises[0].kept is None  # last installment due 20 Dec
    k = compute([f], as_of=AS_OF)
    assert k.promises.whole == 0 and k.promises.rate is None


def test_month_bounds() -> None:
    assert month_bounds("2026-12") == (t("12-01", 0), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert compute([], as_of=AS_OF).totals == []
    assert rate(1, 0) is None
    assert Lifecycle.CLOSED.value == "closed"
