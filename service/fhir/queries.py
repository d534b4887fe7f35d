"""The stored rows the FHIR reads and searches render: read-only SQLAlchemy Core queries on a
connection. A FHIR id is resolved to the stored row it names (a patient id, or the hash that
stands in for one that is no FHIR id; a patient and a time for an observation)."""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import and_, false, func, not_, or_, select
from sqlalchemy.engine import Connection, Row

from service.alarms import rules
from service.fhir import resources
from service.fhir.search import DateValue, Search
from models.grid import Standing
from service.storage.tables import Alarm, Message, Observation, Patient

UTC = dt.timezone.utc
_HASHED = re.compile(r"h[0-9a-f]{16}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OBSERVATION_ID = re.compile(r"(?P<patient>.+)-(?P<stamp>[0-9]{8}T[0-9]{6}(?:\.[0-9]{6})?)Z")
# What a RiskAssessment (and the Observation of the same id) is made of.
_SCORED = (Observation.patient_id, Observation.ts, Observation.vitals, Observation.risk, Observation.threshold,
           Observation.model_name, Observation.model_version, Observation.alarm_id, Observation.received_at,
           Observation.iculos)
# The stay's Encounter, for a RiskAssessment's and a Flag's `encounter` (resources.encounter).
_ENCOUNTER = (Patient.encounter_id, Patient.encounter_system, Patient.encounter_value)


def _scored():
    return (select(*_SCORED, *_ENCOUNTER, Patient.first_measured)
            .join(Patient, Patient.id == Observation.patient_id))


def monitored(row: Row) -> bool:
    """Whether a scored row's hour is at or after its patient's first measured one (`alarms.rules.monitored`)."""
    return rules.monitored(row.first_measured, row.ts)


def _hashed_ids(conn: Connection, fhir_id: str, longer_than: int | None = None) -> list[str]:
    """The stored patient ids whose hash is `fhir_id`: those with `_` or `:`, or (for an
    observation id) too long to fit beside the time."""
    if not _HASHED.fullmatch(fhir_id):
        return []
    odd = [Patient.id.contains("_", autoescape=True), Patient.id.contains(":", autoescape=True)]
    if longer_than is not None:
        odd.append(func.length(Patient.id) > longer_than)
    return [pid for pid in conn.execute(select(Patient.id).where(or_(*odd))).scalars()
            if resources.hashed(pid) == fhir_id]


def patient_ids(conn: Connection, fhir_id: str) -> list[str]:
    """The stored patient a Patient id names: the id itself, else the one it is the hash of."""
    if conn.execute(select(Patient.id).where(Patient.id == fhir_id)).first() is not None:
        return [fhir_id]
    return [pid for pid in _hashed_ids(conn, fhir_id) if resources.patient_id(pid) == fhir_id]


def patient(conn: Connection, fhir_id: str) -> Row | None:
    found = patient_ids(conn, fhir_id)
    if not found:
        return None
    return conn.execute(select(Patient.id, Patient.gender, Patient.created_at).where(Patient.id == found[0])).first()


def encounter(conn: Connection, fhir_id: str) -> Row | None:
    """The stay (patient row) whose sender's Encounter has the logical id `fhir_id`, or None: one
    at most, an Encounter being one patient's stay (ux_patients_encounter_id, migration 0013)."""
    if not _FHIR_ID.fullmatch(fhir_id):
        return None
    return conn.execute(select(Patient.id, Patient.icu_admit_time, Patient.discharged_at, Patient.unit1,
                               Patient.unit2, Patient.bed, Patient.ward_unit, Patient.ward_bed,  # status.placed reads the beds too
                               Patient.transferred_at, *_ENCOUNTER)
                        .where(Patient.encounter_id == fhir_id)).first()


def scored(conn: Connection, observation_id: str) -> Row | None:
    """The stored observation (with its risk) whose id is `observation_id`, or None."""
    m = _OBSERVATION_ID.fullmatch(observation_id)
    if not m:
        return None
    try:
        ts = dt.datetime.strptime(m["stamp"], "%Y%m%dT%H%M%S.%f" if "." in m["stamp"] else "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    ts = ts.replace(tzinfo=UTC)
    prefix = m["patient"]
    candidates = [prefix] + _hashed_ids(conn, prefix, longer_than=64 - len(observation_id) + len(prefix))
    rows = conn.execute(_scored().where(Observation.patient_id.in_(candidates), Observation.ts == ts)).all()
    # the id is made from the row again: only the row whose id it is answers (no other spelling)
    return next((r for r in rows if resources.observation_id(r.patient_id, r.ts) == observation_id), None)


def _date_match(v: DateValue, lo, hi):
    """FHIR's prefixes on the target range [lo, hi] (hi None: the point lo; a NULL hi: open)."""
    point = hi is None
    hi = lo if point else hi
    hi_reaches = (hi >= v.end) if point else or_(hi.is_(None), hi >= v.end)   # the range above the value meets it
    ends_before = (hi < v.start) if point else and_(hi.is_not(None), hi < v.start)
    within = and_(lo >= v.start, hi < v.end) if point else and_(lo >= v.start, hi.is_not(None), hi < v.end)
    return {"eq": within, "ne": not_(within), "gt": hi_reaches, "lt": lo < v.start,
            "ge": or_(hi_reaches, within), "le": or_(lo < v.start, within),
            "sa": lo >= v.end, "eb": ends_before}[v.prefix]


def _criteria(conn: Connection, search: Search, patient_col, lo, hi) -> list | None:
    """The WHERE clauses of a search; None when it can match nothing (a patient not stored)."""
    where = []
    for alternatives in search.patients:
        stored = [pid for fhir_id in alternatives for pid in patient_ids(conn, fhir_id)]
        if not stored:
            return None
        where.append(patient_col.in_(stored))
    where += [or_(*(_date_match(v, lo, hi) for v in alternatives)) for alternatives in search.dates]
    for alternatives in search.statuses:
        states = [Alarm.state == "resolved" if s == "inactive" else Alarm.state != "resolved"
                  for s in alternatives if s != "entered-in-error"]  # the service keeps no Flag in error
        where.append(or_(*states) if states else false())
    return where


def _page(conn: Connection, search: Search, query, counted, where, order) -> tuple[int, list[Row]]:
    total = conn.execute(select(func.count()).select_from(counted).where(*where)).scalar_one()
    if not search.count or search.offset >= total:
        return total, []
    return total, conn.execute(query.where(*where).order_by(*order).limit(search.count).offset(search.offset)).all()


def risk_assessments(conn: Connection, search: Search) -> tuple[int, list[Row]]:
    """(how many match, this page of them in time order)."""
    where = _criteria(conn, search, Observation.patient_id, Observation.ts, None)
    if where is None:
        return 0, []
    return _page(conn, search, _scored(), Observation, where, (Observation.ts, Observation.patient_id))


def _alarms():
    """Alarms with the storage time of the observation that raised them (for the Flag's
    lastUpdated, `last_changed`) and their stay's Encounter."""
    return (select(Alarm.id, Alarm.patient_id, Alarm.raised_at, Alarm.resolved_at, Alarm.state, Alarm.risk,
                   Alarm.threshold, Alarm.model_name, Alarm.model_version, Alarm.acknowledged_at, Alarm.snoozed_at,
                   Observation.received_at, *_ENCOUNTER)
            .join(Patient, Patient.id == Alarm.patient_id)
            .outerjoin(Observation, and_(Observation.patient_id == Alarm.patient_id, Observation.ts == Alarm.raised_at)))


def stay(row: Row) -> dict | None:
    """The Reference to the Encounter of the row's stay (a scored row's or an alarm's), if known."""
    return resources.encounter(row.encounter_id, row.encounter_system, row.encounter_value)


def last_changed(alarm: Row) -> dt.datetime:
    """When the alarm's Flag last changed: raised (its observation stored), or later acknowledged,
    snoozed or resolved (stamped on the service clock)."""
    return max(t for t in (alarm.received_at or alarm.raised_at, alarm.acknowledged_at, alarm.snoozed_at,
                           alarm.resolved_at) if t is not None)


def flags(conn: Connection, search: Search) -> tuple[int, list[Row]]:
    """(how many match, this page of them, newest first)."""
    where = _criteria(conn, search, Alarm.patient_id, Alarm.raised_at, Alarm.resolved_at)
    if where is None:
        return 0, []
    return _page(conn, search, _alarms(), Alarm, where, (Alarm.id.desc(),))


def flag(conn: Connection, fhir_id: str) -> Row | None:
    if not re.fullmatch(r"[1-9][0-9]{0,9}", fhir_id) or int(fhir_id) > 2**31 - 1:
        return None
    return conn.execute(_alarms().where(Alarm.id == int(fhir_id))).first()



def _sent(conn: Connection, where) -> list[Row]:
    return conn.execute(select(Message.patient_id, Message.hour, Message.key, Message.variable, Message.value,
                               Message.ts, Message.status, Message.source_id, Message.received_at)
                        .where(Message.source == "fhir", Message.variable.is_not(None), *where)
                        .order_by(Message.id)).all()


def _standing(rows: list[Row]) -> list[Row]:
    standing = Standing()
    for r in rows:
        standing.apply(r)
    return list(standing.values.values())


def sender_observation(conn: Connection, fhir_id: str) -> list[Row]:
    """The standing values a sender posted as Observation `fhir_id` (its own id kept as the
    messages' source id), or [] (removed in error, or none)."""
    if not _FHIR_ID.fullmatch(fhir_id):
        return []
    return _standing(_sent(conn, [Message.source_id == fhir_id]))


def senders_by_hour(conn: Connection, rows: list[Row]) -> dict[tuple[str, dt.datetime], list[str]]:
    """{(patient, hour's start): the ids of the sender's Observations whose standing values the
    hour holds}, for scored rows (hourly Observations) of one page."""
    pids = sorted({r.patient_id for r in rows})
    if not pids:
        return {}
    hours = {(r.patient_id, int(r.iculos)): r.ts for r in rows}
    out: dict[tuple[str, dt.datetime], list[str]] = {}
    found = _sent(conn, [Message.patient_id.in_(pids), Message.source_id.is_not(None)])
    for m in _standing(found):
        ts = hours.get((m.patient_id, m.hour))
        if ts is not None and _FHIR_ID.fullmatch(m.source_id or ""):
            ids = out.setdefault((m.patient_id, ts), [])
            if m.source_id not in ids:
                ids.append(m.source_id)
    return out
