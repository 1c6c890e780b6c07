"""Unit tests of the adapters (no services): signing, verification and the replay window,
delivery retries, the callback endpoint, status-code mapping, return files, quarantine."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.files import (
    NOTICE_COLUMNS,
    PLACEMENT_COLUMNS,
    FileAdapter,
    InMemoryQuarantineLog,
    MappingError,
    RowProblem,
    StatusMapping,
    load_mapping,
    parse_mapping,
    parse_return_file,
    row_message_id,
    translate,
)
from adapters.files.outgoing import notice_row, placement_row, write_csv
from adapters.webhook import (
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_TYPE,
    DeliveryFailed,
    Replay,
    ReplayGuard,
    RetryPolicy,
    WebhookSender,
    create_callback_app,
    envelope,
    parse_callback,
    parse_listen,
    sign,
    signed_headers,
    verify,
)
from adapters.webhook.callbacks import CallbackRejected
from adapters.webhook.signing import (
    BadSignature,
    MalformedSignature,
    MissingSignature,
    StaleTimestamp,
    compute_signature,
)
from partner_sdk import messages as m
from partner_sdk.client import PartnerClient
from partner_sdk.errors import PublishFailed

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-s3cret-s3cret"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


# --- signing ---------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1767225600." + body, hashlib.sha256).hexdigest()
    assert compute_signature(SECRET, NOW, body) == expected
    assert sign(SECRET, NOW, body) == f"v1={expected}"
    headers = signed_headers(SECRET, body, timestamp=NOW, message_id="m-1", message_type="t")
    assert headers == {
        "Content-Type": "application/json",
        HEADER_TIMESTAMP: "1767225600",
        HEADER_SIGNATURE: f"v1={expected}",
        HEADER_MESSAGE_ID: "m-1",
        HEADER_TYPE: "t",
    }


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign("", NOW, b"x")


def headers_for(body: bytes, *, ts: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return signed_headers(secret, body, timestamp=ts, message_id="m-1", message_type="t")


def test_verify_accepts_the_right_signature_within_the_window() -> None:
    body = b"{}"
    ok = verify([SECRET], headers_for(body), body, now=NOW + 300)
    assert ok.timestamp == NOW and ok.signature == compute_signature(SECRET, NOW, body)
    verify([SECRET], headers_for(body, ts=NOW + 60), body, now=NOW)  # 1 min of skew: fine
    lower = {k.lower(): v for k, v in headers_for(body).items()}
    verify([SECRET], lower, body, now=NOW)  # header names are case-insensitive


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda h, b: (h, b + b" "), BadSignature),  # body tampered
        (lambda h, b: ({**h, HEADER_TIMESTAMP: str(NOW + 1)}, b), BadSignature),
        (lambda h, b: (headers_for(b, secret="other-secret"), b), BadSignature),
        (lambda h, b: ({**h, HEADER_SIGNATURE: "v1=" + "0" * 64}, b), BadSignature),
        (lambda h, b: ({k: v for k, v in h.items() if k != HEADER_SIGNATURE}, b), MissingSignature),
        (lambda h, b: ({k: v for k, v in h.items() if k != HEADER_TIMESTAMP}, b), MissingSignature),
        (lambda h, b: ({**h, HEADER_TIMESTAMP: "yesterday"}, b), MalformedSignature),
        (lambda h, b: ({**h, HEADER_SIGNATURE: "sha256 abc"}, b), MalformedSignature),
        (lambda h, b: ({**h, HEADER_SIGNATURE: "v1=xyz"}, b), MalformedSignature),
        (lambda h, b: ({**h, HEADER_SIGNATURE: "v0=" + "a" * 64}, b), MalformedSignature),
        (lambda h, b: (headers_for(b, ts=NOW - 301), b), StaleTimestamp),
        (lambda h, b: (headers_for(b, ts=NOW + 61), b), StaleTimestamp),
    ],
)
def test_verify_refuses(change: Any, error: type[Exception]) -> None:
    body = b'{"type":"case.accepted"}'
    headers, sent = change(headers_for(body), body)
    with pytest.raises(error):
        verify([SECRET], headers, sent, now=NOW)


def test_secrets_rotate_without_a_flag_day() -> None:
    body = b"{}"
    both = f"{sign('new-secret', NOW, body)}, {sign(SECRET, NOW, body)}"
    verify([SECRET], {HEADER_TIMESTAMP: str(NOW), HEADER_SIGNATURE: both}, body, now=NOW)
    verify(["new-secret", SECRET], headers_for(body), body, now=NOW)


def test_the_replay_guard_refuses_ids_and_signatures_seen_within_the_window() -> None:
    guard = ReplayGuard(window=360)
    guard.reserve("m-1", "sig-a", now=NOW)
    with pytest.raises(Replay) as e:
        guard.reserve("m-1", "sig-b", now=NOW + 10)  # same id, fresh signature
    assert e.value.message_id == "m-1"
    with pytest.raises(Replay):
        guard.reserve("m-2", "sig-a", now=NOW + 10)  # same signed request, other id
    guard.reserve("m-2", "sig-b", now=NOW + 10)
    guard.reserve("m-1", "sig-c", now=NOW + 361)  # the window has passed
    assert len(guard) == 4  # m-1 (again), sig-c, m-2, sig-b


def test_a_released_reservation_lets_the_retry_in() -> None:
    guard = ReplayGuard()
    guard.reserve("m-1", "sig-a", now=NOW)
    guard.release("m-1", "sig-a")
    guard.reserve("m-1", "sig-a", now=NOW + 1)


def test_the_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(window=360, max_entries=4)
    for i in range(10):
        guard.reserve(f"m-{i}", None, now=NOW)
    assert len(guard) <= 5


# --- delivery --------------------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=6, base=0.5, cap=4.0)
    assert [policy.backoff(n, 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.backoff(3, 0.0) == 0.0
    assert policy.backoff(3, 0.25) == 0.5
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_the_envelope_keeps_the_body_byte_for_byte() -> None:
    body = b'{"case_id":"C-1","total":"10.50"}'
    raw = envelope("case.assigned", "asg:C-1-A1", body)
    assert json.loads(raw) == {
        "type": "case.assigned",
        "message_id": "asg:C-1-A1",
        "body": {"case_id": "C-1", "total": "10.50"},
    }
    assert body in raw


class Partner:
    """A partner API in a ``MockTransport``: answers from a script, records requests."""

    def __init__(self, *answers: int | Exception | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, json={})


def sender_for(partner: Partner, sleeps: list[float], **policy: Any) -> WebhookSender:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    clock = iter(range(NOW, NOW + 1000))
    return WebhookSender(
        "https://partner.example/hook",
        SECRET,
        client=httpx.AsyncClient(transport=httpx.MockTransport(partner)),
        policy=RetryPolicy(**{"attempts": 4, "base": 1.0, "cap": 8.0, **policy}),
        clock=lambda: float(next(clock)),
        sleep=sleep,
        rand=lambda: 0.5,
    )


async def test_5xx_is_retried_with_backoff_and_every_attempt_is_signed() -> None:
    partner = Partner(503, 502, 200)
    sleeps: list[float] = []
    result = await sender_for(partner, sleeps).deliver("case.assigned", "asg:1", b'{"x":1}')
    assert (result.status, result.attempts) == (200, 3)
    assert sleeps == [0.5, 1.0]  # rand 0.5 of 1 s, then of 2 s
    for req in partner.requests:
        assert req.headers[HEADER_MESSAGE_ID] == "asg:1"
        assert req.headers[HEADER_TYPE] == "case.assigned"
        verify([SECRET], dict(req.headers), req.content, now=int(req.headers[HEADER_TIMESTAMP]))
    stamps = [r.headers[HEADER_TIMESTAMP] for r in partner.requests]
    assert len(set(stamps)) == 3  # signed afresh each time


async def test_429_waits_as_long_as_the_partner_asks_within_the_cap() -> None:
    partner = Partner(httpx.Response(429, headers={"Retry-After": "5"}), 200)
    sleeps: list[float] = []
    result = await sender_for(partner, sleeps).deliver("t", "m", b"{}")
    assert result.attempts == 2 and sleeps == [5.0]
    partner = Partner(httpx.Response(429, headers={"Retry-After": "3600"}), 204)
    sleeps = []
    await sender_for(partner, sleeps).deliver("t", "m", b"{}")
    assert sleeps == [8.0]


async def test_network_errors_are_retried_until_attempts_run_out() -> None:
    partner = Partner(httpx.ConnectError("refused"))
    sleeps: list[float] = []
    with pytest.raises(DeliveryFailed) as e:
        await sender_for(partner, sleeps).deliver("t", "m-9", b"{}")
    assert (e.value.attempts, e.value.permanent, e.value.message_id) == (4, False, "m-9")
    assert len(partner.requests) == 4 and len(sleeps) == 3


async def test_a_4xx_is_permanent_and_409_means_already_delivered() -> None:
    partner = Partner(httpx.Response(422, text="no such case"))
    with pytest.raises(DeliveryFailed) as e:
        await sender_for(partner, []).deliver("t", "m", b"{}")
    assert e.value.permanent and e.value.attempts == 1 and "422" in str(e.value)
    result = await sender_for(Partner(409), []).deliver("t", "m", b"{}")
    assert result.status == 409


def test_a_sender_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSender("ftp://partner.example/", SECRET)


# --- callbacks ---------------------------------------------------------------------------


class FakeHub:
    """Stands in for ``PartnerClient.send``."""

    def __init__(self) -> None:
        self.sent: list[tuple[m.Message, str | None]] = []
        self.failures = 0

    async def send(self, report: m.Message, *, message_id: str | None = None) -> str:
        if self.failures:
            self.failures -= 1
            raise PublishFailed("broker away", message_id=message_id or "", message_type="t")
        self.sent.append((report, message_id))
        return message_id or ""


def accepted(mid: str = "acc-1", **body: Any) -> bytes:
    doc = {"case_id": "C-1", "occurred_at": "2026-01-01T09:00:00Z", **body}
    return json.dumps({"type": "case.accepted", "message_id": mid, "body": doc}).encode()


@pytest.fixture
def clock() -> Iterator[list[float]]:
    yield [float(NOW)]


@pytest.fixture
def callback_client(clock: list[float]) -> tuple[httpx.AsyncClient, FakeHub]:
    hub = FakeHub()
    app = create_callback_app(hub, [SECRET], partner_id="p1", clock=lambda: clock[0])
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://adapter"), hub


async def post(
    client: httpx.AsyncClient,
    raw: bytes,
    *,
    ts: int = NOW,
    mid: str | None = "acc-1",
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = signed_headers(SECRET, raw, timestamp=ts, message_id=mid or "", message_type="x")
    headers.pop(HEADER_TYPE)
    if mid is None:
        headers.pop(HEADER_MESSAGE_ID)
    headers.update(extra or {})
    return await client.post("/callbacks", content=raw, headers=headers)


async def test_a_signed_valid_callback_is_forwarded_with_its_message_id(
    callback_client: tuple[httpx.AsyncClient, FakeHub],
) -> None:
    client, hub = callback_client
    r = await post(client, accepted(assignment_id="C-1-A1"))
    assert r.status_code == 202
    assert r.json() == {"status": "accepted", "message_id": "acc-1"}
    ((report, mid),) = hub.sent
    assert mid == "acc-1"
    assert isinstance(report, m.CaseAccepted) and report.assignment_id == "C-1-A1"


async def test_bad_signatures_and_stale_timestamps_get_401(
    callback_client: tuple[httpx.AsyncClient, FakeHub], clock: list[float]
) -> None:
    client, hub = callback_client
    raw = accepted()
    r = await post(client, raw, extra={HEADER_SIGNATURE: sign("wrong", NOW, raw)})
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
    clock[0] = NOW + 301
    r = await post(client, raw)
    assert (r.status_code, r.json()["error"]) == (401, "stale_timestamp")
    r = await client.post("/callbacks", content=raw)
    assert (r.status_code, r.json()["error"]) == (401, "missing_signature")
    assert hub.sent == []


async def test_replays_get_409_and_are_forwarded_once(
    callback_client: tuple[httpx.AsyncClient, FakeHub], clock: list[float]
) -> None:
    client, hub = callback_client
    assert (await post(client, accepted())).status_code == 202
    r = await post(client, accepted())  # the same request again
    assert r.status_code == 409 and r.json() == {
        "error": "replay",
        "message": r.json()["message"],
        "message_id": "acc-1",
    }
    clock[0] = NOW + 30
    r = await post(client, accepted(), ts=NOW + 30)  # re-signed, same message id
    assert r.status_code == 409
    assert len(hub.sent) == 1


async def test_a_callback_not_forwarded_can_be_retried(
    callback_client: tuple[httpx.AsyncClient, FakeHub],
) -> None:
    client, hub = callback_client
    hub.failures = 1
    r = await post(client, accepted())
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert (await post(client, accepted())).status_code == 202
    assert [mid for _, mid in hub.sent] == ["acc-1"]


async def test_invalid_bodies_get_400_with_precise_errors(
    callback_client: tuple[httpx.AsyncClient, FakeHub],
) -> None:
    client, hub = callback_client
    payment = {"case_id": "C-1", "amount": 10.5, "currency": "EURO"}
    raw = json.dumps({"type": "case.payment", "message_id": "p-1", "body": payment}).encode()
    r = await post(client, raw, mid="p-1")
    problem = r.json()
    assert r.status_code == 400 and problem["error"] == "invalid_message"
    paths = {e["path"] for e in problem["errors"]}
    assert paths == {"body.amount", "body.currency", "body.occurred_at"}

    r = await post(client, b"not json", mid=None)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_json")
    r = await post(client, json.dumps({"type": "case.accepted", "extra": 1}).encode(), mid=None)
    assert r.status_code == 400 and r.json()["error"] == "invalid_envelope"
    assert {e["path"] for e in r.json()["errors"]} == {"message_id", "body", "extra"}
    raw = json.dumps({"type": "case.assigned", "message_id": "x-1", "body": {}}).encode()
    r = await post(client, raw, mid="x-1")
    assert (r.status_code, r.json()["error"]) == (400, "unknown_type")
    r = await post(client, accepted("acc-2"), mid="acc-3")  # header and body disagree
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "message_id"
    assert hub.sent == []


async def test_a_body_over_the_limit_gets_413() -> None:
    app = create_callback_app(FakeHub(), [SECRET], max_body_bytes=100, clock=lambda: NOW)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://adapter"
    ) as client:
        r = await post(client, accepted(note="x" * 200))
    assert r.status_code == 413


def test_parse_callback_names_every_envelope_problem() -> None:
    with pytest.raises(CallbackRejected) as e:
        parse_callback(json.dumps({"type": 3, "message_id": "has space", "body": []}).encode())
    assert {d["path"] for d in e.value.errors} == {"type", "message_id", "body"}
    ok = parse_callback(accepted())
    assert ok.type == "case.accepted" and ok.case_id == "C-1"


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8081") == ("0.0.0.0", 8081)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8081", "host:", ":80", "h:99999"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# --- mappings ---------------------------------------------------------------------------


@pytest.fixture
def acme() -> StatusMapping:
    return load_mapping(REPO / "examples" / "mappings" / "acme-de.yaml")


def test_the_example_mappings_load(acme: StatusMapping) -> None:
    assert acme.partner_id == "acme-de"
    assert acme.rule("ACC") is not None and acme.rule("ACC").type == "case.accepted"  # type: ignore[union-attr]
    assert acme.code_for("case.closed", close_code="paid") == "CLP"
    assert acme.code_for("case.activity", kind="call", outcome="no_contact") == "TEL0"
    gallia = load_mapping(REPO / "examples" / "mappings" / "gallia-recouvrement.yaml")
    assert gallia.delimiter == ";" and gallia.decimal_comma and "01" in gallia.codes


@pytest.mark.parametrize(
    ("codes", "complaint"),
    [
        ("X: {type: case.teleported}", "type must be one of"),
        ("X: {type: case.activity, kind: call}", "needs outcome"),
        ("X: {type: case.activity, kind: fax, outcome: sent}", "kind must be one of"),
        ("X: {type: case.closed, close_code: paid, note: hi}", "cannot fix note"),
        ("X: {type: case.closed, close_code: bribed}", "close_code must be one of"),
        ("X: {type: document.added, kind: letter, filename: a.pdf}", "cannot fix filename"),
        ("NO: {type: case.accepted}", "booleans"),
        ("X: case.accepted", "must be a mapping"),
        ("X: {type: case.legal_step, step: Mahn-Bescheid, phase: legal}", "not a legal step"),
        ("X: {type: case.legal_step, step: mahnung, phase: amicable, country: XX}", "ISO"),
    ],
)
def test_invalid_mappings_are_refused_with_the_code_at_fault(codes: str, complaint: str) -> None:
    with pytest.raises(MappingError, match=complaint):
        parse_mapping(f"codes:\n  {codes}\n", source="m.yaml")


def test_a_mapping_needs_codes_and_known_keys() -> None:
    with pytest.raises(MappingError, match="codes"):
        parse_mapping("partner: p1\n")
    with pytest.raises(MappingError, match="unknown key"):
        parse_mapping("codez: {}\ncodes: {A: {type: case.accepted}}\n")
    with pytest.raises(MappingError, match="delimiter"):
        parse_mapping("delimiter: ';;'\ncodes: {A: {type: case.accepted}}\n")


def row(code: str, **values: str) -> dict[str, str]:
    return {"case_id": "C-1", "status_code": code, "date": "2026-05-04", **values}


def test_rows_become_canonical_reports(acme: StatusMapping) -> None:
    accepted = translate(row("ACC"), acme)
    assert isinstance(accepted, m.CaseAccepted)
    assert accepted.occurred_at == dt.datetime(2026, 5, 4, tzinfo=dt.UTC)
    call = translate(row("TEL1", note="spoke to AP", date="2026-05-04T10:00:00+02:00"), acme)
    assert isinstance(call, m.CaseActivity)
    assert (call.kind, call.outcome, call.note) == ("call", "right_party_contact", "spoke to AP")
    assert call.occurred_at == dt.datetime(2026, 5, 4, 8, tzinfo=dt.UTC)
    pay = translate(row("PAY", amount="250.00", currency="eur", reference="B-1"), acme)
    assert isinstance(pay, m.CasePayment)
    assert (pay.amount, pay.currency, pay.reference) == ("250.00", "EUR", "B-1")
    closed = translate(row(" CLP "), acme)
    assert isinstance(closed, m.CaseClosed) and closed.close_code == "paid"
    step = translate(row("MB"), acme)
    assert isinstance(step, m.CaseLegalStep)
    assert (step.country, step.step, step.phase) == ("DE", "mahnbescheid", "legal")
    declined = translate(row("ABL"), acme)
    assert isinstance(declined, m.CaseDeclined) and "ACME" in declined.reason


def test_decimal_commas_are_read_when_the_mapping_says_so() -> None:
    gallia = load_mapping(REPO / "examples" / "mappings" / "gallia-recouvrement.yaml")
    pay = translate(row("21", amount="1.234,56", currency="EUR"), gallia)
    assert isinstance(pay, m.CasePayment) and pay.amount == "1234.56"


def test_an_unknown_code_is_never_guessed(acme: StatusMapping) -> None:
    with pytest.raises(RowProblem) as e:
        translate(row("acc"), acme)  # codes are exact: ACC is not acc
    assert e.value.code == "unknown_code" and "'acc'" in e.value.reason


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"status_code": "PAY", "amount": "12.345,00", "currency": "EUR"}, "amount"),
        ({"status_code": "PAY", "amount": "10", "currency": ""}, "currency"),
        ({"status_code": "ACC", "date": "2026-05-04T10:00:00"}, "date"),  # no offset
        ({"status_code": "ACC", "date": ""}, "date"),
        ({"status_code": "ACC", "case_id": "C 1"}, "case_id"),
        ({"status_code": "RZV", "amount": "10", "currency": "EUR"}, "due_date"),
        ({"status_code": "DOC"}, "document"),
    ],
)
def test_invalid_rows_say_which_field(
    acme: StatusMapping, values: dict[str, str], path: str
) -> None:
    with pytest.raises(RowProblem) as e:
        translate({**row("ACC"), **values}, acme)
    assert e.value.code == "invalid_message"
    assert path in {err["path"] for err in e.value.errors}


def test_a_document_row_reads_the_named_file(acme: StatusMapping) -> None:
    files = {"letter.pdf": b"%PDF-1.7 letter"}
    doc = translate(row("DOC", document="letter.pdf"), acme, documents=files.get)
    assert isinstance(doc, m.DocumentAdded)
    assert doc.content_type == "application/pdf" and doc.kind == "letter"
    assert doc.sha256 == hashlib.sha256(files["letter.pdf"]).hexdigest()
    assert doc.size == len(files["letter.pdf"])
    for bad in ("missing.pdf", "../etc/passwd", "movie.mp4"):
        with pytest.raises(RowProblem):
            translate(row("DOC", document=bad), acme, documents=files.get)


def test_row_message_ids_are_deterministic() -> None:
    cells = ["C-1", "ACC", "2026-05-04"]
    a = row_message_id("p1", "f.csv", 2, cells)
    assert a == row_message_id("p1", "f.csv", 2, list(cells))
    assert len(a) == 64 and int(a, 16) >= 0
    others = {
        row_message_id("p2", "f.csv", 2, cells),
        row_message_id("p1", "g.csv", 2, cells),
        row_message_id("p1", "f.csv", 3, cells),
        row_message_id("p1", "f.csv", 2, [*cells[:2], "2026-05-05"]),
    }
    assert a not in others and len(others) == 4


# --- return files ------------------------------------------------------------------------


def test_a_return_file_is_parsed_row_by_row(acme: StatusMapping) -> None:
    data = (
        "\ufeffCase_ID,Status_Code,Date,Amount,Currency,Note,Extra\r\n"
        "C-1,ACC,2026-05-04,,,,ignored\r\n"
        "\r\n"
        "C-1,XYZ,2026-05-05,,,,\r\n"
        'C-1,TEL1,2026-05-05,,,"a note, with a comma",\r\n'
        "C-1,ACC,2026-05-06,,,,,one too many\r\n"
    ).encode()
    parsed = parse_return_file("r.csv", data, "p1", acme)
    assert parsed.problem is None
    assert [(r.line, r.code) for r in parsed.rows] == [
        (2, "ACC"),
        (4, "XYZ"),
        (5, "TEL1"),
        (6, "ACC"),
    ]
    ok = [r for r in parsed.rows if r.report is not None]
    assert [r.line for r in ok] == [2, 5]
    assert isinstance(ok[1].report, m.CaseActivity) and ok[1].report.note == "a note, with a comma"
    problems = {r.line: r.problem.code for r in parsed.rows if r.problem is not None}
    assert problems == {4: "unknown_code", 6: "invalid_message"}
    assert parsed.rows[0].message_id == row_message_id(
        "p1", "r.csv", 2, ["C-1", "ACC", "2026-05-04", "", "", "", "ignored"]
    )


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "empty"),
        (b"case_id;status_code;date\nC-1;ACC;2026-05-04\n", "lacks column"),
        (b"case_id,status_code,date,date\n", "repeats"),
        (b"case_id,status_code,date\n\xff\xfe\n", "not utf-8-sig"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(
    acme: StatusMapping, data: bytes, complaint: str
) -> None:
    parsed = parse_return_file("bad.csv", data, "p1", acme)
    assert parsed.problem is not None and complaint in parsed.problem


class FakeForwarder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    async def send(self, report: m.Message, *, message_id: str | None = None) -> str:
        self.sent.append((report.TYPE, message_id))
        return message_id or ""


async def test_the_file_adapter_sends_quarantines_and_moves_files(
    tmp_path: Path, acme: StatusMapping
) -> None:
    client = PartnerClient("amqp://acme-de:pw@127.0.0.1/")  # never connected here
    forwarder, log = FakeForwarder(), InMemoryQuarantineLog()
    adapter = FileAdapter(client, tmp_path, acme, log, forwarder=forwarder, settle_s=0)
    adapter.drop.create()
    (adapter.drop.documents / "brief.txt").write_bytes(b"Sehr geehrte Damen und Herren")
    content = (
        "case_id,status_code,date,document\n"
        "C-1,ACC,2026-05-04,\n"
        "C-1,NOPE,2026-05-04,\n"
        "C-1,DOC,2026-05-05,brief.txt\n"
    )
    (adapter.drop.incoming / "in.csv").write_text(content, encoding="utf-8")
    (adapter.drop.incoming / ".half.csv.tmp").write_text("case_id", encoding="utf-8")
    (report,) = await adapter.poll_once()

    assert [t for t, _ in forwarder.sent] == ["case.accepted", "document.added"]
    assert [e.line for e in report.quarantined] == [3]
    (doc,) = log.documents.values()
    assert (doc["partner_id"], doc["file"], doc["line"], doc["code"]) == (
        "acme-de",
        "in.csv",
        3,
        "NOPE",
    )
    assert doc["reason_code"] == "unknown_code" and doc["status"] == "open"
    assert (tmp_path / "processed" / "in.csv").read_text(encoding="utf-8") == content
    assert (tmp_path / "processed" / "documents" / "brief.txt").is_file()
    assert (tmp_path / "quarantine" / "in.quarantine.csv").is_file()
    assert (adapter.drop.incoming / ".half.csv.tmp").exists()  # not ours to touch
    assert adapter.sources[forwarder.sent[0][1] or ""] == "in.csv:2"

    # the same file dropped again: the same message ids, one quarantine record
    (adapter.drop.incoming / "in.csv").write_text(content, encoding="utf-8")
    (adapter.drop.documents / "brief.txt").write_bytes(b"Sehr geehrte Damen und Herren")
    await adapter.poll_once()
    assert forwarder.sent[2:] == forwarder.sent[:2]
    assert len(log.documents) == 1
    assert len(list((tmp_path / "processed").glob("in*.csv"))) == 2


async def test_a_file_the_broker_did_not_confirm_stays_for_the_next_round(
    tmp_path: Path, acme: StatusMapping
) -> None:
    class Flaky(FakeForwarder):
        async def send(self, report: m.Message, *, message_id: str | None = None) -> str:
            raise PublishFailed("no confirm", message_id=message_id or "", message_type="t")

    client = PartnerClient("amqp://acme-de:pw@127.0.0.1/")
    adapter = FileAdapter(
        client, tmp_path, acme, InMemoryQuarantineLog(), forwarder=Flaky(), settle_s=0
    )
    adapter.drop.create()
    (adapter.drop.incoming / "in.csv").write_text(
        "case_id,status_code,date\nC-1,ACC,2026-05-04\n", encoding="utf-8"
    )
    assert await adapter.poll_once() == []
    assert (adapter.drop.incoming / "in.csv").exists()


async def test_a_file_still_being_written_is_left_alone(
    tmp_path: Path, acme: StatusMapping
) -> None:
    client = PartnerClient("amqp://acme-de:pw@127.0.0.1/")
    adapter = FileAdapter(
        client, tmp_path, acme, InMemoryQuarantineLog(), forwarder=FakeForwarder(), settle_s=60
    )
    adapter.drop.create()
    (adapter.drop.incoming / "in.csv").write_text("case_id,status_code,date\n", encoding="utf-8")
    assert await adapter.poll_once() == []


def test_a_mapping_of_another_partner_is_refused(tmp_path: Path, acme: StatusMapping) -> None:
    client = PartnerClient("amqp://someone-else:pw@127.0.0.1/")
    with pytest.raises(ValueError, match="acme-de"):
        FileAdapter(client, tmp_path, acme, InMemoryQuarantineLog())


# --- outgoing files ------------------------------------------------------------------------


def assignment() -> m.CaseAssigned:
    return m.CaseAssigned.model_validate_json(
        json.dumps(
            {
                "case_id": "C-1",
                "assignment_id": "C-1-A1",
                "partner_id": "acme-de",
                "creditor_entity": "FS-DE-001",
                "debtor": {
                    "name": "Müller GmbH",
                    "kind": "company",
                    "country": "DE",
                    "address": {"line1": "Hauptstr. 1", "city": "Köln", "country": "DE"},
                    "phone": "+49 221 0000",
                },
                "claims": [
                    {
                        "invoice_number": "INV-2",
                        "invoice_date": "2026-02-01",
                        "due_date": "2026-03-01",
                        "principal": "100.00",
                        "interest": "1.50",
                        "fees": "40",
                    },
                    {
                        "invoice_number": "INV-1",
                        "invoice_date": "2026-01-01",
                        "due_date": "2026-02-01",
                        "principal": "50",
                        "interest": "0",
                        "fees": "0",
                    },
                ],
                "currency": "EUR",
                "total": "191.50",
                "phase": "amicable",
                "assigned_at": "2026-05-01T10:00:00Z",
                "accept_by": "2026-05-02T10:00:00+00:00",
            }
        )
    )


def test_a_placement_row_flattens_the_case() -> None:
    r = placement_row("asg:C-1-A1", assignment())
    assert list(r) == list(PLACEMENT_COLUMNS)
    assert r["invoice_numbers"] == "INV-2;INV-1" and r["invoice_count"] == "2"
    assert r["oldest_due_date"] == "2026-02-01"
    assert (r["principal"], r["interest"], r["fees"], r["total"]) == (
        "150.00",
        "1.50",
        "40",
        "191.50",
    )
    assert r["accept_by"] == "2026-05-02T10:00:00Z"
    assert r["debtor_city"] == "Köln" and r["debtor_phone"] == "+49 221 0000"


def test_notice_rows() -> None:
    error = m.ErrorReply(
        in_reply_to="abc",
        in_reply_to_type="case.closed",
        case_id="C-1",
        code="illegal_transition",
        message="not allowed",
        errors=[m.ErrorDetail(path="$.x", rule="r", message="bad x")],
        occurred_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
    )
    r = notice_row("err:1", error, "in.csv:3")
    assert list(r) == list(NOTICE_COLUMNS)
    assert (r["type"], r["reference"], r["code"], r["source"]) == (
        "error.reply",
        "abc",
        "illegal_transition",
        "in.csv:3",
    )
    assert "bad x" in r["detail"]
    recalled = m.CaseRecalled(
        case_id="C-1",
        assignment_id="C-1-A1",
        reason="creditor recall",
        recalled_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
    )
    r = notice_row("rcl:1", recalled)
    assert (r["assignment_id"], r["detail"], r["occurred_at"]) == (
        "C-1-A1",
        "creditor recall",
        "2026-05-01T00:00:00Z",
    )
    placed = assignment()
    updated = m.CaseUpdated(
        case_id=placed.case_id,
        assignment_id=placed.assignment_id,
        partner_id=placed.partner_id,
        change=m.CaseChange.CLAIM_ADDED,
        invoice_number="INV-2",
        claims=placed.claims,
        currency=placed.currency,
        total=placed.total,
        updated_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
    )
    r = notice_row("upd:1", updated)
    assert (r["type"], r["reference"], r["code"], r["detail"]) == (
        "case.updated",
        "INV-2",
        "claim_added",
        f"{placed.total} EUR",
    )


def test_files_are_written_atomically(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "outgoing",
        "placements",
        PLACEMENT_COLUMNS,
        [placement_row("asg:C-1-A1", assignment())],
        keys=["asg:C-1-A1"],
        now=lambda: dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC),
    )
    assert path.name.startswith("placements-20260501T120000000000Z-") and path.suffix == ".csv"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(PLACEMENT_COLUMNS)


# --- the CLI's refusals ----------------------------------------------------------------------


@pytest.fixture
def cli() -> Any:
    import typer
    from typer.testing import CliRunner

    from hub.entrypoints import cli_adapters

    app = typer.Typer()
    cli_adapters.register(app)

    def invoke(*args: str, **env: str) -> Any:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})

    return invoke


def test_the_webhook_command_needs_a_secret_and_the_partners_own_url(cli: Any) -> None:
    base = ["adapters", "webhook", "--partner", "acme-de", "--url", "https://p.example/hook"]
    r = cli(*base, "--secret-env", "ACME_SECRET", ACME_SECRET="")
    assert r.exit_code == 1 and "ACME_SECRET" in r.output
    r = cli(*base, "--secret-env", "S", S="short")
    assert r.exit_code == 1 and "too short" in r.output
    r = cli(*base, "--secret-env", "S", S="x" * 32, ONEWINDOW_PARTNER_AMQP_URL="")
    assert r.exit_code == 1 and "ONEWINDOW_PARTNER_AMQP_URL" in r.output
    r = cli(
        *base,
        "--secret-env",
        "S",
        S="x" * 32,
        ONEWINDOW_PARTNER_AMQP_URL="amqp://guest:guest@127.0.0.1/",
    )
    assert r.exit_code == 1 and "guest's, not partner acme-de's" in r.output
    r = cli(*base, "--secret-env", "S", "--listen", "8081", S="x" * 32)
    assert r.exit_code == 1 and "HOST:PORT" in r.output


def test_the_files_command_refuses_a_bad_mapping(cli: Any, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("codes:\n  X: {type: case.guessed}\n", encoding="utf-8")
    r = cli(
        "adapters",
        "files",
        "--partner",
        "acme-de",
        "--drop",
        str(tmp_path),
        "--mapping",
        str(mapping),
        ONEWINDOW_PARTNER_AMQP_URL="amqp://acme-de:pw@127.0.0.1/",
    )
    assert r.exit_code == 1 and "case.guessed" in r.output


def test_certify_refuses_an_unknown_adapter(cli: Any) -> None:
    url = "amqp://acme-de:pw@127.0.0.1/"
    r = cli("certify", "--partner", "acme-de", "--url", url, "--adapter", "ftp")
    assert r.exit_code == 1 and "sdk, webhook or files" in r.output


async def test_the_embedded_server_serves_on_a_free_port_and_frees_it() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from adapters.webhook import EmbeddedServer

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)])
    async with EmbeddedServer(app) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url)).text == "hi"
        with pytest.raises(OSError):
            await EmbeddedServer(app, port=server.port).start()
    async with EmbeddedServer(app, port=server.port):  # the port is free again
        pass
