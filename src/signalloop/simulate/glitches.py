"""``export_glitches``: bad rows in the written CSV text, each with its quarantine reason.

Real exports carry a few broken rows; ingest must quarantine exactly those. In the fault's
window about :data:`SHARE` of each covered campaign's rows of every kind (at least one per
glitch type of the kind, when there are rows enough) are corrupted, each in one realistic way
that maps to exactly one reason code of :data:`signalloop.validate.REASON_CODES`
(:data:`GLITCHES`).

The glitches are decided in :func:`~signalloop.simulate.simulation.simulate`
(:func:`plan_glitches`, kept in ``Simulation.glitches`` and in the fault's truth note as
``glitches``: file, line, column, code, campaign and the text written) and only rendered by
:func:`~signalloop.simulate.output.write` (:meth:`Glitch.render`): ``Simulation.tables``
stays the clean typed data. Only rows whose natural key is unique are picked, each row at
most once, and every corrupted row has exactly one problem, so its reason is unambiguous.
Lines count the header as line 1; the simulator writes one line per row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from signalloop.contract import KINDS
from signalloop.simulate.entities import Change
from signalloop.simulate.faults import Notes, count
from signalloop.simulate.params import DAY, Arr
from signalloop.simulate.tables import csv_text

if TYPE_CHECKING:
    from signalloop.simulate.account import Account

#: share of a campaign's rows in the window that are corrupted, per kind
SHARE = 0.003
#: per kind, the glitch types dealt out in turn: (column the quarantine names, reason code)
GLITCHES: dict[str, tuple[tuple[str | None, str], ...]] = {
    "spend": (
        ("spend", "negative"),  # a refund adjustment, -12.40
        ("clicks", "clicks_exceed_impressions"),  # impressions and clicks swapped
        ("impressions", "missing_value"),  # impressions written as --
    ),
    "touchpoints": (
        ("ts", "bad_timestamp"),  # US format, 03/01/2026 14:22
        (None, "malformed_row"),  # the line cut after 3-6 fields
        ("user_id", "missing_value"),  # empty user_id
    ),
    "conversions": (
        ("ts", "future"),  # clock skew: ten years ahead
        ("value", "not_a_number"),  # decimal comma, "12,50"
        ("source", "bad_value"),  # source webhook
    ),
    "crm": (
        ("stage", "missing_value"),  # empty stage
        ("ts", "bad_timestamp"),  # an Excel serial date, 46067.38472
    ),
    "changes": (
        ("field", "bad_value"),  # a rename: field name, old and new value names
        ("actor", "bad_value"),  # actor bot
    ),
}
TEN_YEARS = 3_652 * DAY
EXCEL_EPOCH = dt.date(1899, 12, 30)


@dataclass(frozen=True)
class Glitch:
    """One corrupted row of a written CSV file.

    Parameters
    ----------
    kind
        The table (and file ``{kind}.csv``).
    row
        0-based row of the table; the file line is ``row + 2``.
    campaign
        Campaign id of the row.
    column
        The column quarantine names (``None`` for a malformed row, as DuckDB's reader gives).
    code
        The quarantine reason code.
    cells
        Columns written differently: (name, text), ``None`` for an empty field.
    keep
        For a truncated line: how many fields are written.
    """

    kind: str
    row: int
    campaign: str
    column: str | None
    code: str
    cells: tuple[tuple[str, str | None], ...] = ()
    keep: int | None = None

    @property
    def line(self) -> int:
        """1-based line in the written file (the header is line 1)."""
        return self.row + 2

    def render(self, fields: Mapping[str, str | None], *, quote_all: bool = False) -> str:
        """The corrupted line (with its newline) from the row's clean text ``fields``.

        ``quote_all`` quotes every non-empty field, as the CSV writer does in a file that
        needs quoting; otherwise only fields holding a comma or quote are quoted.
        """
        values = {**fields, **dict(self.cells)}
        items = list(values.values())[: self.keep]
        return ",".join(_field(v, quote_all) for v in items) + "\n"

    def to_truth(self, fields: Mapping[str, str | None]) -> dict[str, Any]:
        """The truth entry: file, line, column, code, campaign and the text written.

        ``value`` is the corrupted field's text (``None`` if empty), or for a truncated line
        the whole line; ``fields`` is the row's clean text.
        """
        value = dict(self.cells).get(self.column) if self.column else None
        if self.keep is not None:
            value = self.render(fields).rstrip("\n")
        return {
            "file": f"{self.kind}.csv",
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "campaign": self.campaign,
            "value": value,
        }


def _field(value: str | None, quote_all: bool) -> str:
    if value is None:
        return ""
    if quote_all or any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def change_campaigns(acct: Account, changes: Sequence[Change]) -> Arr:
    """Campaign index of each edit-log row, from its entity (campaign, ad set or ad)."""
    owner = {c.id: c.idx for c in acct.campaigns}
    owner |= {a.id: a.campaign for a in acct.adsets}
    owner |= {ad.id: acct.adsets[ad.adset].campaign for ad in acct.ads}
    return np.array([owner[ch.entity_id] for ch in changes], dtype=np.int64)


def _ok(code: str, table: pa.Table) -> Arr:
    """Rows a glitch type can corrupt with exactly one problem."""
    if code == "clicks_exceed_impressions":  # swapped, the clicks must come out larger
        return np.asarray(table["impressions"].to_numpy() > table["clicks"].to_numpy())
    if code == "not_a_number":  # a decimal comma needs a value
        return np.asarray(pc.is_valid(table["value"]).to_numpy())
    return np.ones(table.num_rows, dtype=bool)


def _unique_key(kind: str, table: pa.Table) -> Arr:
    """Rows whose natural key no other row shares."""
    keys = table.select(list(KINDS[kind].key)).to_pandas()
    return np.asarray(~keys.duplicated(keep=False).to_numpy())


def plan_glitches(
    acct: Account,
    tables: Mapping[str, pa.Table],
    where: Mapping[str, tuple[Arr, Arr]],
    notes: Notes,
) -> list[Glitch]:
    """Decide the rows each ``export_glitches`` fault corrupts, and how.

    Parameters
    ----------
    acct
        The account.
    tables
        The finished (clean) tables of the data shape's kinds (the others get no glitch).
    where
        Per kind, each row's campaign index and time in seconds since the start of day 0
        (a spend row's day start).
    notes
        The fault notes; each ``export_glitches`` note gets ``share``, ``glitches`` and its
        changed row counts.

    Returns
    -------
    list of Glitch
        In file order per kind.
    """
    out: list[Glitch] = []
    taken: dict[str, set[int]] = {k: set() for k in KINDS}
    for i, f in enumerate(acct.config.faults):
        if f.name != "export_glitches":
            continue
        mine: list[Glitch] = []
        for ki, kind in enumerate(KINDS):
            if kind not in tables:  # not exported in this data shape
                continue
            table, (camp, secs) = tables[kind], where[kind]
            inside = (secs >= f.start * DAY) & (secs < (f.end + 1) * DAY) & _unique_key(kind, table)
            ok = [_ok(code, table) for _, code in GLITCHES[kind]]
            for c in acct.campaigns:
                if not f.covers(c.id):
                    continue
                rows = np.flatnonzero(inside & (camp == c.idx))
                rows = rows[~np.isin(rows, np.fromiter(taken[kind], np.int64))]
                rng = np.random.default_rng([acct.config.seed, 6, i, c.idx, ki])
                for row, g in _deal(rows, ok, rng, len(GLITCHES[kind])):
                    taken[kind].add(row)
                    mine.append(_make(kind, row, c.id, g, table, rng))
        mine.sort(key=lambda g: (list(KINDS).index(g.kind), g.row))
        for kind in tables:
            count(notes[i], "changed", kind, sum(g.kind == kind for g in mine))
        notes[i]["share"] = SHARE
        notes[i]["glitches"] = [g.to_truth(_fields(tables[g.kind], g.row)) for g in mine]
        out += mine
    return sorted(out, key=lambda g: (list(KINDS).index(g.kind), g.row))


def _deal(
    rows: Arr, ok: Sequence[Arr], rng: np.random.Generator, types: int
) -> list[tuple[int, int]]:
    """Pick about :data:`SHARE` of ``rows`` (at least one per type) as (row, glitch type).

    Types are dealt in turn, each to a random row it can corrupt; a type with no such row
    left drops out.
    """
    if len(rows) == 0:
        return []
    n = min(len(rows), max(types, round(SHARE * len(rows))))
    shuffled = rows[rng.permutation(len(rows))]
    queues = [shuffled[m[shuffled]].tolist() for m in ok]
    pos = [0] * types
    used: set[int] = set()
    picks: list[tuple[int, int]] = []
    while len(picks) < n:
        dealt = False
        for t in range(types):
            q = queues[t]
            while pos[t] < len(q) and q[pos[t]] in used:
                pos[t] += 1
            if pos[t] < len(q) and len(picks) < n:
                used.add(q[pos[t]])
                picks.append((int(q[pos[t]]), t))
                dealt = True
        if not dealt:
            break
    return picks


def _fields(table: pa.Table, row: int) -> dict[str, str | None]:
    """The clean CSV text of one row, as :func:`~signalloop.simulate.output.write` writes it."""
    fields: dict[str, str | None] = csv_text(table.slice(row, 1)).to_pylist()[0]
    return fields


def _make(
    kind: str, row: int, campaign: str, g: int, table: pa.Table, rng: np.random.Generator
) -> Glitch:
    """The :class:`Glitch` of type ``g`` of ``kind`` on ``row`` (see :data:`GLITCHES`)."""
    column, code = GLITCHES[kind][g]
    clean = table.slice(row, 1).to_pylist()[0]
    cells: dict[str, str | None] = {}
    keep = None
    match kind, code:
        case "spend", "negative":  # a refund adjustment
            cells["spend"] = f"-{rng.uniform(1.0, 80.0):.2f}"
        case "spend", "clicks_exceed_impressions":  # the two columns swapped
            cells["impressions"], cells["clicks"] = str(clean["clicks"]), str(clean["impressions"])
        case "spend", "missing_value":
            cells["impressions"] = "--"
        case "touchpoints", "bad_timestamp":  # US format, minutes only
            cells["ts"] = clean["ts"].strftime("%m/%d/%Y %H:%M")
        case "touchpoints", "malformed_row":  # the line cut after a few fields
            keep = int(rng.integers(3, 7))
        case "conversions", "future":  # the sender's clock ten years ahead
            ahead = clean["ts"] + dt.timedelta(seconds=TEN_YEARS)
            cells["ts"] = ahead.strftime("%Y-%m-%dT%H:%M:%SZ")
        case "conversions", "not_a_number":  # a decimal comma
            cents = round(float(clean["value"]) * 100)
            cells["value"] = f"{cents // 100},{cents % 100:02d}"
        case "crm", "bad_timestamp":  # an Excel serial date
            ts = clean["ts"]
            secs = ts.hour * 3600 + ts.minute * 60 + ts.second
            cells["ts"] = f"{(ts.date() - EXCEL_EPOCH).days + secs / DAY:.5f}"
        case "changes", "bad_value" if column == "field":  # a rename, outside the contract
            entity = clean["entity_id"]
            cells |= {"field": "name", "old_value": entity, "new_value": f"{entity}_v2"}
        case _:  # empty user_id / stage; source webhook, actor bot
            assert column is not None
            cells[column] = {"source": "webhook", "actor": "bot"}.get(column)
    return Glitch(kind, row, campaign, column, code, tuple(cells.items()), keep)
