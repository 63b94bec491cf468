"""Tests of the contacts' identities on the CRM rows and of the ``crm_duplicates`` fault."""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from signalloop import simulate as sim
from signalloop.contract import KINDS
from signalloop.ingest import ingest_file
from signalloop.push.meta import lead_id, normalize
from signalloop.simulate import identities as ident
from signalloop.simulate import simulation
from signalloop.simulate.faults import DUPLICATE_SHIFT
from signalloop.simulate.identities import IDENTITY_COLUMNS
from signalloop.store import Workspace

DAYS, CAMPAIGNS, SEED = 56, 4, 11  # as tests/test_simulate.py
IDS = sim.campaign_ids(CAMPAIGNS)
# c01 meta lead, c02 google purchase, c03 meta purchase, c04 google lead
END = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=DAYS)
DUPLICATES = "crm_duplicates@*:10-30"


def config(*specs: str, **kw: Any) -> sim.SimulationConfig:
    faults = tuple(sim.parse_fault(s, days=DAYS, campaign_ids=IDS) for s in specs)
    base = {"days": DAYS, "campaigns": CAMPAIGNS, "seed": SEED, "faults": faults}
    return sim.SimulationConfig(**(base | kw))


@cache
def run(*specs: str) -> sim.Simulation:
    return sim.simulate(config(*specs))


@cache
def crm(*specs: str) -> pd.DataFrame:
    return run(*specs).tables["crm"].to_pandas()


def within(hits: int, n: int, p: float) -> bool:
    """``hits`` of ``n`` within four binomial standard deviations of the share ``p``."""
    return abs(hits - n * p) <= 4 * math.sqrt(n * p * (1 - p))


# ---- the columns and their shares ---------------------------------------------------------


def test_crm_rows_carry_the_identity_columns_after_the_contract_ones() -> None:
    tables = run().tables
    assert tables["crm"].column_names == [*KINDS["crm"].names, *IDENTITY_COLUMNS]
    assert all(tables["crm"].schema.field(c).type == pa.string() for c in IDENTITY_COLUMNS)
    for kind in ("spend", "touchpoints", "conversions", "changes"):
        assert not set(IDENTITY_COLUMNS) & set(tables[kind].column_names), kind


def test_shares_are_exact_for_the_seed_and_near_the_design() -> None:
    c = crm()
    people, records = c.drop_duplicates("user_id"), c.drop_duplicates("record_id")
    meta = records.source == "paid_social"  # c01, the meta lead campaign
    google = records.source == "paid_search"  # c04
    counts = {
        "persons": len(people),
        "email": int(people.email.notna().sum()),
        "phone": int(people.phone.notna().sum()),
        "meta": int(meta.sum()),
        "lead_id": int(records.lead_id.notna().sum()),
        "google": int(google.sum()),
        "gclid": int(records.gclid.notna().sum()),
    }
    assert counts == {
        "persons": 1630,
        "email": 1598,
        "phone": 1162,
        "meta": 197,
        "lead_id": 118,
        "google": 1469,
        "gclid": 1158,
    }
    assert within(counts["persons"] - counts["email"], counts["persons"], ident.EMAIL_MISSING)
    assert within(counts["phone"], counts["persons"], ident.PHONE_SHARE)
    assert within(counts["lead_id"], counts["meta"], ident.LEAD_ID_SHARE)
    assert within(counts["gclid"], counts["google"], ident.GCLID_SHARE)
    truth = run().truth["identities"]
    assert truth["records"] == len(records) == 1666 and truth["persons"] == 1630
    assert (truth["with_lead_id"], truth["meta_records"]) == (118, 197)
    assert (truth["with_gclid"], truth["google_records"]) == (1158, 1469)
    assert truth["with_email"] == int(records.email.notna().sum())
    assert truth["with_phone"] == int(records.phone.notna().sum())


def test_identities_are_stable_per_person_and_record() -> None:
    c = crm()
    per_person = c.groupby("user_id")[["email", "phone"]].nunique(dropna=False)
    assert (per_person == 1).all().all()  # one value (or always none) per person
    per_record = c.groupby("record_id")[["user_id", "lead_id", "gclid"]].nunique(dropna=False)
    assert (per_record == 1).all().all()
    assert c.user_id.nunique() < c.record_id.nunique()  # some persons have several records
    assert run().tables["crm"].equals(sim.simulate(config()).tables["crm"])


def test_distinct_persons_have_distinct_identities_as_the_platforms_normalise_them() -> None:
    people = crm().drop_duplicates("user_id")
    emails = [normalize("em", e) for e in people.email.dropna()]
    phones = [normalize("ph", p) for p in people.phone.dropna()]
    assert None not in emails and None not in phones  # messy, never invalid
    assert len(set(emails)) == len(emails) == 1598
    assert len(set(phones)) == len(phones) == 1162


def test_email_mess_is_case_and_spaces_only() -> None:
    e = crm().drop_duplicates("user_id").email.dropna()
    clean = e.str.strip().str.lower()
    domain = r"([a-z]+\.example|example\.(com|net|org))"
    assert clean.str.fullmatch(r"[a-z]+[._]?[a-z]+\d*(\.\d+)?@" + domain).all()
    upper, spaced = e.str.contains("[A-Z]"), e != e.str.strip()
    assert (int(upper.sum()), int(spaced.sum())) == (493, 145)
    assert within(int(upper.sum()), len(e), 0.30) and within(int(spaced.sum()), len(e), 0.08)
    assert e.str.startswith("  ").sum() == 106 and e.str.endswith(" ").sum() == 89
    assert (e[~upper & ~spaced] == clean[~upper & ~spaced]).all()


def test_phone_formats_are_mixed_us_and_uk() -> None:
    p = crm().drop_duplicates("user_id").phone.dropna()
    us = p.str.fullmatch(
        r"\+1 \(\d{3}\) 555-\d{4}|\(\d{3}\) 555-\d{4}|\d{3}-555-\d{4}|\d{3}\.555\.\d{4}"
        r"|\+1 \d{3} 555 \d{4}|\+1\d{3}555\d{4}|\d{3}555\d{4}"
    )
    uk = p.str.fullmatch(r"(0044 |\+44 |\+44 \(0\)|0)(\d{2,4}) \d{3,4} ?\d{3,4}")
    assert (us ^ uk).all()
    assert (int(us.sum()), int(uk.sum())) == (1125, 37)
    formats = p.str.replace(r"\d", "9", regex=True).nunique()
    assert formats >= 10  # as typed: with and without country code, brackets, dots, spaces
    assert p.str.startswith("0044 ").any() and p.str.fullmatch(r"\d{3}-555-\d{4}").any()


def test_lead_ids_are_meta_lead_form_ids_only_on_meta_records() -> None:
    records = crm().drop_duplicates("record_id")
    ids = records.lead_id.dropna()
    assert ids.str.fullmatch(r"[1-9]\d{14,15}").all()
    assert ids.str.len().value_counts().to_dict() == {16: 109, 15: 9}
    assert ids.is_unique
    assert set(records.source[records.lead_id.notna()]) == {"paid_social"}
    assert all(lead_id(i) == int(i) for i in ids)  # what the push sends
    assert records.gclid[records.source == "paid_social"].isna().all()


def test_gclid_is_the_google_click_of_the_record() -> None:
    tables = run().tables
    records = crm().drop_duplicates("record_id")
    has = records[records.gclid.notna()]
    assert set(has.source) == {"paid_search"}
    n = has.record_id.str[3:]
    touch = tables["touchpoints"].to_pandas()
    clicks = touch.set_index(touch.touch_id.str[1:]).click_id
    conv = tables["conversions"].to_pandas()
    leads = conv[conv.kind == "lead"]
    lead_click = leads.set_index(leads.conversion_id.str[2:]).click_id
    assert (n.map(clicks) == has.gclid).all() and (n.map(lead_click) == has.gclid).all()
    assert has.gclid.str.fullmatch(r"Cj0KCQiA[A-Za-z0-9_-]{22}").all()
    # without the attribute, the join through the person finds the same click: the last lead
    # conversion of the record's user_id before the record's first row
    google = records[records.source == "paid_search"]
    m = google.merge(leads[["user_id", "ts", "click_id"]], on="user_id", suffixes=("", "_lead"))
    last = m[m.ts_lead <= m.ts].sort_values("ts_lead").groupby("record_id").click_id.last()
    want = google.record_id.str[3:].map(lead_click).set_axis(google.record_id)
    assert len(last) == len(google) == 1469 and (last == want.loc[last.index]).all()


def test_a_lost_click_id_is_lost_to_the_crm_too() -> None:
    spec = "click_id_loss@c04:20-"
    note = run(spec).truth["faults"][0]
    lost = {f"rec{c[2:]}" for c in note["conversion_ids"] if c.startswith("cv")}
    base, bad = crm(), crm(spec)
    assert bad[bad.record_id.isin(lost)].gclid.isna().all()
    kept = ~bad.record_id.isin(lost)
    assert bad[kept].gclid.equals(base[kept].gclid)
    assert bad.drop(columns="gclid").equals(base.drop(columns="gclid"))
    assert base[base.record_id.isin(lost)].gclid.notna().sum() > 400


def test_identities_change_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the identity step every table and truth key is as with it, bar the new ones."""
    base = run(DUPLICATES, "click_id_loss@c04:20-")

    def nothing(*_: Any) -> tuple[dict[str, pa.Array], dict[str, Any]]:
        return {}, {}

    monkeypatch.setattr(simulation, "identity_columns", nothing)
    bare = sim.simulate(config(DUPLICATES, "click_id_loss@c04:20-"))
    for kind, table in base.tables.items():
        want = table.drop_columns(list(IDENTITY_COLUMNS)) if kind == "crm" else table
        assert want.equals(bare.tables[kind]), kind
    assert bare.truth.pop("identities") == {}
    assert {k: v for k, v in base.truth.items() if k != "identities"} == bare.truth


def test_the_one_to_one_maps() -> None:
    assert not set(ident.FIRST_NAMES) & set(ident.LAST_NAMES)
    names = [*ident.FIRST_NAMES, *ident.LAST_NAMES, *ident.COMPANIES]
    assert all(re.fullmatch(r"[a-z]+", x) for x in names)
    glued = {f + ln for f in ident.FIRST_NAMES for ln in ident.LAST_NAMES}
    assert len(glued) == len(ident.FIRST_NAMES) * len(ident.LAST_NAMES)
    slots = np.random.default_rng(0).choice(ident.PERSONS, 60_000, replace=False).tolist()
    emails = {ident.email(0, y, 0.0, 0.5) for y in slots}
    phones = {normalize("ph", ident.phone(z, 0.0)) for z in slots}
    assert len(emails) == len(phones) == 60_000
    beyond = {ident.email(ident.PERSONS * k, y, 0.0, 0.5) for k in (1, 2) for y in slots[:100]}
    assert len(beyond) == 200 and not beyond & emails


# ---- crm_duplicates -----------------------------------------------------------------------


def test_crm_duplicates_is_a_fault() -> None:
    assert "crm_duplicates" in sim.FAULT_NAMES
    assert sim.parse_fault(DUPLICATES, days=DAYS, campaign_ids=IDS) == sim.Fault(
        "crm_duplicates", "*", 10, 30
    )


def test_duplicates_note_matches_the_rows_exactly() -> None:
    base, bad = crm(), crm(DUPLICATES)
    note = run(DUPLICATES).truth["faults"][0]
    dups, of, shift = note["record_ids"], note["duplicate_of"], note["shift_seconds"]
    assert (len(dups), note["records_in_window"], note["share"]) == (198, 610, 0.3)
    assert within(len(dups), note["records_in_window"], 0.3)
    assert sorted(of) == sorted(shift) == dups and len(set(of.values())) == len(dups)
    assert set(bad.record_id) - set(base.record_id) == set(dups)
    # the originals' rows are exactly as before; the duplicates' are their copies, shifted
    mine = bad.record_id.isin(dups)
    assert bad[~mine].reset_index(drop=True).equals(base)
    copies = []
    for d in dups:
        rows = base[base.record_id == of[d]].copy()
        rows["ts"] = (rows.ts + pd.Timedelta(seconds=shift[d])).astype(base.ts.dtype)
        copies.append(rows[rows.ts < END].assign(record_id=d))
    want = pd.concat(copies).sort_values(["record_id", "ts", "stage"]).reset_index(drop=True)
    got = bad[mine].sort_values(["record_id", "ts", "stage"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert len(got) == note["rows"]["added"]["crm"] == 545
    assert all(DUPLICATE_SHIFT[0] <= s <= DUPLICATE_SHIFT[1] for s in shift.values())
    # same person, same identity: email, phone, lead id (meta) and gclid (google) copied
    first = got.drop_duplicates("record_id").set_index("record_id")
    assert first.lead_id.notna().any() and first.gclid.notna().any()
    assert set(first.source) == {"paid_social", "paid_search"}


def test_duplicates_are_the_windows_new_records_numbered_as_created() -> None:
    base = crm()
    note = run(DUPLICATES).truth["faults"][0]
    created = base.groupby("record_id").ts.min()
    day = (created - pd.Timestamp("2026-01-01", tz="UTC")).dt.days
    assert note["records_in_window"] == int(day.between(10, 30).sum())
    assert day[list(note["duplicate_of"].values())].between(10, 30).all()
    numbers = [int(d[3:]) for d in note["record_ids"]]
    first = (CAMPAIGNS + 1) * 10**10
    assert numbers == list(range(first, first + len(numbers)))
    born = crm(DUPLICATES).groupby("record_id").ts.min()[note["record_ids"]]
    assert born.is_monotonic_increasing  # numbered in the order they were entered


def test_duplicates_leave_every_other_kind_alone() -> None:
    base, bad = run(), run(DUPLICATES)
    for kind in ("spend", "touchpoints", "conversions", "changes"):
        assert base.tables[kind].equals(bad.tables[kind]), kind
    assert base.truth["daily"] == bad.truth["daily"]


def test_a_dropout_after_duplicates_loses_their_rows_as_any_others() -> None:
    specs = ("crm_duplicates@c01:10-30", "crm_sync_dropout@c01:25-35")
    dup, drop = run(*specs).truth["faults"]
    rows = len(crm(*specs))
    assert rows == len(crm()) + dup["rows"]["added"]["crm"] - drop["rows"]["removed"]["crm"]
    present = set(crm(*specs).record_id)
    assert set(dup["record_ids"]) <= present | set(drop["record_ids"])
    assert set(dup["record_ids"]) & set(drop["record_ids"])


# ---- written files and ingest -------------------------------------------------------------


def test_every_shape_still_writes(tmp_path: Path) -> None:
    for shape in sim.SHAPES:
        cfg = sim.SimulationConfig(days=14, campaigns=2, seed=3, shape=shape)
        paths = sim.write(sim.simulate(cfg), tmp_path / shape)
        assert set(paths) == {*sim.SHAPE_KINDS[shape], "truth"}
        for kind, path in paths.items():
            if kind == "truth":
                continue
            header = path.open().readline().strip().split(",")
            has = [c for c in header if c in IDENTITY_COLUMNS]
            assert has == (list(IDENTITY_COLUMNS) if kind == "crm" else []), (shape, kind)


def test_csv_round_trip_through_ingest_keeps_the_identities(tmp_path: Path) -> None:
    cfg = sim.SimulationConfig(
        days=28, campaigns=4, seed=5, faults=(sim.Fault("crm_duplicates", "*", 5, 20),)
    )
    s = sim.simulate(cfg)
    paths = sim.write(s, tmp_path / "data")
    with Workspace(tmp_path / "ws.duckdb") as ws:
        result = ingest_file(ws, "crm", paths["crm"])
        assert result.rows_quarantined == 0 and result.attributes == list(IDENTITY_COLUMNS)
        t = ws.table("crm")
        got = t.select(
            "record_id", "stage", "ts", **{c: t.attrs[c].str for c in IDENTITY_COLUMNS}
        ).to_pandas()
    want = s.tables["crm"].select(["record_id", "stage", "ts", *IDENTITY_COLUMNS]).to_pandas()
    key = ["record_id", "stage", "ts"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert len(got) == len(want) == s.tables["crm"].num_rows
    for c in IDENTITY_COLUMNS:  # spaces and case as written, missing as missing
        assert got[c].fillna("<none>").tolist() == want[c].fillna("<none>").tolist(), c
    assert want.email.str.startswith(" ").any() and want.lead_id.notna().any()
