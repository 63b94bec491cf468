"""Profiles and mapping files: how an export's columns become the canonical contract.

A :class:`Profile` names, for each canonical column, the headers it may come from (matched
case- and whitespace-insensitively, or by regular expression with ``re:``; a named group in
the expression becomes a constant, e.g. the currency in ``Amount spent (USD)``), constants,
value maps, and parsing options. Built-in profiles: ``canonical``, ``meta_ads``,
``google_ads`` and ``hubspot``. A mapping file (TOML) describes any other export the same
way, optionally extending a built-in profile::

    extends = "meta_ads"          # optional
    [columns]
    date = "Day"
    campaign_id = ["Campaign ID", "Campaign"]
    [constants]
    platform = "tiktok"
    [values.stage]
    "Marketing Qualified Lead" = "mql"
    [options]
    date_format = "%d/%m/%Y"       # strptime formats, when not ISO
    timestamp_format = "%d/%m/%Y %H:%M"
    thousands = ","

>>> p = get_profile("meta_ads")
>>> plan = p.plan(["Campaign name", "Amount spent (USD)", "Impressions", "Link clicks"], "spend")
>>> plan.sources["spend"], plan.constants["currency"], plan.constants["platform"]
('Amount spent (USD)', 'USD', 'meta')
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from signalloop.contract import KINDS
from signalloop.errors import ConfigError, UsageError


def norm_header(h: str) -> str:
    """Normalise a header for matching: case-folded, whitespace collapsed, BOM stripped.

    >>> norm_header("  Amount  Spent (USD)")
    'amount spent (usd)'
    """
    return " ".join(h.replace("\ufeff", "").split()).casefold()


@dataclass(frozen=True)
class Melt:
    """Unpivot wide stage-date columns into one row per (record, stage, ts).

    ``columns`` maps a source header (say ``Became a Lead Date``) to the stage it records.
    """

    columns: Mapping[str, str]
    stage_column: str = "stage"
    time_column: str = "ts"


@dataclass(frozen=True)
class Plan:
    """A profile resolved against one file's headers."""

    sources: dict[str, str]  # canonical column -> source header
    constants: dict[str, str]  # canonical column -> constant value
    attributes: list[str]  # source headers kept as attributes
    melt: dict[str, str] | None = None  # source header -> stage (headers present in the file)


@dataclass(frozen=True)
class Profile:
    """How one family of exports maps onto the contract."""

    name: str
    description: str
    columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    constants: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    melt: Melt | None = None
    date_format: str | None = None
    timestamp_format: str | None = None
    thousands: str | None = None
    header_markers: Sequence[str] = ()  # a header line contains one of these (skips preambles)
    summary_prefixes: Sequence[str] = ()  # first-cell prefixes of report total rows

    def plan(self, headers: Sequence[str], kind: str) -> Plan:
        """Resolve this profile against ``headers`` for ``kind``."""
        spec = KINDS[kind]
        by_norm: dict[str, str] = {}
        for h in headers:
            by_norm.setdefault(norm_header(h), h)
        used: set[str] = set()
        sources: dict[str, str] = {}
        constants: dict[str, str] = {}
        for col in spec.names:
            candidates = list(self.columns.get(col, ()))
            if col not in self.columns or self.name == "canonical":
                candidates.append(col)
            for cand in candidates:
                hit = self._match(cand, headers, by_norm, used)
                if hit is None:
                    continue
                header, groups = hit
                sources[col] = header
                used.add(header)
                for gname, gval in groups.items():
                    if gname in spec.names and gval:
                        constants.setdefault(gname, gval)
                break
        melt: dict[str, str] = {}
        if self.melt is not None and kind == "crm":
            for src, stage in self.melt.columns.items():
                found = by_norm.get(norm_header(src))
                if found is not None and found not in used:
                    melt[found] = stage
                    used.add(found)
        for col, val in self.constants.items():
            if col in spec.names and col not in sources:
                constants.setdefault(col, val)
        attributes = [h for h in headers if h not in used]
        return Plan(sources=sources, constants=constants, attributes=attributes, melt=melt or None)

    @staticmethod
    def _match(
        cand: str, headers: Sequence[str], by_norm: dict[str, str], used: set[str]
    ) -> tuple[str, dict[str, str]] | None:
        if cand.startswith("re:"):
            rx = re.compile(cand[3:], re.IGNORECASE)
            for h in headers:
                m = rx.fullmatch(h.strip())
                if m and h not in used:
                    return h, {k: v for k, v in m.groupdict().items() if v}
            return None
        header = by_norm.get(norm_header(cand))
        if header is None or header in used:
            return None
        return header, {}

    def value_map(self, column: str) -> dict[str, str]:
        """Case-folded raw value -> canonical value, for ``column``."""
        return {norm_header(k): v for k, v in self.values.get(column, {}).items()}


CANONICAL = Profile("canonical", "the canonical contract: columns named as in PRODUCT.md")

_META_CLICKS = ["Link clicks", "Clicks (all)", "Clicks"]
META_ADS = Profile(
    "meta_ads",
    "Meta Ads Manager exports (and the Kaggle 'facebook_ads_kag' layout)",
    columns={
        "date": ["Day", "Date", "Reporting starts", "date_start"],
        "campaign_id": ["Campaign ID", "xyz_campaign_id", "campaign_id", "Campaign name"],
        "campaign_name": ["Campaign name", "campaign_name"],
        "adset_id": ["Ad set ID", "Ad Set ID", "fb_campaign_id", "adset_id", "Ad set name"],
        "adset_name": ["Ad set name", "adset_name"],
        "ad_id": ["Ad ID", "ad_id", "Ad name"],
        "ad_name": ["Ad name", "ad_name"],
        "creative_id": ["Creative ID", "creative_id"],
        "impressions": ["Impressions", "impressions"],
        "clicks": _META_CLICKS,
        "spend": [r"re:Amount spent \((?P<currency>[A-Z]{3})\)", "Amount spent", "Spent", "spend"],
        "platform_conversions": ["Results", "Total_Conversion", "Purchases", "Leads"],
        "platform_conversion_value": [
            "Purchases conversion value",
            "Website purchases conversion value",
            "Conversion value",
        ],
        "currency": ["Currency", "currency"],
    },
    constants={"platform": "meta"},
)

GOOGLE_ADS = Profile(
    "google_ads",
    "Google Ads report downloads (campaign, ad group or ad level, segmented by day)",
    columns={
        "date": ["Day", "Date", "segments.date"],
        "campaign_id": ["Campaign ID", "campaign.id", "Campaign"],
        "campaign_name": ["Campaign", "campaign.name"],
        "adset_id": ["Ad group ID", "ad_group.id", "Ad group"],
        "adset_name": ["Ad group", "ad_group.name"],
        "ad_id": ["Ad ID", "ad_group_ad.ad.id"],
        "impressions": ["Impr.", "Impressions", "metrics.impressions"],
        "clicks": ["Clicks", "metrics.clicks"],
        "spend": ["Cost", "metrics.cost", "Cost (USD)"],
        "platform_conversions": ["Conversions", "metrics.conversions"],
        "platform_conversion_value": [
            "Conv. value",
            "Conversion value",
            "metrics.conversions_value",
        ],
        "currency": ["Currency code", "Currency", "customer.currency_code"],
    },
    constants={"platform": "google"},
    thousands=",",
    header_markers=("Day", "Campaign", "Impr.", "Clicks", "Cost"),
    summary_prefixes=("Total",),
)

_HUBSPOT_STAGES = {
    "subscriber": "lead",
    "lead": "lead",
    "marketingqualifiedlead": "mql",
    "marketing qualified lead": "mql",
    "salesqualifiedlead": "sql",
    "sales qualified lead": "sql",
    "opportunity": "opportunity",
    "customer": "won",
    "evangelist": "won",
    "appointmentscheduled": "opportunity",
    "appointment scheduled": "opportunity",
    "qualifiedtobuy": "opportunity",
    "qualified to buy": "opportunity",
    "presentationscheduled": "opportunity",
    "presentation scheduled": "opportunity",
    "decisionmakerboughtin": "opportunity",
    "decision maker bought-in": "opportunity",
    "contractsent": "opportunity",
    "contract sent": "opportunity",
    "closedwon": "won",
    "closed won": "won",
    "closedlost": "lost",
    "closed lost": "lost",
}

HUBSPOT = Profile(
    "hubspot",
    "HubSpot contacts (lifecycle stage or 'Became a ... Date' columns) and deals exports",
    columns={
        "record_id": ["Record ID", "Contact ID", "Deal ID", "hs_object_id"],
        "stage": ["Lifecycle Stage", "Deal Stage", "lifecyclestage", "dealstage"],
        "ts": ["Last Modified Date", "Close Date", "Create Date", "lastmodifieddate"],
        "user_id": ["Email", "email", "Associated Contact"],
        "amount": ["Amount", "amount"],
        "owner": ["Contact owner", "Deal owner", "HubSpot Owner", "hubspot_owner_id"],
        "source": ["Original Source", "Original source", "hs_analytics_source"],
    },
    values={"stage": _HUBSPOT_STAGES},
    melt=Melt(
        {
            "Became a Lead Date": "lead",
            "Became a Marketing Qualified Lead Date": "mql",
            "Became a Sales Qualified Lead Date": "sql",
            "Became an Opportunity Date": "opportunity",
            "Became a Customer Date": "won",
        }
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (CANONICAL, META_ADS, GOOGLE_ADS, HUBSPOT)}


def get_profile(name: str) -> Profile:
    """The built-in profile called ``name``."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(
            f"unknown profile {name!r}: expected one of {', '.join(PROFILES)} "
            "(or describe the export in a mapping file with --mapping)"
        ) from None


_MAPPING_KEYS = {"extends", "kind", "columns", "constants", "values", "options"}
_OPTION_KEYS = {"date_format", "timestamp_format", "thousands", "header_markers"}


def load_mapping(path: str | Path, kind: str) -> Profile:
    """Read a TOML mapping file into a :class:`Profile` for ``kind``."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"mapping file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"mapping file {p} is not valid TOML: {exc}") from None
    unknown = set(doc) - _MAPPING_KEYS
    if unknown:
        raise ConfigError(
            f"mapping file {p}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(_MAPPING_KEYS))}"
        )
    if "kind" in doc and doc["kind"] != kind:
        raise ConfigError(f"mapping file {p} is for kind {doc['kind']!r}, not {kind!r}")
    base = get_profile(str(doc.get("extends", "canonical")))
    names = set(KINDS[kind].names)
    columns: dict[str, list[str]] = {k: list(v) for k, v in base.columns.items()}
    for col, src in _table(doc, "columns", p).items():
        if col not in names:
            raise ConfigError(
                f"mapping file {p}: [columns] names {col!r}, which is not a {kind} column; "
                f"expected one of {', '.join(sorted(names))}"
            )
        alts = [src] if isinstance(src, str) else src
        if not isinstance(alts, list) or not all(isinstance(a, str) for a in alts):
            raise ConfigError(f"mapping file {p}: columns.{col} must be a header or a list of them")
        columns[col] = alts
    constants = dict(base.constants)
    constants.update({k: str(v) for k, v in _table(doc, "constants", p).items()})
    values: dict[str, dict[str, str]] = {k: dict(v) for k, v in base.values.items()}
    for col, vmap in _table(doc, "values", p).items():
        if not isinstance(vmap, dict):
            raise ConfigError(
                f"mapping file {p}: [values.{col}] must be a table of raw = canonical"
            )
        values.setdefault(col, {}).update({str(k): str(v) for k, v in vmap.items()})
    options = _table(doc, "options", p)
    bad = set(options) - _OPTION_KEYS
    if bad:
        raise ConfigError(
            f"mapping file {p}: unknown option(s) {', '.join(sorted(bad))}; "
            f"expected {', '.join(sorted(_OPTION_KEYS))}"
        )
    return replace(
        base,
        name=f"mapping:{p.name}",
        description=f"mapping file {p}",
        columns=columns,
        constants=constants,
        values=values,
        date_format=options.get("date_format", base.date_format),
        timestamp_format=options.get("timestamp_format", base.timestamp_format),
        thousands=options.get("thousands", base.thousands),
        header_markers=tuple(options.get("header_markers", base.header_markers)),
    )


def _table(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    val = doc.get(key, {})
    if not isinstance(val, dict):
        raise ConfigError(f"mapping file {path}: [{key}] must be a table")
    return val
