"""Shared fixtures: a fresh workspace, a CSV writer, a simulated workspace, the real data sets."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from signalloop.store import Workspace

if TYPE_CHECKING:
    from signalloop import simulate as sim

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIGNALLOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """A fresh on-disk workspace."""
    w = Workspace(tmp_path / "ws.duckdb")
    yield w
    w.close()


def write_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], delimiter: str = ","
) -> Path:
    """Write a CSV with the standard quoting; returns ``path``."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data set not available here: {p}")
    return p


def simulated_workspace(
    folder: Path,
    *,
    days: int,
    campaigns: int,
    seed: int,
    faults: Sequence[str] = (),
    healthy: tuple[str, ...] = (),
    db: str | Path | None = None,
    now: datetime | None = None,
    shape: str = "full",
    click_ts: bool = True,
) -> tuple[Workspace, sim.Simulation, dict[str, Path]]:
    """Simulate a seeded account, write its exports and ingest them into a workspace.

    Parameters
    ----------
    folder
        Where to put things: the CSVs (and ``truth.json``) go into ``folder / "data"``, the
        workspace file, unless ``db`` says otherwise, is ``folder / "ws.duckdb"``.
    days, campaigns, seed
        The :class:`~signalloop.simulate.SimulationConfig` length, number of campaigns and seed.
    faults
        Fault specs ``NAME@CAMPAIGN[:START-END]``, parsed by
        :func:`~signalloop.simulate.parse_fault` against ``days`` and the ids ``c01`` ..
    healthy
        Campaigns the account runs well (``SimulationConfig.healthy``; ``("*",)`` for all).
    db
        The workspace to open instead of ``folder / "ws.duckdb"``: another path, or
        ``":memory:"``.
    now
        The ingest clock passed to :func:`~signalloop.ingest.ingest_file` (its default,
        the current time, when ``None``).
    shape, click_ts
        The data shape to write (``SimulationConfig.shape``, one of
        :data:`~signalloop.simulate.SHAPES`) and whether conversions carry ``click_ts``.

    Returns
    -------
    tuple
        ``(workspace, simulation, paths)``: the workspace, still open (close it, or use it as
        a context manager), with every kind of the shape (all five for ``full``) ingested
        once in ``KINDS`` order; the
        :class:`~signalloop.simulate.Simulation`; and the paths
        :func:`~signalloop.simulate.write` returned (``kind`` -> CSV, ``"truth"`` -> JSON).
    """
    from signalloop import simulate as sim
    from signalloop.contract import KINDS
    from signalloop.ingest import ingest_file

    ids = sim.campaign_ids(campaigns)
    parsed = tuple(sim.parse_fault(f, days=days, campaign_ids=ids) for f in faults)
    config = sim.SimulationConfig(
        days=days,
        campaigns=campaigns,
        seed=seed,
        faults=parsed,
        healthy=healthy,
        shape=shape,
        click_ts=click_ts,
    )
    result = sim.simulate(config)
    paths = sim.write(result, folder / "data")
    ws = Workspace(folder / "ws.duckdb" if db is None else db)
    try:
        for kind in KINDS:
            if kind in paths:  # the kinds of the shape
                ingest_file(ws, kind, paths[kind], now=now)
    except BaseException:
        ws.close()
        raise
    return ws, result, paths


#: The account :func:`loop_run` runs: 45 days, 4 campaigns, a week-long outage on c02.
LOOP_FAULTS = ("tracking_outage@c02:30-36",)


@pytest.fixture(scope="session")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One ``signalloop run`` over a seeded account's exports as the inbox (shared, slow).

    Returns ``{"doc", "db", "inbox", "out", "truth"}``: the run document, the workspace path,
    the inbox folder, the report folder and the simulation's truth.
    """
    from signalloop import simulate as sim
    from signalloop.run import run

    tmp = tmp_path_factory.mktemp("loop")
    ids = sim.campaign_ids(4)
    faults = tuple(sim.parse_fault(f, days=45, campaign_ids=ids) for f in LOOP_FAULTS)
    result = sim.simulate(sim.SimulationConfig(days=45, campaigns=4, seed=5, faults=faults))
    inbox = tmp / "inbox"
    sim.write(result, inbox)
    db, out = tmp / "acct.duckdb", tmp / "report"
    with Workspace(db) as w:
        doc = run(w, inbox=inbox, out_dir=out)
    return {"doc": doc, "db": db, "inbox": inbox, "out": out, "truth": result.truth}


#: Debian's chromium (``make test`` installs it); Playwright never downloads a browser here.
CHROMIUM = os.environ.get("SIGNALLOOP_CHROMIUM", "/usr/bin/chromium")
#: Flags that keep Chromium off the (closed) network and work as root in a container.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's Chromium for Playwright: skipped without it, a failure in CI."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: `make test` installs Debian's chromium")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or make test)")


#: The event-time column of each kind (what :func:`split_by_day` splits on).
TIME_COLUMN = {
    "spend": "date",
    "touchpoints": "ts",
    "conversions": "ts",
    "crm": "ts",
    "changes": "ts",
}


def split_by_day(
    paths: dict[str, Path], folder: Path, cuts: Sequence[str]
) -> list[dict[str, Path]]:
    """The exports in ``paths`` cut into consecutive daily drops, as later exports arrive.

    ``cuts`` are ISO dates: drop ``i`` holds the rows whose event day is before ``cuts[i]``
    and not in an earlier drop; the last drop holds the rest. Each line is copied as written
    (glitched rows included); a line whose event day cannot be read goes to the first drop.
    Returns one ``kind -> CSV`` dict per drop.
    """
    edges = sorted(cuts)
    drops: list[dict[str, Path]] = [{} for _ in range(len(edges) + 1)]
    for kind, path in paths.items():
        if kind not in TIME_COLUMN:
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        header, body = lines[0], lines[1:]
        col = next(csv.reader([header])).index(TIME_COLUMN[kind])
        parts: list[list[str]] = [[] for _ in drops]
        for line in body:
            fields = next(csv.reader([line]), [])
            day = fields[col][:10] if len(fields) > col else ""
            valid = len(day) == 10 and day[4] == "-" and day[7] == "-"
            parts[sum(day >= e for e in edges) if valid else 0].append(line)
        for i, rows in enumerate(parts):
            out = folder / f"drop{i}" / f"{kind}.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(header + "".join(rows), encoding="utf-8")
            drops[i][kind] = out
    return drops


#: Days, campaigns and drop dates of the incremental tests' accounts (:func:`simulated_drops`).
DROP_DAYS, DROP_CAMPAIGNS = 28, 4
DROP_CUTS = ("2026-01-15", "2026-01-22", "2026-01-27")


def every_fault(campaigns: int = DROP_CAMPAIGNS) -> tuple[str, ...]:
    """Every simulator fault, each on one campaign for eleven days from day 3 + its index."""
    from signalloop import simulate as sim

    return tuple(
        f"{name}@c0{1 + i % campaigns}:{3 + i}-{14 + i}" for i, name in enumerate(sim.FAULT_NAMES)
    )


def drop_cases() -> list[tuple[str, tuple[str, ...]]]:
    """``(shape, faults)`` the incremental tests run: every shape, then the full and crm shapes
    with every fault."""
    from signalloop import simulate as sim

    return [(s, ()) for s in sim.SHAPES] + [("full", every_fault()), ("crm", every_fault())]


def simulated_drops(
    folder: Path, shape: str, faults: Sequence[str], *, seed: int
) -> list[dict[str, Path]]:
    """A seeded account of ``shape`` written into ``folder`` and cut into daily drops at
    :data:`DROP_CUTS` (:func:`split_by_day`)."""
    from signalloop import simulate as sim

    ids = sim.campaign_ids(DROP_CAMPAIGNS)
    config = sim.SimulationConfig(
        days=DROP_DAYS,
        campaigns=DROP_CAMPAIGNS,
        seed=seed,
        shape=shape,
        faults=tuple(sim.parse_fault(f, days=DROP_DAYS, campaign_ids=ids) for f in faults),
    )
    paths = sim.write(sim.simulate(config), folder / "data")
    return split_by_day(paths, folder / "drops", DROP_CUTS)


def ingest_drop(ws: Workspace, drop: dict[str, Path]) -> None:
    """Ingest one drop of :func:`simulated_drops`, its kinds in contract order."""
    from signalloop.contract import KINDS
    from signalloop.ingest import ingest_file

    for kind in KINDS:
        if kind in drop:
            ingest_file(ws, kind, drop[kind])
