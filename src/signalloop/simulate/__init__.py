"""A seeded generative model of an ad account that writes the canonical kinds of a data shape.

:class:`Account` (campaigns, ad sets, ads, creatives, a user pool, a budget plan and edit log)
is built from a :class:`SimulationConfig` and delivered one day at a time by
:meth:`Account.step`; :func:`simulate` runs every day at the account's own plan, right-censors
what has not happened by the end of the last day, applies the observation faults and returns
the tables of the config's data shape plus a complete ``truth`` dictionary (and the per-click
``oracle``); :func:`write` writes them as CSV + JSON.

Data shapes
-----------
Real accounts export partial data. ``SimulationConfig.shape`` (:data:`SHAPES`; the CLI's
``signalloop simulate --shape``) picks the kinds written (:data:`SHAPE_KINDS`):

* ``spend`` -- ``spend.csv`` only, with the platform-reported ``platform_conversions`` and
  ``platform_conversion_value`` (a platform export alone);
* ``spend_conversions`` -- spend and ``conversions.csv`` (orders or deals: every row carries
  the ``campaign_id`` of its click's UTM tags, the ``click_ts`` the site stored, ``user_id``
  and ``click_id``; the sql / opportunity / deal rows of lead campaigns are in it too);
* ``crm`` -- spend, conversions (as above) and ``crm.csv``;
* ``full`` (the default) -- all five kinds: spend, touchpoints, conversions (campaign_id on
  the pixel's rows only; the others join a touchpoint by click_id), crm and changes.

The world is the same for every shape: same seed, same delivery, conversions, platform
counts, faults and truth (``truth["config"]`` records ``shape``, ``kinds`` and
``click_ts``); only what is observed differs, so ``spend.csv`` is byte-identical across
shapes. ``SimulationConfig(click_ts=False)`` (``--no-click-ts``) leaves the ``click_ts``
column out of the conversions, in any shape: an export that never stored the click time.

Generative story
----------------
* **Campaigns** ``c01..cK`` alternate meta / google (``c05`` is linkedin when K >= 5); c01 is a
  B2B ``lead`` campaign (CRM path), c02 and c03 e-commerce ``purchase``, c04 lead, linkedin
  lead, and so on (every third campaign lead). Baseline daily budgets are spread log-uniformly
  over 60-800 USD (shuffled), so some ad sets make well over and some well under 50
  conversions per 7 days. Budgets are campaign level, split over 1-3 ad sets by fixed shares.
* **Delivery**: spend = budget x share x LogNormal(0, 0.08) (at most +25%); impressions =
  k x spend^b x LogNormal(0, 0.05), b ~ U(0.70, 0.85) (diminishing returns), k such that the
  baseline budget buys at the platform CPM (meta 9, google 24, linkedin 38 USD). Impressions
  and spend split over the ad set's live ads with weight ~ CTR^2 x Gamma noise.
* **Creatives**: each ad runs one creative at a time with expected CTR
  ``peak * (floor + (1 - floor) * exp(-lam_freq * freq - lam_age * age))`` where
  ``freq = cumulative impressions / ad-set audience`` and ``age`` is in days; clicks ~
  Binomial(impressions, CTR x LogNormal(0, 0.1)). The **fatigue onset** is the first day whose
  expected CTR (at the start of the day) is below 70% of the peak. When a live creative is
  below 60%, the ad set is refreshed with probability 0.4 a day: every creative below 70% gets
  a successor (``changes`` rows, field ``creative``, actor automation 70% / human 30%; one
  learning reset), except during ``creative_starvation``.
* **Conversions**: each click converts with the ad set's CVR (meta/google/linkedin lead 7/5/10%,
  purchase 3/4%) x phase multiplier x daily noise (stable 1.0, sd 0.08; learning 0.8, sd 0.3;
  learning-limited 0.9, sd 0.2). Click-to-conversion delay in hours is LogNormal with median
  ~24 h (x exp(N(0, 0.2)) per campaign) and sigma ~ U(0.9, 1.2); purchase values LogNormal
  (mean 40-160 USD per campaign, sigma 0.6). 75-90% of conversions come from the ``pixel``
  (with campaign_id, adset_id, creative_id), the rest from ``server`` (click_id only).
  ``spend.platform_conversions`` is the platform's own count, noisy and over-counting as
  platforms' are: the tracked pixel/server conversions on their click day and ad plus an
  excess (view-through and modelled conversions, and conversions another platform's click
  also claims) of ``floor(tracked * (m - 1) * e + u)``, with an over-count factor ``m ~
  U(1.10, 1.40)`` per campaign, ``e ~ LogNormal(-s^2/2, s)``, ``s = 0.3``, per campaign and
  day, ``u ~ U(0, 1)``; ``platform_conversion_value`` scales the tracked value alike. Its
  own stream per campaign; ``truth["campaigns"][id]["platform_conversions"]`` has
  ``overcount`` (``m``), ``day_sigma``, ``tracked`` and ``reported``.
* **CRM** (lead campaigns): each lead becomes a record with a ``lead`` row minutes after the
  conversion, then mql / sql / opportunity / won with rates ~(0.5, 0.5, 0.6, 0.3) and
  LogNormal lags (medians 1.5, 4, 7, 21 days, sigma 0.8): lead-to-won ~5 weeks, tail to months.
  80% of records that stop early get a ``lost`` row (median 10 days later). As in offline
  conversion imports, reaching sql, opportunity and won is also a conversion (kind ``sql``,
  ``opportunity``, ``deal``; source ``offline`` for meta/linkedin, ``crm`` for google) at the
  stage's time with the originating click_id and click_ts; value none for sql, the
  opportunity amount for opportunity, the won amount for deal. About 0.45 offline
  conversions per lead (sql 0.25, opportunity 0.15, deal 0.045). Ids share the click's
  number ``N``: touch ``tN``, conversion ``cvN``, CRM record ``recN``, and the record's
  offline conversions ``sqN``, ``opN``, ``dlN``.
* **Identities** (appended to the CRM rows after the contract columns, as HubSpot and
  Salesforce exports carry them): ``email`` and ``phone`` per person (``user_id``), the
  same text on all of that person's rows, typed as people do (case, spaces around, phone
  formats with and without the country code; 2% of persons give no email, 70% a phone);
  ``lead_id`` (Meta's 15-16 digit Lead Ads id) on 60% of the records of meta campaigns;
  ``gclid`` (the record's Google click id, as the touchpoint's ``click_id``) on 80% of the
  records of google campaigns whose click kept its id. Distinct persons have distinct
  emails and phones. Every value is a function of the seed and the person's or record's
  number only: nothing else draws differently and a fault that removes rows leaves the
  others' identities as they were. ``truth["identities"]`` has the design and the counts;
  see :mod:`~signalloop.simulate.identities`.
* **Edits**: per campaign a human budget edit every ~21 days (ratio LogNormal(0, 0.22), so some
  exceed 20%) and an automation budget rule every ~7 days (< 15%); per ad set human targeting
  (~1/120 days) and bid (~1/150) edits, rare bid_strategy / optimization_event edits; platform
  pauses single ads for 1-2 days (~1/150 days). An edit on day d governs all of day d.
* **Learning phase** per ad set: launch (day 0) and every significant edit (budget change
  > 20%, bid, bid_strategy, targeting, creative, optimization_event, un-pausing after >= 7
  days) reset it to ``learning``; it turns ``stable`` once 50 conversions (counted on the click
  day) accrue within 7 days of the reset, else ``learning_limited`` until 7 days hold 50.
* **Traits** (audience and ad context, appended to the touchpoints after the contract
  columns): ``device`` (mobile / desktop / tablet), ``age_band`` (18-24 .. 55+),
  ``placement`` (per platform: meta feed / stories / reels / audience_network, google
  search / display / youtube / discover, linkedin feed / sponsored_messaging / right_rail)
  and, for lead campaigns, ``company_size`` (1-10 .. 1000+). They are drawn after the
  world's outcomes, from a stream of their own, given each click's outcome depth ``d`` (0
  none, 1 converted, 2 reached sql, 3 reached won): ``pi_d ∝ pi0 * exp(beta_d * effect)``,
  each trait a 1.8-2.3x likelihood ratio between its best and worst category for
  converting; ``company_size`` mostly predicts sql and won. Nothing else changes. By Bayes
  the true probability of each click (given its ad set's ``p`` and its traits) is exact:
  ``Simulation.oracle`` (``p_adset``, ``p_conversion``, ``p_sql``, ``p_won``, ``depth``)
  and the design in ``truth["traits"]``; see :mod:`~signalloop.simulate.traits`.

Healthy campaigns (``SimulationConfig.healthy``, off by default): named campaigns are run
well. Each ad set's baseline spend is raised to what makes its expected conversions per 7
days at least ``HEALTHY_VOLUME`` (2) x the threshold (the campaign's budget is their sum,
the shares follow; ``k`` and the audience follow the spend as if drawn with it), and the
creatives have a pipeline: an ad set is refreshed with certainty once a live creative is
below 75% of its peak (before the onset), taking along every creative below 85%, and the
campaign launches a new creative (the stalest one's successor) whenever nothing new has
launched for ``HEALTHY_CADENCE_DAYS`` (14) days. Nothing extra is drawn: the other campaigns'
world (delivery, conversions, CRM, edits, users) is exactly as without the option; only the
observation faults that draw over every row at once (``late_offline_conversions`` delays,
``duplicate_events`` copies, ``utm_mess`` variants, ``crm_duplicates`` over several
campaigns) draw differently, as with any change of
another campaign's volume. Faults still apply to a healthy campaign (``creative_starvation``
blocks its pipeline). ``truth["campaigns"][id]["healthy"]`` records the drawn budget and
shares and the scale applied.

Faults (:data:`FAULT_NAMES`): ``creative_starvation``, ``override_storm``, ``low_volume`` and
``audience_bias`` (in its window ~85% of the campaign's converting clicks go to users who had
converted a day or more before; counts unchanged) change the world; the others only what is
observed: ``tracking_outage`` (pixel / server conversions lost), ``crm_sync_dropout`` (CRM
rows and offline conversions lost), ``utm_mess`` (messy utm_source / utm_medium),
``duplicate_events``, ``stage_overwrite``, ``crm_duplicates`` (~30% of the records created in
the window entered a second time under a new record id: same person and identity, every stage
row copied minutes to hours later; the note maps each duplicate to its original, see
:func:`~signalloop.simulate.faults.duplicate_records`), ``late_offline_conversions``,
``click_id_loss``
(from its start day, ``LOSS_SHARE`` = 70% of the campaign's clicks are never tied to their
click id: their conversions arrive with ``user_id`` only, no click_id, click_ts or
campaign_id, so attribution falls back to the user's last touchpoint; the touchpoints and
the platform's counts are unchanged; see :func:`~signalloop.simulate.faults.lose_click_ids`),
and ``export_glitches`` only the written CSV text (a few rows per file corrupted, each with
its quarantine reason code; the tables stay clean, see :mod:`~signalloop.simulate.glitches`).
Each campaign draws from its own random streams, so a fault on one campaign leaves the
others' rows unchanged. ``truth["faults"]`` records each fault's window (day indexes and
dates), row counts (``rows``: removed / changed / added per table) and affected ids.

Where things live
-----------------
* :mod:`~signalloop.simulate.config` -- :class:`SimulationConfig`, :class:`Fault`,
  :func:`parse_fault`, :func:`campaign_ids`, :data:`FAULT_NAMES`, :data:`SHAPES`,
  :data:`SHAPE_KINDS`.
* :mod:`~signalloop.simulate.params` -- the model's fixed parameters.
* :mod:`~signalloop.simulate.entities` -- campaigns, ad sets, ads, creatives, edits,
  :class:`DayEvents` and the event column arrays.
* :mod:`~signalloop.simulate.account` -- :class:`Account`: building the world and
  :meth:`Account.step`; its plan in :mod:`~signalloop.simulate.plan`, one day's delivery in
  :mod:`~signalloop.simulate.delivery`.
* :mod:`~signalloop.simulate.simulation` -- :func:`simulate` and :class:`Simulation`; the
  observation faults in :mod:`~signalloop.simulate.faults`, the tables in
  :mod:`~signalloop.simulate.tables`, the truth in :mod:`~signalloop.simulate.truth`.
* :mod:`~signalloop.simulate.glitches` -- ``export_glitches``: which rows, how corrupted.
* :mod:`~signalloop.simulate.traits` -- the clicks' traits and the oracle.
* :mod:`~signalloop.simulate.identities` -- the contacts' identities on the CRM rows.
* :mod:`~signalloop.simulate.output` -- :func:`write`.
"""

from signalloop.simulate.account import Account
from signalloop.simulate.config import (
    FAULT_NAMES,
    SHAPE_KINDS,
    SHAPES,
    Fault,
    SimulationConfig,
    campaign_ids,
    parse_fault,
)
from signalloop.simulate.entities import Change, DayEvents
from signalloop.simulate.output import write
from signalloop.simulate.simulation import Simulation, simulate

__all__ = [
    "FAULT_NAMES",
    "SHAPES",
    "SHAPE_KINDS",
    "Account",
    "Change",
    "DayEvents",
    "Fault",
    "Simulation",
    "SimulationConfig",
    "campaign_ids",
    "parse_fault",
    "simulate",
    "write",
]
