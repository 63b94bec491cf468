"""The data contract: the five canonical input kinds, their columns, types and natural keys.

Everything that reads or writes campaign data (ingest, the store, the simulator, the checks)
takes its column lists from here, so the contract in ``PRODUCT.md`` is written down once.

>>> KINDS["spend"].required
('date', 'platform', 'campaign_id', 'impressions', 'clicks', 'spend')
>>> KINDS["conversions"].key
('conversion_id',)
>>> KINDS["changes"].column("field").choices[:3]
('budget', 'bid', 'bid_strategy')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["id", "text", "int", "float", "date", "ts", "enum"]

#: SQL type used in the store for each contract type.
SQL_TYPES: dict[str, str] = {
    "id": "VARCHAR",
    "text": "VARCHAR",
    "enum": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "date": "DATE",
    "ts": "TIMESTAMP",
}

#: The ordered CRM funnel (``lost`` is a terminal side stage, outside the order).
FUNNEL: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "won")
SIDE_STAGES: tuple[str, ...] = ("lost",)

CHANGE_FIELDS: tuple[str, ...] = (
    "budget",
    "bid",
    "bid_strategy",
    "targeting",
    "creative",
    "optimization_event",
    "status",
)
ACTORS: tuple[str, ...] = ("human", "automation", "platform")
CONVERSION_SOURCES: tuple[str, ...] = ("pixel", "server", "offline", "crm")
LEVELS: tuple[str, ...] = ("account", "campaign", "adset", "ad", "creative")


@dataclass(frozen=True)
class Column:
    """One canonical column.

    Parameters
    ----------
    name
        Canonical column name.
    type
        One of ``id``, ``text``, ``int``, ``float``, ``date``, ``ts``, ``enum``.
    required
        Whether every row must carry a value.
    choices
        Allowed values for an ``enum`` column (compared after lower-casing and trimming).
    nonnegative
        For numbers: whether negative values are invalid.
    """

    name: str
    type: ColumnType
    required: bool = False
    choices: tuple[str, ...] | None = None
    nonnegative: bool = True

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.type]


@dataclass(frozen=True)
class Kind:
    """A canonical input kind: its columns, natural key and event-time column."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}; columns are {', '.join(self.names)}")


def _c(name: str, type_: ColumnType, required: bool = False, **kw: object) -> Column:
    return Column(name, type_, required, **kw)  # type: ignore[arg-type]


SPEND = Kind(
    "spend",
    "daily delivery per ad",
    (
        _c("date", "date", True),
        _c("platform", "id", True),
        _c("campaign_id", "id", True),
        _c("impressions", "int", True),
        _c("clicks", "int", True),
        _c("spend", "float", True),
        _c("adset_id", "id"),
        _c("ad_id", "id"),
        _c("creative_id", "id"),
        _c("campaign_name", "text"),
        _c("adset_name", "text"),
        _c("ad_name", "text"),
        _c("platform_conversions", "float"),
        _c("platform_conversion_value", "float"),
        _c("currency", "id"),
    ),
    key=("date", "platform", "campaign_id", "adset_id", "ad_id", "creative_id"),
    time_column="date",
)

TOUCHPOINTS = Kind(
    "touchpoints",
    "clicks and visits",
    (
        _c("touch_id", "id", True),
        _c("ts", "ts", True),
        _c("user_id", "id", True),
        _c("click_id", "id"),
        _c("platform", "id"),
        _c("campaign_id", "id"),
        _c("adset_id", "id"),
        _c("ad_id", "id"),
        _c("creative_id", "id"),
        _c("landing_url", "text"),
        _c("utm_source", "text"),
        _c("utm_medium", "text"),
        _c("utm_campaign", "text"),
        _c("utm_content", "text"),
        _c("utm_term", "text"),
    ),
    key=("touch_id",),
    time_column="ts",
)

CONVERSIONS = Kind(
    "conversions",
    "conversion events",
    (
        _c("conversion_id", "id", True),
        _c("ts", "ts", True),
        _c("kind", "text", True),
        _c("user_id", "id"),
        _c("click_id", "id"),
        _c("click_ts", "ts"),
        _c("campaign_id", "id"),
        _c("adset_id", "id"),
        _c("creative_id", "id"),
        _c("value", "float", nonnegative=False),
        _c("currency", "id"),
        _c("source", "enum", choices=CONVERSION_SOURCES),
    ),
    key=("conversion_id",),
    time_column="ts",
)

CRM = Kind(
    "crm",
    "CRM lifecycle stage changes",
    (
        _c("record_id", "id", True),
        _c("stage", "text", True),
        _c("ts", "ts", True),
        _c("user_id", "id"),
        _c("amount", "float"),
        _c("owner", "text"),
        _c("source", "text"),
    ),
    key=("record_id", "stage", "ts"),
    time_column="ts",
)

CHANGES = Kind(
    "changes",
    "the edit log",
    (
        _c("ts", "ts", True),
        _c("level", "enum", True, choices=LEVELS),
        _c("entity_id", "id", True),
        _c("field", "enum", True, choices=CHANGE_FIELDS),
        _c("old_value", "text"),
        _c("new_value", "text"),
        _c("actor", "enum", choices=ACTORS),
    ),
    key=("ts", "level", "entity_id", "field", "new_value"),
    time_column="ts",
)

KINDS: dict[str, Kind] = {k.name: k for k in (SPEND, TOUCHPOINTS, CONVERSIONS, CRM, CHANGES)}

#: Columns every stored row gets besides the contract's: kept attributes and provenance.
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (("attrs", "JSON"), ("_ingest_id", "BIGINT"))

UTM_COLUMNS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
)


def get_kind(name: str) -> Kind:
    """Return the :class:`Kind` called ``name`` or raise a :class:`~signalloop.errors.UsageError`.

    >>> get_kind("crm").time_column
    'ts'
    """
    from signalloop.errors import UsageError

    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(f"unknown kind {name!r}: expected one of {', '.join(KINDS)}") from None
