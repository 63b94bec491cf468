"""Shared fixtures: a fresh workspace, a CSV writer, the real data sets."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from signalloop.store import Workspace

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
