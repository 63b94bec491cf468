"""Who may open what (issue 13): every route of the app, found from ``app.routes`` so a new
route is covered without editing this file, against two workspaces served from one folder
(``--workspaces DIR``), each with its own keys. No key, another workspace's key, a read-only
key, a revoked key, a forged or expired session, and ``next=`` on the login form."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from tests.webutil import (
    HTML,
    JSON,
    LogSecrets,
    RouteInfo,
    WebWorkspace,
    app_routes,
    assert_no_secret,
    copy_workspace,
    fill,
    log_lines,
    make_client,
    report_doc,
    secret_parts,
    settle,
    web_template,
)

from signalloop.keys import revoke
from signalloop.web import registry as registry_module
from signalloop.web.app import create_app
from signalloop.web.auth import SESSION_COOKIE, sign
from signalloop.web.registry import Registry

__all__ = ["log_lines", "web_template"]  # fixtures used by name

#: Routes anyone may call: health, login and logout, the schema and docs, static assets.
PUBLIC = {
    "/",
    "/healthz",
    "/login",
    "/logout",
    "/favicon.ico",
    "/static-plotly/plotly.min.js",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
#: Shows only on workspace b's pages (a quarantined row of its own).
MARKER = "b_only_marker_7f3a"
#: A form that would decide a line if the caller could.
FORM = {"decision": "approve", "campaign": "all"}


@dataclass
class Served:
    a: WebWorkspace
    b: WebWorkspace
    registry: Registry
    app: Any
    client: Any
    secrets: list[str]
    values: dict[str, str]  # path parameter -> a value that exists in both workspaces

    def routes(self) -> list[RouteInfo]:
        return app_routes(self.app)

    def ws_routes(self) -> list[tuple[str, str]]:
        """Every (method, path) of the routes that take ``{ws}``."""
        return [(m, r.path) for r in self.routes() if "{ws}" in r.path for m in r.methods]

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        if method == "POST":
            kw.setdefault("data", FORM)
        return self.client.request(
            method, path, headers=headers or {}, follow_redirects=False, **kw
        )

    def url(self, path: str, ws: str) -> str:
        return fill(path, {**self.values, "ws": ws})

    def count(self, ws: str, sql: str) -> int:
        with self.registry.get(ws).open() as w:
            return int(w.con.execute(sql).fetchone()[0])

    def decisions(self, ws: str) -> int:
        """Rows of ``approvals`` (the table is made by the first decision or page view)."""
        with self.registry.get(ws).open() as w:
            made = w.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'approvals'"
            ).fetchone()[0]
            return int(w.con.execute("SELECT count(*) FROM approvals").fetchone()[0]) if made else 0


@pytest.fixture(scope="module")
def served(
    web_template: Path, tmp_path_factory: pytest.TempPathFactory, log_lines: LogSecrets
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    a = copy_workspace(web_template, root / "a")
    a.add_key("soon-revoked", ["read", "approve"])
    b = copy_workspace(web_template, root / "b")
    from signalloop.store import Workspace

    with Workspace(b.db) as ws:  # a row only b has
        ws.con.execute(
            'INSERT INTO quarantine (ingest_id, kind, file, line, "column", code, reason, raw) '
            "VALUES (999, 'spend', 'b-only.csv', 1, 'spend', ?, 'b only', '{\"x\": 1}')",
            [MARKER],
        )
    secrets = secret_parts([*a.tokens.values(), *b.tokens.values()])
    registry = Registry.discover(workspaces=root)
    assert registry.names() == ["a", "b"]
    app = create_app(registry, schedule=False)
    doc = report_doc(a)
    values = {
        "cid": doc["allocation"]["arms"][0]["campaign_id"],
        "run_id": doc["run_id"],
        "kind": "spend",
        "request_id": "0123456789abcdef0123",
    }
    with make_client(app, secrets) as client:
        yield Served(a, b, registry, app, client, secrets, values)
        settle(registry.names())
    for line in log_lines.lines:
        assert_no_secret("the server log", line, secrets)


def login(s: Served, w: WebWorkspace, key: str) -> str:
    """Log in with ``key`` of ``w``; returns the session cookie (the client keeps none)."""
    r = s.client.post("/login", data={"key": w.tokens[key], "next": ""}, follow_redirects=False)
    assert r.status_code == 303, r.text[:200]
    value = r.cookies[SESSION_COOKIE]
    s.client.cookies.clear()
    return str(value)


def as_session(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def csrf_of(s: Served, cookie: str) -> str:
    """The CSRF token of a session (a read-only session's pages carry no form to read it
    from)."""
    from signalloop.web.auth import csrf_for

    return csrf_for(s.registry.secret, cookie)


def assert_refused(r: Any, method: str, path: str, label: str) -> None:
    """No key: the login form for a browser's page view, 401 JSON for everything else."""
    html_view = method == "GET" and not path.endswith(".json") and not path.startswith("/api/")
    if html_view and "text/html" in r.request.headers.get("accept", ""):
        assert r.status_code == 303, (label, method, path, r.status_code)
        assert r.headers["location"].startswith("/login?next=")
    else:
        assert r.status_code == 401, (label, method, path, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json")
        assert "error" in r.json()
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


# -- the routes -----------------------------------------------------------------------------------
def test_the_routes_are_found_from_the_app(served: Served) -> None:
    found = set(served.ws_routes())
    known = {
        ("GET", "/w/{ws}"),
        ("GET", "/w/{ws}.json"),
        ("GET", "/w/{ws}/campaigns/{cid}"),
        ("GET", "/w/{ws}/allocation"),
        ("POST", "/w/{ws}/allocation"),
        ("GET", "/w/{ws}/data"),
        ("GET", "/w/{ws}/data/quarantine.csv"),
        ("GET", "/w/{ws}/runs"),
        ("POST", "/w/{ws}/runs"),
        ("GET", "/w/{ws}/runs/{run_id}.json"),
    }
    assert known <= found, known - found
    private = [r.path for r in served.routes() if r.path not in PUBLIC]
    assert any(p.startswith("/api/") for p in private), "the ingest API routes are covered too"


def test_no_key_no_entry_on_every_private_route(served: Served) -> None:
    seen = 0
    for r in served.routes():
        if r.path in PUBLIC:
            continue
        for method in r.methods:
            url = served.url(r.path, "a")
            for label, headers in (
                ("browser", HTML),
                ("api", JSON),
                ("bad bearer", {**JSON, "Authorization": "Bearer sl_nope"}),
                ("basic", {**JSON, "Authorization": "Basic bWFyaWE6eA=="}),
                (
                    "well-formed unknown key",
                    {**JSON, "Authorization": "Bearer sl_abcdefghij_" + "x" * 43},
                ),
            ):
                assert_refused(served.call(method, url, headers), method, r.path, label)
                seen += 1
    assert served.decisions("a") == 0
    assert served.registry.get("a").runs.state()["running"] is False
    assert seen >= 5 * 12


def test_the_login_redirect_keeps_every_query_parameter(served: Served) -> None:
    page = "/w/a/data?kind=spend&code=negative"
    r = served.call("GET", page, HTML)
    nxt = parse_qs(urlsplit(r.headers["location"]).query)["next"]
    assert nxt == [page]


# -- one workspace's key, another's path ----------------------------------------------------------
def test_a_key_of_one_workspace_never_opens_another(served: Served) -> None:
    s = served
    approvals_b = s.decisions("b")
    quarantine_b = s.count("b", "SELECT count(*) FROM quarantine")
    a_session = login(s, s.a, "maria")
    checked = 0
    for mine, other in ((s.a, "b"), (s.b, "a")):
        token = {**JSON, **mine.bearer("maria")}
        for method, path in s.ws_routes():
            there = s.call(method, s.url(path, other), token)
            nowhere = s.call(method, s.url(path, "nowhere"), token)
            assert there.status_code == 404, (method, path, other, there.status_code)
            assert nowhere.status_code == 404
            # exactly as for a workspace that does not exist: nothing tells it is there
            assert there.json()["error"].replace(repr(other), "W") == nowhere.json()[
                "error"
            ].replace(repr("nowhere"), "W")
            assert MARKER not in there.text
            checked += 1
    for method, path in s.ws_routes():  # a's browser session on b's pages
        headers = {**HTML, **as_session(a_session)}
        r = s.call(method, s.url(path, "b"), headers)
        assert r.status_code == 404, (method, path, r.status_code)
        assert MARKER not in r.text
    assert checked == 2 * len(s.ws_routes())
    assert s.decisions("b") == approvals_b == 0
    assert s.count("b", "SELECT count(*) FROM quarantine") == quarantine_b
    assert s.registry.get("b").runs.state()["running"] is False
    # the marker does show to b's own key (so its absence above means something)
    own = s.call("GET", f"/w/b/data.json?code={MARKER}", {**JSON, **s.b.bearer("reader")})
    assert own.status_code == 200 and MARKER in own.text


def test_the_ingest_api_writes_and_replays_in_the_keys_workspace_only(served: Served) -> None:
    s = served
    body = "date,platform,campaign_id,impressions,clicks,spend\n2026-02-09,meta,zz9,100,3,1.5\n"
    rows = "SELECT count(*) FROM spend WHERE campaign_id = 'zz9'"
    r = s.client.post(
        "/api/v1/spend",
        content=body.encode(),
        headers={**s.a.bearer("pipeline"), "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text[:300]
    request_id = r.json()["request_id"]
    assert s.count("a", rows) == 1 and s.count("b", rows) == 0
    mine = s.client.get(f"/api/v1/ingest/{request_id}", headers=s.a.bearer("maria"))
    assert mine.status_code == 200 and mine.json()["request_id"] == request_id
    theirs = s.client.get(f"/api/v1/ingest/{request_id}", headers=s.b.bearer("maria"))
    assert theirs.status_code == 404
    assert s.client.get(f"/api/v1/ingest/{request_id}").status_code == 401
    read_only = s.client.post(
        "/api/v1/spend",
        content=body.encode(),
        headers={**s.a.bearer("reader"), "Content-Type": "text/csv"},
    )
    assert read_only.status_code == 403


# -- scopes ---------------------------------------------------------------------------------------
def test_a_read_only_key_cannot_decide_or_run_and_an_ingest_key_cannot_read(
    served: Served,
) -> None:
    s = served
    writes = [(m, p) for m, p in s.ws_routes() if m != "GET"]
    reads = [(m, p) for m, p in s.ws_routes() if m == "GET"]
    assert writes and reads
    reader = login(s, s.a, "reader")
    csrf = csrf_of(s, reader)
    for method, path in writes:
        url = s.url(path, "a")
        r = s.call(method, url, {**JSON, **s.a.bearer("reader")})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "approve" in r.json()["error"]
        r = s.call(method, url, {**HTML, **as_session(reader), "X-CSRF-Token": csrf})
        assert r.status_code == 403, (method, path, r.status_code)
    for method, path in reads:
        r = s.call(method, s.url(path, "a"), {**JSON, **s.a.bearer("pipeline")})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "read" in r.json()["error"]
    assert s.decisions("a") == 0
    assert s.registry.get("a").runs.state()["running"] is False
    # an ingest-only key cannot log in either
    r = s.client.post("/login", data={"key": s.a.tokens["pipeline"]}, follow_redirects=False)
    assert r.status_code == 401 and SESSION_COOKIE not in r.cookies


# -- revoked keys, forged and expired sessions ----------------------------------------------------
def test_a_revoked_key_and_its_sessions_stop(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = served
    monkeypatch.setattr(registry_module, "KEY_CACHE_SECONDS", 0.0)
    token = {**JSON, **s.a.bearer("soon-revoked")}
    session = login(s, s.a, "soon-revoked")
    reads = [(m, p) for m, p in s.ws_routes() if m == "GET"]
    assert s.call("GET", "/w/a.json", token).status_code == 200
    assert s.call("GET", "/w/a", {**HTML, **as_session(session)}).status_code == 200
    with s.registry.get("a").open() as ws:
        revoke(ws, s.a.key_ids["soon-revoked"])
    for method, path in reads:
        r = s.call(method, s.url(path, "a"), token)
        assert r.status_code == 401, (method, path, r.status_code)
        r = s.call(method, s.url(path, "a"), {**HTML, **as_session(session)})
        assert_refused(r, method, path, "revoked session")
    for method, path in [(m, p) for m, p in s.ws_routes() if m != "GET"]:
        assert s.call(method, s.url(path, "a"), token).status_code == 401
    r = s.client.post("/login", data={"key": s.a.tokens["soon-revoked"]}, follow_redirects=False)
    assert r.status_code == 401


def test_forged_tampered_and_expired_sessions_are_refused(served: Served) -> None:
    s = served
    good = login(s, s.a, "maria")
    body, mac = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload["w"] == "a" and "key" not in json.dumps(payload).lower()
    now = int(time.time())
    forged = {
        "garbage": "not-a-session",
        "empty": "",
        "wrong secret": sign(b"not the server's secret", payload),
        "tampered workspace": sign(b"x", {**payload, "w": "b"}).split(".")[0] + "." + mac,
        "tampered expiry": sign(b"x", {**payload, "exp": now + 10**6}).split(".")[0] + "." + mac,
        "expired": sign(s.registry.secret, {**payload, "exp": now - 5}),
        "a key of b named as a's": sign(s.registry.secret, {**payload, "k": s.b.key_ids["maria"]}),
        "unknown workspace": sign(s.registry.secret, {**payload, "w": "nowhere"}),
    }
    for label, value in forged.items():
        for method, path in s.ws_routes():
            url = s.url(path, "a")
            r = s.call(method, url, {**HTML, **as_session(value)})
            assert_refused(r, method, path, label)
            r = s.call(method, url, {**JSON, **as_session(value)})
            assert_refused(r, method, path, label)
    # the good one works, on its own workspace only
    assert s.call("GET", "/w/a.json", {**JSON, **as_session(good)}).status_code == 200
    assert s.call("GET", "/w/b.json", {**JSON, **as_session(good)}).status_code == 404


# -- login next= ----------------------------------------------------------------------------------
OFF_SITE = [
    "//evil.com",
    "//evil.com/w/a",
    "https://evil.com",
    "http://evil.com/w/a",
    "/\\evil.com",
    "\\\\evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    " //evil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/%2F%2Fevil.com",
    "//%09/evil.com",
]


def browser_target(location: str, base: str = "http://testserver/login") -> tuple[str, str]:
    """Where a browser goes for ``Location: location``: it drops tabs and newlines and reads
    a backslash as a slash (WHATWG URL parsing); ``(scheme, host)``."""
    cleaned = location.translate({9: None, 10: None, 13: None}).strip().replace("\\", "/")
    target = urlsplit(urljoin(base, cleaned))
    return target.scheme, target.hostname or ""


@pytest.mark.parametrize("nxt", OFF_SITE)
def test_login_next_cannot_send_anyone_off_site(served: Served, nxt: str) -> None:
    s = served
    form = s.client.get("/login", params={"next": nxt})
    assert form.status_code == 200
    r = s.client.post(
        "/login", data={"key": s.a.tokens["reader"], "next": nxt}, follow_redirects=False
    )
    s.client.cookies.clear()
    assert r.status_code == 303
    location = r.headers["location"]
    assert browser_target(location) == ("http", "testserver"), (nxt, location)
    assert location.startswith("/") and not location.startswith(("//", "/\\"))


def test_login_next_on_site_is_kept(served: Served) -> None:
    for nxt in ("/w/a/data?kind=spend", "/w/a/campaigns/c01"):
        r = served.client.post(
            "/login", data={"key": served.a.tokens["reader"], "next": nxt}, follow_redirects=False
        )
        served.client.cookies.clear()
        assert r.status_code == 303 and r.headers["location"] == nxt
