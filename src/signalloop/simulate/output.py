"""Write a simulation as canonical CSV files (the kinds of its data shape) and ``truth.json``.

The CSV text is deterministic: timestamps ``YYYY-MM-DDTHH:MM:SSZ``, dates ``YYYY-MM-DD``,
floats with exactly two decimals, one line per row (no value holds a line break), so the same
simulation always gives byte-identical files. ``export_glitches`` rows are rendered corrupted
here (:meth:`~signalloop.simulate.glitches.Glitch.render`), line by line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from signalloop.contract import KINDS
from signalloop.simulate.glitches import Glitch
from signalloop.simulate.simulation import Simulation
from signalloop.simulate.tables import csv_text


def write(sim: Simulation, out_dir: Path, *, oracle: bool = False) -> dict[str, Path]:
    """Write the tables of the data shape as canonical CSVs and ``truth.json`` into ``out_dir``.

    Only the kinds of ``sim.config.shape`` are written (all five for ``full``, see
    :data:`~signalloop.simulate.config.SHAPE_KINDS`); ``truth.json`` records the shape.

    Timestamps are written ``YYYY-MM-DDTHH:MM:SSZ``, dates ``YYYY-MM-DD``, money and other
    floats with two decimals, so the same simulation always gives byte-identical files. The
    rows ``sim.glitches`` lists (``export_glitches``) are written corrupted; every other line
    is exactly as without them.

    Parameters
    ----------
    sim
        A :func:`~signalloop.simulate.simulation.simulate` result.
    out_dir
        Folder to write into; created if missing.
    oracle
        Also write ``sim.oracle`` (the per-click true conversion probabilities) as
        ``oracle.parquet``.

    Returns
    -------
    dict
        Each kind written (``spend``, ``touchpoints``, ``conversions``, ``crm``, ``changes``,
        as the shape has them), ``truth`` (and ``oracle`` if asked) -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind in KINDS:
        if kind not in sim.tables:  # not in this data shape
            continue
        table = sim.tables[kind]
        text = csv_text(table)
        special = any(
            pc.any(pc.match_substring_regex(text[n], '[",\\r\\n]')).as_py()
            for n in text.column_names
        )
        style = "needed" if special else "none"
        paths[kind] = out / f"{kind}.csv"
        with paths[kind].open("wb") as fh:
            fh.write((",".join(table.column_names) + "\n").encode())
            glitches = [g for g in sim.glitches if g.kind == kind]
            _write_rows(fh, text, style, glitches)
    paths["truth"] = out / "truth.json"
    paths["truth"].write_text(
        json.dumps(sim.truth, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    if oracle:
        paths["oracle"] = out / "oracle.parquet"
        pq.write_table(sim.oracle, paths["oracle"])
    return paths


def _write_rows(fh: BinaryIO, text: pa.Table, style: str, glitches: Sequence[Glitch]) -> None:
    """Write the rows of ``text``, the ``glitches`` rows rendered corrupted."""
    options = pcsv.WriteOptions(include_header=False, quoting_style=style)
    start = 0
    for g in sorted(glitches, key=lambda g: g.row):
        if g.row > start:
            pcsv.write_csv(text.slice(start, g.row - start), fh, options)
        fields = text.slice(g.row, 1).to_pylist()[0]
        fh.write(g.render(fields, quote_all=style == "needed").encode())
        start = g.row + 1
    if start < text.num_rows:
        pcsv.write_csv(text.slice(start), fh, options)
