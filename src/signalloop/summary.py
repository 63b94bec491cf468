"""The workspace at a glance: rows per kind, quarantine by reason, per-campaign results.

All of it is computed with ibis over the workspace; only the small result is Python.
"""

from __future__ import annotations

from typing import Any

from signalloop.attribution import attribution_counts, campaign_summary
from signalloop.contract import KINDS
from signalloop.shapes import learnable
from signalloop.store import Workspace


def workspace_summary(ws: Workspace) -> dict[str, Any]:
    """A JSON-ready summary of the workspace.

    Keys: ``db``, ``kinds`` (per kind: ``rows`` in store, ``quarantined``, ``folded``
    duplicate copies), ``quarantine_by_reason`` (kind, code, rows), ``ingests``,
    ``campaigns`` (see :func:`~signalloop.attribution.campaign_summary`), ``attribution``
    (conversions per attribution rule) and ``learnable`` (what the workspace can learn from:
    its data shape per campaign and each capability's basis, see
    :func:`~signalloop.shapes.learnable`).
    """
    q = ws.table("quarantine")
    d = ws.table("duplicates")
    q_rows = q.group_by("kind").aggregate(n=q.count()).to_pyarrow().to_pylist()
    quarantined = {r["kind"]: int(r["n"]) for r in q_rows}
    folded_rows = d.group_by("kind").aggregate(n=d.copies.sum()).to_pyarrow().to_pylist()
    folded = {r["kind"]: int(r["n"]) for r in folded_rows}
    counts = ws.counts()
    kinds = {
        k: {
            "rows": counts[k],
            "quarantined": quarantined.get(k, 0),
            "folded": folded.get(k, 0),
        }
        for k in KINDS
    }
    by_reason = (
        q.group_by(["kind", "code"])
        .aggregate(rows=q.count())
        .order_by(["kind", "code"])
        .to_pyarrow()
        .to_pylist()
    )
    log = ws.table("ingest_log")
    return {
        "db": ws.path,
        "kinds": kinds,
        "quarantine_by_reason": by_reason,
        "ingests": int(log.count().execute()),
        "campaigns": campaign_summary(ws),
        "attribution": attribution_counts(ws),
        "learnable": learnable(ws),
    }
