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


@dataclass(frozen=True)
class TimelineEntry:
    timestamp: dt.datetime
    vitals: dict[str, float]
    risk: float
    alarm: bool
    alarm_id: int | None
    model: str
    model_version: str


@dataclass(frozen=True)
class PatientDetail:
    summary: PatientSummary
    unit: str | None              # "MICU", "SICU", "other" or None when not recorded
    age: float | None
    gender: float | None
    discharged_at: dt.datetime | None
    timeline: list[TimelineEntry] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)


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
                          status=d.get("status", "monitoring"))


def _alarm(d: dict) -> Alarm:
    return Alarm(id=int(d["id"]), patient_id=d["patient_id"], raised_at=_ts(d["raised_at"]), risk=float(d["risk"]),
                 threshold=float(d["threshold"]), model_name=d["model_name"], model_version=d["model_version"],
                 state=d["state"], verdict=d.get("verdict", "unknown"), acknowledged_by=d.get("acknowledged_by"),
                 acknowledged_at=_ts(d.get("acknowledged_at")), ack_reason=d.get("ack_reason"),
                 ack_note=d.get("ack_note"), snoozed_until=_ts(d.get("snoozed_until")),
                 resolved_at=_ts(d.get("resolved_at")), resolved_by=d.get("resolved_by"))


def _detail(d: dict) -> PatientDetail:
    timeline = [TimelineEntry(timestamp=_ts(t["timestamp"]), vitals=dict(t["vitals"]), risk=float(t["risk"]),
                              alarm=bool(t["alarm"]), alarm_id=t.get("alarm_id"), model=t["model"],
                              model_version=t["model_version"]) for t in d["timeline"]]
    return PatientDetail(summary=_summary(d), unit=unit_name(d.get("unit1"), d.get("unit2")), age=d.get("age"),
                         gender=d.get("gender"), discharged_at=_ts(d.get("discharged_at")), timeline=timeline,
                         alarms=[_alarm(a) for a in d["alarms"]])


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
                 ok: tuple[int, ...] = (200,)) -> Any:
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
        if r.status_code == 401:
            msg = ("No API key given: enter one in the sidebar." if not self.key
                   else "The API key was not accepted (unknown or revoked). Enter a valid key in the sidebar.")
            raise ApiError(msg, "auth", 401)
        if r.status_code == 403:
            raise ApiError(f"Your key may not do this ({why}). Acting on alarms or outcomes needs a clinician key.",
                           "forbidden", 403)
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

    def patients(self, limit: int = 10000, with_outcome: bool | None = None) -> list[PatientSummary]:
        params = {"limit": limit}
        if with_outcome is not None:
            params["with_outcome"] = str(with_outcome).lower()
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

    def stats(self) -> Stats:
        return self._parse(_stats, self._request("GET", "/stats"))

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
