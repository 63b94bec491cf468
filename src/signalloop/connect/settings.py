"""``[connect]`` in ``signalloop.toml``: the ad accounts signalloop reads from.

Only the account ids have no default::

    [connect]
    lookback_days = 28               # each pull re-reads this many days (platforms restate)
    secrets = "secrets.toml"         # optional; else [push] secrets; else the environment

    [connect.meta]
    ad_account_id = "act_1234567890" # the ad account (with or without act_)
    optimization_event = "offsite_conversion.fb_pixel_lead"  # the action_type counted as
                                     # platform_conversions / platform_conversion_value
    time_zone = "Europe/Berlin"      # the ad account's time zone (its days)
    currency = "EUR"                 # expected account currency (checked against the pull)
    async_after_days = 7             # longer ranges go through a report job
    page_size = 500                  # rows per Insights page

    [connect.google]
    customer_id = "123-456-7890"
    login_customer_id = "111-222-3333"  # optional, the manager account
    level = "ad_group"               # or "campaign" (counts campaigns without ad groups too)
    time_zone = "America/New_York"
    currency = "USD"

Both platform tables also take ``base_url`` and ``api_version`` (a local test server, or a
newer API), Google ``token_url``. Credentials never live here: they come from the same
environment variables as ``[push]`` (``SIGNALLOOP_META_ACCESS_TOKEN``;
``SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN`` with ``SIGNALLOOP_GOOGLE_ACCESS_TOKEN`` or
``SIGNALLOOP_GOOGLE_REFRESH_TOKEN`` / ``_CLIENT_ID`` / ``_CLIENT_SECRET``) or the secrets file
(``[meta] access_token``; ``[google] developer_token``, ...); the environment wins.

>>> s = connect_from({"meta": {"ad_account_id": "act_42"}}, "<dict>")
>>> s.meta.ad_account_id, s.meta.node, s.lookback_days, s.google.customer_id is None
('42', 'act_42', 28, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signalloop.errors import ConfigError
from signalloop.push.settings import (
    check_currency,
    check_table,
    check_time_zone,
    credential_env,
    read_credential,
)

#: Days re-read by every pull unless configured (platforms restate recent days).
DEFAULT_LOOKBACK_DAYS = 28


@dataclass(frozen=True)
class MetaConnection:
    """``[connect.meta]``: the ad account and how its Insights are read."""

    ad_account_id: str | None = None
    optimization_event: str = "offsite_conversion.fb_pixel_lead"
    time_zone: str = "UTC"
    currency: str | None = None
    async_after_days: int = 7
    page_size: int = 500
    base_url: str = "https://graph.facebook.com"
    api_version: str = "v24.0"

    @property
    def node(self) -> str | None:
        """The ad account's Graph node, ``act_<id>``."""
        return None if self.ad_account_id is None else f"act_{self.ad_account_id}"


@dataclass(frozen=True)
class GoogleConnection:
    """``[connect.google]``: the Google Ads customer and how its reports are read."""

    customer_id: str | None = None
    login_customer_id: str | None = None
    #: ``"ad_group"`` (a row per ad group and day) or ``"campaign"`` (a row per campaign and
    #: day: campaigns without ad groups, such as Performance Max, are then counted too).
    level: str = "ad_group"
    time_zone: str = "UTC"
    currency: str | None = None
    base_url: str = "https://googleads.googleapis.com"
    api_version: str = "v22"
    token_url: str = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class ConnectSettings:
    """``[connect]``: every platform table is optional."""

    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    secrets: str | None = None
    meta: MetaConnection = field(default_factory=MetaConnection)
    google: GoogleConnection = field(default_factory=GoogleConnection)
    #: Whether the config file had a ``[connect]`` table at all.
    configured: bool = False

    def credential(self, platform: str, name: str) -> str | None:
        """A credential from the environment, else the secrets file; ``None`` when absent.

        The value goes to the caller only: never logged, printed or put in a message.
        """
        return read_credential(platform, name, self.secrets, "connect")

    def where(self, platform: str, name: str) -> str:
        """Where a missing credential can be set, for a message."""
        extra = f" or [{platform}] {name} in {self.secrets}" if self.secrets else ""
        return f"the environment variable {credential_env(platform, name)}{extra}"


def _positive(table: dict[str, Any], key: str, default: int, name: str, source: str) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{source}: [{name}] {key} must be a positive whole number, got {v!r}")
    return v


def _meta_from(table: Any, source: str) -> MetaConnection:
    t = check_table(table, "connect.meta", MetaConnection, source)
    base = MetaConnection()
    account = t.get("ad_account_id")
    if account is not None:
        account = str(account).strip().removeprefix("act_")
        if not account.isdigit():
            raise ConfigError(
                f"{source}: [connect.meta] ad_account_id is the ad account's number (as in "
                f"act_1234567890), got {t['ad_account_id']!r}"
            )
    event = str(t.get("optimization_event", base.optimization_event)).strip()
    if not event:
        raise ConfigError(f"{source}: [connect.meta] optimization_event must be an action_type")
    page = _positive(t, "page_size", base.page_size, "connect.meta", source)
    return MetaConnection(
        ad_account_id=account,
        optimization_event=event,
        time_zone=check_time_zone(t.get("time_zone", base.time_zone), "connect.meta", source),
        currency=check_currency(t.get("currency"), "connect.meta", source),
        async_after_days=_positive(
            t, "async_after_days", base.async_after_days, "connect.meta", source
        ),
        page_size=page,
        base_url=str(t.get("base_url", base.base_url)).rstrip("/"),
        api_version=str(t.get("api_version", base.api_version)),
    )


def _customer(value: Any, source: str) -> str | None:
    if value is None:
        return None
    digits = str(value).replace("-", "").strip()
    if not digits.isdigit():
        raise ConfigError(
            f"{source}: [connect.google] customer ids are 10 digits (dashes allowed), got {value!r}"
        )
    return digits


def _google_from(table: Any, source: str) -> GoogleConnection:
    t = check_table(table, "connect.google", GoogleConnection, source)
    base = GoogleConnection()
    level = t.get("level", base.level)
    if level not in ("ad_group", "campaign"):
        raise ConfigError(
            f'{source}: [connect.google] level must be "ad_group" or "campaign", got {level!r}'
        )
    return GoogleConnection(
        level=level,
        customer_id=_customer(t.get("customer_id"), source),
        login_customer_id=_customer(t.get("login_customer_id"), source),
        time_zone=check_time_zone(t.get("time_zone", base.time_zone), "connect.google", source),
        currency=check_currency(t.get("currency"), "connect.google", source),
        base_url=str(t.get("base_url", base.base_url)).rstrip("/"),
        api_version=str(t.get("api_version", base.api_version)),
        token_url=str(t.get("token_url", base.token_url)),
    )


def connect_from(table: Any, source: str, push_secrets: str | None = None) -> ConnectSettings:
    """Validate a ``[connect]`` table into :class:`ConnectSettings`.

    ``push_secrets`` is ``[push] secrets`` (already resolved), used when ``[connect]`` names
    no secrets file of its own.
    """
    t = check_table(table, "connect", ConnectSettings, source)
    secrets = t.get("secrets")
    if secrets is not None:
        p = Path(str(secrets))
        secrets = str(p if source == "<dict>" or p.is_absolute() else Path(source).parent / p)
    return ConnectSettings(
        lookback_days=_positive(t, "lookback_days", DEFAULT_LOOKBACK_DAYS, "connect", source),
        secrets=secrets if secrets is not None else push_secrets,
        meta=_meta_from(t.get("meta", {}), source),
        google=_google_from(t.get("google", {}), source),
        configured=True,
    )
