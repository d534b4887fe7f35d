"""The dashboard's only way to the service: a small typed HTTP client.

Every failure becomes an `ApiError` whose `message` is written for the person at the screen
(what went wrong and what to do), so pages show it as is and never a stack trace.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT_S = 5.0


class ApiError(Exception):
    """A request that did not give the expected answer. `kind` lets pages react (e.g. 'auth')."""

    def __init__(self, message: str, kind: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind          # unreachable / timeout / auth / forbidden / not_found / conflict / invalid / server / protocol
        self.status = status


def _ts(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    out = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return out if out.tzinfo else out.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    model: str | None
    model_version: str | None
    provider: str | None
    threshold: float | None
    database: str


@dataclass(frozen=True)
class PatientSummary:
    patient_id: str
    first_observation: dt.datetime | None
    last_observation: dt.datetime | None
    n_observations: int
    last_risk: float | None
    active_alarm_id: int | None
    outcome: str | None
    onset_time: dt.datetime | None
    icu_admit_time: dt.datetime | None
    unit: str | None = None  # "MICU", "SICU", "other"; None when not recorded
    status: str = "monitoring"  # monitoring / in_treatment (sepsis recorded) / discharged
    last_measured: dt.datetime | None = None  # the newest observation that carried a measured value
    bed: str | None = None
    first_measured: dt.datetime | None = None  # the first measured hour's start: monitored from it


@dataclass(frozen=True)
class Alarm:
    id: int
    patient_id: str
    raised_at: dt.datetime
    risk: float
    threshold: float
    model_name: str
    model_version: str
    state: str
    verdict: str
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    ack_reason: str | None = None
    ack_note: str | None = None
    snoozed_until: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    resolved_by: str | None = None
    resolve_note: str | None = None
    snoozed_by: str | None = None
    snoozed_at: dt.datetime | None = None
    contributions: list[Contribution] = field(default_factory=list)
    history: list[AuditEvent] = field(default_factory=list)
    kind: str = "raised"  # "raised", or the policy's re-alert / escalation (models/alarm_policy.py)
    previous_alarm_id: int | None = None


@dataclass(frozen=True)
class Contribution:
    """One input's share in a risk: `delta` = risk as posted minus risk with its latest value replaced by a
    normal reference value (models/reference_values.csv). basis "not measured": a vital sign or lab not
    measured for more than 24 h (or never), `delta` = how much a normal value measured now would lower
    the risk, `value` the last one measured (None: never)."""
    feature: str
    value: float | None
    delta: float
    reference: float | None = None    # the normal value it was compared with (None: administrative field)
    hours_since: float | None = None  # the value's age at that risk (0: posted with it; None: never measured)
    system: str | None = None         # the variable's organ system ("administrative" for Age, units ...)
    basis: str = "value"              # "value", or "not measured" (the service's Contribution.basis)
    unit: str | None = None           # of value and reference (None: administrative, or stored before units)


@dataclass(frozen=True)
class AuditEvent:
    id: int | None
    action: str
    at: dt.datetime | None
    key_name: str | None
    role: str | None
    person: str | None
    patient_id: str | None = None
    alarm_id: int | None = None
    unit: str | None = None
    note: str | None = None
    details: dict | None = None


@dataclass(frozen=True)
class TimelineEntry:
    timestamp: dt.datetime
    vitals: dict[str, float]
    risk: float
    alarm: bool
    alarm_id: int | None
    model: str
    model_version: str
    contributions: list[Contribution] = field(default_factory=list)
    # values of the hour outside their plausible range (variable -> the service's reason): stored
    # and scored as charted; empty from a service that does not send them
    warnings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientDetail:
    summary: PatientSummary
    unit: str | None              # "MICU", "SICU", "other" or None when not recorded
    age: float | None
    gender: float | None
    discharged_at: dt.datetime | None
    timeline: list[TimelineEntry] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    bedside: dict | None = None   # service/patients/bedside.py's context (qSOFA, SIRS, SOFA, lactate, latest); None if not served
    audit: list[AuditEvent] | None = None  # None when the service does not return an audit trail
    threshold: float | None = None        # the threshold in force for the patient's unit
    operating_point: str | None = None
    risk_in_words: str | None = None


@dataclass(frozen=True)
class Stats:
    alarms: int
    patients: int
    patient_days: float
    alarms_per_patient_day: float | None
    alarms_with_outcome: int
    true_alarms: int
    false_alarms: int
    positive_predictive_value: float | None
    false_positive_rate: float | None
    septic_patients: int
    septic_patients_alarmed_in_time: int
    median_lead_time_hours: float | None
    window_hours: tuple[float, float]


@dataclass(frozen=True)
class PeriodFigures:
    """One unit's operating-point period of GET /stats/periods with its own alarm figures."""
    unit: str
    point_id: str | None
    threshold: float
    start: dt.datetime | None       # None: from the beginning of the record
    end: dt.datetime | None         # None: still in force
    chosen_by: str | None
    patients: int
    patient_days: float
    alarms: int
    alarms_per_patient_day: float | None
    septic_patients: int
    septic_patients_alarmed_in_time: int
    caught_in_window: float | None
    median_lead_time_hours: float | None
    alarmed_before_onset: float | None
    ppv_per_stay: float | None
    positive_predictive_value: float | None
    red_share: float | None
    cause: str | None = None        # point_change / model_switch; None: a unit's first period (or an older service)
    model: str | None = None        # the model in force when it opened
    model_version: str | None = None


@dataclass(frozen=True)
class Clock:
    mode: str                       # wall / simulated (the feed's time stamps actions)
    now: dt.datetime
    latest_observation: dt.datetime | None


@dataclass(frozen=True)
class WardCounts:
    """GET /ward: the counts the ward and the alarm queue both show, on the service's clock."""
    on_ward: int
    in_treatment: int
    open: int
    acknowledged: int
    snoozed: int
    clock: Clock


@dataclass(frozen=True)
class LatestValue:
    feature: str
    value: float | str | None
    unit: str | None
    measured_at: dt.datetime | None
    age_hours: float | None
    window_hours: float | None = None  # how long the bedside scores count the value (None: no limit)


@dataclass(frozen=True)
class QueueCard:
    """GET /alarms/queue: one active alarm as a nurse works it."""
    alarm_id: int
    state: str
    raised_at: dt.datetime
    open_minutes: float
    patient_id: str
    unit: str | None
    bed: str | None
    status: str
    threshold: float
    operating_point: str | None
    risk_at_raise: float
    risk: float | None
    risk_at: dt.datetime | None
    trend: list[tuple[dt.datetime, float]]
    risk_in_words: str | None
    contributions: list[Contribution]
    latest_contributions: list[Contribution]
    latest: list[LatestValue]
    bedside: dict | None
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    ack_reason: str | None = None
    snoozed_until: dt.datetime | None = None
    kind: str = "raised"
    previous_alarm_id: int | None = None


@dataclass(frozen=True)
class AlarmQueue:
    now: dt.datetime
    clock: str
    cards: list[QueueCard]


@dataclass(frozen=True)
class UnitChoice:
    unit: str
    point_id: str | None      # None: no choice made, the model card's threshold
    threshold: float
    label: str | None
    chosen_by: str | None
    chosen_at: dt.datetime | None
    note: str | None


@dataclass(frozen=True)
class OperatingPoints:
    model: str
    model_version: str
    card_threshold: float
    table: dict | None        # the model's operating_points.json as served; None when it ships none
    units: list[UnitChoice]

    def threshold_for(self, unit: str | None) -> float:
        """The threshold a patient of `unit` alarms at (no unit recorded alarms as 'other')."""
        wanted = unit or "other"
        return next((u.threshold for u in self.units if u.unit == wanted), self.card_threshold)


def unit_name(unit1: float | None, unit2: float | None) -> str | None:
    """The admission's ICU type from the PhysioNet one-hot (service/inputs.py UNIT_CODES)."""
    if unit1 == 1:
        return "MICU"
    if unit2 == 1:
        return "SICU"
    if unit1 == 0 and unit2 == 0:
        return "other"
    return None


def _summary(d: dict) -> PatientSummary:
    return PatientSummary(patient_id=d["patient_id"], first_observation=_ts(d.get("first_observation")),
                          last_observation=_ts(d.get("last_observation")), n_observations=int(d["n_observations"]),
                          last_risk=d.get("last_risk"), active_alarm_id=d.get("active_alarm_id"),
                          outcome=d.get("outcome"), onset_time=_ts(d.get("onset_time")),
                          icu_admit_time=_ts(d.get("icu_admit_time")), unit=d.get("unit"),
                          status=d.get("status", "monitoring"), last_measured=_ts(d.get("last_measured")),
                          bed=d.get("bed"), first_measured=_ts(d.get("first_measured")))


def _contributions(items: list | None) -> list[Contribution]:
    def number(x):
        return None if x is None else float(x)
    return [Contribution(feature=str(c["feature"]), value=number(c.get("value")), delta=float(c["delta"]),
                         reference=number(c.get("reference")), hours_since=number(c.get("hours_since")),
                         system=c.get("system"), basis=str(c.get("basis") or "value"), unit=c.get("unit"))
            for c in (items or [])]


def _audit_event(d: dict) -> AuditEvent:
    actor = d.get("actor") or {}
    return AuditEvent(id=d.get("id"), action=str(d["action"]), at=_ts(d.get("at")), key_name=actor.get("key_name"),
                      role=actor.get("role"), person=actor.get("person"), patient_id=d.get("patient_id"),
                      alarm_id=d.get("alarm_id"), unit=d.get("unit"), note=d.get("note"), details=d.get("details"))


def _alarm(d: dict) -> Alarm:
    return Alarm(id=int(d["id"]), patient_id=d["patient_id"], raised_at=_ts(d["raised_at"]), risk=float(d["risk"]),
                 threshold=float(d["threshold"]), model_name=d["model_name"], model_version=d["model_version"],
                 state=d["state"], verdict=d.get("verdict", "unknown"), acknowledged_by=d.get("acknowledged_by"),
                 acknowledged_at=_ts(d.get("acknowledged_at")), ack_reason=d.get("ack_reason"),
                 ack_note=d.get("ack_note"), snoozed_until=_ts(d.get("snoozed_until")),
                 resolved_at=_ts(d.get("resolved_at")), resolved_by=d.get("resolved_by"),
                 resolve_note=d.get("resolve_note"), snoozed_by=d.get("snoozed_by"),
                 snoozed_at=_ts(d.get("snoozed_at")), contributions=_contributions(d.get("contributions")),
                 history=[_audit_event(e) for e in d.get("history") or []], kind=d.get("kind") or "raised",
                 previous_alarm_id=d.get("previous_alarm_id"))


def _detail(d: dict) -> PatientDetail:
    timeline = [TimelineEntry(timestamp=_ts(t["timestamp"]), vitals=dict(t["vitals"]), risk=float(t["risk"]),
                              alarm=bool(t["alarm"]), alarm_id=t.get("alarm_id"), model=t["model"],
                              model_version=t["model_version"], contributions=_contributions(t.get("contributions")),
                              warnings={str(w["field"]).removeprefix("vitals."): str(w["reason"])
                                        for w in t.get("warnings") or []})
                for t in d["timeline"]]
    audit = d.get("audit")
    return PatientDetail(summary=_summary(d), unit=d.get("unit") or unit_name(d.get("unit1"), d.get("unit2")),
                         age=d.get("age"), gender=d.get("gender"), discharged_at=_ts(d.get("discharged_at")),
                         timeline=timeline, alarms=[_alarm(a) for a in d["alarms"]], bedside=d.get("bedside"),
                         audit=None if audit is None else [_audit_event(e) for e in audit],
                         threshold=d.get("threshold"), operating_point=d.get("operating_point"),
                         risk_in_words=d.get("risk_in_words"))


def _clock(d: dict) -> Clock:
    return Clock(mode=str(d["mode"]), now=_ts(d["now"]), latest_observation=_ts(d.get("latest_observation")))


def _ward(d: dict) -> WardCounts:
    p, a = d["patients"], d["alarms"]
    return WardCounts(on_ward=int(p["on_ward"]), in_treatment=int(p["in_treatment"]), open=int(a["open"]),
                      acknowledged=int(a["acknowledged"]), snoozed=int(a["snoozed"]), clock=_clock(d["clock"]))


def latest_values(items: list | None) -> list[LatestValue]:
    return [LatestValue(feature=str(v["feature"]), value=v.get("value"), unit=v.get("unit"),
                        measured_at=_ts(v.get("measured_at")), age_hours=v.get("age_hours"),
                        window_hours=v.get("window_hours")) for v in items or []]


def _card(d: dict) -> QueueCard:
    return QueueCard(alarm_id=int(d["alarm_id"]), state=d["state"], raised_at=_ts(d["raised_at"]),
                     open_minutes=float(d["open_minutes"]), patient_id=d["patient_id"], unit=d.get("unit"),
                     bed=d.get("bed"), status=d.get("status", "monitoring"), threshold=float(d["threshold"]),
                     operating_point=d.get("operating_point"), risk_at_raise=float(d["risk_at_raise"]),
                     risk=d.get("risk"), risk_at=_ts(d.get("risk_at")),
                     trend=[(_ts(t["timestamp"]), float(t["risk"])) for t in d.get("trend") or []],
                     risk_in_words=d.get("risk_in_words"), contributions=_contributions(d.get("contributions")),
                     latest_contributions=_contributions(d.get("latest_contributions")), latest=latest_values(d.get("latest")),
                     bedside=d.get("bedside"), acknowledged_by=d.get("acknowledged_by"),
                     acknowledged_at=_ts(d.get("acknowledged_at")), ack_reason=d.get("ack_reason"),
                     snoozed_until=_ts(d.get("snoozed_until")), kind=d.get("kind") or "raised",
                     previous_alarm_id=d.get("previous_alarm_id"))


def _queue(d: dict) -> AlarmQueue:
    return AlarmQueue(now=_ts(d["now"]), clock=str(d["clock"]), cards=[_card(c) for c in d["cards"]])


def _operating_points(d: dict) -> OperatingPoints:
    units = [UnitChoice(unit=u["unit"], point_id=u.get("point_id"), threshold=float(u["threshold"]),
                        label=u.get("label"), chosen_by=u.get("chosen_by"), chosen_at=_ts(u.get("chosen_at")),
                        note=u.get("note")) for u in d["units"]]
    return OperatingPoints(model=d["model"], model_version=d["model_version"],
                           card_threshold=float(d["card_threshold"]), table=d.get("table"), units=units)


def _periods(d: dict) -> list[PeriodFigures]:
    times = ("start", "end")
    later = ("cause", "model", "model_version")  # a service before model switches opened periods has none
    keys = [f for f in PeriodFigures.__dataclass_fields__ if f not in times + later]
    return [PeriodFigures(**{k: p[k] for k in keys}, **{k: p.get(k) for k in later}, start=_ts(p["start"]),
                          end=_ts(p["end"])) for p in d["periods"]]


def _stats(d: dict) -> Stats:
    keys = [f for f in Stats.__dataclass_fields__ if f != "window_hours"]
    return Stats(**{k: d[k] for k in keys}, window_hours=tuple(d.get("window_hours", (-12.0, 3.0))))


def _detail_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(f"{e.get('field')}: {e.get('reason')}" for e in body["errors"])
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]


class ServiceClient:
    """One per dashboard session. `key` is sent as X-API-Key; reads need viewer, actions clinician."""

    def __init__(self, base_url: str, key: str | None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.key = key or ""
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"X-API-Key": self.key} if self.key else {})

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                 ok: tuple[int, ...] = (200,), optional: bool = False) -> Any:
        """`optional`: the route may not exist on an older service; its absence gives None."""
        try:
            r = self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            raise ApiError(f"The sepsis service at {self.base_url} did not answer within "
                           f"{self._http.timeout.read:g} s. It may be overloaded; the page will retry.", "timeout") from None
        except httpx.TransportError as err:
            raise ApiError(f"Cannot reach the sepsis service at {self.base_url} ({type(err).__name__}). "
                           "Check that it is running and that the address is right.", "unreachable") from None
        if r.status_code in ok:
            try:
                return r.json()
            except ValueError:
                raise ApiError(f"The service at {self.base_url} answered {method} {path} with something that is not "
                               "JSON; is this address really the sepsis service?", "protocol", r.status_code) from None
        why = _detail_text(r)
        if optional and r.status_code in (404, 405) and why in ("Not Found", "Method Not Allowed"):
            return None
        if r.status_code == 401:
            msg = ("No API key given: enter one in the sidebar." if not self.key
                   else "The API key was not accepted (unknown or revoked). Enter a valid key in the sidebar.")
            raise ApiError(msg, "auth", 401)
        if r.status_code == 403:
            raise ApiError(f"Your API key may not do this ({why}): acting on alarms needs a clinician key, "
                           "choosing an operating point an admin key.", "forbidden", 403)
        if r.status_code == 404:
            raise ApiError(f"Not found: {why}.", "not_found", 404)
        if r.status_code == 409:
            raise ApiError(f"Not done: {why}.", "conflict", 409)
        if r.status_code == 422:
            raise ApiError(f"The service rejected the input: {why}.", "invalid", 422)
        raise ApiError(f"The sepsis service failed (HTTP {r.status_code}): {why}.", "server", r.status_code)

    def _parse(self, parse, payload):
        try:
            return parse(payload)
        except (KeyError, TypeError, ValueError) as err:
            raise ApiError(f"The service at {self.base_url} sent an answer the dashboard does not understand "
                           f"({type(err).__name__}: {err}); are the versions compatible?", "protocol") from None

    # -- reads -------------------------------------------------------------------------------

    def ready(self) -> Readiness:
        """Model, version, threshold and provider in use (no key needed; 503 still has a body)."""
        body = self._request("GET", "/ready", ok=(200, 503))
        return self._parse(lambda b: Readiness(ready=bool(b["ready"]), model=b.get("model"),
                                               model_version=b.get("model_version"), provider=b.get("provider"),
                                               threshold=b.get("threshold"), database=str(b.get("database"))), body)

    def patients(self, limit: int = 10000, with_outcome: bool | None = None,
                 order: str | None = None) -> list[PatientSummary]:
        """`order="alarms_first"`: unacknowledged alarms, then acknowledged/snoozed, then by risk (the
        service orders, so a page of `limit` always holds every unacknowledged alarm it can)."""
        params: dict[str, Any] = {"limit": limit}
        if with_outcome is not None:
            params["with_outcome"] = str(with_outcome).lower()
        if order:
            params["order"] = order
        return self._parse(lambda b: [_summary(p) for p in b], self._request("GET", "/patients", params=params))

    def patient(self, patient_id: str) -> PatientDetail:
        return self._parse(_detail, self._request("GET", f"/patients/{quote(patient_id, safe='')}"))

    def alarms(self, state: str | None = None, patient_id: str | None = None, limit: int = 10000) -> list[Alarm]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if patient_id:
            params["patient_id"] = patient_id
        return self._parse(lambda b: [_alarm(a) for a in b], self._request("GET", "/alarms", params=params))

    def ward(self) -> WardCounts | None:
        """None when the service has no /ward route (an older version)."""
        body = self._request("GET", "/ward", optional=True)
        return None if body is None else self._parse(_ward, body)

    def queue(self) -> AlarmQueue | None:
        """The active alarms as cards, most urgent first; None on a service without /alarms/queue."""
        body = self._request("GET", "/alarms/queue", optional=True)
        return None if body is None else self._parse(_queue, body)

    def operating_points(self) -> OperatingPoints | None:
        body = self._request("GET", "/operating-points", optional=True)
        return None if body is None else self._parse(_operating_points, body)

    def audit(self, patient_id: str | None = None, alarm_id: int | None = None, action: str | None = None,
              limit: int = 500) -> list[AuditEvent] | None:
        """Newest first; None on a service without /audit."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("patient_id", patient_id), ("alarm_id", alarm_id), ("action", action)):
            if value is not None:
                params[name] = value
        body = self._request("GET", "/audit", params=params, optional=True)
        return None if body is None else self._parse(lambda b: [_audit_event(e) for e in b], body)

    def stats(self) -> Stats:
        return self._parse(_stats, self._request("GET", "/stats"))

    def stats_periods(self) -> list[PeriodFigures] | None:
        """GET /stats/periods; None from a service without it."""
        body = self._request("GET", "/stats/periods", optional=True)
        return None if body is None else self._parse(_periods, body)

    # -- actions (clinician) -----------------------------------------------------------------

    def acknowledge(self, alarm_id: int, by: str, reason: str, note: str | None = None) -> Alarm:
        body = {"by": by, "reason": reason, **({"note": note} if note else {})}
        return self._parse(_alarm, self._request("POST", f"/alarms/{int(alarm_id)}/ack", json=body))

    def snooze(self, alarm_id: int, by: str, minutes: float) -> Alarm:
        return self._parse(_alarm, self._request("POST", f"/alarms/{int(alarm_id)}/snooze",
                                                 json={"by": by, "minutes": minutes}))

    def resolve(self, alarm_id: int, by: str, note: str | None = None) -> Alarm:
        body = {"by": by, **({"note": note} if note else {})}
        return self._parse(_alarm, self._request("POST", f"/alarms/{int(alarm_id)}/resolve", json=body))

    def record_outcome(self, patient_id: str, by: str, outcome: str, onset_time: dt.datetime | None = None,
                       discharged_at: dt.datetime | None = None) -> PatientSummary:
        body: dict[str, Any] = {"outcome": outcome, "recorded_by": by}
        if onset_time is not None:
            body["onset_time"] = onset_time.isoformat()
        if discharged_at is not None:
            body["discharged_at"] = discharged_at.isoformat()
        return self._parse(_summary, self._request("POST", f"/patients/{quote(patient_id, safe='')}/outcome",
                                                   json=body))

    # -- admin ---------------------------------------------------------------------------------

    def set_operating_point(self, unit: str, point_id: str, by: str, note: str | None = None) -> OperatingPoints:
        body = {"point_id": point_id, "by": by, **({"note": note} if note else {})}
        return self._parse(_operating_points, self._request("PUT", f"/units/{quote(unit, safe='')}/operating-point",
                                                            json=body))

    def may(self, permission: str) -> bool:
        """Whether this key's role holds `permission` ("clinician": act on alarms, "admin": choose
        operating points), from GET /whoami; a key the service does not accept may nothing."""
        try:
            me = self._request("GET", "/whoami")
        except ApiError as err:
            if err.status == 401:
                return False
            raise
        if not isinstance(me, dict) or not isinstance(me.get("permissions"), list):
            raise ApiError(f"The service at {self.base_url} answered GET /whoami with something this dashboard "
                           "does not understand.", "protocol", 200)
        return permission in me["permissions"]
