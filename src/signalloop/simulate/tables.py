"""The five canonical tables (pyarrow) built from the observed event arrays.

Each ``*_order`` function gives the row order of its kind's table (time order, ties broken by
id); :func:`~signalloop.simulate.simulation.simulate` sorts the arrays with it before calling
the ``*_table`` builder, so row ``i`` of a table is row ``i`` of its arrays. Columns follow
the contract order of :data:`signalloop.contract.KINDS`; entity indexes become ids and names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from signalloop.contract import KINDS
from signalloop.simulate.entities import Change
from signalloop.simulate.params import (
    DAY,
    KIND_NAMES,
    KIND_PREFIXES,
    OWNERS,
    PLATFORM_DAY_SIGMA,
    PLATFORM_OVERCOUNT,
    PLATFORM_STREAM,
    PLATFORMS,
    SOURCE_NAMES,
    STAGES,
    Arr,
)

if TYPE_CHECKING:
    from signalloop.simulate.account import Account


# ---- row orders -----------------------------------------------------------------------------


def touch_order(t: dict[str, Arr]) -> Arr:
    """Touchpoints by time, then touch number."""
    return np.lexsort((t["tn"], t["ts"]))


def conversion_order(c: dict[str, Arr]) -> Arr:
    """Conversions by time, then click number, then kind."""
    return np.lexsort((c["kind"], c["tn"], c["ts"]))


def crm_order(r: dict[str, Arr]) -> Arr:
    """CRM rows by time, then record, then stage."""
    return np.lexsort((r["stage"], r["record"], r["ts"]))


def changes_order(changes: Sequence[Change]) -> list[Change]:
    """Edit-log rows by time and their natural key."""
    return sorted(changes, key=lambda c: (c.ts, c.level, c.entity_id, c.field, c.new_value))


# ---- column helpers -------------------------------------------------------------------------


def strings(values: Sequence[str], idx: Arr) -> pa.Array:
    """``values[idx]`` as a string array; negative indexes become nulls."""
    idx = np.asarray(idx, dtype=np.int64)
    return pc.take(pa.array(list(values), pa.string()), pa.array(idx, mask=idx < 0))


def timestamps(acct: Account, secs: Arr) -> pa.Array:
    """Seconds since the start of day 0 as UTC timestamps."""
    base = np.datetime64(acct.config.start.isoformat(), "s")
    return pa.array(base + secs.astype("timedelta64[s]")).cast(pa.timestamp("s", tz="UTC"))


def _ids(prefix: str, nums: Arr) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(nums), pa.string()), "")


def _table(acct: Account, kind: str, c: dict[str, Arr], **given: pa.Array) -> pa.Table:
    """A table of ``kind`` with its columns in contract order.

    ``given`` columns are used as they are; the others are looked up from the index columns
    of ``c`` (camp, adset, ad, creative, user, ts, ...); columns with no source are left out.
    """
    cs, n = acct.campaigns, len(next(iter(c.values())))
    lookup: dict[str, tuple[Sequence[str], str]] = {
        "platform": ([x.platform for x in cs], "camp"),
        "campaign_id": (acct.ids, "camp"),
        "campaign_name": ([x.name for x in cs], "camp"),
        "utm_campaign": ([x.name for x in cs], "camp"),
        "adset_id": ([a.id for a in acct.adsets], "adset"),
        "adset_name": ([a.name for a in acct.adsets], "adset"),
        "ad_id": ([a.id for a in acct.ads], "ad"),
        "ad_name": ([f"{a.id} | auto" for a in acct.ads], "ad"),
        "creative_id": ([x.id for x in acct.creatives], "creative"),
        "utm_content": ([x.id for x in acct.creatives], "creative"),
        "kind": (KIND_NAMES, "kind"),
        "stage": (STAGES, "stage"),
        "owner": (OWNERS, "owner"),
    }
    cols: dict[str, pa.Array] = {}
    for name in KINDS[kind].names:
        if name in given:
            cols[name] = given[name]
        elif name in lookup:
            cols[name] = strings(lookup[name][0], c[lookup[name][1]])
        elif name in ("ts", "click_ts"):
            cols[name] = timestamps(acct, c[name])
        elif name == "user_id":
            cols[name] = _ids("u", 1_000_000 + c["user"])
        elif name == "currency":
            cols[name] = pa.array(np.full(n, "USD"))
        elif name in c:
            cols[name] = pa.array(
                c[name], mask=np.isnan(c[name]) if c[name].dtype == float else None
            )
    return pa.table(cols)


def _click_ids(acct: Account, c: dict[str, Arr]) -> pa.Array:
    prefix = strings([PLATFORMS[x.platform][3] for x in acct.campaigns], c["camp"])
    return pc.binary_join_element_wise(prefix, pa.array(c["token"]).cast(pa.string()), "")


# ---- the tables -----------------------------------------------------------------------------


def platform_conversions(
    acct: Account, spend: dict[str, Arr], conv: dict[str, Arr]
) -> tuple[Arr, Arr, dict[str, dict[str, Any]]]:
    """Platform-reported conversions and value per spend row, noisy and over-counting.

    The platform counts the tracked (pixel / server) conversions on their click day and ad
    (what a tracking outage loses, it loses too), then adds what platforms add: view-through
    and modelled conversions, and conversions another platform's click also claims. Per
    campaign an over-count factor ``m ~ U(PLATFORM_OVERCOUNT)`` and per campaign-day a
    factor ``e ~ LogNormal(-s^2 / 2, s)`` (``s = PLATFORM_DAY_SIGMA``, mean 1) give the
    row's excess ``floor(tracked * (m - 1) * e + u)``, ``u ~ U(0, 1)`` per day and ad, so
    the reported count is never below the tracked one and its expectation is ``m`` x it.
    The value is the tracked value scaled the same way. Each campaign draws from
    ``default_rng([seed, PLATFORM_STREAM, campaign index])`` (see
    :mod:`~signalloop.simulate.params`), which nothing else draws from.

    Returns
    -------
    tuple
        Reported count and value per spend row, and per campaign id its truth:
        ``overcount`` (``m``), ``day_sigma``, ``tracked`` and ``reported`` (totals).
    """
    n_ads, days = len(acct.ads), acct.days
    px = conv["source"] <= 1
    key = (conv["click_ts"][px] // DAY) * n_ads + conv["ad"][px]
    count = np.bincount(key, minlength=days * n_ads)
    value = np.bincount(key, weights=np.nan_to_num(conv["value"][px]), minlength=days * n_ads)
    row = spend["day"] * n_ads + spend["ad"]
    obs, val = count[row].astype(float), value[row]
    ad_camp = np.array([acct.adsets[a.adset].campaign for a in acct.ads], dtype=np.int64)
    reported = obs.copy()
    truth: dict[str, dict[str, Any]] = {}
    lo, hi = PLATFORM_OVERCOUNT
    sd = PLATFORM_DAY_SIGMA
    for c in acct.campaigns:
        rng = np.random.default_rng([acct.config.seed, PLATFORM_STREAM, c.idx])
        ads = np.flatnonzero(ad_camp == c.idx)
        m = float(rng.uniform(lo, hi))
        e = rng.lognormal(-(sd**2) / 2, sd, days)
        u = rng.random((days, len(ads)))
        mine = np.flatnonzero(spend["camp"] == c.idx)
        d, a = spend["day"][mine], np.searchsorted(ads, spend["ad"][mine])
        reported[mine] += np.floor(obs[mine] * (m - 1) * e[d] + u[d, a])
        truth[c.id] = {
            "overcount": round(m, 4),
            "day_sigma": sd,
            "tracked": int(obs[mine].sum()),
            "reported": int(reported[mine].sum()),
        }
    scaled = np.round(np.where(obs > 0, val * reported / np.maximum(obs, 1), 0.0), 2)
    return reported, scaled, truth


def spend_table(acct: Account, s: dict[str, Arr], platform: tuple[Arr, Arr]) -> pa.Table:
    """Daily delivery per ad, with the platform-reported conversions and value."""
    day0 = np.datetime64(acct.config.start.isoformat(), "D")
    date = pa.array(day0 + s["day"].astype("timedelta64[D]"))
    reported = {"platform_conversions": platform[0], "platform_conversion_value": platform[1]}
    return _table(acct, "spend", s | reported, date=date)


def touch_table(
    acct: Account, t: dict[str, Arr], utm: Arr, pairs: Sequence[tuple[str, str]]
) -> pa.Table:
    """Touchpoints (in :func:`touch_order`) with landing URLs and UTM tags.

    Row ``i`` carries ``utm_source, utm_medium = pairs[utm[i]]`` (see
    :func:`~signalloop.simulate.faults.utm_pairs`).
    """
    cs = acct.campaigns
    click_id = _click_ids(acct, t)
    path = [("demo/" if c.objective == "lead" else "shop/") + c.id for c in cs]
    url = pc.binary_join_element_wise(
        "https://www.example.com/",
        strings(path, t["camp"]),
        "?utm_source=",
        strings([quote_plus(p[0]) for p in pairs], utm),
        "&utm_medium=",
        strings([quote_plus(p[1]) for p in pairs], utm),
        "&utm_campaign=",
        strings([c.name for c in cs], t["camp"]),
        "&utm_content=",
        strings([x.id for x in acct.creatives], t["creative"]),
        "&",
        strings([PLATFORMS[c.platform][2] for c in cs], t["camp"]),
        "=",
        click_id,
        "",
    )
    return _table(
        acct,
        "touchpoints",
        t,
        touch_id=_ids("t", t["tn"]),
        click_id=click_id,
        landing_url=url,
        utm_source=strings([p[0] for p in pairs], utm),
        utm_medium=strings([p[1] for p in pairs], utm),
    )


def conversion_ids(conv: dict[str, Arr]) -> Arr:
    """Conversion ids: a prefix per kind, then the click number ``N``.

    ``cvN`` for purchases and leads, ``sqN`` / ``opN`` for a record reaching sql /
    opportunity, ``dlN`` for a won deal (see :data:`~signalloop.simulate.params.KIND_PREFIXES`).
    A click converts at most once and its CRM record reaches each stage at most once, so the
    ids are unique.
    """
    return np.char.add(np.asarray(KIND_PREFIXES)[conv["kind"]], conv["tn"].astype(str))


def conversion_table(
    acct: Account, c: dict[str, Arr], *, utm_campaign: bool = False, click_ts: bool = True
) -> pa.Table:
    """Conversions (in :func:`conversion_order`).

    Only pixel rows carry campaign, ad set and creative; the others have the click id. With
    ``utm_campaign`` every row carries its campaign_id (an order or deal export whose
    campaign came from the UTM tags of the click; the partial data shapes). Rows marked
    ``lost`` (``click_id_loss``, :func:`~signalloop.simulate.faults.lose_click_ids`) carry
    neither click id, click time nor campaign, ad set or creative: only the user. Without
    ``click_ts`` the table has no click_ts column.
    """
    lost = c["lost"] if "lost" in c else np.zeros(len(c["tn"]), dtype=bool)
    tied = (c["source"] == 0) & ~lost
    hide = {k: np.where(tied, c[k], -1) for k in ("adset", "creative")}
    hide["camp"] = np.where((tied | utm_campaign) & ~lost, c["camp"], -1)
    ids = pa.array(conversion_ids(c))
    source = strings(SOURCE_NAMES, c["source"])
    missing, n = pa.array(lost), len(lost)
    click_id = pc.if_else(missing, pa.nulls(n, pa.string()), _click_ids(acct, c))
    click_time = timestamps(acct, c["click_ts"])
    table = _table(
        acct,
        "conversions",
        c | hide,
        conversion_id=ids,
        click_id=click_id,
        source=source,
        click_ts=pc.if_else(missing, pa.nulls(n, click_time.type), click_time),
    )
    return table if click_ts else table.drop_columns(["click_ts"])


def crm_table(acct: Account, r: dict[str, Arr]) -> pa.Table:
    """CRM stage rows (in :func:`crm_order`)."""
    src = strings(
        ["paid_search" if c.platform == "google" else "paid_social" for c in acct.campaigns],
        r["camp"],
    )
    return _table(acct, "crm", r, record_id=_ids("rec", r["record"]), source=src)


def changes_table(acct: Account, rows: Sequence[Change]) -> pa.Table:
    """The edit log (rows in :func:`changes_order`)."""
    names = KINDS["changes"].names
    cols = {k: pa.array([getattr(c, k) for c in rows], pa.string()) for k in names[1:]}
    ts = timestamps(acct, np.array([c.ts for c in rows], dtype=np.int64))
    return pa.table({"ts": ts, **cols})


# ---- CSV text -------------------------------------------------------------------------------


def _fmt2(arr: pa.Array) -> pa.Array:
    """Format floats with exactly two decimals (nulls stay null)."""
    v = arr.to_numpy(zero_copy_only=False).astype(float)
    cents = np.round(np.nan_to_num(v) * 100).astype(np.int64)
    a = np.abs(cents)
    frac = pc.utf8_lpad(pc.cast(pa.array(a % 100), pa.string()), width=2, padding="0")
    s = pc.binary_join_element_wise(pc.cast(pa.array(a // 100), pa.string()), frac, ".")
    s = pc.if_else(pa.array(cents < 0), pc.binary_join_element_wise("-", s, ""), s)
    return pc.if_else(pa.array(np.isnan(v)), pa.nulls(len(v), pa.string()), s)


def _csv_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """One column as the CSV text the simulator writes, chunk by chunk: a string column of a
    long simulation holds more than the 2 GiB one ``string`` array can (100 campaigns over 365
    days: its landing URLs), so the chunks are never combined."""
    if pa.types.is_timestamp(col.type):
        return pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
    if pa.types.is_floating(col.type):  # (_fmt2 goes through NumPy: one chunk at a time)
        return pa.chunked_array([_fmt2(c) for c in col.chunks], pa.string())
    return pc.cast(col, pa.string())


def csv_text(table: pa.Table) -> pa.Table:
    """``table`` as the text written to CSV.

    Timestamps ``YYYY-MM-DDTHH:MM:SSZ``, dates ``YYYY-MM-DD``, floats with two decimals;
    nulls stay null (written as empty fields).
    """
    return pa.table({n: _csv_column(table[n]) for n in table.column_names})
