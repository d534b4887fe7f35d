"""FHIR search parameters, read strictly: what each searchable resource takes, a query string
parsed into a `Search` (or a 400 OperationOutcome naming every parameter it cannot honour, as
FHIR's `handling=strict` asks: an unknown parameter is refused, never ignored), and the searchset
Bundle of one page with its `self`/`first`/`previous`/`next` links. Pure: query items in, criteria
and Bundles out; `service/fhir/queries.py` turns a `Search` into SQL.

Date search follows FHIR R4 (https://hl7.org/fhir/R4/search.html#date): a value is the range its
precision implies (`2024-03-01` is that whole UTC day, `2024-03-01T08:00Z` that minute), and each
prefix compares that range with the resource's own (an instant for RiskAssessment, the period from
raised to resolved for Flag, open while the alarm is active).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from service.fhir.outcome import Problem, Refusal

UTC = dt.timezone.utc
DEFAULT_COUNT = 500
MAX_COUNT = 10000
MAX_OFFSET = 2**31 - 1
FORMATS = ("json", "application/fhir+json", "application/json", "application/json+fhir")
FLAG_STATUS_SYSTEM = "http://hl7.org/fhir/flag-status"
FLAG_STATUSES = ("active", "inactive", "entered-in-error")
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
# A patient id as the service stores it (schemas.PATIENT_ID_PATTERN), which includes every FHIR id.
_PATIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_DATE = re.compile(r"(?P<prefix>[a-z]{2})?(?P<y>[0-9]{4})(?:-(?P<mo>[0-9]{2})(?:-(?P<d>[0-9]{2})"
                   r"(?:T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,9}))?)?"
                   r"(?P<z>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?")


@dataclass(frozen=True)
class Param:
    name: str
    type: str   # the FHIR search parameter type: reference, date, token, number
    doc: str


_PATIENT = Param("patient", "reference", "the patient: `Patient/ID` or `ID`; several comma-separated: any of them")
_SUBJECT = Param("subject", "reference", "the patient as `Patient/ID` (the subject's type named: in FHIR a subject "
                                         "may also be a Group, which this service does not keep)")
_COUNT = Param("_count", "number", f"entries per page, 0 to {MAX_COUNT} (default {DEFAULT_COUNT}; 0: only the total)")
_OFFSET = Param("_offset", "number", "entries skipped before this page (the `next` and `previous` links set it)")
_FORMAT = Param("_format", "token", "json or application/fhir+json (the only format served)")
PAGING = (_COUNT, _OFFSET, _FORMAT)
PAGING_NAMES = frozenset(p.name for p in PAGING)
SEARCHES: dict[str, tuple[Param, ...]] = {
    "RiskAssessment": (
        _PATIENT, _SUBJECT,
        Param("date", "date", "occurrenceDateTime (the scored observation's time), with a prefix eq, ne, gt, lt, "
                              "ge, le, sa or eb; repeat it for a range (`date=ge2024-03-01&date=lt2024-03-02`)")),
    "Flag": (
        _PATIENT, _SUBJECT,
        Param("date", "date", "the period from raised to resolved (open while active), with a prefix eq, ne, gt, "
                              "lt, ge, le, sa or eb; repeat it for a range"),
        Param("status", "token", "active (open, acknowledged or snoozed) or inactive (resolved)")),
}


@dataclass(frozen=True)
class DateValue:
    """One date criterion: the prefix and the range [start, end) the value's precision implies."""
    prefix: str
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class Search:
    """A parsed search: each tuple of alternatives (a comma-separated value) must match (AND of
    ORs, as repeated FHIR parameters combine)."""
    resource: str
    patients: tuple[tuple[str, ...], ...]   # FHIR ids of Patients (the service's id, or its hashed form)
    dates: tuple[tuple[DateValue, ...], ...]
    statuses: tuple[tuple[str, ...], ...]
    count: int
    offset: int
    items: tuple[tuple[str, str], ...]       # the criteria as sent, for the links (paging left out)


def _reference(param: Param, value: str) -> str:
    if value.startswith("Patient/"):
        pid = value.removeprefix("Patient/")
    elif param.name == "subject" or "/" in value:
        raise ValueError(f"{value[:80]!r} is not a Patient reference; send Patient/ID"
                         + (" (or ID alone for patient)" if param.name == "subject" else ""))
    else:
        pid = value
    if not _PATIENT_ID.fullmatch(pid):
        raise ValueError(f"{pid[:80]!r} is not a patient id (letters, digits, '.', '_', ':', '-'; at most 64)")
    return pid


def _zone(text: str) -> dt.tzinfo:
    if text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"zone {text} is not a UTC offset")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def parse_date(value: str) -> DateValue:
    """`[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]]zone]]]` as a prefix and a UTC range [start, end).
    A date alone is a UTC day (or month, or year); a time needs its zone."""
    m = _DATE.fullmatch(value)
    if not m:
        hint = " (a '+' in a zone must be sent as %2B)" if " " in value else ""
        raise ValueError(f"{value[:80]!r} is not a FHIR date search value: [prefix]YYYY[-MM[-DD[Thh:mm[:ss]zone]]], "
                         f"e.g. ge2024-03-01 or lt2024-03-01T08:00:00Z{hint}")
    prefix = m["prefix"] or "eq"
    if prefix not in PREFIXES:
        raise ValueError(f"prefix {prefix!r} is not supported; use one of {', '.join(PREFIXES)}")
    if m["h"] is not None and m["z"] is None:
        raise ValueError(f"{value[:80]!r} has a time but no zone: add Z or an offset such as %2B01:00")
    y, mo, d = int(m["y"]), int(m["mo"] or 1), int(m["d"] or 1)
    try:
        if m["h"] is None:
            start = dt.datetime(y, mo, d, tzinfo=UTC)
            if m["d"]:
                end = start + dt.timedelta(days=1)
            elif m["mo"]:
                end = start.replace(year=y + mo // 12, month=mo % 12 + 1)
            else:
                end = start.replace(year=y + 1)
        else:
            digits = (m["f"] or "")[:6]
            micro = int(digits.ljust(6, "0")) if digits else 0
            start = dt.datetime(y, mo, d, int(m["h"]), int(m["mi"]), int(m["s"] or 0), micro, tzinfo=_zone(m["z"]))
            step = (dt.timedelta(microseconds=10 ** (6 - len(digits))) if digits else
                    dt.timedelta(seconds=1) if m["s"] else dt.timedelta(minutes=1))
            start = start.astimezone(UTC)
            end = start + step
    except (ValueError, OverflowError) as err:
        raise ValueError(f"{value[:80]!r} is not a date: {err}") from None
    return DateValue(prefix, start, end)


def _token(value: str) -> str:
    system, bar, code = value.rpartition("|")
    if bar and system not in ("", FLAG_STATUS_SYSTEM):
        raise ValueError(f"system {system[:80]!r} is not {FLAG_STATUS_SYSTEM}")
    if code not in FLAG_STATUSES:
        raise ValueError(f"{code[:80]!r} is not a Flag status; one of {', '.join(FLAG_STATUSES)}")
    return code


def _number(value: str, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", value) or int(value) > high:
        raise ValueError(f"{value[:80]!r} is not a whole number from 0 to {high}")
    return int(value)


def parse(resource: str, items: list[tuple[str, str]]) -> Search:
    """The search, or a Refusal(400) with one issue per parameter that is unknown, repeated where
    it cannot be, empty or malformed."""
    known = {p.name: p for p in SEARCHES[resource] + PAGING}
    problems: list[Problem] = []
    patients, dates, statuses, criteria = [], [], [], []
    paging: dict[str, str] = {}
    for name, value in items:
        param = known.get(name)
        if param is None:
            problems.append(Problem(name[:80], f"unknown search parameter {name[:80]!r} for {resource}; this service "
                                               f"searches {resource} by {', '.join(known)} (see GET /fhir/metadata)",
                                    code="not-supported"))
            continue
        if name in PAGING_NAMES:
            if name in paging:
                problems.append(Problem(name, f"{name} is given more than once"))
            paging[name] = value
            continue
        if value == "":
            problems.append(Problem(name, f"{name} has no value"))
            continue
        try:
            alternatives = value.split(",")
            if param.type == "reference":
                patients.append(tuple(_reference(param, v) for v in alternatives))
            elif param.type == "date":
                dates.append(tuple(parse_date(v) for v in alternatives))
            else:
                statuses.append(tuple(_token(v) for v in alternatives))
        except ValueError as err:
            problems.append(Problem(name, f"{name}: {err}"))
            continue
        criteria.append((name, value))
    count, offset = DEFAULT_COUNT, 0
    for name, value in paging.items():
        try:
            if name == "_count":
                count = _number(value, MAX_COUNT)
            elif name == "_offset":
                offset = _number(value, MAX_OFFSET)
            elif value not in FORMATS:
                raise ValueError(f"{value[:80]!r} is not served; this service answers JSON only ({', '.join(FORMATS)})")
        except ValueError as err:
            problems.append(Problem(name, f"{name}: {err}", code="not-supported" if name == "_format" else "invalid"))
    if problems:
        raise Refusal(400, problems)
    return Search(resource, tuple(patients), tuple(dates), tuple(statuses), count, offset, tuple(criteria))



def _link(base: str, search: Search, offset: int) -> str:
    query = urlencode([*search.items, ("_count", str(search.count)), ("_offset", str(offset))])
    return f"{base}/{search.resource}?{query}"


def searchset(resources: list[dict], total: int, search: Search, base: str) -> dict:
    """One page of matches: `total` counts every match; `next` and `previous` page through them."""
    links = [("self", search.offset), ("first", 0)]
    if search.offset > 0:
        links.append(("previous", max(0, search.offset - search.count) if search.count else 0))
    if search.count and search.offset + search.count < total:
        links.append(("next", search.offset + search.count))
    return {"resourceType": "Bundle", "type": "searchset", "total": total,
            "link": [{"relation": rel, "url": _link(base, search, off)} for rel, off in links],
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}
