"""Replay real ICU stays to a running service over HTTP, hour by hour, as a hospital feed would.

    python -m training.sepsis.replay --data ../shared/data/physionet2019/physionet2019_dev.tar.xz \
        --speed 3600 --url http://127.0.0.1:8000 --api-key $KEY --limit 50 --concurrency 8

Each stay is admitted (demographics, ICU admission time placed so that the service's derived
ICULOS equals the file's), its rows are posted at their hour (one data hour = 3600/speed s of wall
time; --speed 0 posts as fast as the service answers), and its outcome is posted at the end:
sepsis with onset = first SepsisLabel=1 hour + 6 h (the challenge shifted labels 6 h early), else
discharged without sepsis. The service refuses times ahead of its clock, so each stay is placed in
the past: its latest time (last row, onset or discharge) at or before the moment the replay starts,
its first row on a whole hour. The key needs the admin role (or ingest for the feed and clinician
for outcomes: pass --outcome-key).

Ward mode (--ward N, what `make demo` runs) keeps N beds occupied for as long as it runs: every
bed admits a stay, streams it on one feed clock shared by all beds, records its outcome with
discharged_at when the stay ends (the patient leaves the ward, its alarm is resolved) and admits
the next stay, looping over the stays with fresh patient ids (`<prefix><stay>-r<round>`). The
first stays start staggered (bed i part-way through its stay), so admissions and discharges are
spread out from the start. The feed clock starts --duration x --speed data seconds before now and
runs at --speed, never ahead of the wall clock (past --duration it runs at real time).

--format fhir posts each row as a FHIR R4 transaction Bundle to POST /fhir
(training/sepsis/fhir_bundle.py: the first carries the Patient and the ICU Encounter) instead of
POST /patients and /predict; outcomes are posted as JSON either way.

--feed realistic (not in ward mode) sends each stay as a hospital's interfaces would
(training/sepsis/feed.py): every value its own message at a random time inside its hour, labs
30-150 min after their draw, 5% sent twice, 2% of labs amended. JSON posts each to /predict (the
JSON API has no status, so an amendment is the same time with the corrected value); --format fhir
posts each as one Observation to /fhir/Observation (status final or amended). The admission goes
to POST /patients either way. Messages go out in arrival order at --speed. A service that refuses
such a feed (e.g. 409: an observation earlier than the patient's last one) does not stop the
replay: refusals are counted and printed by reason.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import httpx
import numpy as np
from tqdm.auto import tqdm

from models.contract import DEMOGRAPHICS, FEATURES, INDEX

LABEL_SHIFT_HOURS = 6.0


@dataclass
class StayPlan:
    patient_id: str
    admission: dict
    observations: list[dict]   # each with "hour" (offset from the first row) and the /predict body
    outcome: dict
    latest: dt.datetime        # the latest time the plan posts: its last row, the onset or the discharge


@dataclass
class Totals:
    stays: int = 0
    posted: int = 0
    alarms: int = 0
    dropped_values: int = 0
    admitted: int = 0
    refused: Counter = field(default_factory=Counter)   # realistic feed: refusals by reason
    refused_outcomes: Counter = field(default_factory=Counter)   # ward mode: refused onsets / discharges
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def plan_stay(patient_id: str, values: np.ndarray, labels: np.ndarray, start: dt.datetime) -> StayPlan:
    """Pure: a stay's rows [T, 40] (NaN = missing) and labels [T] -> what to post and when."""
    iculos = values[:, INDEX["ICULOS"]].astype(np.float64)
    hours = np.where(np.isfinite(iculos), iculos, np.nan)
    if not np.isfinite(hours).all() or (np.diff(hours) <= 0).any():
        hours = np.arange(len(values), dtype=np.float64) + 1.0  # unusable ICULOS: assume hourly rows
    first = values[0]
    icu_admit = start - dt.timedelta(hours=float(hours[0]) - 1.0)
    unit = "MICU" if first[INDEX["Unit1"]] == 1 else "SICU" if first[INDEX["Unit2"]] == 1 else None
    gender = _num(first[INDEX["Gender"]])
    admission = {"patient_id": patient_id, "age": _num(first[INDEX["Age"]]),
                 "gender": None if gender not in (0.0, 1.0) else int(gender), "unit": unit,
                 "hosp_adm_time": _num(first[INDEX["HospAdmTime"]]), "icu_admit_time": icu_admit.isoformat()}
    skip = set(DEMOGRAPHICS) | {"ICULOS"}
    observations = []
    for t, row in enumerate(values):
        ts = icu_admit + dt.timedelta(hours=float(hours[t]) - 1.0)
        vitals = {name: float(row[i]) for i, name in enumerate(FEATURES) if name not in skip and math.isfinite(row[i])}
        observations.append({"hour": float(hours[t] - hours[0]),
                             "body": {"patient_id": patient_id, "timestamp": ts.isoformat(), "vitals": vitals}})
    positive = np.flatnonzero(labels == 1)
    last_ts = icu_admit + dt.timedelta(hours=float(hours[-1]) - 1.0)
    if len(positive):
        onset = icu_admit + dt.timedelta(hours=float(hours[positive[0]]) - 1.0 + LABEL_SHIFT_HOURS)
        outcome = {"outcome": "sepsis", "onset_time": onset.isoformat(), "recorded_by": "replay"}
        latest = max(last_ts, onset)
    else:
        latest = last_ts + dt.timedelta(hours=1)
        outcome = {"outcome": "no_sepsis", "discharged_at": latest.isoformat(), "recorded_by": "replay"}
    return StayPlan(patient_id, admission, observations, outcome, latest)


def plan_stay_before(patient_id: str, values: np.ndarray, labels: np.ndarray, now: dt.datetime) -> StayPlan:
    """The plan moved back so that its latest time is at or before `now` and its first row falls
    on a whole hour (the service refuses times ahead of its clock)."""
    span = plan_stay(patient_id, values, labels, now).latest - now
    start = (now - span).replace(minute=0, second=0, microsecond=0)
    return plan_stay(patient_id, values, labels, start)


def _post_observation(client: httpx.Client, body: dict, headers: dict, totals: Totals) -> None:
    r = client.post("/predict", json=body, headers=headers)
    if r.status_code == 422:
        # Values the service rejects as implausible are dropped and the rest of the row is kept.
        bad = {e["field"].split(".", 1)[1] for e in r.json().get("errors", []) if e["field"].startswith("vitals.")}
        if bad:
            body = {**body, "vitals": {k: v for k, v in body["vitals"].items() if k not in bad}}
            with totals.lock:
                totals.dropped_values += len(bad)
            r = client.post("/predict", json=body, headers=headers)
    if r.status_code != 200:
        raise RuntimeError(f"POST /predict {body['patient_id']} {body['timestamp']}: HTTP {r.status_code} {r.text[:300]}")
    with totals.lock:
        totals.posted += 1
        totals.alarms += r.json()["alarm_id"] is not None


def replay_stay(client: httpx.Client, plan: StayPlan, speed: float, ingest_headers: dict, outcome_headers: dict,
                totals: Totals) -> None:
    r = client.post("/patients", json=plan.admission, headers=ingest_headers)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /patients {plan.patient_id}: HTTP {r.status_code} {r.text[:300]}")
    began = time.monotonic()
    for o in plan.observations:
        if speed > 0:
            wait = began + o["hour"] * 3600.0 / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        _post_observation(client, o["body"], ingest_headers, totals)
    r = client.post(f"/patients/{plan.patient_id}/outcome", json=plan.outcome, headers=outcome_headers)
    if r.status_code != 200:
        raise RuntimeError(f"POST outcome {plan.patient_id}: HTTP {r.status_code} {r.text[:300]}")
    with totals.lock:
        totals.stays += 1


def _post_bundle(client: httpx.Client, patient_id: str, ts: dt.datetime, bundle: dict, headers: dict,
                 totals: Totals) -> None:
    fhir = {**headers, "Content-Type": "application/fhir+json"}
    r = client.post("/fhir", json=bundle, headers=fhir)
    if r.status_code == 422:
        # Values the service refuses as implausible are dropped and the rest of the bundle is kept,
        # as the JSON feed does (fhir_bundle.drop_refused_values reads the OperationOutcome).
        from training.sepsis.fhir_bundle import drop_refused_values

        kept = drop_refused_values(bundle, r.json())
        if kept is not None and kept[0]["entry"]:
            with totals.lock:
                totals.dropped_values += kept[1]
            r = client.post("/fhir", json=kept[0], headers=fhir)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /fhir {patient_id} {ts.isoformat()}: HTTP {r.status_code} {r.text[:300]}")
    with totals.lock:
        totals.posted += 1


# What a service says when it refuses a message of a realistic feed, in a few words.
_REASONS = (("earlier than", "out of order"), ("already has an observation", "same time, other values"),
            ("two observations at", "same time, other values"), ("was discharged", "after discharge"),
            ("precedes", "before ICU admission"), ("ahead of", "ahead of the service clock"))


def refusal_reason(status: int, text: str) -> str:
    """'409 out of order' and the like: the status and what the refusal's text says."""
    for phrase, reason in _REASONS:
        if phrase in text:
            return f"{status} {reason}"
    return f"{status} invalid value" if status == 422 else f"{status} {text[:80]}"


def _message_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return " ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def place_feed(patient_id: str, stay, now: dt.datetime, seed: int = 0):
    """(plan, messages) of a realistic feed, moved back so that every message is sent and every time
    posted lies at or before `now` (a lab's result comes hours after the last row)."""
    from training.sepsis.feed import realistic_feed

    def placed(before: dt.datetime):
        plan = plan_stay_before(patient_id, stay.values, stay.labels, before)
        first = dt.datetime.fromisoformat(plan.observations[0]["body"]["timestamp"])
        return plan, realistic_feed(patient_id, stay.values, first, seed)

    plan, messages = placed(now)
    late = messages[-1].sent - now if messages else dt.timedelta(0)
    if late > dt.timedelta(0):  # whole hours back: the feed moves with its first row, unchanged
        plan, messages = placed(now - math.ceil(late / dt.timedelta(hours=1)) * dt.timedelta(hours=1))
    return plan, messages


def replay_feed_stay(client: httpx.Client, plan: StayPlan, messages, speed: float, ingest_headers: dict,
                     outcome_headers: dict, totals: Totals, fmt: str = "json") -> None:
    """Admit, send each message at its arrival time (--speed), then the outcome. A refused message
    is counted by reason, not raised."""

    r = client.post("/patients", json=plan.admission, headers=ingest_headers)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /patients {plan.patient_id}: HTTP {r.status_code} {r.text[:300]}")
    first = dt.datetime.fromisoformat(plan.observations[0]["body"]["timestamp"])
    began = time.monotonic()
    for m in messages:
        if speed > 0:
            wait = began + (m.sent - first).total_seconds() / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        _post_value(client, plan.patient_id, m, fmt, ingest_headers, totals)
    r = client.post(f"/patients/{plan.patient_id}/outcome", json=plan.outcome, headers=outcome_headers)
    if r.status_code != 200:
        raise RuntimeError(f"POST outcome {plan.patient_id}: HTTP {r.status_code} {r.text[:300]}")
    with totals.lock:
        totals.stays += 1


class FeedClock:
    """The data time every bed of a ward replay shares: `start` at the moment it is made, advancing
    `speed` data seconds per wall second, never ahead of the wall clock (the service refuses times
    ahead of its clock), so past `start`'s lead it runs at real time."""

    def __init__(self, start: dt.datetime, speed: float, wall=lambda: dt.datetime.now(dt.timezone.utc)):
        self.start, self.speed, self._wall = start, speed, wall
        self._began = time.monotonic()

    def now(self) -> dt.datetime:
        data = self.start + dt.timedelta(seconds=(time.monotonic() - self._began) * self.speed)
        return min(data, self._wall())

    def wait_until(self, t: dt.datetime, stop: threading.Event) -> bool:
        """Sleep until the feed reaches `t`; False if `stop` was set first."""
        while not stop.is_set():
            ahead = (t - self.now()).total_seconds()
            if ahead <= 0:
                return True
            stop.wait(min(0.5, max(0.005, ahead / self.speed)))
        return False


def discharge_outcome(plan: StayPlan) -> dict:
    """The stay's outcome with the discharge at its end: the latest time the plan posts (the last
    row + 1 h, or the onset when that comes later)."""
    end = plan.latest if plan.outcome["outcome"] == "sepsis" else dt.datetime.fromisoformat(plan.outcome["discharged_at"])
    if plan.outcome["outcome"] == "sepsis":
        last_row = dt.datetime.fromisoformat(plan.observations[-1]["body"]["timestamp"])
        end = max(end, last_row + dt.timedelta(hours=1))
    return {**plan.outcome, "discharged_at": end.isoformat()}


def ward_stay(client: httpx.Client, stay, patient_id: str, first_row: dt.datetime, feed: FeedClock,
              stop: threading.Event, ingest_headers: dict, outcome_headers: dict, totals: Totals,
              fmt: str = "json", bed: str | None = None, messages: str = "hourly", seed: int = 0) -> bool:
    """One bed's stay in ward mode: admit, post each row (`messages="realistic"`: each value's
    message, training/sepsis/feed.py, at its arrival) when the feed reaches its time (those already
    in the past at once), a septic stay's outcome at its onset (the patient stays, in treatment),
    then the outcome with discharged_at at the stay's end. False if stopped before the end (the
    patient then stays on the ward, as a real one would) or if the discharge was refused (reported
    at once and counted, never silent)."""
    plan = plan_stay(patient_id, stay.values, stay.labels, first_row)
    if messages == "realistic":
        from training.sepsis.feed import realistic_feed

        admission = {**plan.admission, **({"bed": bed} if bed else {})}
        r = client.post("/patients", json=admission, headers=ingest_headers)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /patients {patient_id}: HTTP {r.status_code} {r.text[:300]}")
        sends = [(m.sent, "value", m) for m in realistic_feed(patient_id, stay.values, first_row, seed)]
    elif fmt == "fhir":
        from training.sepsis.fhir_bundle import stay_bundles

        sends = [(ts, "fhir", b) for ts, b in stay_bundles(patient_id, stay.values, first_row)]
    else:
        admission = {**plan.admission, **({"bed": bed} if bed else {})}
        r = client.post("/patients", json=admission, headers=ingest_headers)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /patients {patient_id}: HTTP {r.status_code} {r.text[:300]}")
        sends = [(dt.datetime.fromisoformat(o["body"]["timestamp"]), "json", o["body"]) for o in plan.observations]
    if plan.outcome["outcome"] == "sepsis":
        # sepsis is confirmed at its onset and the patient stays on the ward, in treatment, until
        # the stay ends (the discharge below records the same outcome with discharged_at)
        onset = dt.datetime.fromisoformat(plan.outcome["onset_time"])
        sends = sorted(sends + [(onset, "outcome", plan.outcome)], key=lambda s: (s[0], s[1] == "outcome"))
    with totals.lock:
        totals.admitted += 1
    for ts, kind, body in sends:
        if not feed.wait_until(ts, stop):
            return False
        if kind == "fhir":
            _post_bundle(client, patient_id, ts, body, ingest_headers, totals)
        elif kind == "value":
            _post_value(client, patient_id, body, fmt, ingest_headers, totals)
        elif kind == "outcome":
            # refused: said at once and counted; the stay goes on (the patient is still on the ward)
            _post_ward_outcome(client, patient_id, body, outcome_headers, totals, "sepsis onset")
        else:
            _post_observation(client, body, ingest_headers, totals)
    outcome = discharge_outcome(plan)
    if not feed.wait_until(dt.datetime.fromisoformat(outcome["discharged_at"]), stop):
        return False
    discharged = _post_ward_outcome(client, patient_id, outcome, outcome_headers, totals, "discharge")
    with totals.lock:
        totals.stays += 1
    return discharged


def _post_value(client: httpx.Client, patient_id: str, m, fmt: str, headers: dict, totals: Totals) -> None:
    """One message of a realistic feed (training/sepsis/feed.py's Message): POST /predict as JSON,
    or (fhir) a single Observation to POST /fhir/Observation. A refusal is counted by reason."""
    from training.sepsis.feed import json_body
    from training.sepsis.fhir_bundle import feed_observation

    if fmt == "fhir":
        r = client.post("/fhir/Observation", json=feed_observation(patient_id, m.charted),
                        headers={**headers, "Content-Type": "application/fhir+json"})
    else:
        r = client.post("/predict", json=json_body(patient_id, m), headers=headers)
    with totals.lock:
        if r.status_code in (200, 201):
            totals.posted += 1
            totals.alarms += (r.json().get("alarm_id") if fmt == "json" else None) is not None
        else:
            totals.refused[refusal_reason(r.status_code, _message_text(r))] += 1


def report_error(totals: Totals, message: str) -> None:
    """Count an error and say it now, on stderr above the progress bar: a ward replay runs until it
    is stopped, so an error kept for the summary would be read hours late, or never."""
    with totals.lock:
        totals.errors.append(message)
    tqdm.write(f"error: {message}", file=sys.stderr)


def _post_ward_outcome(client: httpx.Client, patient_id: str, body: dict, headers: dict, totals: Totals,
                       what: str) -> bool:
    """POST the outcome; a refusal is an error reported at once and counted (`refused_outcomes`):
    a refused discharge leaves the patient on the ward with no more data, which nobody would see."""
    r = client.post(f"/patients/{patient_id}/outcome", json=body, headers=headers)
    if r.status_code == 200:
        return True
    with totals.lock:
        totals.refused_outcomes[what] += 1
    report_error(totals, f"{patient_id}: {what} refused (POST /patients/{patient_id}/outcome: HTTP {r.status_code} "
                         f"{r.text[:300]}); the patient stays on the ward without data")
    return False


def stay_hours(stay) -> float:
    plan = plan_stay("x", stay.values, stay.labels, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    return (plan.latest - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() / 3600


def replay_ward(stays, client: httpx.Client, beds: int, speed: float, duration_s: float, api_key: str,
                outcome_key: str | None = None, prefix: str = "replay-", fmt: str = "json",
                stop: threading.Event | None = None, max_admissions: int | None = None,
                progress: bool = True, messages: str = "hourly", seed: int = 0) -> Totals:
    """Keep `beds` beds occupied until `stop` is set (or `max_admissions` stays were admitted):
    see the module's docstring. Returns the counts."""
    stays = list(stays)
    if not stays:
        raise ValueError("no stays to replay")
    stop = stop or threading.Event()
    now = dt.datetime.now(dt.timezone.utc)
    lead = dt.timedelta(seconds=duration_s * speed)
    feed = FeedClock((now - lead).replace(microsecond=0), speed)
    ingest_headers = {"X-API-Key": api_key}
    outcome_headers = {"X-API-Key": outcome_key or api_key}
    totals = Totals()
    lock = threading.Lock()
    turn = {"next": 0}
    bar = tqdm(desc="ward replay: stays ended", unit="stay", disable=not progress)

    def take():
        with lock:
            if max_admissions is not None and turn["next"] >= max_admissions:
                return None
            i = turn["next"]
            turn["next"] += 1
        return i

    def bed(b: int) -> None:
        first = True
        while not stop.is_set():
            i = take()
            if i is None:
                return
            stay = stays[i % len(stays)]
            pid = f"{prefix}{stay.patient_id}-r{i // len(stays) + 1}"
            start = feed.now().replace(second=0, microsecond=0)
            if first:  # staggered: bed b starts b/beds of the way through its first stay
                start -= dt.timedelta(hours=math.floor(stay_hours(stay) * b / beds))
                first = False
            try:
                ward_stay(client, stay, pid, start, feed, stop, ingest_headers, outcome_headers, totals, fmt,
                          bed=f"B{b + 1:02}", messages=messages, seed=seed)
            except Exception as err:  # one broken stay must not empty the bed; it is reported
                report_error(totals, f"{pid}: {err}")
                stop.wait(1.0)
            bar.update(1)

    threads = [threading.Thread(target=bed, args=(b,), daemon=True, name=f"bed-{b}") for b in range(beds)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(10)
    bar.close()
    return totals


def replay(stays, client: httpx.Client, speed: float, api_key: str, outcome_key: str | None = None,
           concurrency: int = 4, prefix: str = "", start: dt.datetime | None = None, progress: bool = True,
           feed: str = "hourly", fmt: str = "json", seed: int = 0) -> Totals:
    """Replay `stays` (objects with patient_id, values, labels) through `client`; returns counts.
    Each stay ends at or before now (plan_stay_before), unless `start` places every first row.
    `feed="realistic"` sends per-value messages (place_feed, replay_feed_stay) as `fmt`."""
    now = dt.datetime.now(dt.timezone.utc)
    ingest_headers = {"X-API-Key": api_key}
    outcome_headers = {"X-API-Key": outcome_key or api_key}
    totals = Totals()
    stays = list(stays)
    bar = tqdm(total=len(stays), desc="replaying stays", unit="stay", disable=not progress)

    def one(stay):
        try:
            if feed == "realistic":
                plan, messages = place_feed(prefix + stay.patient_id, stay, now, seed)
                replay_feed_stay(client, plan, messages, speed, ingest_headers, outcome_headers, totals, fmt)
            else:
                plan = (plan_stay(prefix + stay.patient_id, stay.values, stay.labels, start) if start is not None
                        else plan_stay_before(prefix + stay.patient_id, stay.values, stay.labels, now))
                replay_stay(client, plan, speed, ingest_headers, outcome_headers, totals)
        except Exception as err:  # one broken stay must not stop the others; it is reported
            with totals.lock:
                totals.errors.append(f"{stay.patient_id}: {err}")
        bar.update(1)

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(one, stays))
    bar.close()
    return totals


def select_stays(data: str, split: str, split_seed: int, limit: int | None) -> list:
    """The stays to replay, in file order: all of them, or only the test split's."""
    if split == "all":
        from training.sepsis.data import iter_stays

        return list(islice(iter_stays(data), limit))
    from training.sepsis.data import load_cohort
    from training.sepsis.splits import patient_split

    cohort = load_cohort(data, progress=False)
    test = sorted(patient_split(cohort, seed=split_seed).test)
    return [cohort.stay(int(i)) for i in test[:limit]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.sepsis.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="PhysioNet 2019 archive (.tar.xz) or a directory of .psv files")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", required=True, help="admin key, or an ingest key together with --outcome-key")
    p.add_argument("--outcome-key", default=None, help="clinician key for posting outcomes (default: --api-key)")
    p.add_argument("--speed", type=float, default=3600.0, help="data hours per wall hour (3600: one hour per second; 0: no waiting)")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N stays")
    p.add_argument("--concurrency", type=int, default=8, help="stays streamed at the same time")
    p.add_argument("--prefix", default="replay-", help="prepended to patient ids so replays do not collide with real ones")
    p.add_argument("--split", choices=["all", "test"], default="all",
                   help="test: only stays of the training code's test split (patient split, --split-seed), "
                        "which the shipped models never trained on or chose thresholds with")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--ward", type=int, default=0, metavar="BEDS",
                   help="ward mode: keep BEDS beds occupied until stopped (Ctrl-C), looping over the stays")
    p.add_argument("--duration", type=float, default=3600.0,
                   help="ward mode: wall seconds the feed runs at --speed before reaching real time")
    p.add_argument("--format", choices=["json", "fhir"], default="json",
                   help="fhir: rows as FHIR R4 transaction Bundles to POST /fhir (training/sepsis/fhir_bundle.py); "
                        "with --feed realistic, single Observations to POST /fhir/Observation")
    p.add_argument("--feed", choices=["hourly", "realistic"], default="hourly",
                   help="realistic: each value its own message, jittered, labs late, duplicates and amendments "
                        "(training/sepsis/feed.py); refusals are counted by reason")
    p.add_argument("--seed", type=int, default=0, help="--feed realistic: seed of the jitter, delays and duplicates")
    a = p.parse_args(argv)
    if a.speed < 0:
        p.error("--speed must be >= 0")
    if a.ward < 0 or a.duration < 0:
        p.error("--ward and --duration must be >= 0")
    if a.format == "fhir" and not a.ward and a.feed != "realistic":
        p.error("--format fhir is for ward mode (--ward BEDS) or --feed realistic")
    if a.ward and a.speed == 0:
        p.error("ward mode needs --speed > 0 (the feed clock advances at it)")
    stays = select_stays(a.data, a.split, a.split_seed, a.limit)
    with httpx.Client(base_url=a.url, timeout=30.0) as client:
        if a.ward:
            totals = replay_ward(stays, client, a.ward, a.speed, a.duration, a.api_key, a.outcome_key, a.prefix,
                                 a.format, messages=a.feed, seed=a.seed)
        else:
            totals = replay(stays, client, a.speed, a.api_key, a.outcome_key, a.concurrency, a.prefix,
                            feed=a.feed, fmt=a.format, seed=a.seed)
        stats = client.get("/stats", headers={"X-API-Key": a.outcome_key or a.api_key})
    print(f"stays replayed: {totals.stays}/{len(stays) if not a.ward else totals.admitted}, observations posted: "
          f"{totals.posted}, alarms raised: {totals.alarms}, refused values dropped: {totals.dropped_values}")
    if totals.refused:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in totals.refused.most_common())
        print(f"messages refused by the service: {sum(totals.refused.values())} ({reasons})")
    if totals.refused_outcomes:
        what = ", ".join(f"{w}: {n}" for w, n in totals.refused_outcomes.most_common())
        print(f"outcomes refused by the service: {sum(totals.refused_outcomes.values())} ({what}); "
              "those patients stayed on the ward", file=sys.stderr)
    if totals.errors:
        print(f"errors: {len(totals.errors)}" + (" (the first 20 below)" if len(totals.errors) > 20 else ""),
              file=sys.stderr)
    for e in totals.errors[:20]:
        print(f"error: {e}", file=sys.stderr)
    if stats.status_code == 200:
        s = stats.json()
        print(f"service stats: {s['alarms']} alarms, {s['alarms_per_patient_day'] or 0:.3f}/patient-day, "
              f"PPV {s['positive_predictive_value']}, FPR {s['false_positive_rate']}, "
              f"median lead time {s['median_lead_time_hours']} h")
    return 1 if totals.errors else 0


if __name__ == "__main__":
    sys.exit(main())
