"""Read daily delivery per ad group from the Google Ads API, as canonical ``spend`` rows.

One GAQL query through ``googleAds:searchStream`` (``../shared/PLATFORMS.md``; the API's
``SearchGoogleAdsStreamResponse``: a JSON array of batches with ``results``)::

    SELECT segments.date, campaign.id, campaign.name, ad_group.id, ad_group.name,
           customer.currency_code, metrics.impressions, metrics.clicks, metrics.cost_micros,
           metrics.conversions, metrics.conversions_value
    FROM ad_group WHERE segments.date >= '...' AND segments.date <= '...'

(``[connect.google] level = "campaign"`` reads ``FROM campaign`` without the ad group fields:
campaigns that have no ad groups, such as Performance Max, are counted then.)

int64 values arrive as strings, doubles as numbers; ``cost_micros`` / 1,000,000 is the cost in
the account currency. ``metrics.conversions`` / ``conversions_value`` are the platform's own
counts (``platform_conversions`` / ``platform_conversion_value``). Google reports per ad group,
so ``adset_id`` is the ad group and ``ad_id`` is empty.

A stream that ends with an ``{"error": ...}`` element failed midway: its rows are dropped and the
query runs again (a read is safe to repeat). An expired access token is renewed once from the
refresh token when there is one.

>>> r = spend_row({"segments": {"date": "2026-03-01"}, "campaign": {"id": "11"},
...                "adGroup": {"id": "22"}, "customer": {"currencyCode": "USD"},
...                "metrics": {"impressions": "900", "clicks": "30", "costMicros": "12345678",
...                            "conversions": 2.5, "conversionsValue": 99.0}})
>>> r["spend"], r["platform_conversions"], r["adset_id"], r["currency"]
(12.345678, 2.5, '22', 'USD')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from signalloop.connect.meta import ReadFailed
from signalloop.connect.settings import ConnectSettings
from signalloop.errors import CredentialError
from signalloop.push.client import Client, Reply, google_auth_headers

#: Fields of the delivery query, in order.
FIELDS: tuple[str, ...] = (
    "segments.date",
    "campaign.id",
    "campaign.name",
    "ad_group.id",
    "ad_group.name",
    "customer.currency_code",
    "metrics.impressions",
    "metrics.clicks",
    "metrics.cost_micros",
    "metrics.conversions",
    "metrics.conversions_value",
)
#: Attempts at a stream that breaks midway.
STREAM_ATTEMPTS = 3


def spend_query(since: date, until: date, level: str = "ad_group") -> str:
    """The GAQL delivery query for one range, per ad group or per campaign.

    >>> spend_query(date(2026, 3, 1), date(2026, 3, 2)).endswith(
    ...     "FROM ad_group WHERE segments.date >= '2026-03-01' AND segments.date <= '2026-03-02'")
    True
    >>> "ad_group" in spend_query(date(2026, 3, 1), date(2026, 3, 2), "campaign")
    False
    """
    fields = FIELDS if level == "ad_group" else [f for f in FIELDS if not f.startswith("ad_group")]
    return (
        f"SELECT {', '.join(fields)} FROM {level} WHERE segments.date >= "
        f"'{since.isoformat()}' AND segments.date <= '{until.isoformat()}'"
    )


def _micros(value: Any) -> float | str:
    try:
        return float(Decimal(str(value)) / 1_000_000)
    except (InvalidOperation, ValueError):
        return str(value)  # the ingest's validation quarantines it, with the reason


def spend_row(
    result: Mapping[str, Any], currency: str | None = None, customer_id: str | None = None
) -> dict[str, Any]:
    """One ``searchStream`` result as a canonical ``spend`` row."""
    seg = result.get("segments") or {}
    camp = result.get("campaign") or {}
    group = result.get("adGroup") or {}
    met = result.get("metrics") or {}
    cust = result.get("customer") or {}
    return {
        "date": seg.get("date"),
        "platform": "google",
        "campaign_id": camp.get("id"),
        "adset_id": group.get("id"),
        "ad_id": None,
        "campaign_name": camp.get("name"),
        "adset_name": group.get("name"),
        "ad_name": None,
        "impressions": met.get("impressions", "0"),
        "clicks": met.get("clicks", "0"),
        "spend": _micros(met.get("costMicros", "0")),
        "platform_conversions": met.get("conversions", 0.0),
        "platform_conversion_value": met.get("conversionsValue", 0.0),
        "currency": cust.get("currencyCode") or currency,
        "attribution_setting": None,
        "account_id": cust.get("id") or customer_id,
    }


def _status(reply: Reply) -> str:
    err = reply.body.get("error")
    return str(err.get("status", "")) if isinstance(err, Mapping) else ""


class GoogleReader:
    """Reads one customer's delivery through :class:`~signalloop.push.client.Client`.

    Parameters
    ----------
    client
        The HTTP client (retries 429 with ``Retry-After``, 5xx, network failures).
    settings
        ``[connect]`` (the customer, and where the credentials come from).
    """

    def __init__(self, client: Client, settings: ConnectSettings) -> None:
        cfg = settings.google
        if cfg.customer_id is None:
            raise ValueError("the Google connection has no customer id")
        self.client, self.settings, self.cfg = client, settings, cfg
        self.customer_id: str = cfg.customer_id
        self.requests = 0
        self._headers: dict[str, str] | None = None
        self._refreshed = False

    def _need(self, name: str, what: str) -> str:
        value = self.settings.credential("google", name)
        if not value:
            raise CredentialError(
                f"no {what}: set {self.settings.where('google', name)} (signalloop never "
                "stores credentials in the workspace or signalloop.toml)"
            )
        return value

    def headers(self, renew: bool = False) -> dict[str, str]:
        """The request headers; ``renew`` gets a new access token from the refresh token."""
        if self._headers is None or renew:
            self._headers = google_auth_headers(
                self.client,
                need=self._need,
                access_token=None if renew else self.settings.credential("google", "access_token"),
                token_url=self.cfg.token_url,
                login_customer_id=self.cfg.login_customer_id,
            )
        return self._headers

    def _can_renew(self) -> bool:
        return not self._refreshed and all(
            self.settings.credential("google", n)
            for n in ("refresh_token", "client_id", "client_secret")
        )

    def call(self, method: str, body: Mapping[str, Any]) -> Reply:
        """POST ``customers/{cid}<method>`` (``/googleAds:searchStream``,
        ``/campaignBudgets:mutate``) with the auth headers, an expired access token renewed
        once; a refused credential raises :class:`CredentialError`."""
        url = f"{self.cfg.base_url}/{self.cfg.api_version}/customers/{self.customer_id}{method}"
        self.requests += 1
        reply = self.client.post(url, json_body=body, headers=self.headers())
        if reply.status == 401 and _status(reply) == "UNAUTHENTICATED" and self._can_renew():
            self._refreshed = True
            self.headers(renew=True)
            self.requests += 1
            reply = self.client.post(url, json_body=body, headers=self.headers())
        self._check_auth(reply)
        return reply

    def stream(self, query: str) -> list[dict[str, Any]]:
        """Every result row of a GAQL query (``searchStream``)."""
        problem = ""
        for _attempt in range(STREAM_ATTEMPTS):
            reply = self.call("/googleAds:searchStream", {"query": query})
            if not reply.ok:
                raise ReadFailed(f"Google Ads customer {self.customer_id}: {reply.error}")
            batches = reply.body.get("data", [reply.body])
            rows: list[dict[str, Any]] = []
            broken = None
            for b in batches if isinstance(batches, list) else []:
                if not isinstance(b, Mapping):
                    continue
                if "error" in b:
                    broken = b["error"]
                    break
                rows.extend(r for r in b.get("results", []) if isinstance(r, dict))
            if broken is None:
                return rows
            problem = str(broken.get("message", broken)) if isinstance(broken, Mapping) else ""
        raise ReadFailed(
            f"Google Ads customer {self.customer_id}: the stream broke midway "
            f"{STREAM_ATTEMPTS} times ({problem})"
        )

    def _check_auth(self, reply: Reply) -> None:
        if reply.status == 401:
            raise CredentialError(
                f"Google Ads refused the credentials ({reply.error}): set a valid "
                "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN and an OAuth refresh token "
                "(SIGNALLOOP_GOOGLE_REFRESH_TOKEN, _CLIENT_ID, _CLIENT_SECRET) so signalloop "
                "can renew expired access tokens"
            )
        if reply.status == 403:
            raise CredentialError(
                f"Google Ads refused access to customer {self.customer_id} ({reply.error}): "
                "give the OAuth user access to the account, and set [connect.google] "
                "login_customer_id to the manager account when it is reached through one"
            )

    def account(self) -> dict[str, Any]:
        """The customer's name, currency and time zone (what ``connect test`` shows)."""
        rows = self.stream(
            "SELECT customer.id, customer.descriptive_name, customer.currency_code, "
            "customer.time_zone FROM customer"
        )
        cust = (rows[0].get("customer") if rows else None) or {}
        return {
            "id": cust.get("id", self.customer_id),
            "name": cust.get("descriptiveName"),
            "currency": cust.get("currencyCode"),
            "time_zone": cust.get("timeZone"),
        }

    def rows(self, since: date, until: date) -> list[dict[str, Any]]:
        """Every ad group's (or campaign's, per ``level``) delivery per day in the range."""
        return self.stream(spend_query(since, until, self.cfg.level))


def spend_rows(
    results: Sequence[Mapping[str, Any]], currency: str | None, customer_id: str | None = None
) -> list[dict[str, Any]]:
    """``searchStream`` results as canonical ``spend`` rows."""
    return [spend_row(r, currency, customer_id) for r in results]
