"""Budgets: read and change them, Meta and Google Ads (what ``signalloop apply`` calls).

**Meta** (``Authorization: Bearer``):

* ``GET /{version}/{campaign_or_adset_id}?fields=...``: ``id``, ``name``, ``status``,
  ``daily_budget`` / ``lifetime_budget`` (strings, minor currency units; absent when the
  object has none: a campaign without campaign budget, an ad set under one), ``campaign_id``;
* ``GET /{version}/{campaign_id}/adsets``: the campaign's ad sets, paged like Insights;
* ``POST /{version}/{id}`` with ``daily_budget`` (form or JSON): ``{"success": true}``, and an
  activity-log event (``update_campaign_budget`` / ``update_ad_set_budget``, the token's app
  as ``application_name``; a change to the same value records nothing: chosen).

  Rules: ``daily_budget`` a whole number of minor units (code 100), at least
  :data:`META_MIN_DAILY_BUDGET` (code 100, Meta's minimums depend on the currency and the
  billing event: chosen), not on an object with a lifetime budget, not on an ad set whose
  campaign has the budget (campaign budget optimisation), not on a campaign without one
  (code 100 each; wording chosen); an unknown id is code 100 subcode 33 (as for any node).
  Field names and minor units: confirmed (the SDK's ``AdSet`` / ``Campaign`` fields);
  the codes of the rule failures: chosen.

**Google Ads**:

* read through GAQL ``FROM campaign`` with ``campaign.campaign_budget``,
  ``campaign_budget.resource_name``, ``campaign_budget.amount_micros``,
  ``campaign_budget.explicitly_shared`` (:mod:`.gaql`);
* ``POST /{version}/customers/{cid}/campaignBudgets:mutate`` with ``operations`` of
  ``{"update": {"resourceName", "amountMicros"}, "updateMask": "amount_micros"}``, atomic
  unless ``partialFailure`` (then the good operations apply and ``partialFailureError`` names
  the others by ``operations[i]``), ``validateOnly`` checks without applying. Errors:
  ``mutateError: RESOURCE_NOT_FOUND`` (unknown budget), ``fieldMaskError:
  FIELD_MASK_MISSING``, ``campaignBudgetError: NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT`` (not a
  multiple of 10,000 micros), ``campaignBudgetError:
  MONEY_AMOUNT_LESS_THAN_CURRENCY_MINIMUM_CBU`` (below :data:`GOOGLE_MIN_BUDGET_MICROS`). The
  CampaignBudgetError enum and the mutate shapes are confirmed (API reference); the two
  amount codes are recalled enum values not read verbatim in a page here, and the minimum is
  chosen. A change is recorded as a ``change_event`` (``CAMPAIGN_BUDGET``, client type
  ``GOOGLE_ADS_API``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from signalloop.push.sandbox.activities import _MetaActivities, graph_time
from signalloop.push.sandbox.common import Payload
from signalloop.push.sandbox.google_changes import _ChangeEvents, change_time
from signalloop.push.sandbox.google_errors import (
    _atomic_error,
    _gerr,
    _google_error,
    _mutate_reply,
    _normalised,
)
from signalloop.push.sandbox.google_exclusions import _MUTATE_FIELDS, _OPERATION_FIELDS
from signalloop.push.sandbox.insights import _invalid, _no_object

#: Smallest Meta daily budget the sandbox takes, in minor units (chosen).
META_MIN_DAILY_BUDGET = 100
#: Smallest Google daily budget the sandbox takes, in micros (chosen: one unit).
GOOGLE_MIN_BUDGET_MICROS = 1_000_000
#: Google budgets are whole multiples of this (the smallest currency unit, 0.01).
GOOGLE_BUDGET_STEP = 10_000
#: The application the sandbox's Meta token belongs to (what the activity log names).
SANDBOX_APP = ("4242", "signalloop")

_META_OBJECT_FIELDS = (
    "id",
    "name",
    "status",
    "daily_budget",
    "lifetime_budget",
    "campaign_id",
    "account_id",
)


class _MetaBudgets(_MetaActivities):
    """Meta campaigns and ad sets with their budgets: read, list, update."""

    _meta_objects: dict[str, dict[str, Any]]

    def load_meta_objects(self, account: str, objects: Iterable[Mapping[str, Any]]) -> int:
        """Store campaigns and ad sets of an ad account: each ``id``, ``kind`` (``campaign`` or
        ``adset``), ``campaign_id`` (ad sets), optional ``name``, ``status`` (default
        ``ACTIVE``), ``daily_budget`` / ``lifetime_budget`` (minor units). Returns how many."""
        acct = str(account).removeprefix("act_")
        n = 0
        with self._lock:
            for raw in objects:
                obj = {"status": "ACTIVE", **copy.deepcopy(dict(raw)), "account_id": acct}
                if obj.get("kind") not in ("campaign", "adset"):
                    raise ValueError(f"kind must be campaign or adset: {dict(raw)!r}")
                obj["id"] = str(obj["id"])
                self._meta_objects[obj["id"]] = obj
                n += 1
        return n

    @property
    def meta_budgets(self) -> dict[str, int | None]:
        """Each stored campaign's and ad set's daily budget (minor units)."""
        with self._lock:
            return {k: v.get("daily_budget") for k, v in self._meta_objects.items()}

    def set_meta_budget(self, object_id: str, daily_budget: int) -> None:
        """Change a budget as a person in Ads Manager would (no activity-log event: tests add
        their own with :meth:`load_activities` when they want one)."""
        with self._lock:
            self._meta_objects[str(object_id)]["daily_budget"] = daily_budget

    def _meta_view(self, obj: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        wanted = [f for f in params.get("fields", "").split(",") if f.strip()] or ["id", "name"]
        out: dict[str, Any] = {"id": obj["id"]}
        for f in wanted:
            v = obj.get(f.strip())
            if f.strip() in _META_OBJECT_FIELDS and v is not None:
                out[f.strip()] = str(v) if f.strip().endswith("budget") else v
        return out

    def _meta_object(
        self, version: str, node: str, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> Payload | None:
        """``GET /{version}/{id}`` for a stored campaign or ad set; ``None`` when ``node`` is
        not one (the caller serves report jobs and accounts)."""
        with self._lock:
            obj = copy.deepcopy(self._meta_objects.get(node))
        if obj is None:
            return None
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        return 200, self._meta_view(obj, params)

    def _meta_adsets(
        self,
        version: str,
        node: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        url: str,
    ) -> Payload:
        """``GET /{version}/{campaign_id}/adsets``."""
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        with self._lock:
            camp = self._meta_objects.get(node)
            sets = [
                copy.deepcopy(o)
                for o in self._meta_objects.values()
                if o["kind"] == "adset" and str(o.get("campaign_id")) == node
            ]
        if camp is None or camp["kind"] != "campaign":
            return _no_object(node)
        rows = [self._meta_view(o, params) for o in sorted(sets, key=lambda o: o["id"])]
        return self._page(rows, params, url)

    def _meta_update(
        self, version: str, node: str, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> Payload:
        """``POST /{version}/{id}``: change a campaign's or an ad set's ``daily_budget``."""
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        with self._lock:
            obj = self._meta_objects.get(node)
            if obj is None:
                return _no_object(node)
            unknown = [k for k in params if k not in ("daily_budget", "access_token")]
            if unknown or "daily_budget" not in params:
                return _invalid(
                    f"the sandbox updates daily_budget only, got {', '.join(sorted(params))}"
                )
            text = str(params["daily_budget"]).strip()
            if not text.isdigit():
                return _invalid(
                    f"daily_budget must be a whole number of the currency's minor units (cents), "
                    f"got {text!r}"
                )
            value = int(text)
            if value < META_MIN_DAILY_BUDGET:
                return _invalid(
                    f"daily_budget {value} is below the minimum daily budget "
                    f"({META_MIN_DAILY_BUDGET} minor units)"
                )
            if obj.get("lifetime_budget") is not None:
                return _invalid(f"{node} has a lifetime budget: a daily budget cannot be set")
            if obj["kind"] == "adset":
                camp = self._meta_objects.get(str(obj.get("campaign_id")))
                if camp is not None and camp.get("daily_budget") is not None:
                    return _invalid(
                        f"ad set {node} is under a campaign budget (campaign budget "
                        "optimisation): change the campaign's daily_budget"
                    )
            elif obj.get("daily_budget") is None:
                return _invalid(
                    f"campaign {node} has no campaign budget: its ad sets carry the budgets"
                )
            old = obj.get("daily_budget")
            obj["daily_budget"] = value
            account = str(obj["account_id"])
        if old == value:  # a no-op leaves no activity-log event
            return 200, {"success": True}
        self._record_activity(
            account,
            {
                "event_time": graph_time(self.now()),
                "event_type": (
                    "update_ad_set_budget" if obj["kind"] == "adset" else "update_campaign_budget"
                ),
                "object_id": node,
                "object_type": "ADSET" if obj["kind"] == "adset" else "CAMPAIGN",
                "object_name": obj.get("name"),
                "extra_data": json.dumps({"old_value": old, "new_value": value}),
                "actor_id": "100000000000001",
                "actor_name": "signalloop system user",
                "application_id": SANDBOX_APP[0],
                "application_name": SANDBOX_APP[1],
            },
        )
        return 200, {"success": True}


_BUDGET_FIELDS = {"resourceName": str, "amountMicros": int}


class _GoogleBudgets(_ChangeEvents):
    """Campaign budgets per customer and ``campaignBudgets:mutate``."""

    _google_budgets: dict[str, dict[str, dict[str, Any]]]

    def load_google_budgets(
        self, customer: str, budgets: Mapping[str, int], *, shared: Iterable[str] = ()
    ) -> None:
        """Give campaigns budgets: campaign id -> ``amount_micros``; one budget each
        (``customers/{cid}/campaignBudgets/{campaign id}``) unless the id is in ``shared``
        (those share one explicitly shared budget, the first one's amount)."""
        cid = str(customer).replace("-", "")
        shared = list(shared)
        with self._lock:
            table = self._google_budgets.setdefault(cid, {})
            for camp, micros in budgets.items():
                bid = "shared" if camp in shared else str(camp)
                name = f"customers/{cid}/campaignBudgets/{bid}"
                b = table.setdefault(
                    name,
                    {
                        "resourceName": name,
                        "amountMicros": int(micros),
                        "explicitlyShared": bid == "shared",
                        "campaigns": [],
                    },
                )
                b["campaigns"].append(str(camp))

    @property
    def google_budgets(self) -> dict[str, int]:
        """Campaign id -> its budget's ``amount_micros``, every customer."""
        with self._lock:
            return {
                c: b["amountMicros"]
                for table in self._google_budgets.values()
                for b in table.values()
                for c in b["campaigns"]
            }

    def set_google_budget(self, customer: str, campaign_id: str, micros: int) -> None:
        """Change a campaign's budget as a person in the web UI would (no change event)."""
        with self._lock:
            for b in self._google_budgets[str(customer)].values():
                if campaign_id in b["campaigns"]:
                    b["amountMicros"] = micros

    def _budget_of(self, cid: str, campaign_id: str) -> dict[str, Any] | None:
        with self._lock:
            for b in self._google_budgets.get(cid, {}).values():
                if campaign_id in b["campaigns"]:
                    return copy.deepcopy(b)
        return None

    def _budget_mutate(self, version: str, cid: str, payload: Any) -> Payload:
        """``campaignBudgets:mutate`` (updates of ``amount_micros``)."""
        req = _normalised(payload, _MUTATE_FIELDS, "")
        ops = [
            _normalised(op, _OPERATION_FIELDS, f"operations[{i}]")
            for i, op in enumerate(req.get("operations") or [])
        ]
        for i, op in enumerate(ops):
            if "update" in op:
                op["update"] = _normalised(op["update"], _BUDGET_FIELDS, f"operations[{i}].update")
        if not ops:
            msg = "The required repeated field was empty: operations."
            err = _gerr("fieldError", "REQUIRED_NONEMPTY_LIST", msg, [{"fieldName": "operations"}])
            return _google_error(400, msg, [err], version)
        partial = req.get("partialFailure") is True
        validate_only = req.get("validateOnly") is True
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        changed: list[tuple[str, int, int, list[str]]] = []
        with self._lock:
            state = copy.deepcopy(self._google_budgets.get(cid, {}))
            for i, op in enumerate(ops):
                problem = _budget_problem(op, state)
                if problem is not None:
                    kind, code, msg, sub = problem
                    path = [{"fieldName": "operations", "index": i}, *sub]
                    errors.append(_gerr(kind, code, msg, path))
                    results.append({})
                    continue
                name = op["update"]["resourceName"]
                old = state[name]["amountMicros"]
                state[name]["amountMicros"] = int(op["update"]["amountMicros"])
                if old != state[name]["amountMicros"]:  # a no-op leaves no change event
                    changed.append(
                        (name, old, state[name]["amountMicros"], state[name]["campaigns"])
                    )
                results.append({"resourceName": name})
            if errors and not partial:
                return _atomic_error(errors, version)
            if not validate_only:
                self._google_budgets[cid] = state
        if not validate_only:
            for name, old, new, camps in changed:
                self._record_change_event(
                    cid,
                    {
                        "change_date_time": change_time(self.now(), self.google_time_zone),
                        "change_resource_type": "CAMPAIGN_BUDGET",
                        "change_resource_name": name,
                        "client_type": "GOOGLE_ADS_API",
                        "user_email": "signalloop@api.example",
                        "resource_change_operation": "UPDATE",
                        "changed_fields": "amountMicros",
                        "old_resource": {"campaignBudget": {"amountMicros": str(old)}},
                        "new_resource": {"campaignBudget": {"amountMicros": str(new)}},
                        "campaign": f"customers/{cid}/campaigns/{camps[0]}" if camps else None,
                    },
                )
        return _mutate_reply(results, errors, validate_only, version)


def _budget_problem(
    op: Mapping[str, Any], state: Mapping[str, dict[str, Any]]
) -> tuple[str, str, str, list[dict[str, Any]]] | None:
    """The error one budget operation earns (kind, code, message, path below the op)."""
    if set(op) - {"update", "updateMask"} or "update" not in op:
        return (
            "requestError",
            "OPERATION_REQUIRED",
            "The sandbox serves update operations on campaign budgets only.",
            [],
        )
    body = op["update"]
    name = body.get("resourceName")
    if not isinstance(name, str) or name not in state:
        return (
            "mutateError",
            "RESOURCE_NOT_FOUND",
            "Requested resource was not found.",
            [{"fieldName": "update"}, {"fieldName": "resource_name"}],
        )
    mask = [m.strip() for m in str(op.get("updateMask") or "").split(",") if m.strip()]
    if not mask:
        return (
            "fieldMaskError",
            "FIELD_MASK_MISSING",
            "The field mask must be provided for update operations.",
            [{"fieldName": "update_mask"}],
        )
    if any(m not in ("amount_micros", "amountMicros") for m in mask):
        return (
            "fieldMaskError",
            "FIELD_NOT_FOUND",
            f"The sandbox updates amount_micros only, the mask names {','.join(mask)}.",
            [{"fieldName": "update_mask"}],
        )
    micros = body.get("amountMicros")
    at = [{"fieldName": "update"}, {"fieldName": "amount_micros"}]
    if micros is None or int(micros) < GOOGLE_MIN_BUDGET_MICROS:
        return (
            "campaignBudgetError",
            "MONEY_AMOUNT_LESS_THAN_CURRENCY_MINIMUM_CBU",
            "The budget amount is less than the currency's minimum.",
            at,
        )
    if int(micros) % GOOGLE_BUDGET_STEP:
        return (
            "campaignBudgetError",
            "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT",
            "The budget amount must be a multiple of the currency's minimum unit.",
            at,
        )
    return None


def _json_budget(b: Mapping[str, Any] | None) -> dict[str, Any]:
    """A budget as GAQL rows carry it (field name -> value)."""
    if b is None:
        return {}
    return {
        "campaign.campaign_budget": b["resourceName"],
        "campaign_budget.resource_name": b["resourceName"],
        "campaign_budget.amount_micros": b["amountMicros"],
        "campaign_budget.explicitly_shared": b["explicitlyShared"],
    }
