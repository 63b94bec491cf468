"""Pushing against the local stand-ins: dry-run bodies the platforms accept, exactly once, failures.

Every test talks to :class:`signalloop.push.sandbox.Sandbox` on 127.0.0.1 (no live call), on a
seeded account with stage regressions, duplicate CRM records and a tracking outage on a Google
campaign; the send clock is the morning after the as-of day (a replay).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import simulated_workspace
from typer.testing import CliRunner

from signalloop.checks.engine import load_exclusions, save_exclusions
from signalloop.cli import app
from signalloop.config import Settings, settings_from_dict
from signalloop.errors import CredentialError
from signalloop.push import ledger
from signalloop.push.client import Client
from signalloop.push.outcomes import validated_outcomes
from signalloop.push.sandbox import Sandbox
from signalloop.push.send import push
from signalloop.store import Workspace

AS_OF = date(2026, 3, 1)
NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FAULTS = (
    "stage_overwrite@c01:20-50",
    "crm_duplicates@c04:40-58",
    "tracking_outage@c04:50-56",
)
SECRET = "EAAB-meta-secret-token-do-not-print"
DEV = "google-dev-token-secret"
ACCESS = "ya29.google-access-secret"


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("push")
    ws, _, _ = simulated_workspace(folder, days=60, campaigns=4, seed=3, faults=FAULTS)
    from signalloop.checks import run_checks

    run_checks(ws, as_of=AS_OF)  # stores the outage windows, as check and run do
    ws.close()
    yield folder / "ws.duckdb"


@pytest.fixture
def db(account: Path, tmp_path: Path) -> Path:
    """A private copy of the account's workspace (each test starts with an empty ledger)."""
    copy = tmp_path / "ws.duckdb"
    copy.write_bytes(account.read_bytes())
    return copy


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", SECRET)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", DEV)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", ACCESS)
    with Sandbox(
        now=NOW,
        meta_token=SECRET,
        google_developer_token=DEV,
        google_access_tokens=(ACCESS,),
        google_time_zone="America/New_York",
    ) as sb:
        yield sb


def settings_for(base: str, **meta: Any) -> Settings:
    return settings_from_dict(
        {
            "push": {
                "crm_name": "HubSpot",
                "meta": {"pixel_id": "1234567890", "base_url": base, **meta},
                "google": {
                    "customer_id": "123-456-7890",
                    "time_zone": "America/New_York",
                    "currency": "USD",
                    "conversion_actions": {"sql": "111", "won": "222"},
                    "campaigns": {"c02": "9000000002", "c04": "9000000004"},
                    "base_url": base,
                    "token_url": f"{base}/token",
                },
            }
        }
    )


def fast_client(waits: list[float] | None = None) -> Client:
    return Client(
        retries=3,
        backoff=0.01,
        sleep=(waits.append if waits is not None else None) or (lambda s: None),
    )


def test_dry_run_bodies_are_what_the_platforms_accept(
    db: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    s = settings_for(sandbox.base_url)
    out = tmp_path / "bodies"
    with Workspace(db) as ws:
        res = {
            t: push(ws, t, as_of=AS_OF, settings=s, out=out / t, now=NOW)
            for t in ("meta", "google", "exclusions")
        }
        assert ledger.summary(ws) == []  # a dry run sends and records nothing
    assert sandbox.requests == []
    assert res["meta"].requests and res["google"].requests and res["exclusions"].requests
    headers = {"Authorization": f"Bearer {SECRET}"}
    for r in res["meta"].requests:
        body = json.loads(Path(r["file"]).read_text())
        assert len(body["data"]) <= 1000
        reply = httpx.post(r["url"], json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["events_received"] == r["items"]
    g_headers = {"Authorization": f"Bearer {ACCESS}", "developer-token": DEV}
    for t in ("google", "exclusions"):
        for r in res[t].requests:
            reply = httpx.post(
                r["url"], json=json.loads(Path(r["file"]).read_text()), headers=g_headers
            )
            assert reply.status_code == 200, reply.text
            assert "partialFailureError" not in reply.json(), reply.text
    csv = (out / "google" / "google-upload.csv").read_text().splitlines()
    assert csv[0] == "Parameters:TimeZone=America/New_York"
    assert (
        csv[1]
        == "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
    )
    assert "@" not in "".join(csv)  # no personal data in the upload file


def test_only_validated_outcomes_leave(db: Path, sandbox: Sandbox) -> None:
    s = settings_for(sandbox.base_url)
    with Workspace(db) as ws:
        oc = validated_outcomes(ws, as_of=AS_OF, settings=s)
        res = push(
            ws,
            "meta",
            as_of=AS_OF,
            settings=s,
            dry_run=False,
            now=NOW,
            outcomes=oc,
            client=fast_client(),
        )
        gres = push(
            ws,
            "google",
            as_of=AS_OF,
            settings=s,
            dry_run=False,
            now=NOW,
            outcomes=oc,
            client=fast_client(),
        )
    bad = {x["record_id"] for x in oc.skipped}
    sent_ids = {e.event["event_id"] for e in sandbox.meta_events}
    from signalloop.push.meta import event_id

    assert not {event_id(x["record_id"], x["stage"]) for x in oc.skipped} & sent_ids
    assert res.sent == len(sandbox.meta_events) > 0
    assert gres.sent == len(sandbox.google_conversions) > 0
    assert Counter(x["reason"] for x in gres.skipped)["duplicate"] > 0
    assert Counter(x["reason"] for x in res.skipped)["stage_regression"] > 0
    assert bad


def test_each_event_exactly_once_across_runs_and_restarts(db: Path, sandbox: Sandbox) -> None:
    s = settings_for(sandbox.base_url)
    sent = []
    for _ in range(2):  # the second process finds the first one's ledger in the workspace
        with Workspace(db) as ws:
            for t in ("meta", "google", "exclusions"):
                r = push(
                    ws, t, as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
                )
                sent.append((t, r.sent, r.already_sent))
    first, second = sent[:3], sent[3:]
    for (t, n, _), (_, n2, already) in zip(first, second, strict=True):
        assert n > 0, t
        assert n2 == 0 and already == n, t
    assert all(e.count == 1 for e in sandbox.meta_events)
    orders = Counter(c.conversion["orderId"] for c in sandbox.google_conversions)
    assert max(orders.values()) == 1
    assert len(sandbox.exclusions) == first[2][1]


def test_server_error_then_success_and_429_are_retried(db: Path, sandbox: Sandbox) -> None:
    s = settings_for(sandbox.base_url)
    sandbox.fail_next("meta", 500)
    sandbox.fail_next("meta", 429, retry_after=2)
    waits: list[float] = []
    with Workspace(db) as ws:
        r = push(
            ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client(waits)
        )
    assert r.sent == len(sandbox.meta_events) > 0 and not r.failed
    assert r.requests[0]["attempts"] == 3
    assert waits[1] == 2.0  # Retry-After honoured


def test_a_dropped_connection_loses_nothing_and_sends_nothing_twice(
    db: Path, sandbox: Sandbox
) -> None:
    s = settings_for(sandbox.base_url)
    sandbox.drop_next("meta")  # Meta stores the events, the answer never arrives
    with Workspace(db) as ws:
        r = push(ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client())
        assert r.sent == len(sandbox.meta_events)
        assert r.requests[0]["attempts"] == 2
    assert sandbox.meta_deduplicated == r.requests[0]["items"]  # the retry was deduplicated
    assert all(e.count <= 2 for e in sandbox.meta_events)
    assert len({e.event["event_id"] for e in sandbox.meta_events}) == len(sandbox.meta_events)


def test_unreachable_server_records_failure_and_the_next_run_sends(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", SECRET)
    sb = Sandbox(now=NOW, meta_token=SECRET).start()
    base = sb.base_url
    sb.stop()
    s = settings_for(base)
    with Workspace(db) as ws:
        r = push(ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client())
        assert r.sent == 0 and r.failed and r.failed[0]["status"] == 0
        assert ledger.done_keys(ws, "meta", "event") == set()
    with Sandbox(now=NOW, meta_token=SECRET) as sb2, Workspace(db) as ws:
        r2 = push(
            ws,
            "meta",
            as_of=AS_OF,
            settings=settings_for(sb2.base_url),
            dry_run=False,
            now=NOW,
            client=fast_client(),
        )
        assert r2.sent == len(sb2.meta_events) > 0


def test_a_4xx_is_not_retried_and_its_message_lands_in_the_ledger(
    db: Path, sandbox: Sandbox
) -> None:
    s = settings_for(sandbox.base_url)
    sandbox.fail_next("meta", 400)
    with Workspace(db) as ws:
        r = push(ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client())
        assert r.requests[0]["attempts"] == 1 and r.rejected
        rows = ledger.recent(ws, 5000)
        rejected = [x for x in rows if x["status"] == "rejected"]
        assert rejected and rejected[0]["message"] and not rejected[0]["final"]
        again = push(
            ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
    assert again.sent == len(r.rejected)  # a request turned away whole is tried again


def test_an_expired_token_names_the_fix_and_never_the_token(db: Path, sandbox: Sandbox) -> None:
    s = settings_for(sandbox.base_url)
    sandbox.expire_token("meta")
    with Workspace(db) as ws, pytest.raises(CredentialError) as exc:
        push(ws, "meta", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client())
    assert "SIGNALLOOP_META_ACCESS_TOKEN" in str(exc.value)
    assert SECRET not in str(exc.value)


def test_google_token_refresh_and_row_errors(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", DEV)
    monkeypatch.delenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_REFRESH_TOKEN", "refresh-secret")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_CLIENT_ID", "cid")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_CLIENT_SECRET", "csecret")
    with Workspace(db) as ws:
        oc = validated_outcomes(ws, as_of=AS_OF)
    gclids = [
        c
        for c in oc.candidates
        if c["platform"] == "google" and c["gclid"] and c["stage"] in ("sql", "won")
    ]
    clicks = {c["gclid"]: c["click_ts"] or datetime(2026, 1, 1, tzinfo=UTC) for c in gclids[1:]}
    with (
        Sandbox(
            now=NOW,
            google_developer_token=DEV,
            google_access_tokens=(),
            google_client_id="cid",
            google_client_secret="csecret",
            google_refresh_token="refresh-secret",
            clicks=clicks,
        ) as sb,
        Workspace(db) as ws,
    ):
        r = push(
            ws,
            "google",
            as_of=AS_OF,
            settings=settings_for(sb.base_url),
            dry_run=False,
            now=NOW,
            outcomes=oc,
            client=fast_client(),
        )
        assert sb.tokens_issued == 1
        assert r.rejected and all(x["final"] for x in r.rejected)  # the unknown click
        assert gclids[0]["record_id"] in {x["record_id"] for x in r.rejected}
        again = push(
            ws,
            "google",
            as_of=AS_OF,
            settings=settings_for(sb.base_url),
            dry_run=False,
            now=NOW,
            outcomes=oc,
            client=fast_client(),
        )
        assert again.sent == 0 and not again.rejected


def test_exclusions_grow_by_update_not_by_copy(db: Path, sandbox: Sandbox) -> None:
    s = settings_for(sandbox.base_url)
    with Workspace(db) as ws:
        stored = load_exclusions(ws)
        google = [e for e in stored if e["campaign_id"] == "c04"]
        assert google, stored
        r = push(
            ws, "exclusions", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
        assert r.sent == len(sandbox.exclusions) >= 1
        body = next(iter(sandbox.exclusions.values()))
        assert body["scope"] == "CAMPAIGN"
        assert body["campaigns"] == ["customers/1234567890/campaigns/9000000004"]
        start = datetime.fromisoformat(body["startDateTime"])
        assert start < datetime.fromisoformat(google[0]["start"])  # moved back by the delay
        # the outage is still open a week later: the same exclusion is extended
        save_exclusions(ws, [{**e, "end": None} for e in stored], AS_OF)
        r2 = push(
            ws,
            "exclusions",
            as_of=date(2026, 3, 5),
            settings=s,
            dry_run=False,
            now=NOW,
            client=fast_client(),
        )
        # the fix is confirmed and the window closes where it was: the extra pieces go
        save_exclusions(ws, stored, AS_OF)
        r3 = push(
            ws, "exclusions", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
        r4 = push(
            ws, "exclusions", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
    ops = Counter(x["op"] for x in r2.requests)
    assert ops["update"] >= 1
    ops3 = Counter(x["op"] for x in r3.requests)
    assert ops3["remove"] == ops["create"] >= 1
    live = [e for e in sandbox.exclusions.values() if e.get("status") != "REMOVED"]
    assert len(live) == r.sent and r4.requests == []


def test_cli_dry_run_json_and_no_secret_anywhere(
    db: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = tmp_path / "signalloop.toml"
    cfg.write_text(
        '[push]\ncrm_name = "HubSpot"\n[push.meta]\npixel_id = "1234567890"\n'
        f'base_url = "{sandbox.base_url}"\n'
    )
    out = tmp_path / "bodies"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "push",
            "meta",
            "--dry-run",
            "--json",
            "--db",
            str(db),
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--now",
            "2026-03-02T06:00",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["dry_run"] and doc["counts"]["planned"] > 0
    live = runner.invoke(
        app, ["push", "meta", "--db", str(db), "--config", str(cfg), "--now", "2026-03-02T06:00"]
    )
    assert live.exit_code == 2 and "dry run" in live.output
    bad = runner.invoke(app, ["push", "exclusions", "--to", "meta", "--db", str(db), "--dry-run"])
    assert bad.exit_code == 2 and "Google" in bad.output
    texts = [res.output, live.output] + [p.read_text() for p in out.rglob("*") if p.is_file()]
    with Workspace(db) as ws:
        texts.append(json.dumps(ledger.recent(ws, 10_000), default=str))
    assert not any(SECRET in t or DEV in t or ACCESS in t for t in texts)


def test_test_events_are_kept_apart_from_live_ones(db: Path, sandbox: Sandbox) -> None:
    test = settings_for(sandbox.base_url, test_event_code="TEST123")
    with Workspace(db) as ws:
        t = push(
            ws, "meta", as_of=AS_OF, settings=test, dry_run=False, now=NOW, client=fast_client()
        )
        assert t.test and t.sent == len(sandbox.meta_test_events) > 0
        assert sandbox.meta_events == []
        live = settings_for(sandbox.base_url)
        r = push(
            ws, "meta", as_of=AS_OF, settings=live, dry_run=False, now=NOW, client=fast_client()
        )
    assert r.sent == t.sent == len(sandbox.meta_events)  # a test send is not a send


def test_run_pushes_what_is_configured_and_survives_a_failing_platform(
    db: Path, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from signalloop.push.send import run_pushes
    from signalloop.report import _push_table

    only_meta = settings_from_dict(
        {"push": {"live": True, "meta": {"pixel_id": "1", "base_url": sandbox.base_url}}}
    )
    monkeypatch.delenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN")
    with Workspace(db) as ws:
        doc = run_pushes(
            ws,
            as_of=AS_OF,
            settings=only_meta,
            held={},
            out=tmp_path / "p",
            now=NOW,
            client=fast_client(),
        )
        assert doc["live"] and doc["targets"]["meta"]["status"] == "ok"
        assert doc["targets"]["meta"]["counts"]["sent"] == len(sandbox.meta_events) > 0
        assert doc["targets"]["google"]["status"] == "not configured"
        assert "customer_id" in doc["targets"]["exclusions"]["message"]
        # Google configured, its credentials missing: recorded, the run goes on
        full = settings_for(sandbox.base_url)
        full = replace(full, push=replace(full.push, live=True))
        doc2 = run_pushes(
            ws,
            as_of=AS_OF,
            settings=full,
            held={},
            out=tmp_path / "p2",
            now=NOW,
            client=fast_client(),
        )
    assert doc2["targets"]["google"]["status"] == "error"
    assert "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN" in doc2["targets"]["google"]["message"]
    assert doc2["targets"]["meta"]["counts"]["already_sent"] == len(sandbox.meta_events)
    html = _push_table(doc2)
    assert "Meta CRM events" in html and "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN" in html
    assert SECRET not in json.dumps(doc2) and SECRET not in html


def test_an_exclusion_whose_answer_was_lost_is_found_not_created_twice(
    db: Path, sandbox: Sandbox
) -> None:
    s = settings_for(sandbox.base_url)
    sandbox.drop_next("biddingDataExclusions:mutate")  # Google creates it, the answer is lost
    with Workspace(db) as ws:
        r = push(
            ws, "exclusions", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
        assert r.failed and r.sent == 0
        assert r.requests[0]["attempts"] == 1  # a create is not blindly re-sent
        again = push(
            ws, "exclusions", as_of=AS_OF, settings=s, dry_run=False, now=NOW, client=fast_client()
        )
        adopted = [x for x in ledger.recent(ws, 100) if x["code"] == "ADOPTED"]
    assert len(adopted) == 1
    assert len(sandbox.exclusions) == again.sent + 1 == r.requests[0]["items"] + again.sent
