"""``signalloop connect test``: is each ad account connection usable, and if not, what is missing.

For each platform: the account id in ``[connect.<platform>]``, every credential it needs (by the
environment variable or secrets-file key to set, never by value), then one read against the
platform (the Meta ad account's name, currency and time zone; the Google Ads customer's), and
whether they match what ``signalloop.toml`` says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from signalloop.config import Settings
from signalloop.connect.google import GoogleReader
from signalloop.connect.meta import MetaReader, ReadFailed
from signalloop.errors import CredentialError
from signalloop.push.client import Client

#: Credentials each platform needs: (name, what it is). Google needs an access token or the
#: refresh-token trio.
META_CREDENTIALS = (("access_token", "Meta access token"),)
GOOGLE_CREDENTIALS = (("developer_token", "Google Ads developer token"),)
GOOGLE_REFRESH = (
    ("refresh_token", "Google OAuth refresh token"),
    ("client_id", "Google OAuth client id"),
    ("client_secret", "Google OAuth client secret"),
)


@dataclass
class ConnectionCheck:
    """One platform's connection: configured, what is missing, and what the platform said."""

    platform: str
    configured: bool = False
    account: str | None = None
    base_url: str = ""
    ok: bool = False
    missing: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def _missing(settings: Settings, platform: str) -> list[str]:
    c = settings.connect
    out = []
    needed = META_CREDENTIALS if platform == "meta" else GOOGLE_CREDENTIALS
    for name, what in needed:
        if not c.credential(platform, name):
            out.append(f"{what}: set {c.where(platform, name)}")
    if platform == "google" and not c.credential("google", "access_token"):
        for name, what in GOOGLE_REFRESH:
            if not c.credential("google", name):
                out.append(
                    f"{what} (or an access token in SIGNALLOOP_GOOGLE_ACCESS_TOKEN): "
                    f"set {c.where('google', name)}"
                )
    return out


def check_connection(settings: Settings, platform: str, client: Client) -> ConnectionCheck:
    """Check one platform's connection (never raises for a refused or missing credential)."""
    c = settings.connect
    res = ConnectionCheck(platform)
    if platform == "meta":
        res.account = c.meta.node
        res.base_url = c.meta.base_url
        if c.meta.ad_account_id is None:
            res.missing.append('[connect.meta] ad_account_id = "act_..." in signalloop.toml')
    else:
        res.account = c.google.customer_id
        res.base_url = c.google.base_url
        if c.google.customer_id is None:
            res.missing.append('[connect.google] customer_id = "123-456-7890" in signalloop.toml')
    res.configured = res.account is not None
    res.missing += _missing(settings, platform)
    if res.missing:
        return res
    try:
        if platform == "meta":
            token = c.credential("meta", "access_token") or ""
            body = MetaReader(client, c.meta, token).account()
            res.details = {
                "name": body.get("name"),
                "currency": body.get("currency"),
                "time_zone": body.get("timezone_name"),
            }
            cfg_currency, cfg_tz = c.meta.currency, c.meta.time_zone
        else:
            res.details = GoogleReader(client, c).account()
            cfg_currency, cfg_tz = c.google.currency, c.google.time_zone
    except (CredentialError, ReadFailed) as exc:
        res.error = str(exc)
        return res
    res.ok = True
    if cfg_currency and res.details.get("currency") not in (None, cfg_currency):
        res.notes.append(
            f"the account's currency is {res.details['currency']}, signalloop.toml says "
            f"{cfg_currency}"
        )
    if res.details.get("time_zone") not in (None, cfg_tz):
        res.notes.append(
            f"the account's time zone is {res.details['time_zone']}, signalloop.toml says "
            f'{cfg_tz}: set time_zone = "{res.details["time_zone"]}" so pulls read its days'
        )
    return res


def check_connections(
    settings: Settings,
    platforms: tuple[str, ...] = ("meta", "google"),
    client: Client | None = None,
) -> list[ConnectionCheck]:
    """Check each platform's connection (see :func:`check_connection`)."""
    own = client is None
    http = client or Client(retries=1)
    try:
        return [check_connection(settings, p, http) for p in platforms]
    finally:
        if own:
            http.close()
