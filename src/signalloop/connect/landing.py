"""Rows a pull or an apply produced, landed through the ingest path (one CSV, restating)."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signalloop.ingest import IngestResult, ingest_file
from signalloop.store import Workspace

Progress = Callable[[str, float | None], None]


def land_rows(
    ws: Workspace,
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    label: str,
    progress: Progress | None = None,
) -> IngestResult:
    """Write ``rows`` (``columns`` in order; ``None`` as an empty cell) to a temporary CSV and
    ingest it as ``kind`` with ``restate=True`` under ``label``: the same validation,
    quarantine and natural keys as any export."""
    with tempfile.TemporaryDirectory(prefix="signalloop-land-") as tmp:
        path = Path(tmp) / f"{kind}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        return ingest_file(
            ws,
            kind,
            path,
            restate=True,
            label=label,
            # the account's today can be tomorrow in UTC (a zone east of it): not the future
            now=datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1),
            progress=progress,
        )


@dataclass(kw_only=True)
class Landed:
    """What an ingest of pulled rows did: the counts both pull results report."""

    rows_loaded: int = 0
    #: Rows already stored with the same values (a re-pull).
    rows_unchanged: int = 0
    #: Rows that replaced a stored row with the same key and other values.
    rows_restated: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    #: The first restated rows, with each changed column's old and new value.
    restated: list[dict[str, Any]] = field(default_factory=list)
    ingest_id: int | None = None

    def count(self, got: IngestResult) -> None:
        """Take the counts of one ingest."""
        self.ingest_id = got.ingest_id
        self.rows_loaded = got.rows_loaded
        self.rows_unchanged = got.rows_existing
        self.rows_restated = got.rows_restated
        self.rows_quarantined = got.rows_quarantined
        self.quarantine_reasons = got.quarantine_reasons
        self.restated = got.restated
