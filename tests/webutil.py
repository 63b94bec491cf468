"""Shared helpers for the web tests (issue 13): one simulated account run once per test session,
copies of it with their own keys, a test client that checks no response ever carries a key,
the app's routes enumerated, and a real uvicorn server on a free port.

The account (:data:`DAYS` days, :data:`CAMPAIGNS` campaigns, seed :data:`SEED`) has bad rows in
every export (``export_glitches``: ingest quarantines them) and a week-long tracking outage on
c02 (campaign-level diagnoses and an outage window), and ``[run] budget`` above its spend, so
the allocation moves at least one budget line. The daily loop runs once on it
(:func:`template`); every test module copies the result (:func:`copy_workspace`), so approvals
and runs in one module never show in another.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from signalloop.keys import SCOPES, create_key
from signalloop.store import Workspace

DAYS = 40
CAMPAIGNS = 3
SEED = 5
FAULTS = ("export_glitches@*:0-39", "tracking_outage@c02:25-31")
#: Above the account's ~890 a day of spend, so the policy has budget to move.
BUDGET = 1300.0
CONFIG = f'[run]\ninbox = "data"\nbudget = {BUDGET}\n'
DB = "signalloop.duckdb"
_TEMPLATES: dict[Path, Path] = {}


# -- the account ----------------------------------------------------------------------------------
def build(folder: Path) -> Path:
    """Simulate the account into ``folder/data``, write ``signalloop.toml`` and run the daily
    loop on it (the run's report in ``folder/report``); returns ``folder``."""
    from signalloop import simulate as sim
    from signalloop.config import load_settings
    from signalloop.runs import execute

    folder.mkdir(parents=True, exist_ok=True)
    ids = sim.campaign_ids(CAMPAIGNS)
    faults = tuple(sim.parse_fault(f, days=DAYS, campaign_ids=ids) for f in FAULTS)
    result = sim.simulate(
        sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=faults)
    )
    sim.write(result, folder / "data")
    toml = folder / "signalloop.toml"
    toml.write_text(CONFIG, encoding="utf-8")
    with Workspace(folder / DB) as ws:
        execute(ws, trigger="cli", settings=load_settings(toml), out_dir=folder / "report")
    return folder


def template(factory: pytest.TempPathFactory) -> Path:
    """The run account of this test session (built by the first module that asks)."""
    base = factory.getbasetemp()
    if base not in _TEMPLATES:
        _TEMPLATES[base] = build(factory.mktemp("web-template"))
    return _TEMPLATES[base]


@pytest.fixture(scope="session")
def web_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the session's run account (never served: tests serve copies)."""
    return template(tmp_path_factory)


@dataclass
class WebWorkspace:
    """A served copy of the account: its folder, name and keys (token and id by key name)."""

    name: str
    folder: Path
    tokens: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.folder / DB

    def bearer(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[key]}"}

    def add_key(self, name: str, scopes: Sequence[str]) -> str:
        """Create a key in the (closed) workspace; returns its token."""
        with Workspace(self.db) as ws:
            key = create_key(ws, name, scopes)
        assert key.token is not None
        self.tokens[name], self.key_ids[name] = key.token, key.key_id
        return key.token


#: The keys every copy gets: name -> scopes.
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "maria": SCOPES,  # ingest, read, approve
    "reader": ("read",),
    "pipeline": ("ingest",),
}


def copy_workspace(
    src: Path, dest: Path, keys: dict[str, Sequence[str]] | None = None
) -> WebWorkspace:
    """Copy the account folder ``src`` to ``dest`` (its runs pointed at the copied report) and
    create ``keys`` (default :data:`DEFAULT_KEYS`) in it."""
    shutil.copytree(src, dest)
    with Workspace(dest / DB) as ws:
        ws.con.execute(
            "UPDATE runs SET report_dir = replace(report_dir, ?, ?)", [str(src), str(dest)]
        )
    w = WebWorkspace(dest.name, dest)
    for name, scopes in (DEFAULT_KEYS if keys is None else keys).items():
        w.add_key(name, scopes)
    return w


def report_doc(w: WebWorkspace) -> dict[str, Any]:
    """The report.json of the account's run (as the run wrote it)."""
    doc: dict[str, Any] = json.loads((w.folder / "report" / "report.json").read_text())
    return doc


# -- secrets --------------------------------------------------------------------------------------
def secret_parts(tokens: Iterable[str]) -> list[str]:
    """What must never show: each whole token and its secret part (``sl_<id>_<secret>``)."""
    out = []
    for t in tokens:
        out += [t, t.split("_", 2)[2]]
    return out


def assert_no_secret(where: str, text: str | bytes, secrets: Iterable[str]) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    for s in secrets:
        assert s.encode() not in data, f"a key's secret shows in {where}"


def check_response(r: Any, secrets: Sequence[str]) -> None:
    """No key secret in the body or any header of ``r`` (an httpx response), nor in the
    responses it was redirected from."""
    for one in [*getattr(r, "history", []), r]:
        label = f"{one.request.method} {one.request.url.path} ({one.status_code})"
        assert_no_secret(f"the body of {label}", one.content, secrets)
        for k, v in one.headers.items():
            assert_no_secret(f"header {k} of {label}", v, secrets)


class LogSecrets(logging.Handler):
    """Collects every log record's text, to check that none carries a key."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot format: keep its raw message
            self.lines.append(str(record.msg))


@pytest.fixture(scope="module")
def log_lines() -> Iterator[LogSecrets]:
    """Every log line written while the module's tests run (checked by the module)."""
    handler = LogSecrets()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def make_client(app: Any, secrets: Sequence[str], **kwargs: Any) -> Any:
    """A Starlette test client whose every response is checked by :func:`check_response`."""
    from fastapi.testclient import TestClient

    class CheckedClient(TestClient):
        def request(self, method: str, url: Any, **kw: Any) -> Any:  # type: ignore[override]
            r = super().request(method, url, **kw)
            check_response(r, secrets)
            return r

    return CheckedClient(app, **kwargs)


HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}


def settle(names: Iterable[str]) -> None:
    """Wait for the app's start-up cache warming of the workspaces ``names`` to end: the app's
    shutdown closes the database under a warming read, which then fails (``bad_weak_ptr``) or
    crashes the process (a segfault in DuckDB; reported with issue 13's tests)."""
    wanted = {f"warm-{n}" for n in names}
    for t in threading.enumerate():
        if t.name in wanted:
            t.join(120)


# -- routes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: tuple[str, ...]
    endpoint: Any
    in_schema: bool


def app_routes(app: Any) -> list[RouteInfo]:
    """Every HTTP route of the app, included routers flattened (FastAPI >= 0.12x keeps
    ``include_router`` as one entry of ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        contexts: Iterable[Any] = app.routes
    else:
        contexts = iter_route_contexts(app.routes)
    out = []
    for r in contexts:
        path, methods = getattr(r, "path", None), getattr(r, "methods", None)
        if path is None or not methods:
            continue  # mounts (static files)
        original = getattr(r, "original_route", r)
        out.append(
            RouteInfo(
                path,
                tuple(sorted(m for m in methods if m != "HEAD")),
                getattr(r, "endpoint", None),
                bool(getattr(original, "include_in_schema", False)),
            )
        )
    return out


def fill(path: str, values: dict[str, str]) -> str:
    """``/w/{ws}/runs/{run_id}.json`` with its parameters filled from ``values``."""
    out = path
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    assert "{" not in out, f"no test value for a parameter of {path}: {out}"
    return out


# -- a real server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread (lifespan on: :meth:`stop` closes the
    registry, as a server's shutdown does)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
