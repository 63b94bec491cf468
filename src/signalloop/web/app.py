"""The web app: FastAPI, server-rendered pages, their JSON twins and the ingest API.

:func:`create_app` builds the app for a :class:`~signalloop.web.registry.Registry`. Pages live
in :mod:`signalloop.web.pages`, the ingest API in :mod:`signalloop.web.api`; both call the
library and format what it returns. Everything the browser loads comes from this package
(Plotly included), so the app works offline, and no page or log line carries a key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from signalloop import __version__
from signalloop.errors import (
    InputError,
    SignalloopError,
    UsageError,
    disk_full,
    disk_full_message,
)
from signalloop.runs import RunBusy, iter_due, list_runs
from signalloop.web.auth import LoginRequired
from signalloop.web.registry import Registry

log = logging.getLogger("signalloop.web")
STATIC = Path(__file__).parent / "static"
#: Seconds between the scheduler's looks at the clock.
SCHEDULER_TICK = 30.0


def wants_json(request: Request) -> bool:
    """JSON for ``.json`` paths, the API, and callers that ask for it before HTML."""
    path = request.url.path
    if path.endswith(".json") or path.startswith("/api/"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def api_caller(request: Request) -> bool:
    """A bearer-key caller that did not ask for HTML: a script, which gets its errors as JSON
    as it gets its answers (a browser never sends a bearer key)."""
    bearer = request.headers.get("authorization", "").lower().startswith("bearer ")
    return bearer and "text/html" not in request.headers.get("accept", "")


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly package ships it (served locally, no CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class Scheduler:
    """Starts each workspace's daily run at its ``[serve] run_at`` (server's local clock)."""

    def __init__(self, registry: Registry, tick: float = SCHEDULER_TICK) -> None:
        self.registry = registry
        self.tick = tick
        self.last: dict[str, date] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="signalloop-scheduler", daemon=True)
        for h in registry.handles.values():
            try:
                with h.open() as ws:
                    done = [r for r in list_runs(ws) if r["trigger"] == "schedule"]
                if done:
                    self.last[h.name] = datetime.fromisoformat(done[0]["started_at"]).date()
            except SignalloopError:
                continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, now: datetime | None = None) -> list[str]:
        """Start the runs that are due; returns the workspaces started."""
        now = now or datetime.now()
        schedules = {}
        for name, h in self.registry.handles.items():
            try:
                schedules[name] = h.settings().serve.run_at
            except SignalloopError as exc:
                log.warning("workspace %s: settings unreadable, no scheduled run: %s", name, exc)
        started = []
        for name in iter_due(schedules, self.last, now):
            self.last[name] = now.date()
            try:
                self.registry.get(name).runs.start(trigger="schedule", actor="schedule")
                started.append(name)
            except RunBusy:
                log.info("workspace %s: scheduled run skipped, a run is going on", name)
        return started

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.check()
            except Exception:  # the scheduler never takes the server down
                log.exception("scheduler")


def create_app(registry: Registry, *, schedule: bool = True) -> FastAPI:
    """The signalloop web app serving ``registry``'s workspaces.

    Parameters
    ----------
    registry
        The workspaces (:meth:`Registry.discover`).
    schedule
        Run each workspace's ``[serve] run_at`` daily loop inside the server.
    """
    scheduler = Scheduler(registry) if schedule else None

    from signalloop.web.pages import warm

    for h in registry.handles.values():
        h.runs.on_done = partial(warm, h)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warming = [
            threading.Thread(target=warm, args=(h,), name=f"warm-{h.name}", daemon=True)
            for h in registry.handles.values()
        ]
        for t in warming:
            t.start()
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()
        for t in warming:  # closing the database under a warming read crashes it
            await asyncio.to_thread(t.join, 60)
        registry.close()

    app = FastAPI(
        title="signalloop",
        version=__version__,
        description="Campaign learning engine: pages with JSON twins, approvals and ingest.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.scheduler = scheduler
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/static-plotly/plotly.min.js", include_in_schema=False)
    def plotly_asset() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        """Liveness: no key needed, says nothing about the data."""
        return {"ok": True, "version": __version__}

    from signalloop.web.api import router as api_router
    from signalloop.web.pages import router as pages_router

    app.include_router(pages_router)
    app.include_router(api_router)

    def error(request: Request, status: int, message: str, **extra: Any) -> Response:
        if wants_json(request) or api_caller(request):
            return JSONResponse({"error": message, **extra}, status_code=status)
        from signalloop.web.pages import render_error

        return render_error(request, status, message)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if wants_json(request) or request.method != "GET":
            return JSONResponse(
                {"error": exc.message},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={_quote(nxt)}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"where": "?", "problem": "invalid"}
        return error(request, 422, f"{first['where']}: {first['problem']}", problems=problems)

    @app.exception_handler(RunBusy)
    async def _busy(request: Request, exc: RunBusy) -> Response:
        return error(request, 409, str(exc))

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> Response:
        return error(request, 422, str(exc))

    @app.exception_handler(UsageError)
    async def _usage(request: Request, exc: UsageError) -> Response:
        from signalloop.approvals import AlreadyDecided

        return error(request, 409 if isinstance(exc, AlreadyDecided) else 400, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        if disk_full(exc):  # the caller can act on it: 507 Insufficient Storage, no traceback
            log.error("%s %s: %s", request.method, request.url.path, exc)
            again = "send it again (rows already stored are not added twice)"
            return error(request, 507, disk_full_message(exc, "the workspace", again))
        log.exception("%s %s failed", request.method, request.url.path)
        return error(request, 500, f"internal error ({type(exc).__name__}); see the server log")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.endswith("report.html"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "script-src 'self'; connect-src 'self'; form-action 'self'; "
                "frame-ancestors 'none'",
            )
        return response

    _ = HTTPException  # re-exported for route modules
    return app


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
