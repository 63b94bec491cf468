"""Local stand-ins for the Meta Conversions API and the Google Ads REST API (issue 12).

One :class:`Sandbox` runs a FastAPI app under uvicorn on ``127.0.0.1`` (a free port, a
background thread) that answers as the platforms do, enforcing their documented rules with
its own checks: nothing here imports :mod:`signalloop.push.meta` or ``push.google``, so a bug
in our request builders shows as a rejection, not as two copies of the same mistake.

Routes (REST JSON, the wire formats of ``notes/issue12_brief.md``):

* Meta: ``POST /{version}/{pixel_id}/events`` (``Authorization: Bearer``; the Graph API's
  ``access_token`` query parameter is also accepted, and counted in :attr:`Sandbox.url_tokens`
  because it leaks into URLs and logs);
* Meta Insights (issue 15's pulls): ``GET /{version}/act_{id}/insights`` (paged),
  ``POST`` the same for a report job, ``GET /{version}/{report_run_id}`` (its status) and
  ``GET /{version}/{report_run_id}/insights``; ``GET /{version}/act_{id}`` (the account);
  ``GET /{version}/act_{id}/activities`` (the activity log: who edited what);
  ``GET`` / ``POST /{version}/{campaign_or_adset_id}`` and ``GET .../{campaign_id}/adsets``
  (budgets: what ``signalloop apply`` reads and changes);
* Google Ads: ``POST /{version}/customers/{cid}:uploadClickConversions``,
  ``POST /{version}/customers/{cid}/biddingDataExclusions:mutate``,
  ``POST /{version}/customers/{cid}/campaignBudgets:mutate``,
  ``POST /{version}/customers/{cid}/googleAds:search`` and ``googleAds:searchStream`` (the
  GAQL subset of :func:`parse_gaql`, over exclusions, the ``ad_group`` / ``campaign`` /
  ``customer`` delivery reports and ``change_event``, the edit history);
* OAuth: ``POST /token`` (form ``grant_type=refresh_token``), which issues access tokens.

The server clock is ``now`` (a datetime, a callable, or the wall clock), so a replay can run
the sandbox in simulated time.

Rules enforced, and where each fact comes from. "Confirmed" means found in the platform's
documentation or its published API definitions (the ``search`` tool, 2026: Graph API "Handling
Errors" page; googleapis ``google/ads/googleads/v22`` protos: ``conversion_upload_error``,
``conversion_upload_service``, ``bidding_data_exclusion``, ``date_error``, ``request_error``,
``authentication_error``, ``authorization_error``, ``partial_failure_error``, ``query_error``,
``quota_error``, ``internal_error``, ``mutate_error``, ``field_error``, ``string_length_error``,
``collection_size_error``, ``resource_count_limit_exceeded_error``, ``date_range_error``).
"PLATFORMS.md" means taken from ``../shared/PLATFORMS.md`` without a page found here;
"chosen" means the platform documents the rule but not the exact code, so the sandbox picks a
documented enum value that fits.

Where things are (each module's docstring lists the rules it enforces and their sources):

* :mod:`.server`: :class:`Sandbox` (lifecycle, faults, state inspection, the FastAPI app);
* :mod:`.transport`: the raw ASGI layer (request log, injected faults, dropped connections);
* :mod:`.common`: shared helpers and the server clock;
* :mod:`.meta`: the Meta Conversions API's events route and rules;
* :mod:`.insights`: the Meta Insights API (delivery rows from :meth:`Sandbox.load_delivery` or
  :meth:`Sandbox.load_spend`, pages, report jobs);
* :mod:`.activities`: Meta's ad account activity log (:meth:`Sandbox.load_activities`);
* :mod:`.budgets`: Meta and Google budgets, read and changed (:meth:`Sandbox.load_meta_objects`,
  :meth:`Sandbox.load_google_budgets`);
* :mod:`.google`: Google Ads auth, OAuth ``/token`` and routing to the methods;
* :mod:`.google_errors`: Google's error bodies and the proto3 JSON shape checks;
* :mod:`.google_conversions`: ``uploadClickConversions``;
* :mod:`.google_exclusions`: ``biddingDataExclusions:mutate``;
* :mod:`.gaql`: the GAQL subset, ``googleAds:search`` and ``googleAds:searchStream``;
* :mod:`.google_changes`: ``change_event`` and its rules (:meth:`Sandbox.load_change_events`).
"""

from __future__ import annotations

from signalloop.push.sandbox.common import Payload as Payload
from signalloop.push.sandbox.gaql import GAQL_RESOURCES, GaqlError, GaqlQuery, parse_gaql
from signalloop.push.sandbox.google import ACCESS_TOKEN_LIFETIME as ACCESS_TOKEN_LIFETIME
from signalloop.push.sandbox.google_conversions import GOOGLE_CLICK_WINDOW as GOOGLE_CLICK_WINDOW
from signalloop.push.sandbox.google_conversions import (
    GOOGLE_MAX_CONVERSIONS as GOOGLE_MAX_CONVERSIONS,
)
from signalloop.push.sandbox.google_conversions import (
    GOOGLE_MAX_USER_IDENTIFIERS as GOOGLE_MAX_USER_IDENTIFIERS,
)
from signalloop.push.sandbox.google_conversions import GOOGLE_TOO_RECENT as GOOGLE_TOO_RECENT
from signalloop.push.sandbox.google_conversions import GoogleConversion
from signalloop.push.sandbox.google_exclusions import DEVICES as DEVICES
from signalloop.push.sandbox.google_exclusions import EXCLUSION_CHANNELS as EXCLUSION_CHANNELS
from signalloop.push.sandbox.google_exclusions import (
    EXCLUSION_DESCRIPTION_MAX as EXCLUSION_DESCRIPTION_MAX,
)
from signalloop.push.sandbox.google_exclusions import EXCLUSION_MAX_ACTIVE as EXCLUSION_MAX_ACTIVE
from signalloop.push.sandbox.google_exclusions import (
    EXCLUSION_MAX_CAMPAIGNS as EXCLUSION_MAX_CAMPAIGNS,
)
from signalloop.push.sandbox.google_exclusions import EXCLUSION_MAX_LENGTH as EXCLUSION_MAX_LENGTH
from signalloop.push.sandbox.google_exclusions import EXCLUSION_NAME_MAX as EXCLUSION_NAME_MAX
from signalloop.push.sandbox.insights import META_INSIGHTS_FIELDS as META_INSIGHTS_FIELDS
from signalloop.push.sandbox.meta import META_ACTION_SOURCES, MetaEvent
from signalloop.push.sandbox.meta import META_FUTURE_SKEW as META_FUTURE_SKEW
from signalloop.push.sandbox.meta import META_HASHED_FIELDS as META_HASHED_FIELDS
from signalloop.push.sandbox.meta import META_MAX_AGE as META_MAX_AGE
from signalloop.push.sandbox.meta import META_MAX_EVENTS as META_MAX_EVENTS
from signalloop.push.sandbox.server import Sandbox
from signalloop.push.sandbox.transport import LoggedRequest

__all__ = [
    "GAQL_RESOURCES",
    "META_ACTION_SOURCES",
    "GaqlError",
    "GaqlQuery",
    "GoogleConversion",
    "LoggedRequest",
    "MetaEvent",
    "Sandbox",
    "parse_gaql",
]
