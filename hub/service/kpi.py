"""The KPIs the creditor is reported (DOMAIN.md), computed from cases' events. Pure.

Two steps: ``case_facts(events, as_of)`` folds one case's events recorded up to ``as_of``
(the hub's knowledge at that moment, so a month's report can be rebuilt later and come
out the same) into ``CaseFacts``; ``compute(facts, as_of=..., month=...)`` aggregates
many cases into ``Kpis``. Money is ``Decimal`` and is never added across currencies:
every amount is reported per currency. Rates are ``Decimal`` rounded to 4 places.

Definitions
- *placed*: the total (principal + interest + fees) of a case's claims not withdrawn;
  a case's placement month is the month of its first claim (``placed_at``).
- *collected*: the payments partners reported (``case.payment``).
- *recovery rate*: collected / placed, per currency, by placement month (vintage),
  country, creditor entity and partner. A partner is credited with the case total at
  each assignment it received (a reassigned case counts for both partners) and with the
  payments it reported itself.
- *vintage curve*: for one placement month, the cumulative recovery rate 0, 1, 2, ...
  months after placement (by the month the payment occurred in).
- *ageing*: open cases by days since placement: 0-30, 31-90, 91-180, 181-365, >365.
- *SLA compliance*: assignments answered (accepted or declined) by their ``accept_by``,
  out of assignments that were answered or whose deadline has passed.
- *time to first action*: hours from an accepted assignment to the partner's first work
  report on it (activity, promise, payment, settlement proposal or legal step).
- *right-party-contact rate*: activities (call, e-mail, meeting) whose outcome is
  ``right_party_contact``, out of those activities. Letters and "other" are not contact
  attempts.
- *promise-kept rate*: promises whose payments (reported on the case from the promise
  on, up to the end of its last due date) cover the promised amount, out of promises
  either covered or past due.
- *days to collect*: placement to closure, over cases closed ``paid`` or ``settled``.
- *settlement discount*: for approved settlements, (outstanding - settled amount) /
  outstanding, outstanding as of the proposal; summed per currency.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from hub.domain.lifecycle import apply
from hub.domain.model import CaseState, Event, EventKind, Lifecycle

__all__ = [
    "AGEING_BUCKETS",
    "CONTACT_KINDS",
    "WORK_KINDS",
    "Activity",
    "AgeingRow",
    "AmountRow",
    "Assignment",
    "CaseFacts",
    "Kpis",
    "PartnerRow",
    "Payment",
    "Promise",
    "Ratio",
    "Settlement",
    "SettlementRow",
    "VintageCurve",
    "case_facts",
    "compute",
    "month_bounds",
    "rate",
]

Money = dict[str, Decimal]

#: Events that are a partner's work on a case (the first one is its "first action").
WORK_KINDS = frozenset(
    {
        EventKind.ACTIVITY,
        EventKind.PROMISE,
        EventKind.PAYMENT,
        EventKind.SETTLEMENT_PROPOSED,
        EventKind.LEGAL_STEP,
    }
)
#: Activity kinds that are attempts to reach the debtor.
CONTACT_KINDS = frozenset({"call", "email", "meeting"})
#: (label, lowest day, highest day or None)
AGEING_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-30", 0, 30),
    ("31-90", 31, 90),
    ("91-180", 91, 180),
    ("181-365", 181, 365),
    (">365", 366, None),
)
_PLACES = Decimal("0.0001")


def rate(part: Decimal | int, whole: Decimal | int) -> Decimal | None:
    """``part / whole`` rounded to 4 places; None when ``whole`` is zero."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(_PLACES, ROUND_HALF_EVEN)


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of ``YYYY-MM`` and of the month after, in UTC."""
    start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    nxt = (start + dt.timedelta(days=32)).replace(day=1)
    return start, nxt


def _month(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m")


def _months_between(a: str, b: str) -> int:
    ya, ma = map(int, a.split("-"))
    yb, mb = map(int, b.split("-"))
    return (yb - ya) * 12 + (mb - ma)


# --- one case ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    partner_id: str
    occurred_at: dt.datetime
    amount: Decimal


@dataclass(frozen=True)
class Activity:
    partner_id: str
    kind: str
    outcome: str


@dataclass
class Assignment:
    partner_id: str
    assigned_at: dt.datetime
    accept_by: dt.datetime | None
    #: the case total when it was assigned: what the partner was given to collect
    placed: Decimal
    answer: str | None = None  # "accepted" | "declined"
    answered_at: dt.datetime | None = None
    first_action_at: dt.datetime | None = None


@dataclass
class Promise:
    partner_id: str
    made_at: dt.datetime
    due: dt.date
    amount: Decimal
    #: True: covered by payments; False: past due and not covered; None: not yet due
    kept: bool | None = None


@dataclass
class Settlement:
    partner_id: str
    settlement_id: str
    amount: Decimal
    outstanding: Decimal
    decision: str | None = None  # "approved" | "rejected"


@dataclass
class CaseFacts:
    """What the KPIs need of one case, as of one moment."""

    case_id: str
    creditor_entity: str
    country: str
    currency: str
    lifecycle: Lifecycle
    phase: str
    placed_at: dt.datetime
    placed: Decimal
    claims: int
    collected: Decimal
    partner_id: str | None = None
    close_code: str | None = None
    closed_at: dt.datetime | None = None
    payments: list[Payment] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    promises: list[Promise] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)

    @property
    def placed_month(self) -> str:
        return _month(self.placed_at)

    @property
    def outstanding(self) -> Decimal:
        return max(self.placed - self.collected, Decimal(0))


def _due_of(data: Mapping[str, object]) -> dt.date:
    dates = [str(data["due_date"])]
    for item in data.get("installments") or ():  # type: ignore[attr-defined]
        dates.append(str(item["due_date"]))
    return max(dt.date.fromisoformat(d) for d in dates)


def case_facts(events: Iterable[Event], as_of: dt.datetime) -> CaseFacts | None:
    """The facts of one case from its events recorded up to ``as_of`` (None: none were)."""
    state: CaseState | None = None
    assignments: list[Assignment] = []
    payments: list[Payment] = []
    activities: list[Activity] = []
    promises: list[Promise] = []
    settlements: dict[str, Settlement] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.recorded_at > as_of:
            continue
        before = state
        state = apply(state, e)
        d = e.data
        current = assignments[-1] if assignments else None
        if e.kind is EventKind.ASSIGNED:
            assignments.append(
                Assignment(str(d["partner_id"]), e.occurred_at, d.get("accept_by"), state.total)
            )
        elif e.kind in (EventKind.ACCEPTED, EventKind.DECLINED) and current is not None:
            current.answer = "accepted" if e.kind is EventKind.ACCEPTED else "declined"
            current.answered_at = e.occurred_at
        if e.kind in WORK_KINDS and current is not None and current.first_action_at is None:
            current.first_action_at = e.occurred_at
        if e.kind is EventKind.PAYMENT:
            payments.append(Payment(e.actor, e.occurred_at, Decimal(str(d["amount"]))))
        elif e.kind is EventKind.ACTIVITY:
            activities.append(Activity(e.actor, str(d.get("kind")), str(d.get("outcome"))))
        elif e.kind is EventKind.PROMISE:
            promises.append(Promise(e.actor, e.occurred_at, _due_of(d), Decimal(str(d["amount"]))))
        elif e.kind is EventKind.SETTLEMENT_PROPOSED and before is not None:
            outstanding = before.total - Decimal(before.collected)
            sid = str(d["settlement_id"])
            settlements[sid] = Settlement(e.actor, sid, Decimal(str(d["amount"])), outstanding)
        elif e.kind is EventKind.SETTLEMENT_DECIDED:
            found = settlements.get(str(d["settlement_id"]))
            if found is not None:
                found.decision = str(d["decision"])
    if state is None or state.placed_at is None:
        return None
    for p in promises:
        end = dt.datetime.combine(p.due + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        paid = sum((x.amount for x in payments if p.made_at <= x.occurred_at < end), Decimal(0))
        if paid >= p.amount:
            p.kept = True
        elif end <= as_of:
            p.kept = False
    return CaseFacts(
        case_id=state.case_id,
        creditor_entity=state.creditor_entity,
        country=state.country,
        currency=state.currency,
        lifecycle=state.lifecycle,
        phase=state.phase.value,
        placed_at=state.placed_at,
        placed=state.total,
        claims=len(state.open_claims),
        collected=Decimal(state.collected),
        partner_id=state.partner_id,
        close_code=state.close_code,
        closed_at=state.closed_at,
        payments=payments,
        activities=activities,
        assignments=assignments,
        promises=promises,
        settlements=list(settlements.values()),
    )


# --- many cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """A count-based rate: ``part`` out of ``whole``."""

    part: int
    whole: int

    @property
    def rate(self) -> Decimal | None:
        return rate(self.part, self.whole)


@dataclass(frozen=True)
class AmountRow:
    """One group (a month, a country, a partner...) in one currency."""

    key: str
    currency: str
    cases: int
    placed: Decimal
    collected: Decimal

    @property
    def rate(self) -> Decimal | None:
        return rate(self.collected, self.placed)


@dataclass(frozen=True)
class VintageCurve:
    """Cumulative recovery rate of one placement month, month by month after it."""

    month: str
    currency: str
    placed: Decimal
    #: collected by the end of month 0, 1, 2, ... after placement (cumulative)
    collected: tuple[Decimal, ...]

    @property
    def rates(self) -> tuple[Decimal | None, ...]:
        return tuple(rate(c, self.placed) for c in self.collected)


@dataclass(frozen=True)
class AgeingRow:
    bucket: str
    currency: str
    cases: int
    outstanding: Decimal


@dataclass(frozen=True)
class PartnerRow:
    """A line of the partner league table."""

    partner_id: str
    cases: int
    placed: Mapping[str, Decimal]
    collected: Mapping[str, Decimal]
    sla: Ratio
    #: mean hours from assignment to first action, over accepted assignments with one
    first_action_hours: Decimal | None
    rpc: Ratio
    promises: Ratio

    def recovery(self, currency: str) -> Decimal | None:
        return rate(self.collected.get(currency, Decimal(0)), self.placed.get(currency, 0))


@dataclass(frozen=True)
class SettlementRow:
    currency: str
    approved: int
    outstanding: Decimal
    settled: Decimal

    @property
    def discount(self) -> Decimal | None:
        return rate(self.outstanding - self.settled, self.outstanding)


@dataclass(frozen=True)
class Kpis:
    as_of: dt.datetime
    month: str | None
    totals: list[AmountRow]
    #: cases placed in ``month`` (and what they yielded so far)
    month_placed: list[AmountRow]
    #: payments that occurred in ``month``, per currency
    month_collected: Mapping[str, Decimal]
    by_vintage: list[AmountRow]
    by_country: list[AmountRow]
    by_entity: list[AmountRow]
    by_partner: list[AmountRow]
    vintage_curves: list[VintageCurve]
    lifecycle: Mapping[str, int]
    phase: Mapping[str, int]
    #: country -> lifecycle -> cases
    status_by_country: Mapping[str, Mapping[str, int]]
    ageing: list[AgeingRow]
    league: list[PartnerRow]
    sla: Ratio
    rpc: Ratio
    promises: Ratio
    days_to_collect: Decimal | None
    collected_cases: int
    settlements: list[SettlementRow]

    @property
    def cases(self) -> int:
        return sum(self.lifecycle.values())

    @property
    def currencies(self) -> list[str]:
        return sorted({r.currency for r in self.totals})


def _group(facts: Sequence[CaseFacts], key: str) -> list[AmountRow]:
    acc: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for f in facts:
        k = {
            "all": "all",
            "month": f.placed_month,
            "country": f.country,
            "entity": f.creditor_entity,
        }[key]
        row = acc[(k, f.currency)]
        row[0] += 1
        row[1] += f.placed
        row[2] += f.collected
    return [AmountRow(k, cur, int(v[0]), v[1], v[2]) for (k, cur), v in sorted(acc.items())]


def _by_partner(facts: Sequence[CaseFacts]) -> list[AmountRow]:
    cases: dict[tuple[str, str], set[str]] = defaultdict(set)
    placed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    collected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for f in facts:
        for a in f.assignments:
            cases[(a.partner_id, f.currency)].add(f.case_id)
            placed[(a.partner_id, f.currency)] += a.placed
        for p in f.payments:
            collected[(p.partner_id, f.currency)] += p.amount
    keys = sorted(cases.keys() | collected.keys())
    return [
        AmountRow(k, cur, len(cases.get((k, cur), ())), placed[(k, cur)], collected[(k, cur)])
        for k, cur in keys
    ]


def _curves(facts: Sequence[CaseFacts], last_month: str) -> list[VintageCurve]:
    placed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    by_offset: dict[tuple[str, str], dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for f in facts:
        key = (f.placed_month, f.currency)
        placed[key] += f.placed
        for p in f.payments:
            offset = max(0, _months_between(f.placed_month, _month(p.occurred_at)))
            by_offset[key][offset] += p.amount
    curves = []
    for (month, cur), total in sorted(placed.items()):
        span = max(0, _months_between(month, last_month))
        running = Decimal(0)
        points = []
        for i in range(span + 1):
            running += by_offset[(month, cur)].get(i, Decimal(0))
            points.append(running)
        curves.append(VintageCurve(month, cur, total, tuple(points)))
    return curves


def _ageing(facts: Sequence[CaseFacts], as_of: dt.datetime) -> list[AgeingRow]:
    acc: dict[tuple[int, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    for f in facts:
        if f.lifecycle is Lifecycle.CLOSED:
            continue
        days = max(0, (as_of - f.placed_at).days)
        index = next(
            i
            for i, (_, lo, hi) in enumerate(AGEING_BUCKETS)
            if days >= lo and (hi is None or days <= hi)
        )
        row = acc[(index, f.currency)]
        row[0] += 1
        row[1] += f.outstanding
    return [
        AgeingRow(AGEING_BUCKETS[i][0], cur, int(v[0]), v[1]) for (i, cur), v in sorted(acc.items())
    ]


@dataclass
class _PartnerAcc:
    cases: set[str] = field(default_factory=set)
    placed: Money = field(default_factory=lambda: defaultdict(Decimal))
    collected: Money = field(default_factory=lambda: defaultdict(Decimal))
    sla_met: int = 0
    sla_due: int = 0
    first_action_s: list[Decimal] = field(default_factory=list)
    rpc: int = 0
    attempts: int = 0
    kept: int = 0
    promises_due: int = 0


def _league(facts: Sequence[CaseFacts], as_of: dt.datetime) -> list[PartnerRow]:
    acc: dict[str, _PartnerAcc] = defaultdict(_PartnerAcc)
    for f in facts:
        for a in f.assignments:
            p = acc[a.partner_id]
            p.cases.add(f.case_id)
            p.placed[f.currency] += a.placed
            in_time = a.answered_at is not None and (
                a.accept_by is None or a.answered_at <= a.accept_by
            )
            overdue = a.answered_at is None and a.accept_by is not None and a.accept_by < as_of
            if a.answered_at is not None or overdue:
                p.sla_due += 1
                p.sla_met += int(in_time)
            if a.answer == "accepted" and a.first_action_at is not None:
                seconds = (a.first_action_at - a.assigned_at).total_seconds()
                p.first_action_s.append(Decimal(str(max(seconds, 0.0))))
        for pay in f.payments:
            acc[pay.partner_id].collected[f.currency] += pay.amount
        for act in f.activities:
            if act.kind in CONTACT_KINDS:
                acc[act.partner_id].attempts += 1
                acc[act.partner_id].rpc += int(act.outcome == "right_party_contact")
        for pr in f.promises:
            if pr.kept is not None:
                acc[pr.partner_id].promises_due += 1
                acc[pr.partner_id].kept += int(pr.kept)
    rows = []
    for pid, p in acc.items():
        hours = None
        if p.first_action_s:
            mean = sum(p.first_action_s, Decimal(0)) / len(p.first_action_s)
            hours = (mean / 3600).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
        rows.append(
            PartnerRow(
                pid,
                len(p.cases),
                dict(p.placed),
                dict(p.collected),
                Ratio(p.sla_met, p.sla_due),
                hours,
                Ratio(p.rpc, p.attempts),
                Ratio(p.kept, p.promises_due),
            )
        )
    # best recovery first (by the sum of rates over currencies), then by name
    return sorted(
        rows,
        key=lambda r: (
            -sum((r.recovery(c) or Decimal(0)) for c in r.placed),
            r.partner_id,
        ),
    )


def _sum_ratio(rows: Iterable[Ratio]) -> Ratio:
    part = whole = 0
    for r in rows:
        part += r.part
        whole += r.whole
    return Ratio(part, whole)


def compute(facts: Iterable[CaseFacts], *, as_of: dt.datetime, month: str | None = None) -> Kpis:
    """Aggregate the facts of many cases. ``month`` (``YYYY-MM``) selects the month of the
    report's monthly figures and the end of the vintage curves (default: ``as_of``'s)."""
    facts = list(facts)
    last = month or _month(as_of)
    in_month = [f for f in facts if f.placed_month == last]
    month_collected: dict[str, Decimal] = defaultdict(Decimal)
    for f in facts:
        for p in f.payments:
            if _month(p.occurred_at) == last:
                month_collected[f.currency] += p.amount
    lifecycle: dict[str, int] = defaultdict(int)
    phase: dict[str, int] = defaultdict(int)
    status_by_country: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in facts:
        lifecycle[f.lifecycle.value] += 1
        phase[f.phase] += 1
        status_by_country[f.country][f.lifecycle.value] += 1
    league = _league(facts, as_of)
    collected_days = [
        Decimal(str((f.closed_at - f.placed_at).total_seconds())) / 86400
        for f in facts
        if f.lifecycle is Lifecycle.CLOSED
        and f.close_code in ("paid", "settled")
        and f.closed_at is not None
    ]
    days = None
    if collected_days:
        days = (sum(collected_days, Decimal(0)) / len(collected_days)).quantize(
            Decimal("0.1"), ROUND_HALF_EVEN
        )
    settled: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for f in facts:
        for s in f.settlements:
            if s.decision == "approved":
                row = settled[f.currency]
                row[0] += 1
                row[1] += s.outstanding
                row[2] += s.amount
    return Kpis(
        as_of=as_of,
        month=month,
        totals=_group(facts, "all"),
        month_placed=_group(in_month, "all"),
        month_collected=dict(sorted(month_collected.items())),
        by_vintage=_group(facts, "month"),
        by_country=_group(facts, "country"),
        by_entity=_group(facts, "entity"),
        by_partner=_by_partner(facts),
        vintage_curves=_curves(facts, last),
        lifecycle=dict(sorted(lifecycle.items())),
        phase=dict(sorted(phase.items())),
        status_by_country={
            c: dict(sorted(v.items())) for c, v in sorted(status_by_country.items())
        },
        ageing=_ageing(facts, as_of),
        league=league,
        sla=_sum_ratio(r.sla for r in league),
        rpc=_sum_ratio(r.rpc for r in league),
        promises=_sum_ratio(r.promises for r in league),
        days_to_collect=days,
        collected_cases=len(collected_days),
        settlements=[
            SettlementRow(cur, int(v[0]), v[1], v[2]) for cur, v in sorted(settled.items())
        ],
    )
