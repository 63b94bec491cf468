"""Google Ads rules: conversion times, hashing, click conversions, exclusions (issue 12)."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalloop.push import meta
from signalloop.push.google import (
    CLICK_MIN_AGE,
    MAX_ACTIVE_EXCLUSIONS,
    MAX_CONVERSIONS,
    MAX_EXCLUSION_DAYS,
    RETRYABLE_ROW_ERRORS,
    build_click_conversion,
    build_exclusion,
    conversion_action_resource,
    conversion_date_time,
    exclusion_key,
    exclusion_problems,
    exclusion_windows,
    failure_errors,
    hash_email,
    hash_phone,
    normalize_customer_id,
    normalize_phone,
    parse_conversion_date_time,
    plan_requests,
    problems,
    request_body,
    row_errors,
    shift_start,
    upload_csv,
)

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
ACTION = "customers/1234567890/conversionActions/555"
FAILURE = "type.googleapis.com/google.ads.googleads.v22.errors.GoogleAdsFailure"
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def click(record: str, ts: datetime, gclid: str | None = "Cj0KCQiA", **kw: Any) -> dict[str, Any]:
    conv = build_click_conversion(
        record, "sql", ts, conversion_action=ACTION, tz="America/New_York", gclid=gclid, **kw
    )
    assert conv is not None
    return conv


# --- times -----------------------------------------------------------------------------------


def test_conversion_date_time_in_the_account_zone_each_side_of_dst() -> None:
    ny = "America/New_York"  # DST began 2026-03-08 02:00 and ends 2026-11-01 02:00
    assert conversion_date_time(datetime(2026, 3, 7, 12), ny) == "2026-03-07 07:00:00-05:00"
    assert conversion_date_time(datetime(2026, 3, 9, 12), ny) == "2026-03-09 08:00:00-04:00"
    # the repeated hour at the end of DST: one wall-clock time, two instants, two offsets
    assert conversion_date_time(datetime(2026, 11, 1, 5, 30), ny) == "2026-11-01 01:30:00-04:00"
    assert conversion_date_time(datetime(2026, 11, 1, 6, 30), ny) == "2026-11-01 01:30:00-05:00"
    berlin = "Europe/Berlin"  # DST began 2026-03-29 01:00 UTC
    assert conversion_date_time(datetime(2026, 3, 29, 0, 59, 59), berlin) == (
        "2026-03-29 01:59:59+01:00"
    )
    assert conversion_date_time(datetime(2026, 3, 29, 1), berlin) == "2026-03-29 03:00:00+02:00"
    # half-hour zones, negative ones too; an aware ts in another zone; microseconds dropped
    assert conversion_date_time(datetime(2026, 1, 1), "America/St_Johns") == (
        "2025-12-31 20:30:00-03:30"
    )
    paris = datetime(2026, 7, 1, 18, 30, 15, 999_999, tzinfo=ZoneInfo("Europe/Paris"))
    assert conversion_date_time(paris, "Asia/Kolkata") == "2026-07-01 22:00:15+05:30"
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        conversion_date_time(NOW, "Mars/Olympus_Mons")


def test_parse_conversion_date_time() -> None:
    t = parse_conversion_date_time("2026-11-01 01:30:00-05:00")
    assert t == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert t.utcoffset() == timedelta(hours=-5)
    assert parse_conversion_date_time("2025-12-31 20:30:00-03:30") == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="no zone offset"):
        parse_conversion_date_time("2026-11-01 01:30:00")
    for bad in ("2026-11-01T01:30:00-05:00", "2026-11-01 01:30-05:00", "2026-02-30 00:00:00+00:00"):
        with pytest.raises(ValueError):
            parse_conversion_date_time(bad)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=UTC)
    ),
    st.sampled_from(ZONES),
)
def test_conversion_date_time_round_trips_in_any_zone(ts: datetime, tz: str) -> None:
    text = conversion_date_time(ts, tz)
    back = parse_conversion_date_time(text)
    assert back == ts
    assert back.replace(tzinfo=None) == ts.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


# --- identities ------------------------------------------------------------------------------


def test_email_hash_is_sha256_of_googles_normalisation() -> None:
    assert hash_email(" Jane.Doe@Gmail.COM ") == sha("janedoe@gmail.com")
    assert hash_email("j.a.n.e@googlemail.com") == sha("jane@googlemail.com")
    assert hash_email("jane.doe+crm@gmail.com") == sha("janedoe+crm@gmail.com")  # only periods go
    # other domains keep their periods: the same normalisation as Meta's
    assert hash_email(" Jane.Doe@Example.com ") == sha("jane.doe@example.com")
    assert hash_email("jane.doe@example.com") == meta.hash_field("em", "jane.doe@example.com")
    assert hash_email("jane.doe@gmail.com.au") == sha("jane.doe@gmail.com.au")
    assert hash_email(sha("x@y.io").upper()) == sha("x@y.io")  # already hashed: passes
    for bad in (None, "", "jane", "jane@", "@gmail.com", ".@gmail.com"):
        assert hash_email(bad) is None, bad


def test_phone_hash_is_sha256_of_e164_with_the_plus() -> None:
    assert normalize_phone("+1 (650) 555-1212") == "+16505551212"
    assert hash_phone("+1 (650) 555-1212") == sha("+16505551212")
    assert hash_phone("0016505551212") == sha("+16505551212")
    assert hash_phone("(650) 555-1212") is None  # no country code: its hash could not match
    assert hash_phone("(650) 555-1212", "1") == sha("+16505551212")
    assert hash_phone("020 7946 0000", "+44") == sha("+442079460000")  # trunk 0 dropped
    assert hash_phone("06 1234 5678", "39") == sha("+390612345678")  # Italy keeps it
    assert hash_phone("+1234567890123456") is None  # 16 digits: longer than E.164 allows
    assert hash_phone("+12345") is None
    assert hash_phone(sha("+16505551212")) == sha("+16505551212")


def test_resources_and_customer_ids() -> None:
    assert normalize_customer_id(" 123-456-7890 ") == "1234567890"
    assert conversion_action_resource("123-456-7890", " 555 ") == ACTION
    assert conversion_action_resource(1234567890, ACTION) == ACTION
    assert conversion_action_resource(None, ACTION) == ACTION
    with pytest.raises(ValueError, match="belongs to customer 1234567890, not 999"):
        conversion_action_resource("999", ACTION)
    with pytest.raises(ValueError, match="needs the customer id"):
        conversion_action_resource(None, "555")
    for cid, action in (("123-456-789O", "555"), ("1", "Lead form"), ("1", "customers/1/x/2")):
        with pytest.raises(ValueError):
            conversion_action_resource(cid, action)


# --- click conversions -----------------------------------------------------------------------


def test_gclid_conversion_is_the_rest_click_conversion() -> None:
    ts = datetime(2026, 3, 9, 12)
    conv = build_click_conversion(
        "r1",
        "won",
        ts,
        conversion_action="555",
        customer_id="123-456-7890",
        tz="America/New_York",
        gclid=" Cj0KCQiA ",
        email="jane@gmail.com",
        value="1250.50",
        currency=" usd ",
    )
    assert conv == {
        "conversionAction": ACTION,
        "conversionDateTime": "2026-03-09 08:00:00-04:00",
        "orderId": meta.event_id("r1", "won"),
        "gclid": "Cj0KCQiA",
        "conversionValue": 1250.5,
        "currencyCode": "USD",
    }
    assert problems(conv, NOW, click_ts=ts - timedelta(days=3)) == []


def test_without_gclid_it_is_an_enhanced_conversion_for_leads() -> None:
    conv = build_click_conversion(
        "r2",
        "sql",
        NOW,
        conversion_action=ACTION,
        tz="UTC",
        email=" Jane.Doe@Gmail.com",
        phone="+44 20 7946 0000",
        ad_user_data_consent="granted",
    )
    assert conv is not None
    assert "gclid" not in conv
    assert conv["userIdentifiers"] == [
        {"hashedEmail": sha("janedoe@gmail.com")},
        {"hashedPhoneNumber": sha("+442079460000")},
    ]
    assert conv["consent"] == {"adUserData": "GRANTED"}
    assert problems(conv, NOW) == []
    only_phone = build_click_conversion(
        "r3",
        "sql",
        NOW,
        conversion_action=ACTION,
        tz="UTC",
        email="nope",
        phone="0044 20 7946 0000",
    )
    assert only_phone is not None
    assert only_phone["userIdentifiers"] == [{"hashedPhoneNumber": sha("+442079460000")}]
    # nothing to match on: no conversion at all
    for kw in ({}, {"email": "nope", "phone": "555 0100"}, {"gclid": "  ", "email": None}):
        assert (
            build_click_conversion("r4", "sql", NOW, conversion_action=ACTION, tz="UTC", **kw)
            is None
        )


def test_problems_name_each_rule_and_the_google_error() -> None:
    ts = NOW - timedelta(days=1)
    good = click("r1", ts)
    clk = ts - timedelta(days=2)
    assert problems(good, NOW, click_ts=clk) == []

    def only(conv: dict[str, Any], **kw: Any) -> str:
        why = problems(conv, NOW, **kw)
        assert len(why) == 1, why
        return why[0]

    assert only({**good, "conversionAction": "555"}).endswith("(RESOURCE_NAME_MALFORMED)")
    assert only({k: v for k, v in good.items() if k != "conversionDateTime"}) == (
        "missing conversionDateTime (FieldError REQUIRED)"
    )
    assert only({**good, "conversionDateTime": "2026-03-09 08:00:00"}) == (
        "conversion date time '2026-03-09 08:00:00' has no zone offset (+hh:mm) "
        "(INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET)"
    )
    assert only({**good, "gbraid": "0AAAAA"}).endswith("(VALUE_MUST_BE_UNSET)")
    braids = {k: v for k, v in good.items() if k != "gclid"} | {"gbraid": "a", "wbraid": "b"}
    assert only(braids).endswith("(GBRAID_WBRAID_BOTH_SET)")
    nothing = {k: v for k, v in good.items() if k != "gclid"}
    assert only(nothing).endswith("(FieldError REQUIRED)")
    assert (
        only({**good, "gclid": "Cj0 KCQ"})
        == "gclid 'Cj0 KCQ' is not a click id (UNPARSEABLE_GCLID)"
    )
    six = [{"hashedEmail": sha(f"u{i}@x.io")} for i in range(6)]
    assert only({**nothing, "userIdentifiers": six}) == (
        "6 userIdentifiers, at most 5 (CollectionSizeError TOO_MANY)"
    )
    two_keys = [{"hashedEmail": sha("a@b.io"), "hashedPhoneNumber": sha("+1650")}]
    assert only({**nothing, "userIdentifiers": two_keys}).endswith("(UNSUPPORTED_USER_IDENTIFIER)")
    assert only({**nothing, "userIdentifiers": [{"mobileId": "x"}]}).endswith(
        "(UNSUPPORTED_USER_IDENTIFIER)"
    )
    assert only({**nothing, "userIdentifiers": [{"hashedEmail": "jane@gmail.com"}]}) == (
        "hashedEmail must be SHA-256 hex (64 lower-case hex characters) (INVALID_USER_IDENTIFIER)"
    )
    # the click's age, as of the send, and its order against the conversion
    assert only(good, click_ts=NOW - timedelta(days=95)) == (
        "click is 95.0 days old, past the 90-day click-through window (EXPIRED_EVENT)"
    )
    assert only(good, click_ts=NOW - timedelta(days=40), click_window_days=30) == (
        "click is 40.0 days old, past the 30-day click-through window (EXPIRED_EVENT)"
    )
    assert problems(good, NOW, click_ts=NOW - timedelta(days=90)) == []  # the window's edge
    recent = click("r2", NOW - timedelta(hours=1))
    assert only(recent, click_ts=NOW - timedelta(hours=2)) == (
        "click is 2.0 hours old, under 6 hours (TOO_RECENT_EVENT: retry after 6 hours)"
    )
    assert problems(recent, NOW, click_ts=NOW - CLICK_MIN_AGE - timedelta(hours=1)) == []
    assert only(good, click_ts=ts + timedelta(hours=1)) == (
        "conversion at 2026-03-09 08:00:00-04:00 precedes its click at 2026-03-09 13:00:00 UTC "
        "(CONVERSION_PRECEDES_EVENT)"
    )
    # value and currency
    assert (
        only({**good, "conversionValue": -5.0})
        == "conversionValue -5.0 is negative (RangeError TOO_LOW)"
    )
    for bad in (math.nan, math.inf, "12", True):
        assert only({**good, "conversionValue": bad}).startswith(
            f"conversionValue {bad!r} is not a finite number"
        )
    assert problems({**good, "conversionValue": 0}, NOW) == []
    assert only(click("r3", ts, value="twelve")).startswith("conversionValue 'twelve'")
    for cur in ("usd", "EURO", "E1R", 840):
        assert only({**good, "currencyCode": cur}).endswith("(CurrencyCodeError UNSUPPORTED)")
    assert only({**good, "consent": {"adUserData": "YES"}}).endswith("(INVALID_ENUM_VALUE)")
    # a gclid and user identifiers together are allowed (Google asks for both when known)
    assert problems({**good, "userIdentifiers": [{"hashedEmail": sha("a@b.io")}]}, NOW) == []


def test_plan_splits_4500_valid_rows_into_2000_2000_500_and_reports_the_rest() -> None:
    convs: list[dict[str, Any]] = []
    clicks: dict[str, datetime] = {}
    for i in range(4500):
        c = click(f"r{i}", NOW - timedelta(days=1, minutes=i), gclid=f"g{i}")
        clicks[c["orderId"]] = NOW - timedelta(days=3, minutes=i)
        convs.append(c)
    expired = click("old", NOW - timedelta(days=1), gclid="g-old")
    clicks[expired["orderId"]] = NOW - timedelta(days=100)
    fresh = click("new", NOW - timedelta(hours=1), gclid="g-new")
    clicks[fresh["orderId"]] = NOW - timedelta(hours=3)
    dup_order = dict(convs[10])  # the same record and stage again
    dup_click = {**convs[11], "orderId": "sl-other"}  # same click, action and time
    everything = [expired, *convs[:3000], dup_order, fresh, *convs[3000:], dup_click]
    plan = plan_requests(everything, NOW, click_ts=clicks)
    assert [len(r) for r in plan.requests] == [2000, 2000, 500]
    assert [c["orderId"] for r in plan.requests for c in r] == [c["orderId"] for c in convs]
    reasons = {x["event"]["orderId"]: x["reasons"] for x in plan.left_out}
    assert reasons == {
        expired["orderId"]: [
            "click is 100.0 days old, past the 90-day click-through window (EXPIRED_EVENT)"
        ],
        fresh["orderId"]: [
            "click is 3.0 hours old, under 6 hours (TOO_RECENT_EVENT: retry after 6 hours)"
        ],
        dup_order["orderId"]: [  # a row sent twice is both
            f"orderId {dup_order['orderId']} repeats one already planned (DUPLICATE_ORDER_ID)",
            "same click, action and conversionDateTime as one already planned "
            "(DUPLICATE_CLICK_CONVERSION_IN_REQUEST)",
        ],
        "sl-other": [
            "same click, action and conversionDateTime as one already planned "
            "(DUPLICATE_CLICK_CONVERSION_IN_REQUEST)"
        ],
    }
    body = request_body(plan.requests[0])
    assert body["partialFailure"] is True and body["validateOnly"] is False
    assert len(body["conversions"]) == MAX_CONVERSIONS and "debugEnabled" not in body
    assert request_body(plan.requests[2], validate_only=True, debug_enabled=True)["debugEnabled"]
    with pytest.raises(ValueError, match="TOO_MANY_CONVERSIONS_IN_REQUEST"):
        request_body(convs[:2001])
    with pytest.raises(ValueError):
        plan_requests(convs, NOW, size=2001)


# --- responses -------------------------------------------------------------------------------


def _error(code: dict[str, str], message: str, index: int | None) -> dict[str, Any]:
    err: dict[str, Any] = {"errorCode": code, "message": message}
    if index is not None:
        err["location"] = {
            "fieldPathElements": [
                {"fieldName": "conversions", "index": index},
                {"fieldName": "gclid"},
            ]
        }
    return err


def test_row_errors_from_a_partial_failure_response() -> None:
    response = {
        "results": [{"gclid": "g0"}, {}, {"gclid": "g2"}, {}, {}],
        "partialFailureError": {
            "code": 3,
            "message": "The imported event can't be recorded..., at conversions[1].gclid",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": "ignored"},
                {
                    "@type": FAILURE,
                    "errors": [
                        _error({"conversionUploadError": "EXPIRED_EVENT"}, "expired", 1),
                        _error({"conversionUploadError": "TOO_RECENT_EVENT"}, "recent", 3),
                        _error({"conversionUploadError": "CLICK_NOT_FOUND"}, "unknown click", 4),
                        _error({"fieldError": "INVALID_VALUE"}, "bad value", 4),
                        _error({"internalError": "TRANSIENT_ERROR"}, "no row", None),
                        _error({"conversionUploadError": "EXPIRED_EVENT"}, "past n", 7),
                    ],
                    "requestId": "abc",
                },
            ],
        },
    }
    rows = row_errors(response, 5)
    assert rows[0] is None and rows[2] is None
    assert rows[1] == {
        "code": "EXPIRED_EVENT",
        "kind": "conversionUploadError",
        "message": "expired",
        "index": 1,
        "retryable": False,
        "codes": ["EXPIRED_EVENT"],
    }
    assert rows[3] is not None and rows[3]["code"] == "TOO_RECENT_EVENT" and rows[3]["retryable"]
    assert rows[4] is not None
    assert rows[4]["codes"] == ["CLICK_NOT_FOUND", "INVALID_VALUE"]
    assert rows[4]["message"] == "unknown click; bad value" and rows[4]["retryable"] is False
    assert row_errors({"results": [{}, {}]}, 2) == [None, None]
    assert "CLICK_NOT_FOUND" not in RETRYABLE_ROW_ERRORS


def test_failure_errors_of_a_whole_request_error() -> None:
    response = {
        "error": {
            "code": 400,
            "message": "Request contains an invalid argument.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": FAILURE,
                    "errors": [
                        _error(
                            {"conversionUploadError": "TOO_MANY_CONVERSIONS_IN_REQUEST"},
                            "Upload fewer than 2001 events in a single request.",
                            None,
                        )
                    ],
                }
            ],
        }
    }
    assert failure_errors(response) == [
        {
            "code": "TOO_MANY_CONVERSIONS_IN_REQUEST",
            "kind": "conversionUploadError",
            "message": "Upload fewer than 2001 events in a single request.",
            "index": None,
            "retryable": False,
        }
    ]
    assert (
        failure_errors({"error": {"code": 401, "message": "no", "status": "UNAUTHENTICATED"}}) == []
    )


# --- upload file -----------------------------------------------------------------------------


def test_upload_file_holds_gclid_rows_only_in_the_named_zone() -> None:
    winter = click("r1", datetime(2026, 3, 7, 12), value=120, currency="usd")
    summer = click("r2", datetime(2026, 3, 9, 12), gclid="Cj0-b_2", value=99.5)
    lead = build_click_conversion(
        "r3", "sql", NOW, conversion_action=ACTION, tz="UTC", email="jane@gmail.com"
    )
    assert lead is not None
    text = upload_csv([winter, lead, summer], "America/New_York", {ACTION: "Qualified lead"})
    assert text == (
        "Parameters:TimeZone=America/New_York\n"
        "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency\n"
        "Cj0KCQiA,Qualified lead,2026-03-07 07:00:00,120,USD\n"
        "Cj0-b_2,Qualified lead,2026-03-09 08:00:00,99.5,\n"
    )
    assert lead["userIdentifiers"][0]["hashedEmail"] not in text  # no personal data, hashed or not
    # another zone: the same instants on its wall clock; an unnamed action gets its id
    berlin = upload_csv([winter], "Europe/Berlin").splitlines()
    assert berlin[0] == "Parameters:TimeZone=Europe/Berlin"
    assert berlin[2] == "Cj0KCQiA,555,2026-03-07 13:00:00,120,USD"


# --- bidding data exclusions -----------------------------------------------------------------


def test_a_30_day_window_splits_into_14_14_2_covering_it_exactly() -> None:
    start = datetime(2026, 4, 1, 6, 30, tzinfo=UTC)
    pieces = exclusion_windows(start, start + timedelta(days=30))
    assert pieces == [
        (start, start + timedelta(days=14)),
        (start + timedelta(days=14), start + timedelta(days=28)),
        (start + timedelta(days=28), start + timedelta(days=30)),
    ]
    assert exclusion_windows(start, start + timedelta(days=14)) == [
        (start, start + timedelta(days=14))
    ]
    with pytest.raises(ValueError, match="at or before it starts"):
        exclusion_windows(start, start)


def test_a_piece_over_the_start_of_dst_is_shortened_on_the_wall_clock() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)  # New York springs forward on 2026-03-08
    end = start + timedelta(days=20)
    naive_pieces = exclusion_windows(start, end)
    first = build_exclusion(1, 2, *naive_pieces[0], tz="America/New_York", name="outage")
    assert (first["startDateTime"], first["endDateTime"]) == (
        "2026-03-01 07:00:00",
        "2026-03-15 08:00:00",
    )  # 14 days and 1 hour on the account's wall clock: Google would refuse it
    assert exclusion_problems(first) == ["the window is 14 days, 1:00:00 long, at most 14 days"]
    pieces = exclusion_windows(start, end, tz="America/New_York")
    assert pieces[0] == (start, start + timedelta(days=14, hours=-1))
    assert pieces[-1][1] == end and len(pieces) == 2
    for a, b in pieces:
        assert (
            exclusion_problems(build_exclusion(1, 2, a, b, tz="America/New_York", name="o")) == []
        )


def test_a_short_window_inside_the_repeated_hour_still_ends_after_it_starts() -> None:
    # 05:40-06:10 UTC on 2026-11-01 is 01:40 EDT to 01:10 EST in New York
    a, b = datetime(2026, 11, 1, 5, 40), datetime(2026, 11, 1, 6, 10)
    e = build_exclusion(1, 2, a, b, tz="America/New_York", name="blip")
    assert (e["startDateTime"], e["endDateTime"]) == ("2026-11-01 01:40:00", "2026-11-01 02:10:00")
    assert exclusion_problems(e) == []
    # an ordinary window is not touched
    e = build_exclusion(1, 2, a, b, tz="UTC", name="blip")
    assert (e["startDateTime"], e["endDateTime"]) == ("2026-11-01 05:40:00", "2026-11-01 06:10:00")


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=200)),
    st.sampled_from([None, *ZONES]),
)
def test_splitting_covers_any_window_exactly(
    start: datetime, length: timedelta, tz: str | None
) -> None:
    end = start + length
    pieces = exclusion_windows(start, end, tz=tz)
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a < b for a, b in pieces)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
    longest = timedelta(days=MAX_EXCLUSION_DAYS)
    if tz is None:
        assert (
            all(b - a == longest for a, b in pieces[:-1])
            and pieces[-1][1] - pieces[-1][0] <= longest
        )
    else:
        zone = ZoneInfo(tz)
        for a, b in pieces:
            wall = b.astimezone(zone).replace(tzinfo=None) - a.astimezone(zone).replace(tzinfo=None)
            assert wall <= longest  # (and positive, but for a piece in a repeated hour)
        assert len(pieces) <= math.ceil(length / (longest - timedelta(hours=1)))


def test_shift_start_by_the_median_delay() -> None:
    start = datetime(2026, 5, 10, 9)
    assert shift_start(start, timedelta(days=3, hours=4)) == datetime(2026, 5, 7, 5)
    assert shift_start(start, None) == start
    assert shift_start(start, timedelta(0)) == start
    with pytest.raises(ValueError, match="negative"):
        shift_start(start, timedelta(hours=-1))


def test_build_exclusion_is_the_rest_create_body() -> None:
    e = build_exclusion(
        "123-456-7890",
        "987",
        datetime(2026, 5, 1, 22),
        datetime(2026, 5, 4, 6),
        tz="Europe/Berlin",
        name="n" * 300,
        description="d" * 3000,
    )
    assert e == {
        "name": "n" * 255,
        "description": "d" * 2048,
        "scope": "CAMPAIGN",
        "campaigns": ["customers/1234567890/campaigns/987"],
        "startDateTime": "2026-05-02 00:00:00",
        "endDateTime": "2026-05-04 08:00:00",
    }
    assert exclusion_problems(e) == []
    with pytest.raises(ValueError):
        build_exclusion(1, "Brand search", NOW, NOW + timedelta(days=1), tz="UTC", name="x")


def test_exclusion_problems_name_each_rule() -> None:
    good = build_exclusion(1, 2, NOW, NOW + timedelta(days=14), tz="UTC", name="outage")
    assert exclusion_problems(good) == []

    def only(**change: Any) -> str:
        why = exclusion_problems({**good, **change})
        assert len(why) == 1, why
        return why[0]

    assert only(name=" ") == "name is empty (StringLengthError EMPTY)"
    assert only(name="n" * 256) == "name is 256 characters, at most 255 (TOO_LONG)"
    assert only(description="d" * 2049).endswith("at most 2048 (TOO_LONG)")
    assert only(scope="ACCOUNT") == "scope 'ACCOUNT' is not CAMPAIGN or CHANNEL"
    assert only(campaigns=[]) == "scope CAMPAIGN needs at least one campaign"
    assert only(campaigns=["2"]) == "campaign '2' is not customers/{cid}/campaigns/{id}"
    assert only(campaigns=[f"customers/1/campaigns/{i}" for i in range(2001)]) == (
        "2001 campaigns, at most 2000"
    )
    assert only(advertisingChannelTypes=["SEARCH"]).startswith("scope CAMPAIGN with advertising")
    channel = {
        "scope": "CHANNEL",
        "campaigns": [],
        "advertisingChannelTypes": ["SEARCH", "DISPLAY"],
    }
    assert exclusion_problems({**good, **channel}) == []
    assert only(**{**channel, "advertisingChannelTypes": ["VIDEO"]}).startswith(
        "advertising channel type 'VIDEO' is not one of"
    )
    assert only(**{**channel, "campaigns": ["customers/1/campaigns/2"]}) == (
        "scope CHANNEL with campaigns: set one or the other"
    )
    assert only(startDateTime="2026-03-10T12:00:00") == (
        "startDateTime '2026-03-10T12:00:00' is not yyyy-MM-dd HH:mm:ss "
        "(INVALID_STRING_DATE_TIME_SECONDS)"
    )
    assert only(endDateTime="2026-02-30 00:00:00").startswith("endDateTime '2026-02-30 00:00:00'")
    assert only(endDateTime=good["startDateTime"]) == (
        "endDateTime is not after startDateTime (START_DATE_AFTER_END_DATE)"
    )
    assert (
        only(endDateTime="2026-03-24 12:00:01")
        == "the window is 14 days, 0:00:01 long, at most 14 days"
    )


def test_exclusion_key_is_stable_and_tells_pieces_apart() -> None:
    base = exclusion_key("987", datetime(2026, 5, 1, 6), 0)
    assert base == exclusion_key(
        987, datetime(2026, 5, 1, 8, tzinfo=timezone(timedelta(hours=2))), 0
    )
    others = {
        exclusion_key("988", datetime(2026, 5, 1, 6), 0),
        exclusion_key("987", datetime(2026, 5, 1, 7), 0),
        exclusion_key("987", datetime(2026, 5, 1, 6), 1),
        exclusion_key("987", date(2026, 5, 1), 0),
    }
    assert base not in others and len(others) == 4
    assert base.startswith("sl-excl-") and len(base) == len("sl-excl-") + 24
    # the account's cap is what the lead's ledger counts active exclusions against
    assert MAX_ACTIVE_EXCLUSIONS == 500 and MAX_EXCLUSION_DAYS == 14
