"""``[push]`` in ``signalloop.toml``: where validated outcomes go, and the credentials to send them.

Everything has a default except the account ids, which only the user knows::

    [push]
    live = false                     # signalloop run pushes for real only when true
    crm_name = "HubSpot"             # Meta's lead_event_source
    secrets = "secrets.toml"         # optional; else the environment (see below)

    [push.fields]                    # CRM attributes holding identities (defaults: the usual
    email = ["email", "Email"]       # HubSpot / Salesforce column names, any case)

    [push.meta]
    pixel_id = "1234567890"          # the dataset (pixel) id events go to
    test_event_code = "TEST123"      # optional: events show in Test Events only
    [push.meta.events]               # stage = event name (default: the stage's own name)
    sql = "Qualified lead"

    [push.google]
    customer_id = "123-456-7890"
    login_customer_id = "1112223333" # optional, a manager account
    time_zone = "America/New_York"   # the account's time zone
    currency = "USD"
    [push.google.conversion_actions] # stage = conversion action id (or resource name)
    sql = "987654321"
    [push.google.campaigns]          # our campaign_id = Google's campaign id (when they differ)
    c02 = "2233445566"

Credentials never live in ``signalloop.toml``. They come from the environment
(``SIGNALLOOP_META_ACCESS_TOKEN``; ``SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN`` plus either
``SIGNALLOOP_GOOGLE_ACCESS_TOKEN`` or ``SIGNALLOOP_GOOGLE_REFRESH_TOKEN``,
``SIGNALLOOP_GOOGLE_CLIENT_ID`` and ``SIGNALLOOP_GOOGLE_CLIENT_SECRET``) or from the secrets
file (``[meta] access_token``; ``[google] developer_token``, ``access_token``,
``refresh_token``, ``client_id``, ``client_secret``); the environment wins.

>>> s = push_from({"meta": {"pixel_id": 42}}, "<dict>")
>>> s.meta.pixel_id, s.live, s.meta.event_name("sql")
('42', False, 'sql')
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from signalloop.errors import ConfigError

#: CRM attribute names that hold each identity, compared after lower-casing and dropping
#: everything but letters and digits ("Email Address" == "email_address" == "emailaddress").
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("email", "email_address", "contact_email", "work_email", "hs_email", "e_mail"),
    "phone": ("phone", "phone_number", "mobile_phone", "mobilephone", "mobile", "telephone"),
    "lead_id": (
        "lead_id",
        "meta_lead_id",
        "fb_lead_id",
        "facebook_lead_id",
        "leadgen_id",
        "hs_facebook_lead_id",
    ),
    "gclid": ("gclid", "google_click_id", "hs_google_click_id", "gclid__c"),
}
#: Campaign ``platform`` values that are Meta's and Google's.
META_PLATFORMS = ("meta", "facebook", "instagram", "fb", "ig")
GOOGLE_PLATFORMS = ("google", "google_ads", "adwords", "youtube")

_ENV = {
    ("meta", "access_token"): "SIGNALLOOP_META_ACCESS_TOKEN",
    ("google", "developer_token"): "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN",
    ("google", "access_token"): "SIGNALLOOP_GOOGLE_ACCESS_TOKEN",
    ("google", "refresh_token"): "SIGNALLOOP_GOOGLE_REFRESH_TOKEN",
    ("google", "client_id"): "SIGNALLOOP_GOOGLE_CLIENT_ID",
    ("google", "client_secret"): "SIGNALLOOP_GOOGLE_CLIENT_SECRET",
}


def read_credential(platform: str, name: str, secrets: str | None, section: str) -> str | None:
    """A credential from the environment (see ``_ENV``), else the TOML secrets file's
    ``[platform] name``; ``None`` when absent. ``section`` names the config table that set the
    secrets file, for the message when it is missing. Never logged, never in a message.
    """
    env = _ENV.get((platform, name))
    if env and os.environ.get(env):
        return os.environ[env]
    if secrets is None:
        return None
    path = Path(secrets)
    if not path.is_file():
        raise ConfigError(f"[{section}] secrets names {path}, which does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError:
        # the parser's message may quote a secret: say which file, not what it holds
        raise ConfigError(
            f"{path} is not valid TOML (message withheld: it may quote a secret)"
        ) from None
    value = doc.get(platform, {}).get(name) if isinstance(doc.get(platform), dict) else None
    return str(value) if value else None


def credential_env(platform: str, name: str) -> str:
    """The environment variable a credential is read from."""
    return _ENV[(platform, name)]


def field_key(name: str) -> str:
    """An attribute name reduced for matching: lower case, letters and digits only.

    >>> field_key("Email Address"), field_key("GCLID__c")
    ('emailaddress', 'gclidc')
    """
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class MetaSettings:
    """``[push.meta]``: the Conversions API dataset and event names."""

    pixel_id: str | None = None
    test_event_code: str | None = None
    #: stage -> event name; a stage not named here is sent under its own name.
    events: dict[str, str] = field(default_factory=dict)
    #: Stages sent (default: every funnel stage; ``lost`` is not an outcome to optimise for).
    stages: tuple[str, ...] | None = None
    base_url: str = "https://graph.facebook.com"
    api_version: str = "v24.0"

    def event_name(self, stage: str) -> str:
        """The event name a stage is sent as."""
        return self.events.get(stage, stage)


@dataclass(frozen=True)
class GoogleSettings:
    """``[push.google]``: the Ads account, its conversion actions and campaigns."""

    customer_id: str | None = None
    login_customer_id: str | None = None
    time_zone: str = "UTC"
    currency: str | None = None
    #: stage -> conversion action id or resource name; only these stages are uploaded.
    conversion_actions: dict[str, str] = field(default_factory=dict)
    #: conversion action -> its name in Google Ads (the upload file's Conversion Name).
    action_names: dict[str, str] = field(default_factory=dict)
    #: our campaign_id -> Google's numeric campaign id (default: our id when it is numeric).
    campaigns: dict[str, str] = field(default_factory=dict)
    click_window_days: int = 90
    #: Send enhanced conversions for leads (hashed email / phone) when there is no gclid.
    enhanced: bool = True
    base_url: str = "https://googleads.googleapis.com"
    api_version: str = "v22"
    token_url: str = "https://oauth2.googleapis.com/token"

    def campaign_id(self, ours: str) -> str | None:
        """Google's id of one of our campaigns, or ``None`` when it is not known."""
        mapped = self.campaigns.get(ours)
        if mapped is not None:
            return mapped
        return ours if ours.isdigit() else None


@dataclass(frozen=True)
class PushSettings:
    """``[push]``: every platform section is optional; ``live`` is false until the user says."""

    live: bool = False
    crm_name: str = "CRM"
    secrets: str | None = None
    #: Folder for dry-run request bodies in ``signalloop run`` (default ``<run.out>/push``).
    out: str | None = None
    fields: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    meta: MetaSettings = field(default_factory=MetaSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    #: Whether the config file had a ``[push]`` table at all (``run`` pushes only then).
    configured: bool = False

    def credential(self, platform: str, name: str) -> str | None:
        """A credential from the environment, else the secrets file; ``None`` when absent.

        The value is returned to the caller only; it is never logged or put in a message.
        """
        return read_credential(platform, name, self.secrets, "push")

    def env_name(self, platform: str, name: str) -> str:
        """The environment variable a credential is read from."""
        return credential_env(platform, name)


def _strs(value: Any, what: str, source: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {what} must be a table of name = value")
    return {str(k): str(v) for k, v in value.items()}


def check_table(table: Any, name: str, cls: type, source: str) -> dict[str, Any]:
    """``table`` if it is a table whose keys are fields of the dataclass ``cls`` (except
    ``configured``), else :class:`ConfigError` naming the unknown keys and the known ones."""
    return _known(table, name, cls, source)


def _known(table: Any, name: str, cls: type, source: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name for f in fields(cls)} - {"configured"}
    bad = set(table) - known
    if bad:
        raise ConfigError(
            f"{source}: unknown [{name}] key(s) {', '.join(sorted(bad))}; "
            f"expected {', '.join(sorted(known))}"
        )
    return table


def _meta_from(meta: Any, source: str) -> MetaSettings:
    meta = _known(meta, "push.meta", MetaSettings, source)
    stages = meta.get("stages")
    if stages is not None and (
        not isinstance(stages, list) or not all(isinstance(x, str) for x in stages)
    ):
        raise ConfigError(f"{source}: [push.meta] stages must be a list of stage names")
    base = MetaSettings()
    return MetaSettings(
        pixel_id=None if meta.get("pixel_id") is None else str(meta["pixel_id"]),
        test_event_code=meta.get("test_event_code") or None,
        events=_strs(meta.get("events", {}), "[push.meta.events]", source),
        stages=None if stages is None else tuple(x.lower() for x in stages),
        base_url=str(meta.get("base_url", base.base_url)).rstrip("/"),
        api_version=str(meta.get("api_version", base.api_version)),
    )


def check_time_zone(value: Any, table: str, source: str) -> str:
    """``value`` as an IANA time zone name, or :class:`ConfigError` naming ``[table]``."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = str(value)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{source}: [{table}] time_zone {tz!r} is not an IANA time zone "
            "(e.g. America/New_York): use the ad account's own zone"
        ) from None
    return tz


def check_currency(value: Any, table: str, source: str) -> str | None:
    """``value`` as an ISO 4217 code (``None`` stays ``None``), or :class:`ConfigError`."""
    if value is None:
        return None
    if not re.fullmatch(r"[A-Z]{3}", str(value)):
        raise ConfigError(
            f"{source}: [{table}] currency must be an ISO 4217 code like USD, got {value!r}"
        )
    return str(value)


def _google_from(google: Any, source: str) -> GoogleSettings:
    google = _known(google, "push.google", GoogleSettings, source)
    base = GoogleSettings()
    tz = check_time_zone(google.get("time_zone", base.time_zone), "push.google", source)
    window = google.get("click_window_days", base.click_window_days)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 90:
        raise ConfigError(f"{source}: [push.google] click_window_days must be 1-90, got {window!r}")
    currency = check_currency(google.get("currency"), "push.google", source)

    def cid(v: Any) -> str | None:
        if v is None:
            return None
        digits = str(v).replace("-", "").strip()
        if not digits.isdigit():
            raise ConfigError(
                f"{source}: [push.google] customer ids are 10 digits (dashes allowed), got {v!r}"
            )
        return digits

    return GoogleSettings(
        customer_id=cid(google.get("customer_id")),
        login_customer_id=cid(google.get("login_customer_id")),
        time_zone=tz,
        currency=None if currency is None else str(currency),
        conversion_actions=_strs(
            google.get("conversion_actions", {}), "[push.google.conversion_actions]", source
        ),
        action_names=_strs(google.get("action_names", {}), "[push.google.action_names]", source),
        campaigns=_strs(google.get("campaigns", {}), "[push.google.campaigns]", source),
        click_window_days=int(window),
        enhanced=bool(google.get("enhanced", True)),
        base_url=str(google.get("base_url", base.base_url)).rstrip("/"),
        api_version=str(google.get("api_version", base.api_version)),
        token_url=str(google.get("token_url", base.token_url)),
    )


def push_from(push: Any, source: str) -> PushSettings:
    """Validate a ``[push]`` table into :class:`PushSettings`."""
    push = _known(push, "push", PushSettings, source)
    live = push.get("live", False)
    if not isinstance(live, bool):
        raise ConfigError(f"{source}: [push] live must be true or false, got {live!r}")
    fields_ = dict(DEFAULT_FIELDS)
    given = push.get("fields", {})
    if not isinstance(given, dict) or set(given) - set(DEFAULT_FIELDS):
        raise ConfigError(
            f"{source}: [push.fields] maps {', '.join(DEFAULT_FIELDS)} to attribute names"
        )
    for k, v in given.items():
        names = [v] if isinstance(v, str) else v
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ConfigError(f"{source}: [push.fields] {k} must be a name or a list of names")
        fields_[k] = tuple(names)

    def beside_config(path: Any) -> str | None:
        if path is None:
            return None
        p = Path(str(path))
        if source == "<dict>" or p.is_absolute():
            return str(p)
        return str(Path(source).parent / p)

    return PushSettings(
        live=live,
        crm_name=str(push.get("crm_name", "CRM")),
        secrets=beside_config(push.get("secrets")),
        out=beside_config(push.get("out")),
        fields=fields_,
        meta=_meta_from(push.get("meta", {}), source),
        google=_google_from(push.get("google", {}), source),
        configured=True,
    )
