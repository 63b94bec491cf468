"""Contact identities on the CRM rows: ``email``, ``phone``, ``lead_id`` and ``gclid``.

HubSpot and Salesforce exports carry who each record is; the platforms' offline-conversion
APIs match on it (hashed email and phone, Meta's Lead Ads id, Google's click id). The CRM
table gets :data:`IDENTITY_COLUMNS` after its contract columns:

* ``email`` -- one per **person** (``user_id``), the same text on every row of every record of
  that person; :data:`EMAIL_MISSING` of the persons never gave one (empty). Built from a first
  and a last name (48 each), one of four patterns (``maria.lopez``, ``lopez.maria``,
  ``maria_lopez``, ``marialopez``) and a company domain (40, under the reserved ``.example``
  top-level domain) or a free-mail stand-in (``example.com`` / ``.net`` / ``.org``, often with
  a number: ``maria.lopez88@example.net``). As people type them: ~30% with upper case
  (``Maria.Lopez@Northwind.Example``, ``Maria.lopez@...``, ``MARIA.LOPEZ@...``) and ~8% with
  spaces around (``"  Maria.Lopez@Northwind.Example"``). Distinct persons have distinct
  emails once trimmed and lower-cased (the first :data:`PERSONS` persons map one-to-one onto
  the name x pattern x domain combinations; later ones get a ``.N`` suffix), so two records
  share an email exactly when they are the same person.
* ``phone`` -- one per person, given by :data:`PHONE_SHARE` of them, in the format that
  person typed: US numbers (``+1 (415) 555-0134``, ``415-555-0134``, ``(415) 555-0134``,
  ``+14155550134``, ...; area code one of 60, exchange 555) and ~3% UK numbers from Ofcom's
  ranges for drama (``0044 20 7946 0000``, ``+44 (0)20 7946 0000``, ``020 7946 0000``, ...).
  Distinct persons have distinct numbers (digits and country) among the first
  :data:`PERSONS` persons. Some formats carry no country code, as real exports do.
* ``lead_id`` -- Meta's Lead Ads id (15-16 digits), per **record**, only on records of
  campaigns on platform ``meta``: :data:`LEAD_ID_SHARE` of them came through a lead form; the
  rest came through the website and have none.
* ``gclid`` -- HubSpot's ``hs_google_click_id``: on :data:`GCLID_SHARE` of the records of
  Google campaigns, the click id of the record's click (the touchpoint's ``click_id``,
  ``Cj0KCQiA...``), unless ``click_id_loss`` took that click's id (the form's hidden field
  was empty too).

Every value is a function of the seed and the person's or the record's number only, so a
fault that removes or adds other rows leaves a record's identity as it was, and nothing else
in the simulation draws differently: the one-to-one maps are two permutations from
``default_rng([seed, IDENTITY_STREAM])``, the per-person and per-record choices a hash of
``(seed, what, number)`` (:func:`uniform`). A duplicate record (``crm_duplicates``) carries
the identity of the record it duplicates (the ``origin`` column of the CRM arrays).

>>> import numpy as np
>>> u = uniform(0, 1, np.arange(3))
>>> bool(((0 <= u) & (u < 1)).all()), bool((u == uniform(0, 1, np.arange(3))).all())
(True, True)
>>> bool((u != uniform(1, 1, np.arange(3))).all())
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from signalloop.simulate.params import PLATFORMS, Arr

if TYPE_CHECKING:
    from signalloop.simulate.account import Account

#: the identity columns appended to the CRM table, in order
IDENTITY_COLUMNS = ("email", "phone", "lead_id", "gclid")
#: share of persons without an email
EMAIL_MISSING = 0.02
#: share of persons who gave a phone number
PHONE_SHARE = 0.70
#: share of the records of Meta campaigns that came through a lead form (carry a lead id)
LEAD_ID_SHARE = 0.60
#: share of the records of Google campaigns whose click id the CRM captured (when the click
#: kept it: ``click_id_loss`` takes it from the CRM too)
GCLID_SHARE = 0.80
#: the stream of the one-to-one maps: ``default_rng([seed, IDENTITY_STREAM])``
IDENTITY_STREAM = 13

FIRST_NAMES = (
    "maria", "james", "priya", "wei", "olivia", "ahmed", "sofia", "liam", "fatima", "lucas",
    "emma", "noah", "aisha", "mateo", "hannah", "yuki", "daniel", "grace", "omar", "elena",
    "ryan", "zoe", "ivan", "nina", "diego", "sara", "kofi", "leah", "arjun", "mia", "tomas",
    "julia", "hiro", "amara", "ben", "clara", "raj", "ines", "sam", "lena", "marco", "chloe",
    "ali", "rosa", "felix", "maya", "jonas", "ava",
)  # fmt: skip
LAST_NAMES = (
    "lopez", "smith", "patel", "zhang", "garcia", "nguyen", "kim", "muller", "rossi", "silva",
    "khan", "cohen", "novak", "okafor", "tanaka", "berg", "martin", "dubois", "schmidt",
    "jensen", "kowalski", "haddad", "reyes", "murphy", "walsh", "fischer", "moreau", "santos",
    "park", "chen", "johnson", "brown", "wilson", "taylor", "anderson", "thomas", "moore",
    "white", "harris", "clark", "lewis", "young", "wright", "hill", "scott", "adams", "baker",
    "nelson",
)  # fmt: skip
#: email local parts (``f`` first name, ``l`` last name)
PATTERNS = ("{f}.{l}", "{l}.{f}", "{f}_{l}", "{f}{l}")
COMPANIES = (
    "northwind", "bluepeak", "ironleaf", "brightpath", "clearwater", "redfern", "quantumloop",
    "silverline", "greenfield", "hightide", "oakridge", "lumenworks", "stonebridge", "nimbus",
    "pinecrest", "copperhill", "blackbirch", "sunvale", "driftwood", "keystone", "halcyon",
    "meridian", "larkspur", "wavecrest", "foxglove", "tallgrass", "riverbend", "summitiq",
    "bellweather", "cobaltbay", "amberfield", "harborview", "westwind", "maplestone",
    "starling", "cedarpoint", "orchardly", "granitepeak", "bayleaf", "tidewater",
)  # fmt: skip
#: free-mail stand-ins (reserved names, RFC 2606) and the numbers people add to their address
FREE_DOMAINS = ("example.com", "example.net", "example.org")
FREE_NUMBERS = ("", "1", "7", "23", "88", "1990")
#: the domain slots: a company each, then every free-mail domain with every number
DOMAIN_SLOTS = len(COMPANIES) + len(FREE_DOMAINS) * len(FREE_NUMBERS)
#: persons (user numbers 0 .. PERSONS - 1) with distinct emails and phones without a suffix
PERSONS = len(FIRST_NAMES) * len(LAST_NAMES) * len(PATTERNS) * DOMAIN_SLOTS
#: how the email is written: (style, cumulative share of persons); upper case about 30%
CASES = (("lower", 0.70), ("title", 0.90), ("initial", 0.96), ("upper", 1.0))
#: share of persons whose email has spaces around it (leading, trailing or both)
SPACED = 0.08

US_AREAS = (
    "206", "212", "213", "214", "215", "216", "224", "248", "253", "267", "281", "301", "303",
    "305", "310", "312", "313", "317", "323", "332", "346", "347", "404", "408", "410", "412",
    "414", "415", "425", "469", "480", "503", "508", "512", "515", "602", "609", "612", "614",
    "617", "619", "626", "646", "650", "669", "678", "702", "704", "713", "718", "720", "732",
    "763", "773", "781", "786", "801", "832", "858", "917",
)  # fmt: skip
#: Ofcom's numbers for drama: (area code without the trunk 0, the number's fixed start); the
#: last three digits run 000-999
UK_RANGES = (
    ("20", "7946 0"), ("113", "496 0"), ("114", "496 0"), ("115", "496 0"), ("116", "496 0"),
    ("117", "496 0"), ("118", "496 0"), ("121", "496 0"), ("131", "496 0"), ("141", "496 0"),
    ("151", "496 0"), ("161", "496 0"), ("191", "498 0"), ("28", "9649 6"), ("29", "2018 0"),
    ("1632", "960"), ("7700", "900"),
)  # fmt: skip
UK_NUMBERS = len(UK_RANGES) * 1000
#: phone formats, (template, cumulative share): ``a`` area, ``x`` exchange, ``n`` line (US);
#: ``a`` area, ``n`` the number (UK)
US_FORMATS = (
    ("+1 ({a}) {x}-{n}", 0.25),
    ("({a}) {x}-{n}", 0.45),
    ("{a}-{x}-{n}", 0.65),
    ("{a}.{x}.{n}", 0.73),
    ("+1 {a} {x} {n}", 0.83),
    ("+1{a}{x}{n}", 0.93),
    ("{a}{x}{n}", 1.0),
)
UK_FORMATS = (
    ("0044 {a} {n}", 0.35),
    ("+44 {a} {n}", 0.70),
    ("+44 (0){a} {n}", 0.85),
    ("0{a} {n}", 1.0),
)
#: the hash salts of the per-person and per-record choices
_SALTS = {"case": 1, "space": 2, "email": 3, "phone": 4, "format": 5, "lead": 6, "lead_id": 7}
_SALTS |= {"gclid": 8}
_M64 = (1 << 64) - 1


def _mix(x: Arr) -> Arr:
    """splitmix64's finaliser, element-wise over uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    out: Arr = x ^ (x >> np.uint64(31))
    return out


def hash64(seed: int, salt: int, keys: Arr) -> Arr:
    """A 64-bit hash of ``(seed, salt, key)`` per key (non-negative integers), as uint64."""
    s = ((seed & _M64) * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & _M64
    x = np.asarray(keys, dtype=np.int64).astype(np.uint64) + np.full(1, s, dtype=np.uint64)
    return _mix(_mix(x) ^ np.full(1, s, dtype=np.uint64))


def uniform(seed: int, salt: int, keys: Arr) -> Arr:
    """A uniform number in [0, 1) per key, from :func:`hash64` (53 bits)."""
    out: Arr = (hash64(seed, salt, keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def _pick(table: tuple[tuple[str, float], ...], u: float) -> str:
    """The entry of a cumulative-share table that ``u`` in [0, 1) falls in."""
    return next(name for name, upto in table if u < upto)


def email(n: int, y: int, case: float, space: float) -> str:
    """Person ``n``'s email from its slot ``y`` (< :data:`PERSONS`) and two uniforms.

    >>> email(0, 0, 0.1, 0.5)
    'maria.lopez@northwind.example'
    >>> email(PERSONS, 0, 0.8, 0.01)
    '  Maria.Lopez.1@Northwind.Example'
    >>> email(3, PERSONS - 1, 0.99, 0.5)
    'AVANELSON1990@EXAMPLE.ORG'
    """
    y, f = divmod(y, len(FIRST_NAMES))
    y, ln = divmod(y, len(LAST_NAMES))
    d, p = divmod(y, len(PATTERNS))
    local = PATTERNS[p].format(f=FIRST_NAMES[f], l=LAST_NAMES[ln])
    if d < len(COMPANIES):
        domain = f"{COMPANIES[d]}.example"
    else:
        k, j = divmod(d - len(COMPANIES), len(FREE_DOMAINS))
        local, domain = local + FREE_NUMBERS[k], FREE_DOMAINS[j]
    if n >= PERSONS:  # past the one-to-one range: a suffix keeps it distinct
        local += f".{n // PERSONS}"
    text = f"{local}@{domain}"
    style = _pick(CASES, case)
    if style == "title":
        text = ".".join(p[:1].upper() + p[1:] for p in text.split("."))
        text = "@".join(p[:1].upper() + p[1:] for p in text.split("@"))
    elif style == "initial":
        text = text[:1].upper() + text[1:]
    elif style == "upper":
        text = text.upper()
    if space < SPACED:
        pad = int(space / SPACED * 3)  # leading, trailing or both
        text = ("  " if pad != 1 else "") + text + (" " if pad >= 1 else "")
    return text


def phone(z: int, fmt: float) -> str:
    """The phone number of slot ``z`` (< :data:`PERSONS`) as formatted by ``fmt`` in [0, 1).

    >>> phone(0, 0.1), phone(16, 0.99), phone(UK_NUMBERS + 27, 0.5)
    ('0044 20 7946 0000', '07700 900000', '415-555-0000')
    """
    if z < UK_NUMBERS:
        line, r = divmod(z, len(UK_RANGES))
        area, start = UK_RANGES[r]
        return _pick(UK_FORMATS, fmt).format(a=area, n=f"{start}{line:03d}")
    line, a = divmod(z - UK_NUMBERS, len(US_AREAS))
    return _pick(US_FORMATS, fmt).format(a=US_AREAS[a], x="555", n=f"{line:04d}")


def identity_columns(
    acct: Account, crm: dict[str, Arr], tokens: tuple[Arr, Arr], lost: Arr
) -> tuple[dict[str, pa.Array], dict[str, Any]]:
    """The identity columns of the CRM rows (in their order), and their truth.

    Parameters
    ----------
    acct
        The account.
    crm
        The CRM arrays in table order: ``record``, ``camp``, ``user`` and, when
        ``crm_duplicates`` added records, ``origin`` (whose identity each row carries).
    tokens
        Click numbers of the leads (sorted) and their click-id tokens, for ``gclid``.
    lost
        Click numbers whose click id ``click_id_loss`` took (no ``gclid``).

    Returns
    -------
    tuple
        Column name -> string array (:data:`IDENTITY_COLUMNS`), and ``truth["identities"]``:
        the design and what the table holds (``records``, ``persons``, records ``with_*``,
        ``meta_records``, ``google_records``).
    """
    seed = acct.config.seed
    origin = crm.get("origin", crm["record"])
    persons, per_row = np.unique(crm["user"], return_inverse=True)
    rng = np.random.default_rng([seed, IDENTITY_STREAM])
    slot_email, slot_phone = rng.permutation(PERSONS), rng.permutation(PERSONS)
    u = {k: uniform(seed, _SALTS[k], persons) for k in ("case", "space", "email", "phone")}
    u["format"] = uniform(seed, _SALTS["format"], persons)
    emails, phones = [], []
    for i, n in enumerate(persons.tolist()):
        e = email(n, int(slot_email[n % PERSONS]), u["case"][i], u["space"][i])
        emails.append(None if u["email"][i] < EMAIL_MISSING else e)
        p = phone(int(slot_phone[n % PERSONS]), u["format"][i])
        phones.append(p if u["phone"][i] < PHONE_SHARE else None)
    records, rec_row = np.unique(origin, return_inverse=True)
    camp = np.zeros(len(records), dtype=np.int64)
    camp[rec_row] = crm["camp"]
    platform = np.array([c.platform for c in acct.campaigns])[camp]
    has_lead = (platform == "meta") & (uniform(seed, _SALTS["lead"], records) < LEAD_ID_SHARE)
    lead_ids = 10**14 + hash64(seed, _SALTS["lead_id"], records) % np.uint64(10**16 - 10**14)
    tn, token = tokens
    at = np.minimum(np.searchsorted(tn, records), max(len(tn) - 1, 0))
    has_click = (tn[at] == records) if len(tn) else np.zeros(len(records), dtype=bool)
    has_gclid = (platform == "google") & has_click & ~np.isin(records, lost)
    has_gclid &= uniform(seed, _SALTS["gclid"], records) < GCLID_SHARE
    prefix = PLATFORMS["google"][3]
    gclids = [prefix + token[i].decode() if h else None for i, h in zip(at, has_gclid, strict=True)]
    lead_text = [str(x) if h else None for x, h in zip(lead_ids.tolist(), has_lead, strict=True)]
    columns = {
        "email": pa.array(emails, pa.string()).take(per_row),
        "phone": pa.array(phones, pa.string()).take(per_row),
        "lead_id": pa.array(lead_text, pa.string()).take(rec_row),
        "gclid": pa.array(gclids, pa.string()).take(rec_row),
    }
    shown, first_row = np.unique(crm["record"], return_index=True)
    has = {k: np.asarray(columns[k].is_valid())[first_row] for k in IDENTITY_COLUMNS}
    plat = platform[rec_row[first_row]]
    truth = {
        "columns": list(IDENTITY_COLUMNS),
        "person": "user_id",
        "email_missing_share": EMAIL_MISSING,
        "phone_share": PHONE_SHARE,
        "lead_id_share": LEAD_ID_SHARE,
        "gclid_share": GCLID_SHARE,
        "one_to_one_persons": PERSONS,
        "records": len(shown),
        "persons": len(persons),
        "with_email": int(has["email"].sum()),
        "with_phone": int(has["phone"].sum()),
        "meta_records": int((plat == "meta").sum()),
        "with_lead_id": int(has["lead_id"].sum()),
        "google_records": int((plat == "google").sum()),
        "with_gclid": int(has["gclid"].sum()),
    }
    return columns, truth
