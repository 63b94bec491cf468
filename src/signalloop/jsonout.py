"""JSON text of signalloop's documents: the report, ``--json`` output, the API's large answers.

One encoder (orjson, in C) for every large document: Python's own encoder has no C path
once it indents, and a 1,000-campaign report (over 100 MB of JSON) took it about 20 s.
NaN and infinities become ``null``; dates and datetimes are written as ``str()`` writes them
(``2026-03-31``, ``2026-03-31 00:00:00``); anything else unknown goes through ``str``.

>>> import math
>>> from datetime import date
>>> print(dumps({"a": [1, math.nan], "d": date(2026, 3, 31), 3: "x"}))
{
  "a": [
    1,
    null
  ],
  "d": "2026-03-31",
  "3": "x"
}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_SERIALIZE_NUMPY
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def dumps(doc: Any) -> str:
    """``doc`` as indented JSON text (no trailing newline)."""
    return orjson.dumps(doc, default=str, option=_OPTIONS).decode()


def write(doc: Any, path: Any) -> None:
    """``doc`` as indented JSON into the file ``path``, with a final newline."""
    with open(path, "wb") as f:
        f.write(orjson.dumps(doc, default=str, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE))


def rounded(x: Any, nd: int = 2) -> list[float | None]:
    """``round(v, nd)`` of every element ``v`` of ``x`` (``None`` where not finite), without a
    Python call per element: the same floats, to the bit.

    ``rint(v * 10**nd) / 10**nd`` is Python's rounding (half to even of the decimal) wherever
    the product cannot have crossed a half by its own rounding; the few elements near a half,
    or too large for the product to be exact enough, go through ``round`` itself.

    >>> rounded([2.675, 0.125, -0.004, float("nan"), 1e300, 1234.5678])
    [2.67, 0.12, -0.0, None, 1e+300, 1234.57]
    """
    a = np.asarray(x, dtype=float).reshape(-1)
    scale = 10.0**nd
    with np.errstate(over="ignore", invalid="ignore"):
        y = a * scale
        out = np.rint(y) / scale
        frac = np.abs(y - np.trunc(y))
    finite = np.isfinite(a)
    near = ~(np.abs(frac - 0.5) > 1e-9 * np.maximum(np.abs(y), 1.0)) | ~(np.abs(y) < 2.0**50)
    for i in np.nonzero(near & finite)[0].tolist():
        out[i] = round(float(a[i]), nd)
    got: list[float | None] = out.tolist()
    for i in np.nonzero(~finite)[0].tolist():
        got[i] = None
    return got
