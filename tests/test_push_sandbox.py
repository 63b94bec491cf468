"""The local Meta / Google Ads stand-ins: documented rules, error shapes, faults (issue 12)."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from signalloop.push.sandbox import GaqlError, Sandbox, parse_gaql

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
META_TOKEN = "meta-secret-5c1e7a"
DEV_TOKEN = "dev-secret-91b2c4"
ACCESS = "access-secret-7d3f0a"
CLIENT_SECRET = "client-secret-e8a6b1"
REFRESH = "refresh-secret-40c9d2"
SECRETS = (META_TOKEN, DEV_TOKEN, ACCESS, CLIENT_SECRET, REFRESH)
CID = "1234567890"
ACTION = f"customers/{CID}/conversionActions/555"
NEW_ACTION = f"customers/{CID}/conversionActions/777"
GCLID = "Cj0KCQiA_good-click"
OLD_GCLID = "Cj0KCQiA_old-click"
FRESH_GCLID = "Cj0KCQiA_fresh-click"
EMAIL = hashlib.sha256(b"known@example.com").hexdigest()
META_URL = "/v21.0/123456789/events"
UPLOAD = f"/v22/customers/{CID}:uploadClickConversions"
MUTATE = f"/v22/customers/{CID}/biddingDataExclusions:mutate"
SEARCH = f"/v22/customers/{CID}/googleAds:search"
_unique = itertools.count(1)


def make_sandbox(**kw: Any) -> Sandbox:
    args: dict[str, Any] = {
        "now": NOW,
        "meta_token": META_TOKEN,
        "pixel_ids": ["123456789"],
        "google_developer_token": DEV_TOKEN,
        "google_access_tokens": [ACCESS],
        "google_client_secret": CLIENT_SECRET,
        "google_refresh_token": REFRESH,
        "customer_ids": [CID],
        "conversion_actions": {ACTION: NOW - timedelta(days=30), NEW_ACTION: NOW},
        "clicks": {
            GCLID: NOW - timedelta(days=2),
            OLD_GCLID: NOW - timedelta(days=91),
            FRESH_GCLID: NOW - timedelta(hours=2),
        },
    }
    args.update(kw)
    return Sandbox(**args)


@pytest.fixture(scope="module")
def shared() -> Iterator[Sandbox]:
    """One server for the rejection paths (a rejection stores nothing)."""
    with make_sandbox() as sb:
        yield sb


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with make_sandbox() as s:
        yield s


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def meta_event(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "sql",
        "event_time": int((NOW - timedelta(days=1)).timestamp()),
        "action_source": "system_generated",
        "event_id": f"sl-{next(_unique)}",
        "user_data": {"lead_id": 1234567890123456},
        "custom_data": {"event_source": "crm", "lead_event_source": "HubSpot"},
    }
    event.update(over)
    return {k: v for k, v in event.items() if v is not None}


def post_meta(
    c: httpx.Client, sb: Sandbox, body: Any, token: str | None = META_TOKEN, path: str = META_URL
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return c.post(sb.base_url + path, json=body, headers=headers)


def google_headers(token: str = ACCESS, dev: str | None = DEV_TOKEN) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    if dev is not None:
        h["developer-token"] = dev
    return h


def post_google(
    c: httpx.Client, sb: Sandbox, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return c.post(sb.base_url + path, json=body, headers=headers or google_headers())


def conversion(**over: Any) -> dict[str, Any]:
    n = next(_unique)
    row: dict[str, Any] = {
        "gclid": GCLID,
        "conversionAction": ACTION,
        "conversionDateTime": (NOW - timedelta(days=1, seconds=n)).strftime(
            "%Y-%m-%d %H:%M:%S+00:00"
        ),
        "conversionValue": 120.5,
        "currencyCode": "EUR",
        "orderId": f"sl-order-{n}",
    }
    row.update(over)
    return {k: v for k, v in row.items() if v is not None}


def upload(rows: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    return {"conversions": rows, "partialFailure": True, **over}


def google_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    failure = (body.get("partialFailureError") or body["error"])["details"][0]
    assert failure["@type"].endswith("errors.GoogleAdsFailure")
    return list(failure["errors"])


def error_code(err: dict[str, Any]) -> tuple[str, str]:
    ((kind, code),) = err["errorCode"].items()
    return kind, code


def exclusion(**over: Any) -> dict[str, Any]:
    ex: dict[str, Any] = {
        "name": "CRM sync outage",
        "description": "signalloop: CRM sync dropout",
        "scope": "CAMPAIGN",
        "campaigns": [f"customers/{CID}/campaigns/42"],
        "startDateTime": "2026-03-01 00:00:00",
        "endDateTime": "2026-03-04 00:00:00",
    }
    ex.update(over)
    return {k: v for k, v in ex.items() if v is not None}


# ---- lifecycle ------------------------------------------------------------------------------


def test_binds_loopback_and_frees_the_port_on_stop(client: httpx.Client) -> None:
    sb = make_sandbox().start()
    url = sb.base_url
    assert url.startswith("http://127.0.0.1:")
    assert post_meta(client, sb, {"data": [meta_event()]}).status_code == 200
    sb.stop()
    sb.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + META_URL, json={}, timeout=2)
    with pytest.raises(RuntimeError):
        _ = sb.base_url


# ---- Meta -----------------------------------------------------------------------------------


def test_meta_accepts_and_stores_exactly_what_was_sent(sb: Sandbox, client: httpx.Client) -> None:
    events = [
        meta_event(),
        meta_event(
            event_name="won",
            user_data={
                "em": [hashlib.sha256(b"a@b.co").hexdigest()],
                "ph": [hashlib.sha256(b"15550100").hexdigest()],
            },
        ),
    ]
    r = post_meta(client, sb, {"data": events})
    assert r.status_code == 200
    body = r.json()
    assert body["events_received"] == 2 and body["messages"] == [] and body["fbtrace_id"]
    assert [e.event for e in sb.meta_events] == events
    assert {e.pixel_id for e in sb.meta_events} == {"123456789"}
    assert [e.count for e in sb.meta_events] == [1, 1]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"event_time": int((NOW - timedelta(days=7, hours=1)).timestamp())}, "older than 7 days"),
        ({"event_time": int((NOW + timedelta(hours=1)).timestamp())}, "in the future"),
        ({"event_time": float(NOW.timestamp())}, "integer Unix seconds"),
        ({"event_time": str(int(NOW.timestamp()))}, "integer Unix seconds"),
        ({"event_time": True}, "integer Unix seconds"),
        ({"event_name": ""}, "event_name"),
        ({"event_name": 3}, "event_name"),
        ({"action_source": "crm"}, "action_source"),
        ({"action_source": None}, "action_source"),
        ({"user_data": {}}, "user_data"),
        ({"user_data": {"lead_id": "1234567890123456"}}, "lead_id"),
        ({"user_data": {"lead_id": 12345678901234}}, "lead_id"),
        ({"user_data": {"em": ["maria@example.com"]}}, "user_data.em must be SHA-256"),
        ({"user_data": {"em": ["A" * 64]}}, "user_data.em must be SHA-256"),
        ({"user_data": {"ph": "15550100"}}, "user_data.ph must be SHA-256"),
        ({"custom_data": {"lead_event_source": "HubSpot"}}, "event_source"),
        ({"custom_data": {"event_source": "crm"}}, "lead_event_source"),
        ({"event_id": 17}, "event_id"),
    ],
)
def test_meta_one_invalid_event_rejects_the_whole_request(
    shared: Sandbox, client: httpx.Client, change: dict[str, Any], rule: str
) -> None:
    before = len(shared.meta_events)
    event = meta_event()
    event.update(change)
    event = {k: v for k, v in event.items() if v is not None}
    r = post_meta(client, shared, {"data": [meta_event(), event]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 100 and err["type"] == "OAuthException" and err["fbtrace_id"]
    assert err["error_user_msg"].startswith("Event 1: ")
    assert rule in err["error_user_msg"]
    assert len(shared.meta_events) == before  # the valid event 0 was not kept either


@pytest.mark.parametrize("n", [0, 1001])
def test_meta_batch_size(shared: Sandbox, client: httpx.Client, n: int) -> None:
    r = post_meta(client, shared, {"data": [meta_event() for _ in range(n)]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 100


def test_meta_takes_a_full_batch_of_1000(sb: Sandbox, client: httpx.Client) -> None:
    r = post_meta(client, sb, {"data": [meta_event() for _ in range(1000)]})
    assert r.status_code == 200 and r.json()["events_received"] == 1000
    assert len(sb.meta_events) == 1000


def test_meta_auth(sb: Sandbox, client: httpx.Client) -> None:
    body = {"data": [meta_event()]}
    for token in (None, "wrong-token"):
        r = post_meta(client, sb, body, token=token)
        assert r.status_code == 401
        err = r.json()["error"]
        assert err["code"] == 190 and err["type"] == "OAuthException"
        assert "error_subcode" not in err
    sb.expire_token("meta")
    r = post_meta(client, sb, body)
    assert r.status_code == 401
    err = r.json()["error"]
    assert (err["code"], err["error_subcode"]) == (190, 463)
    assert "Session has expired" in err["message"]
    sb.meta_token = "meta-secret-renewed"
    assert post_meta(client, sb, body, token="meta-secret-renewed").status_code == 200
    assert sb.meta_events[0].event == body["data"][0]


def test_meta_unknown_pixel(shared: Sandbox, client: httpx.Client) -> None:
    for path in ("/v21.0/999/events", "/v21.0/pixel-x/events"):
        r = post_meta(client, shared, {"data": [meta_event()]}, path=path)
        assert r.status_code == 400
        err = r.json()["error"]
        assert (err["code"], err["error_subcode"], err["type"]) == (100, 33, "GraphMethodException")


def test_meta_deduplicates_on_event_name_and_event_id(sb: Sandbox, client: httpx.Client) -> None:
    first = meta_event(event_id="sl-dup")
    again = meta_event(event_id="sl-dup", event_time=first["event_time"] + 60)
    other_stage = meta_event(event_id="sl-dup", event_name="won")
    for event in (first, again, other_stage):
        r = post_meta(client, sb, {"data": [event]})
        assert r.json()["events_received"] == 1  # Meta counts every copy it received
    kept = sb.meta_events
    assert [(e.event["event_name"], e.count) for e in kept] == [("sql", 2), ("won", 1)]
    assert kept[0].event == first  # the first copy is the one kept
    assert sb.meta_deduplicated == 1


def test_meta_test_events_are_kept_apart(sb: Sandbox, client: httpx.Client) -> None:
    event = meta_event()
    r = post_meta(client, sb, {"data": [event], "test_event_code": "TEST123"})
    assert r.status_code == 200
    assert sb.meta_events == []
    (kept,) = sb.meta_test_events
    assert kept.event == event and kept.test_event_code == "TEST123"


def test_meta_form_posts_and_url_tokens_are_served_without_logging_the_token(
    sb: Sandbox, client: httpx.Client
) -> None:
    import json

    event = meta_event()
    form = {"data": json.dumps([event]), "access_token": META_TOKEN}
    assert client.post(sb.base_url + META_URL, data=form).status_code == 200
    r = client.post(
        sb.base_url + META_URL, params={"access_token": META_TOKEN}, json={"data": [meta_event()]}
    )
    assert r.status_code == 200
    assert sb.url_tokens == 1
    assert sb.meta_events[0].event == event
    logged = sb.requests
    assert logged[0].body["access_token"] == "<redacted>"
    assert logged[1].query == {"access_token": "<redacted>"}
    assert META_TOKEN not in repr(logged)


def test_meta_age_follows_the_server_clock(sb: Sandbox, client: httpx.Client) -> None:
    event = meta_event(event_time=int(NOW.timestamp()))
    clock = [NOW + timedelta(days=6)]
    sb.set_now(lambda: clock[0])
    assert post_meta(client, sb, {"data": [event]}).status_code == 200
    clock[0] = NOW + timedelta(days=8)
    r = post_meta(client, sb, {"data": [event]})
    assert r.status_code == 400 and "older than 7 days" in r.json()["error"]["error_user_msg"]


# ---- Google: auth and OAuth -----------------------------------------------------------------


def test_google_auth_errors(shared: Sandbox, client: httpx.Client) -> None:
    body = upload([conversion()])
    cases: list[tuple[dict[str, str], str, int, tuple[str, str]]] = [
        ({}, UPLOAD, 401, ("authenticationError", "AUTHENTICATION_ERROR")),
        (google_headers(token="nope"), UPLOAD, 401, ("authenticationError", "OAUTH_TOKEN_INVALID")),
        (
            google_headers(dev=None),
            UPLOAD,
            400,
            ("requestError", "DEVELOPER_TOKEN_PARAMETER_MISSING"),
        ),
        (google_headers(dev="x"), UPLOAD, 401, ("authenticationError", "DEVELOPER_TOKEN_INVALID")),
        (
            google_headers(),
            "/v22/customers/123-456-7890:uploadClickConversions",
            400,
            ("requestError", "INVALID_CUSTOMER_ID"),
        ),
        (
            google_headers(),
            "/v22/customers/999:uploadClickConversions",
            403,
            ("authorizationError", "USER_PERMISSION_DENIED"),
        ),
    ]
    statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
    for headers, path, status, code in cases:
        r = client.post(shared.base_url + path, json=body, headers=headers)
        assert r.status_code == status, code
        err = r.json()["error"]
        assert (err["code"], err["status"]) == (status, statuses[status])
        assert [error_code(e) for e in google_errors(r.json())] == [code]
    assert shared.google_conversions == []


def test_expired_access_token_and_refresh(sb: Sandbox, client: httpx.Client) -> None:
    sb.expire_token("google")
    r = post_google(client, sb, UPLOAD, upload([conversion()]))
    assert r.status_code == 401
    assert error_code(google_errors(r.json())[0]) == ("authenticationError", "OAUTH_TOKEN_EXPIRED")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "sandbox-client-id",
        "client_secret": CLIENT_SECRET,
    }
    tok = client.post(sb.token_url, data=form)
    assert tok.status_code == 200
    grant = tok.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
    fresh = grant["access_token"]
    assert post_google(client, sb, UPLOAD, upload([conversion()]), google_headers(fresh)).is_success
    # an issued token expires by the server clock
    sb.set_now(NOW + timedelta(seconds=grant["expires_in"] + 1))
    r = post_google(client, sb, UPLOAD, upload([conversion()]), google_headers(fresh))
    assert error_code(google_errors(r.json())[0]) == ("authenticationError", "OAUTH_TOKEN_EXPIRED")
    assert sb.tokens_issued == 1


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"refresh_token": "revoked"}, 400, "invalid_grant"),
    ],
)
def test_token_endpoint_errors(
    shared: Sandbox, client: httpx.Client, change: dict[str, str], status: int, error: str
) -> None:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "sandbox-client-id",
        "client_secret": CLIENT_SECRET,
    }
    r = client.post(shared.token_url, data={**form, **change})
    assert (r.status_code, r.json()["error"]) == (status, error)


# ---- Google: click conversions --------------------------------------------------------------


def test_upload_stores_exactly_what_was_sent(sb: Sandbox, client: httpx.Client) -> None:
    rows = [
        conversion(),
        conversion(
            gclid=None,
            userIdentifiers=[{"hashedEmail": EMAIL}],
            orderId="sl-ecl-1",
        ),
        conversion(userIdentifiers=[{"hashedEmail": EMAIL}]),  # gclid and identifiers
        {  # proto field names are accepted as well as lowerCamelCase
            "gclid": GCLID,
            "conversion_action": ACTION,
            "conversion_date_time": "2026-03-08 09:30:00-05:00",
        },
    ]
    r = post_google(client, sb, UPLOAD, upload(rows))
    assert r.status_code == 200
    body = r.json()
    assert "partialFailureError" not in body and body["jobId"]
    assert [c.conversion for c in sb.google_conversions] == rows
    assert body["results"][0] == {
        "gclid": GCLID,
        "conversionAction": ACTION,
        "conversionDateTime": rows[0]["conversionDateTime"],
    }
    assert body["results"][1]["userIdentifiers"] == [{"hashedEmail": EMAIL}]


def test_upload_validate_only_checks_and_keeps_nothing(sb: Sandbox, client: httpx.Client) -> None:
    r = post_google(client, sb, UPLOAD, upload([conversion()], validateOnly=True))
    assert r.status_code == 200 and "results" not in r.json()
    assert sb.google_conversions == []


def test_upload_matches_the_action_by_id_alone(sb: Sandbox, client: httpx.Client) -> None:
    row = conversion(conversionAction="customers/42/conversionActions/555")
    r = post_google(client, sb, UPLOAD, upload([row]))
    assert "partialFailureError" not in r.json()


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (
            {"conversionAction": f"customers/{CID}/conversionActions/999"},
            ("conversionUploadError", "NO_CONVERSION_ACTION_FOUND"),
        ),
        (
            {"conversionAction": "conversionActions/555"},
            ("requestError", "RESOURCE_NAME_MALFORMED"),
        ),
        (
            {"conversionAction": NEW_ACTION},
            ("conversionUploadError", "TOO_RECENT_CONVERSION_ACTION"),
        ),
        (
            {"conversionDateTime": "2026-03-09T10:00:00Z"},
            ("dateError", "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"),
        ),
        (
            {"conversionDateTime": "2026-03-09 10:00:00"},
            ("dateError", "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"),
        ),
        (
            {"conversionDateTime": "2026-03-09 10:00:00+0000"},
            ("dateError", "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"),
        ),
        (
            {"conversionDateTime": "2026-13-09 10:00:00+00:00"},
            ("dateError", "INVALID_FIELD_VALUES_IN_DATE_TIME"),
        ),
        ({"conversionDateTime": None}, ("fieldError", "REQUIRED")),
        ({"gclid": "Cj0K!notaclick"}, ("conversionUploadError", "UNPARSEABLE_GCLID")),
        (
            {"gclid": None, "gbraid": "abc", "wbraid": "def"},
            ("conversionUploadError", "GBRAID_WBRAID_BOTH_SET"),
        ),
        ({"gbraid": "abc"}, ("fieldError", "VALUE_MUST_BE_UNSET")),
        ({"gclid": None}, ("fieldError", "REQUIRED")),
        (
            {"userIdentifiers": [{"hashedEmail": EMAIL}] * 6},
            ("collectionSizeError", "TOO_MANY"),
        ),
        (
            {"gclid": None, "userIdentifiers": [{"hashedEmail": "maria@example.com"}]},
            ("conversionUploadError", "INVALID_USER_IDENTIFIER"),
        ),
        (
            {"gclid": None, "userIdentifiers": [{"addressInfo": {"city": "Paris"}}]},
            ("conversionUploadError", "UNSUPPORTED_USER_IDENTIFIER"),
        ),
        ({"conversionValue": -1}, ("rangeError", "TOO_LOW")),
        ({"currencyCode": "usd"}, ("currencyCodeError", "UNSUPPORTED")),
        ({"currencyCode": "EURO"}, ("currencyCodeError", "UNSUPPORTED")),
        ({"gclid": "Cj0KCQiA_never-clicked"}, ("conversionUploadError", "EVENT_NOT_FOUND")),
        (
            {"conversionDateTime": (NOW - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S+00:00")},
            ("conversionUploadError", "CONVERSION_PRECEDES_EVENT"),
        ),
        ({"gclid": GCLID, "currencyCode": "USD"}, None),  # a control: a valid row passes
        ({"gclid": OLD_GCLID}, ("conversionUploadError", "EXPIRED_EVENT")),
        (
            {
                "gclid": FRESH_GCLID,
                "conversionDateTime": (NOW - timedelta(hours=1)).strftime(
                    "%Y-%m-%d %H:%M:%S+00:00"
                ),
            },
            ("conversionUploadError", "TOO_RECENT_EVENT"),
        ),
    ],
)
def test_upload_row_errors_are_partial_failures(
    shared: Sandbox, client: httpx.Client, row: dict[str, Any], code: tuple[str, str] | None
) -> None:
    before = len(shared.google_conversions)
    good, bad = conversion(), conversion(**row)
    r = post_google(client, shared, UPLOAD, upload([good, bad]))
    assert r.status_code == 200
    body = r.json()
    if code is None:  # a control: the row is valid
        assert "partialFailureError" not in body
        assert len(shared.google_conversions) == before + 2
        return
    assert body["results"][0]["gclid"] == GCLID and body["results"][1] == {}
    failure = body["partialFailureError"]
    assert failure["code"] == 3 and "conversions[1]" in failure["message"]
    (err,) = google_errors(body)
    assert error_code(err) == code
    assert err["location"]["fieldPathElements"][0] == {"fieldName": "conversions", "index": 1}
    assert [c.conversion for c in shared.google_conversions[before:]] == [good]


def test_upload_whole_request_errors(shared: Sandbox, client: httpx.Client) -> None:
    before = len(shared.google_conversions)
    r = post_google(client, shared, UPLOAD, {"conversions": [conversion()]})
    assert r.status_code == 400
    assert error_code(google_errors(r.json())[0]) == (
        "partialFailureError",
        "PARTIAL_FAILURE_MODE_REQUIRED",
    )
    r = post_google(client, shared, UPLOAD, upload([conversion() for _ in range(2001)]))
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert error_code(google_errors(r.json())[0]) == (
        "conversionUploadError",
        "TOO_MANY_CONVERSIONS_IN_REQUEST",
    )
    for bad in (
        upload([conversion(conversion_value_micros=5)]),
        upload([conversion()], partial_failure_mode=True),
        upload([conversion(conversionValue="lots")]),
        upload([conversion(gclid=["a", "b"])]),
    ):
        r = post_google(client, shared, UPLOAD, bad)
        assert r.status_code == 400
        (detail,) = r.json()["error"]["details"]
        assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        assert detail["fieldViolations"][0]["description"].startswith("Invalid")
    assert len(shared.google_conversions) == before


def test_debug_enabled_is_gone_from_v21(sb: Sandbox, client: httpx.Client) -> None:
    row = conversion(gclid=None, userIdentifiers=[{"hashedEmail": "a" * 64}])
    r = post_google(client, sb, UPLOAD, upload([row], debugEnabled=True))
    assert r.status_code == 400 and "debugEnabled" in r.json()["error"]["message"]
    old = UPLOAD.replace("/v22/", "/v20/")
    r = post_google(client, sb, old, upload([row], debugEnabled=True))
    assert r.status_code == 200 and "partialFailureError" not in r.json()  # no CLICK_NOT_FOUND
    assert [c.conversion for c in sb.google_conversions] == [row]


def test_upload_takes_2000(sb: Sandbox, client: httpx.Client) -> None:
    rows = [conversion(gclid=None, userIdentifiers=[{"hashedEmail": EMAIL}]) for _ in range(2000)]
    r = post_google(client, sb, UPLOAD, upload(rows))
    assert "partialFailureError" not in r.json() and len(sb.google_conversions) == 2000


def test_upload_duplicates(sb: Sandbox, client: httpx.Client) -> None:
    a = conversion(orderId="sl-same")
    b = conversion(orderId="sl-same")
    body = post_google(client, sb, UPLOAD, upload([a, b])).json()
    assert [error_code(e)[1] for e in google_errors(body)] == ["DUPLICATE_ORDER_ID"] * 2
    c = conversion()
    d = dict(conversion(), conversionDateTime=c["conversionDateTime"])
    body = post_google(client, sb, UPLOAD, upload([c, d])).json()
    codes = [error_code(e)[1] for e in google_errors(body)]
    assert codes == ["DUPLICATE_CLICK_CONVERSION_IN_REQUEST"] * 2
    assert sb.google_conversions == []
    e = conversion()
    assert "partialFailureError" not in post_google(client, sb, UPLOAD, upload([e])).json()
    again = post_google(client, sb, UPLOAD, upload([e])).json()
    assert [error_code(x)[1] for x in google_errors(again)] == ["ORDER_ID_ALREADY_IN_USE"]
    same_click = dict(e, orderId="sl-other")
    again = post_google(client, sb, UPLOAD, upload([same_click])).json()
    assert [error_code(x)[1] for x in google_errors(again)] == ["CLICK_CONVERSION_ALREADY_EXISTS"]
    # the same instant written in another offset is the same conversion time
    when = datetime.strptime(e["conversionDateTime"], "%Y-%m-%d %H:%M:%S%z")
    shifted = when.astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%d %H:%M:%S%z")
    shifted = shifted[:-2] + ":" + shifted[-2:]
    again = post_google(client, sb, UPLOAD, upload([dict(same_click, conversionDateTime=shifted)]))
    assert [error_code(x)[1] for x in google_errors(again.json())] == [
        "CLICK_CONVERSION_ALREADY_EXISTS"
    ]
    assert [c.conversion for c in sb.google_conversions] == [e]


# ---- Google: bidding data exclusions and GAQL -----------------------------------------------


def mutate(c: httpx.Client, sb: Sandbox, ops: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return post_google(c, sb, MUTATE, {"operations": ops, **kw})


def search(c: httpx.Client, sb: Sandbox, query: str, **kw: Any) -> httpx.Response:
    return post_google(c, sb, SEARCH, {"query": query, **kw})


def test_exclusions_create_update_remove_and_search(sb: Sandbox, client: httpx.Client) -> None:
    r = mutate(client, sb, [{"create": exclusion()}, {"create": exclusion(name="second")}])
    assert r.status_code == 200
    names = [x["resourceName"] for x in r.json()["results"]]
    prefix = f"customers/{CID}/biddingDataExclusions/"
    ids = [int(n.removeprefix(prefix)) for n in names]
    assert all(n.startswith(prefix) for n in names) and ids[0] < ids[1]
    stored = sb.exclusions[names[0]]
    assert {k: stored[k] for k in exclusion()} == exclusion()
    assert stored["status"] == "ENABLED"

    update = {"resourceName": names[0], "endDateTime": "2026-03-05 00:00:00"}
    r = mutate(client, sb, [{"update": update, "updateMask": "endDateTime"}])
    assert r.json()["results"] == [{"resourceName": names[0]}]
    assert sb.exclusions[names[0]]["endDateTime"] == "2026-03-05 00:00:00"
    assert sb.exclusions[names[0]]["name"] == "CRM sync outage"  # outside the mask: kept

    assert mutate(client, sb, [{"remove": names[1]}]).status_code == 200
    q = (
        "SELECT bidding_data_exclusion.resource_name, bidding_data_exclusion.name, "
        "bidding_data_exclusion.start_date_time, bidding_data_exclusion.end_date_time, "
        "bidding_data_exclusion.status FROM bidding_data_exclusion"
    )
    rows = [x["biddingDataExclusion"] for x in search(client, sb, q).json()["results"]]
    assert [(x["resourceName"], x["status"]) for x in rows] == [
        (names[0], "ENABLED"),
        (names[1], "REMOVED"),
    ]
    assert rows[0]["endDateTime"] == "2026-03-05 00:00:00" and "campaigns" not in rows[0]
    body = search(client, sb, q + " WHERE bidding_data_exclusion.status = ENABLED").json()
    assert [x["biddingDataExclusion"]["resourceName"] for x in body["results"]] == [names[0]]
    assert body["fieldMask"].startswith("biddingDataExclusion.resourceName,")
    empty = search(client, sb, q + " WHERE bidding_data_exclusion.name LIKE 'zzz%'").json()
    assert "results" not in empty  # proto3 JSON leaves an empty list out


@pytest.mark.parametrize(
    ("op", "code", "field"),
    [
        (
            {"create": exclusion(campaigns=None)},
            ("fieldError", "REQUIRED_NONEMPTY_LIST"),
            "campaigns",
        ),
        (
            {"create": exclusion(advertisingChannelTypes=["SEARCH"])},
            ("fieldError", "VALUE_MUST_BE_UNSET"),
            "advertising_channel_types",
        ),
        (
            {
                "create": exclusion(
                    campaigns=[f"customers/{CID}/campaigns/{i}" for i in range(2001)]
                )
            },
            ("collectionSizeError", "TOO_MANY"),
            "campaigns",
        ),
        (
            {"create": exclusion(campaigns=["customers/999/campaigns/1"])},
            ("requestError", "RESOURCE_NAME_MALFORMED"),
            "campaigns",
        ),
        (
            {"create": exclusion(scope="CHANNEL", campaigns=None)},
            ("fieldError", "REQUIRED_NONEMPTY_LIST"),
            "advertising_channel_types",
        ),
        ({"create": exclusion(scope="CUSTOMER")}, ("fieldError", "INVALID_VALUE"), "scope"),
        (
            {"create": exclusion(startDateTime="2026-03-01T00:00:00")},
            ("dateError", "INVALID_STRING_DATE_TIME_SECONDS"),
            "start_date_time",
        ),
        (
            {"create": exclusion(endDateTime="2026-03-01 00:00:00")},
            ("dateRangeError", "START_DATE_AFTER_END_DATE"),
            "end_date_time",
        ),
        (
            {"create": exclusion(endDateTime="2026-03-15 00:00:01")},
            ("rangeError", "TOO_HIGH"),
            "end_date_time",
        ),
        ({"create": exclusion(name="n" * 256)}, ("stringLengthError", "TOO_LONG"), "name"),
        (
            {"create": exclusion(description="d" * 2049)},
            ("stringLengthError", "TOO_LONG"),
            "description",
        ),
        (
            {"create": exclusion(resourceName=f"customers/{CID}/biddingDataExclusions/1")},
            ("fieldError", "IMMUTABLE_FIELD"),
            "resource_name",
        ),
        (
            {"remove": f"customers/{CID}/biddingDataExclusions/424242"},
            ("mutateError", "RESOURCE_NOT_FOUND"),
            None,
        ),
        ({}, ("requestError", "OPERATION_REQUIRED"), None),
    ],
)
def test_exclusion_rejections_are_atomic(
    shared: Sandbox,
    client: httpx.Client,
    op: dict[str, Any],
    code: tuple[str, str],
    field: str | None,
) -> None:
    before = shared.exclusions
    r = mutate(client, shared, [{"create": exclusion()}, op])
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    (err,) = google_errors(r.json())
    assert error_code(err) == code
    path = err["location"]["fieldPathElements"]
    assert path[0] == {"fieldName": "operations", "index": 1}
    if field is not None:
        assert path[-1] == {"fieldName": field}
    assert shared.exclusions == before  # the valid create was not applied either


def test_exclusion_14_days_exactly_and_partial_failure(sb: Sandbox, client: httpx.Client) -> None:
    ok = exclusion(endDateTime="2026-03-15 00:00:00")  # exactly 14 days
    bad = exclusion(endDateTime="2026-02-01 00:00:00")
    r = mutate(client, sb, [{"create": ok}, {"create": bad}], partialFailure=True)
    body = r.json()
    assert r.status_code == 200 and body["results"][1] == {}
    assert error_code(google_errors(body)[0]) == ("dateRangeError", "START_DATE_AFTER_END_DATE")
    assert list(sb.exclusions) == [body["results"][0]["resourceName"]]


def test_at_most_500_active_exclusions(sb: Sandbox, client: httpx.Client) -> None:
    future = {"startDateTime": "2026-03-09 00:00:00", "endDateTime": "2026-03-12 00:00:00"}
    ops = [{"create": exclusion(**future)} for _ in range(500)]
    assert mutate(client, sb, ops).status_code == 200
    r = mutate(client, sb, [{"create": exclusion(**future)}])
    assert r.status_code == 400
    assert error_code(google_errors(r.json())[0]) == (
        "resourceCountLimitExceededError",
        "ACCOUNT_LIMIT",
    )
    # an exclusion that already ended is not active and does not count
    assert mutate(client, sb, [{"create": exclusion()}]).status_code == 200
    # removing one frees a place
    first = next(iter(sb.exclusions))
    assert mutate(client, sb, [{"remove": first}]).status_code == 200
    assert mutate(client, sb, [{"create": exclusion(**future)}]).status_code == 200


def test_search_pages_orders_and_limits(client: httpx.Client) -> None:
    with make_sandbox(search_page_size=2) as sb:
        ops = [{"create": exclusion(name=f"w{i}")} for i in range(5)]
        assert mutate(client, sb, ops).status_code == 200
        q = (
            "SELECT bidding_data_exclusion.name FROM bidding_data_exclusion "
            "ORDER BY bidding_data_exclusion.data_exclusion_id DESC"
        )
        names: list[str] = []
        token = None
        pages = 0
        while True:
            body = search(client, sb, q, **({"pageToken": token} if token else {})).json()
            names += [x["biddingDataExclusion"]["name"] for x in body["results"]]
            pages += 1
            token = body.get("nextPageToken")
            if not token:
                break
        assert names == ["w4", "w3", "w2", "w1", "w0"] and pages == 3
        body = search(client, sb, q + " LIMIT 1").json()
        assert [x["biddingDataExclusion"]["name"] for x in body["results"]] == ["w4"]
        r = search(client, sb, q + " LIMIT 1", pageToken="forged")
        assert error_code(google_errors(r.json())[0]) == ("requestError", "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("SELECT keyword_view.resource_name FROM keyword_view", "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE"),
        ("SELECT bidding_data_exclusion.colour FROM bidding_data_exclusion", "UNRECOGNIZED_FIELD"),
        (
            "SELECT campaign.id FROM bidding_data_exclusion",
            "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
        ),
        ("bidding_data_exclusion.name", "EXPECTED_SELECT"),
        ("SELECT bidding_data_exclusion.name WHERE", "EXPECTED_FROM"),
        (
            "SELECT bidding_data_exclusion.name FROM bidding_data_exclusion WHERE "
            "bidding_data_exclusion.name = 'x",
            "STRING_NOT_TERMINATED",
        ),
    ],
)
def test_search_query_errors(shared: Sandbox, client: httpx.Client, query: str, code: str) -> None:
    r = search(client, shared, query)
    assert r.status_code == 400
    assert error_code(google_errors(r.json())[0]) == ("queryError", code)


def test_parse_gaql() -> None:
    q = parse_gaql(
        "select bidding_data_exclusion.name from bidding_data_exclusion where "
        "bidding_data_exclusion.status in ('ENABLED', REMOVED) and "
        'bidding_data_exclusion.end_date_time > "2026-03-01 00:00:00" '
        "order by bidding_data_exclusion.name limit 10"
    )
    assert q.conditions == (
        ("bidding_data_exclusion.status", "IN", ("ENABLED", "REMOVED")),
        ("bidding_data_exclusion.end_date_time", ">", "2026-03-01 00:00:00"),
    )
    assert q.order_by == (("bidding_data_exclusion.name", False),) and q.limit == 10
    with pytest.raises(GaqlError) as exc:
        parse_gaql("SELECT a.b FROM a LIMIT 0")
    assert exc.value.code == "LIMIT_VALUE_TOO_LOW"


# ---- faults ---------------------------------------------------------------------------------


def test_500_then_200(sb: Sandbox, client: httpx.Client) -> None:
    sb.fail_next("google", status=500)
    row = conversion()
    first = post_google(client, sb, UPLOAD, upload([row]))
    assert first.status_code == 500
    err = first.json()["error"]
    assert err["status"] == "INTERNAL"
    assert error_code(google_errors(first.json())[0]) == ("internalError", "INTERNAL_ERROR")
    assert sb.google_conversions == []  # a failed request is not acted on
    second = post_google(client, sb, UPLOAD, upload([row]))
    assert second.status_code == 200 and "partialFailureError" not in second.json()
    assert [c.conversion for c in sb.google_conversions] == [row]
    assert [q.fault for q in sb.requests] == ["fail", None]


def test_429_with_retry_after_and_targets(sb: Sandbox, client: httpx.Client) -> None:
    sb.fail_next("meta", status=429, retry_after=3)
    sb.fail_next(":mutate", status=503, times=2)
    r = post_meta(client, sb, {"data": [meta_event()]})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    err = r.json()["error"]
    assert err["code"] == 4 and err["is_transient"] is True
    assert post_google(client, sb, UPLOAD, upload([conversion()])).status_code == 200
    for _ in range(2):
        r = mutate(client, sb, [{"create": exclusion()}])
        assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE"
        assert "retry-after" not in r.headers
    assert mutate(client, sb, [{"create": exclusion()}]).status_code == 200
    sb.fail_next("google", status=429, retry_after=1.5)
    r = post_google(client, sb, UPLOAD, upload([conversion()]))
    assert r.status_code == 429 and r.headers["retry-after"] == "2"  # whole seconds (RFC 9110)
    assert error_code(google_errors(r.json())[0]) == ("quotaError", "RESOURCE_EXHAUSTED")
    assert len(sb.meta_events) == 0 and len(sb.exclusions) == 1


@pytest.mark.parametrize("platform", ["meta", "google"])
def test_dropped_connection_after_the_server_acted(
    sb: Sandbox, client: httpx.Client, platform: str, caplog: pytest.LogCaptureFixture
) -> None:
    sb.drop_next(platform)
    with caplog.at_level(logging.DEBUG), pytest.raises(httpx.RemoteProtocolError):
        if platform == "meta":
            post_meta(client, sb, {"data": [meta_event()]})
        else:
            post_google(client, sb, UPLOAD, upload([conversion()]))
    assert len(sb.meta_events if platform == "meta" else sb.google_conversions) == 1
    assert sb.requests[-1].fault == "drop" and sb.requests[-1].status == 200
    assert "without completing response" not in caplog.text  # an intended drop is not an error


def test_no_credential_reaches_the_log_or_the_request_record(
    sb: Sandbox,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.DEBUG):
        post_meta(client, sb, {"data": [meta_event()]})
        post_meta(client, sb, {"data": [meta_event(event_time=0)]})
        client.post(sb.base_url + META_URL, params={"access_token": META_TOKEN}, json={})
        post_google(client, sb, UPLOAD, upload([conversion()]))
        post_google(client, sb, UPLOAD, upload([conversion()]), google_headers(dev="bad"))
        form = {
            "grant_type": "refresh_token",
            "refresh_token": REFRESH,
            "client_id": "sandbox-client-id",
            "client_secret": CLIENT_SECRET,
        }
        fresh = client.post(sb.token_url, data=form).json()["access_token"]
        sb.drop_next("google")
        with pytest.raises(httpx.RemoteProtocolError):
            post_google(client, sb, UPLOAD, upload([conversion()]), google_headers(fresh))
        sb.fail_next("oauth", status=503)
        assert client.post(sb.token_url, data=form).status_code == 503
    out, err = capsys.readouterr()
    record = repr(sb.requests)
    # the server side's log records (httpx logs the URL it calls, token and all: the reason
    # tokens go in a header)
    server_log = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert len(sb.requests) == 8
    for secret in (*SECRETS, fresh):
        assert secret not in record
        assert secret not in server_log
        assert secret not in out + err
    assert sb.requests[5].body == {"grant_type": "refresh_token"}
