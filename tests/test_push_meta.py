"""Meta Conversions API rules for CRM leads: hashing, events, requests (issue 12, first part)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalloop.push.meta import (
    MAX_BATCH,
    build_event,
    hash_field,
    lead_id,
    normalize,
    plan_requests,
    problems,
    request_body,
)

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def test_known_hashes() -> None:
    # Meta's normalisation, then SHA-256 hex of the UTF-8 text
    assert hash_field("em", " Maria.Lopez@Example.com ") == sha("maria.lopez@example.com")
    assert hash_field("ph", "+1 (650) 555-1212") == sha("16505551212")
    assert hash_field("ph", "0016505551212") == sha("16505551212")
    assert hash_field("zp", "94025-1234") == sha("94025")
    assert hash_field("country", " US ") == sha("us")


@pytest.mark.parametrize("bad", ["", "   ", "maria", "maria@", "@example.com", "a b@c.de"])
def test_invalid_email_is_not_hashed(bad: str) -> None:
    assert hash_field("em", bad) is None


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40))
def test_hash_is_stable_and_an_already_hashed_value_passes(text: str) -> None:
    h = hash_field("fn", text)
    if h is None:
        assert not text.strip()
        return
    assert len(h) == 64 and all(c in "0123456789abcdef" for c in h)
    assert hash_field("fn", h) == h  # no double hashing
    assert hash_field("fn", h.upper()) == h
    assert hash_field("fn", f"  {text.upper()}  ") == hash_field("fn", text.lower())


@given(
    st.lists(st.integers(0, 9), min_size=6, max_size=14),
    st.sampled_from(["+", "00", ""]),
    st.sampled_from([" ", "-", ".", "()"]),
)
def test_phone_formats_hash_alike(digits: list[int], prefix: str, sep: str) -> None:
    plain = "".join(map(str, digits)).lstrip("0") or "1"
    spaced = sep.join(plain[i : i + 3] for i in range(0, len(plain), 3))
    assert normalize("ph", f"{prefix}{spaced}") == plain
    assert hash_field("ph", f"{prefix}{spaced}") == sha(plain)


def test_lead_id() -> None:
    assert lead_id("123456789012345") == 123456789012345
    assert lead_id(1234567890123456) == 1234567890123456
    assert lead_id("1234567890123456.0") == 1234567890123456
    assert lead_id("12345678901234567") is None  # 17 digits
    assert lead_id("abc") is None


def test_event_prefers_the_lead_id_unhashed() -> None:
    e = build_event(
        "r1",
        "sql",
        NOW,
        event_name="SQL",
        crm_name="Salesforce",
        lead="123456789012345",
        email="a@b.co",
    )
    assert e is not None
    assert e["user_data"] == {"lead_id": 123456789012345}
    assert e["custom_data"] == {"event_source": "crm", "lead_event_source": "Salesforce"}
    assert e["action_source"] == "system_generated"
    assert e["event_time"] == int(NOW.timestamp())
    assert problems(e, NOW) == []
    # no valid identity at all: no event
    assert build_event("r2", "sql", NOW, event_name="SQL", crm_name="x", email="nope") is None


def test_event_id_is_stable_across_runs() -> None:
    kw = {"event_name": "won", "crm_name": "HubSpot", "email": "a@b.co"}
    a = build_event("r1", "won", NOW, **kw)
    b = build_event("r1", "won", NOW + timedelta(hours=1), **kw)
    c = build_event("r1", "sql", NOW, **kw)
    assert a and b and c
    assert a["event_id"] == b["event_id"] != c["event_id"]


def test_problems_name_each_rule() -> None:
    good = build_event("r1", "sql", NOW, event_name="sql", crm_name="x", phone="5550100")
    assert good is not None
    assert problems({**good, "action_source": "crm"}, NOW) == [
        "action_source 'crm' is not one of the API's"
    ]
    assert problems({**good, "event_time": float(good["event_time"])}, NOW)[0].startswith(
        "event_time must be integer"
    )
    old = int((NOW - timedelta(days=8)).timestamp())
    assert problems({**good, "event_time": old}, NOW) == ["event_time is 8.0 days old (at most 7)"]
    assert problems({**good, "user_data": {"em": ["maria@example.com"]}}, NOW) == [
        "em must be SHA-256 hex (64 lower-case hex characters)"
    ]
    assert problems({**good, "user_data": {"lead_id": "123456789012345"}}, NOW) == [
        "lead_id must be the 15-16 digit Lead Ads id, as an integer"
    ]


def test_requests_hold_at_most_1000_valid_events_and_report_the_rest() -> None:
    events = []
    for i in range(2503):
        age = timedelta(days=9) if i % 500 == 0 else timedelta(hours=i % 100)
        e = build_event(
            f"r{i}", "sql", NOW - age, event_name="sql", crm_name="x", email=f"u{i}@x.io"
        )
        assert e is not None
        events.append(e)
    plan = plan_requests(events, NOW)
    assert [len(r) for r in plan.requests] == [1000, 1000, 497]
    assert plan.sent_events == 2497 and len(plan.left_out) == 6
    assert all(r["reasons"] == ["event_time is 9.0 days old (at most 7)"] for r in plan.left_out)
    assert all(problems(e, NOW) == [] for r in plan.requests for e in r)
    ids = [e["event_id"] for r in plan.requests for e in r]
    assert len(set(ids)) == len(ids)
    body = request_body(plan.requests[0], test_event_code="TEST123")
    assert body["test_event_code"] == "TEST123" and len(body["data"]) == MAX_BATCH
    with pytest.raises(ValueError):
        plan_requests(events, NOW, size=1001)
