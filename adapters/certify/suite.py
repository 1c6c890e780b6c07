"""The certification suite: what a partner (or an adapter) must get right before going live.

Scenarios, in order, on a test case the certification places through the hub itself:

===================  =====================================================================
assignment           the partner's side receives the case's ``case.assigned``
accept               it accepts: the hub shows the case ``accepted``
activity             it reports a call: the hub records the event under its message id
document             it uploads a document: GridFS holds it, with the right sha256
unknown_case         a report on a case that does not exist: ``error.reply unknown_case``
illegal_transition   accepting the case a second time: ``error.reply illegal_transition``,
                     and the case is unchanged
invalid_message      a report that breaks the contract is refused as ``invalid_message``
                     (by the hub's ``error.reply``, or first by the adapter in front of it)
close                it closes the case: the hub shows it ``closed``
===================  =====================================================================

A scenario that needs an earlier one that failed is skipped. The partner's side is a
``Driver`` (``drivers``), so one suite certifies the SDK and both adapters end to end.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from adapters.certify.drivers import Assignment, Driver
from adapters.certify.hubside import CertificationHub, SetupError
from hub.domain.model import Lifecycle
from partner_sdk.messages import ClaimPlaced

__all__ = ["SCENARIOS", "Certification", "CertificationReport", "ScenarioResult", "Verdict"]

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "skip"]

#: Scenario name, what it checks, and the scenarios it needs.
SCENARIOS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("assignment", "receive the case.assigned of the certification case", ()),
    ("accept", "accept it: the hub shows the case accepted", ("assignment",)),
    ("activity", "report a call: the hub records the activity", ("accept",)),
    ("document", "upload a document: stored with its sha256", ("accept",)),
    ("unknown_case", "report on an unknown case: error.reply unknown_case", ()),
    ("illegal_transition", "accept twice: error.reply illegal_transition", ("accept",)),
    ("invalid_message", "send an invalid report: refused as invalid_message", ()),
    ("close", "close the case (paid): the hub shows it closed", ("accept",)),
)


class Failed(Exception):
    """A scenario's expectation was not met (the message says what happened instead)."""


@dataclass
class ScenarioResult:
    name: str
    title: str
    verdict: Verdict
    seconds: float
    detail: str


@dataclass
class CertificationReport:
    partner_id: str
    driver: str
    case_id: str | None
    results: list[ScenarioResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.verdict == "pass" for r in self.results)

    def summary(self) -> str:
        counts = {v: sum(r.verdict == v for r in self.results) for v in ("pass", "fail", "skip")}
        verdict = "CERTIFIED" if self.passed else "NOT CERTIFIED"
        return (
            f"{verdict}: partner {self.partner_id} via {self.driver}: {counts['pass']} passed, "
            f"{counts['fail']} failed, {counts['skip']} skipped"
        )

    def as_text(self) -> str:
        lines = [f"{'scenario':<20} {'result':<6} {'s':>6}  detail"]
        for r in self.results:
            lines.append(f"{r.name:<20} {r.verdict.upper():<6} {r.seconds:>6.2f}  {r.detail}")
        lines.append(self.summary())
        return "\n".join(lines)


class Certification:
    """One run of the suite: ``await Certification(hub_side, driver).run(partner_id)``.

    ``within`` bounds the wait for each expected outcome, in seconds.
    """

    def __init__(self, hub: CertificationHub, driver: Driver, *, within: float = 30.0) -> None:
        self.hub = hub
        self.driver = driver
        self.within = within
        self.run_id = uuid.uuid4().hex[:10]
        self.case_id: str | None = None
        self.assigned: Assignment | None = None

    async def run(self, partner_id: str, *, force: bool = False) -> CertificationReport:
        report = CertificationReport(partner_id, self.driver.name, None)
        try:
            profile = await self.hub.prepare(partner_id, force=force)
        except SetupError as e:
            report.notes.append(str(e))
            report.results = [
                ScenarioResult(name, title, "skip", 0.0, "not run: set-up failed")
                for name, title, _ in SCENARIOS
            ]
            return report
        try:
            claim = self.hub.claim(partner_id, self.run_id, profile)
            self.case_id = report.case_id = self.hub.case_id_of(claim)
            self.driver.expect_case(self.case_id)
            await self.driver.start()
            try:
                setup_error = await self._setup(partner_id, claim)
                await self._scenarios(report, setup_error)
            finally:
                try:
                    await self.hub.cleanup(self.case_id)
                finally:
                    await self.driver.stop()
        finally:
            await self.hub.restore()
            report.notes.extend(self.hub.notes)
        log.info("certification of %s: %s", partner_id, report.summary())
        return report

    async def _setup(self, partner_id: str, claim: ClaimPlaced) -> str | None:
        assert self.case_id is not None
        try:
            await self.hub.place(claim, self.run_id)
            await self.hub.ensure_assigned(self.case_id, partner_id, self.within)
        except SetupError as e:
            return str(e)
        return None

    async def _scenarios(self, report: CertificationReport, setup_error: str | None) -> None:
        steps: dict[str, Callable[[], Awaitable[str]]] = {
            "assignment": self.assignment,
            "accept": self.accept,
            "activity": self.activity,
            "document": self.document,
            "unknown_case": self.unknown_case,
            "illegal_transition": self.illegal_transition,
            "invalid_message": self.invalid_message,
            "close": self.close,
        }
        verdicts: dict[str, Verdict] = {}
        for name, title, needs in SCENARIOS:
            verdict: Verdict
            blocked = [n for n in needs if verdicts.get(n) != "pass"]
            if setup_error is not None and name == "assignment":
                verdict, seconds, detail = "fail", 0.0, f"set-up: {setup_error}"
            elif blocked:
                verdict, seconds, detail = "skip", 0.0, f"needs {', '.join(blocked)}"
            else:
                verdict, seconds, detail = await self._one(steps[name])
            verdicts[name] = verdict
            report.results.append(ScenarioResult(name, title, verdict, seconds, detail))

    async def _one(self, step: Callable[[], Awaitable[str]]) -> tuple[Verdict, float, str]:
        start = time.monotonic()
        try:
            detail = await step()
        except Failed as e:
            return "fail", time.monotonic() - start, str(e)
        except Exception as e:  # the partner's side broke: that is a failure too
            log.exception("certification scenario crashed")
            return "fail", time.monotonic() - start, f"{type(e).__name__}: {e}"
        return "pass", time.monotonic() - start, detail

    # --- scenarios ------------------------------------------------------------------------

    def _case(self) -> str:
        if self.case_id is None:
            raise Failed("no certification case")
        return self.case_id

    async def assignment(self) -> str:
        case_id = self._case()
        got = await self.driver.assignment(case_id, self.within)
        if got is None:
            raise Failed(f"no case.assigned for {case_id} within {self.within:g} s")
        self.assigned = got
        return f"case {got.case_id}, assignment {got.assignment_id}, {got.total} {got.currency}"

    async def accept(self) -> str:
        assert self.assigned is not None
        mid = await self.driver.accept(self.assigned)
        state = await self.hub.wait_case(
            self.assigned.case_id, lambda s: s.lifecycle is Lifecycle.ACCEPTED, self.within
        )
        if state is None:
            return await self._refused_or(mid, "the case did not become accepted")
        return f"accepted ({mid})"

    async def _refused_or(self, message_id: str, what: str) -> str:
        refusal = await self.driver.error_reply(message_id, 0.5)
        if refusal is not None:
            raise Failed(f"{what}: the hub refused {message_id}: {refusal.code}: {refusal.message}")
        raise Failed(f"{what} within {self.within:g} s (message {message_id})")

    async def activity(self) -> str:
        case_id = self._case()
        mid = await self.driver.activity(case_id)
        event = await self.hub.event_of(case_id, mid, self.within)
        if event is None:
            return await self._refused_or(mid, "no activity recorded")
        if event.kind.value != "activity":
            raise Failed(f"message {mid} was recorded as {event.kind.value}, not activity")
        return f"{event.data.get('kind')}/{event.data.get('outcome')} recorded ({mid})"

    async def document(self) -> str:
        case_id = self._case()
        content = (
            f"OneWindow certification document\nrun {self.run_id}\ncase {case_id}\n"
        ).encode()
        digest = hashlib.sha256(content).hexdigest()
        mid = await self.driver.document(case_id, f"cert-{self.run_id}.txt", content)
        stored = await self.hub.document(case_id, digest, self.within)
        if stored is None:
            return await self._refused_or(mid, "no document stored")
        meta = stored.get("metadata") or {}
        partner = self.hub.partner_id
        if meta.get("partner_id") != partner:
            raise Failed(f"document stored as uploaded by {meta.get('partner_id')}, not {partner}")
        return f"{stored.get('filename')} ({meta.get('size')} bytes, sha256 {digest[:12]}…)"

    async def _expect_refusal(self, message_id: str, code: str) -> str:
        refusal = await self.driver.error_reply(message_id, self.within)
        if refusal is None:
            raise Failed(f"no error.reply to {message_id} within {self.within:g} s")
        if refusal.code != code:
            raise Failed(f"error.reply {refusal.code} ({refusal.message}), expected {code}")
        return f"{refusal.code} via {refusal.via}: {refusal.message[:120]}"

    async def unknown_case(self) -> str:
        mid = await self.driver.activity(f"C-CERT{self.run_id.upper()}")
        return await self._expect_refusal(mid, "unknown_case")

    async def illegal_transition(self) -> str:
        assert self.assigned is not None
        before = await self.hub.case(self.assigned.case_id)
        mid = await self.driver.accept(self.assigned)
        detail = await self._expect_refusal(mid, "illegal_transition")
        after = await self.hub.case(self.assigned.case_id)
        if before is None or after is None or after.version != before.version:
            raise Failed("the refused report changed the case")
        return detail

    async def invalid_message(self) -> str:
        case_id = self.case_id or f"C-CERT{self.run_id.upper()}"
        refusal = await self.driver.invalid(case_id, self.within)
        if refusal is None:
            raise Failed(f"the invalid report was not refused within {self.within:g} s")
        if refusal.code != "invalid_message":
            raise Failed(f"refused as {refusal.code} ({refusal.message}), expected invalid_message")
        if (
            refusal.via == "quarantine"
            and refusal.message_id is not None
            and await self.hub.quarantined(refusal.message_id, self.within) is None
        ):
            raise Failed("quarantined in the folder but not recorded for the coordinator")
        return f"{refusal.code} via {refusal.via}: {refusal.message[:120]}"

    async def close(self) -> str:
        case_id = self._case()
        mid = await self.driver.close(case_id)
        state = await self.hub.wait_case(
            case_id, lambda s: s.lifecycle is Lifecycle.CLOSED, self.within
        )
        if state is None:
            return await self._refused_or(mid, "the case did not close")
        return f"closed, close code {state.close_code} ({mid})"


def table_rows(report: CertificationReport) -> Sequence[tuple[str, str, str, str]]:
    """(scenario, verdict, seconds, detail) rows for printing."""
    return [(r.name, r.verdict.upper(), f"{r.seconds:.2f}", r.detail) for r in report.results]
