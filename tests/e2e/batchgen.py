"""A deterministic generator of claim batches for the end-to-end tests, with ground truth.

``generate`` returns the messages to publish, in publishing order, and for each one what
it *is* (an original claim, an exact re-send, an amendment, an invalid row, a withdrawal)
and the business facts behind it (creditor entity, debtor registration id, the claim as
sent). It says nothing about what the hub should answer: the tests derive that
themselves from these facts, independently of the hub's code.

Every claim of one (creditor entity, debtor) pair is in one currency (the entity's), so
the only rejections are the invalid rows. Follow-ups (re-sends, amendments) come at some
point after their original; withdrawals after every original claim of their debtor, and
only from debtors that keep at least one open claim, so no case is emptied.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: 30 countries and the currency an entity of that country invoices in.
COUNTRIES: dict[str, str] = {
    "DE": "EUR",
    "FR": "EUR",
    "NL": "EUR",
    "BE": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "AT": "EUR",
    "IE": "EUR",
    "PT": "EUR",
    "FI": "EUR",
    "GB": "GBP",
    "CH": "CHF",
    "SE": "SEK",
    "NO": "NOK",
    "DK": "DKK",
    "PL": "PLN",
    "CZ": "CZK",
    "HU": "HUF",
    "RO": "RON",
    "US": "USD",
    "CA": "CAD",
    "AU": "AUD",
    "JP": "JPY",
    "SG": "SGD",
    "HK": "HKD",
    "IN": "INR",
    "BR": "BRL",
    "MX": "MXN",
    "ZA": "ZAR",
    "AE": "AED",
}

#: Partners of the flow test: 25 of the 30 countries covered, five by two partners;
#: IN, BR, MX, ZA and AE by none.
PARTNER_PLAN: list[list[str]] = [
    ["DE", "AT"],
    ["DE"],
    ["FR", "BE"],
    ["FR"],
    ["NL", "BE"],
    ["ES", "PT"],
    ["IT"],
    ["IE", "GB"],
    ["GB"],
    ["FI", "SE"],
    ["NO", "DK"],
    ["CH"],
    ["PL", "CZ"],
    ["HU", "RO"],
    ["US", "CA"],
    ["US"],
    ["AU"],
    ["JP"],
    ["SG", "HK"],
]

INVALID_KINDS = ("bad_currency", "missing_debtor_country", "unknown_field", "float_money")


@dataclass(frozen=True)
class Debtor:
    number: int
    country: str
    registration_id: str

    def document(self) -> dict[str, Any]:
        n = self.number
        return {
            "name": f"Debtor {n} {self.country} GmbH",
            "kind": "company",
            "registration_id": self.registration_id,
            "country": self.country,
            "address": {
                "line1": f"{n} Harbour Road",
                "city": f"City {n % 17}",
                "postal_code": f"{10000 + n}",
                "country": self.country,
            },
            "email": f"ap{n}@debtor{n}.example",
        }


@dataclass
class GenMessage:
    """One message to publish and what it is."""

    message_id: str
    type: str  # claim.placed | claim.amended | claim.withdrawn
    body: bytes  # exactly what is published
    #: original | resend | amend | invalid | withdraw
    intent: str
    #: business key "<entity>/<invoice>"
    key: str
    entity: str
    #: the debtor's registration id ("" for an invalid row)
    debtor_reg: str
    debtor_country: str
    #: the claim as sent, without its batch fields (None for withdrawals and invalid rows)
    content: dict[str, Any] | None = None
    invalid_kind: str | None = None


@dataclass
class Batch:
    batch_id: str
    messages: list[GenMessage] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.messages)

    def by_intent(self, intent: str) -> list[GenMessage]:
        return [m for m in self.messages if m.intent == intent]


def _money(rng: random.Random, low: int, high: int) -> str:
    cents = rng.randrange(low * 100, high * 100)
    return f"{Decimal(cents) / 100:.2f}"


def generate(
    n_messages: int = 1000,
    *,
    seed: int = 20261204,
    batch_id: str = "B-2026-12",
    creditor_id: str = "flexspace",
    countries: dict[str, str] | None = None,
    resends: int = 50,
    amendments: int = 30,
    invalid: int = 20,
    withdrawals: int = 5,
    claims_per_debtor: tuple[int, int] = (1, 6),
    two_entity_share: float = 0.05,
    cross_border_share: float = 0.1,
    id_prefix: str = "",
) -> Batch:
    """A batch of ``n_messages`` messages (``batch_size`` = ``n_messages``)."""
    rng = random.Random(seed)
    countries = countries or COUNTRIES
    codes = sorted(countries)
    n_original = n_messages - resends - amendments - invalid - withdrawals
    if n_original <= 0:
        raise ValueError("more follow-ups than messages")
    entities = {c: [f"FS-{c}-{k:03d}" for k in range(1, 1 + rng.randint(1, 3))] for c in codes}

    # originals: debtors with a few claims each, until there are n_original claims
    originals: list[tuple[Debtor, str, dict[str, Any]]] = []  # debtor, entity, claim
    invoice_no = 0
    debtor_no = 0
    while len(originals) < n_original:
        debtor_no += 1
        country = codes[(debtor_no - 1) % len(codes)] if debtor_no <= len(codes) else None
        country = country or rng.choice(codes)
        debtor = Debtor(debtor_no, country, f"HRB-{country}-{debtor_no:05d}")
        home = country if rng.random() >= cross_border_share else rng.choice(codes)
        own = [rng.choice(entities[home])]
        if rng.random() < two_entity_share:  # the same debtor owes two entities: two cases
            other = rng.choice(codes)
            own.append(rng.choice([e for e in entities[other] if e not in own] or own))
        for _ in range(rng.randint(*claims_per_debtor)):
            if len(originals) >= n_original:
                break
            invoice_no += 1
            entity = rng.choice(own)
            originals.append((debtor, entity, _claim(rng, creditor_id, entity, debtor, invoice_no)))

    rng.shuffle(originals)
    # Each message gets a position ("time"); follow-ups come after what they follow.
    timeline: list[tuple[float, GenMessage]] = []
    orig_msgs: list[GenMessage] = []
    for i, (debtor, entity, claim) in enumerate(originals):
        msg = _message(claim, "claim.placed", "original", debtor, entity)
        orig_msgs.append(msg)
        timeline.append((float(i), msg))
    end = float(len(originals))

    pool = list(range(len(orig_msgs)))
    rng.shuffle(pool)
    resent, pool = pool[:resends], pool[resends:]
    amended, pool = pool[:amendments], pool[amendments:]
    untouched = set(pool)

    for idx in resent:
        o = orig_msgs[idx]
        assert o.content is not None
        msg = _follow_up(o, dict(o.content), "claim.placed", "resend")
        timeline.append((rng.uniform(idx + 0.1, end), msg))
    for j, idx in enumerate(amended):
        o = orig_msgs[idx]
        assert o.content is not None
        content = dict(o.content)
        content["principal"] = f"{Decimal(content['principal']) + Decimal('111.11'):.2f}"
        mtype = "claim.amended" if j % 2 else "claim.placed"
        timeline.append((rng.uniform(idx + 0.1, end), _follow_up(o, content, mtype, "amend")))

    # withdrawals: one untouched claim each of debtors (entity + debtor) with >= 2 claims
    groups: dict[tuple[str, str], list[int]] = {}
    for i, o in enumerate(orig_msgs):
        groups.setdefault((o.entity, o.debtor_reg), []).append(i)
    candidates = sorted(
        (g for g in groups.values() if len(g) >= 2 and any(i in untouched for i in g)),
        key=lambda g: g[0],
    )
    rng.shuffle(candidates)
    if len(candidates) < withdrawals:
        raise ValueError("not enough multi-claim debtors to withdraw from")
    for g in candidates[:withdrawals]:
        idx = next(i for i in g if i in untouched)
        untouched.discard(idx)
        o = orig_msgs[idx]
        withdrawal: dict[str, Any] = {
            "creditor_id": creditor_id,
            "creditor_entity": o.entity,
            "invoice_number": o.key.split("/", 1)[1],
            "reason": "paid directly to the creditor",
        }
        msg = GenMessage(
            message_id="",
            type="claim.withdrawn",
            body=b"",
            intent="withdraw",
            key=o.key,
            entity=o.entity,
            debtor_reg=o.debtor_reg,
            debtor_country=o.debtor_country,
            content=withdrawal,
        )
        timeline.append((rng.uniform(max(g) + 0.1, end + 1.0), msg))

    # invalid rows, anywhere, each on an invoice of its own
    for k in range(invalid):
        kind = INVALID_KINDS[k % len(INVALID_KINDS)]
        debtor = Debtor(900_000 + k, rng.choice(codes), f"HRB-BAD-{k:05d}")
        invoice_no += 1
        entity = rng.choice(entities[debtor.country])
        claim = _claim(rng, creditor_id, entity, debtor, invoice_no)
        broken = _break(claim, kind)
        msg = GenMessage(
            message_id="",
            type="claim.placed",
            body=b"",
            intent="invalid",
            key=f"{entity}/{claim['invoice_number']}",
            entity=entity,
            debtor_reg="",
            debtor_country=debtor.country,
            content=broken,  # only to build the body below
            invalid_kind=kind,
        )
        timeline.append((rng.uniform(0, end), msg))

    timeline.sort(key=lambda t: t[0])
    batch = Batch(batch_id)
    for n, (_, msg) in enumerate(timeline):
        msg.message_id = f"{id_prefix}{batch_id}-m{n:05d}"
        assert msg.content is not None
        doc: dict[str, Any] = dict(msg.content)
        doc["batch_id"] = batch_id
        doc["batch_size"] = n_messages
        msg.body = json.dumps(doc).encode()
        if msg.intent in ("invalid", "withdraw"):
            msg.content = None
        batch.messages.append(msg)
    assert batch.size == n_messages
    return batch


def _claim(
    rng: random.Random, creditor_id: str, entity: str, debtor: Debtor, invoice_no: int
) -> dict[str, Any]:
    month = rng.randint(1, 9)
    return {
        "creditor_id": creditor_id,
        "creditor_entity": entity,
        "invoice_number": f"INV-{entity[3:5]}-{invoice_no:06d}",
        "invoice_date": f"2026-{month:02d}-{rng.randint(1, 28):02d}",
        "due_date": f"2026-{month + 1:02d}-{rng.randint(1, 28):02d}",
        "currency": COUNTRIES[entity[3:5]],
        "principal": _money(rng, 200, 25_000),
        "interest": _money(rng, 0, 300),
        "fees": "40.00",
        "debtor": debtor.document(),
        "contract_ref": f"CTR-{debtor.number:05d}",
    }


def _message(
    claim: dict[str, Any], mtype: str, intent: str, debtor: Debtor, entity: str
) -> GenMessage:
    key = f"{entity}/{claim['invoice_number']}"
    return GenMessage(
        "", mtype, b"", intent, key, entity, debtor.registration_id, debtor.country, claim
    )


def _follow_up(o: GenMessage, content: dict[str, Any], mtype: str, intent: str) -> GenMessage:
    return GenMessage(
        "", mtype, b"", intent, o.key, o.entity, o.debtor_reg, o.debtor_country, content
    )


def _break(claim: dict[str, Any], kind: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(claim))
    if kind == "bad_currency":
        body["currency"] = "EUX"
    elif kind == "missing_debtor_country":
        del body["debtor"]["country"]
    elif kind == "unknown_field":
        body["discount_code"] = "SPRING"
    elif kind == "float_money":
        body["principal"] = float(body["principal"]) + 0.5
    else:  # pragma: no cover
        raise ValueError(kind)
    return body
