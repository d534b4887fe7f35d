"""Shadow models: scored on every observation beside the active model, stored,
notifying nobody, and compared with it on recorded outcomes."""
from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select, update

from models.testing import CountingStep, write_fixture_model
from service.storage.tables import ShadowScore, ShadowState
from tests.service.conftest import STATE_SIZE, T0, client_for, hdr, iso, obs, vitals_stream


@pytest.fixture(scope="module")
def shadow_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow_models")
    write_fixture_model(root / "sepsis-cfc" / "1", state_size=STATE_SIZE, threshold=0.5)
    write_fixture_model(root / "sepsis-cfc" / "2", state_size=STATE_SIZE, threshold=0.5, version="2", seed=7)
    # threshold 0: every risk is at or above it; threshold 1: a sigmoid of these small logits never is
    write_fixture_model(root / "always" / "1", state_size=STATE_SIZE, threshold=0.0, name="always", seed=3)
    write_fixture_model(root / "never" / "1", state_size=STATE_SIZE, threshold=1.0, name="never")
    return root


def _feed(c, streams: dict[str, list], batch_from: int = 3) -> dict:
    """Post each patient's stream: the first hours one by one, the rest in one batch across patients.
    Returns {(patient, timestamp): result}."""
    out = {}
    for pid, rows in streams.items():
        for h, v in rows[:batch_from]:
            r = c.post("/predict", json=obs(pid, h, **v), headers=hdr("ingest"))
            assert r.status_code == 200, r.text
            out[(pid, r.json()["timestamp"])] = r.json()
    rest = [obs(pid, h, **v) for pid, rows in streams.items() for h, v in rows[batch_from:]]
    if rest:
        r = c.post("/predict/batch", json={"observations": rest}, headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        out.update({(x["patient_id"], x["timestamp"]): x for x in r.json()["results"]})
    return out


def _shadow_rows(c, name: str, version: str) -> dict:
    engine = c.app.state.services.engine
    with engine.connect() as conn:
        rows = conn.execute(select(ShadowScore).where(ShadowScore.model_name == name,
                                                      ShadowScore.model_version == version)).all()
    return {(r.patient_id, iso(r.ts)): r for r in rows}


def _streams(n_patients: int = 3, hours: int = 9) -> dict:
    return {f"p{i}": vitals_stream(hours - i, seed=i) for i in range(n_patients)}


def test_shadow_scores_equal_the_shadow_model_serving_alone(db_url, shadow_root, tmp_path):
    streams = _streams()
    with client_for(db_url, shadow_root, shadow_models="sepsis-cfc:2,always:1") as c:
        live = _feed(c, streams)
        shadows = {m: _shadow_rows(c, *m) for m in (("sepsis-cfc", "2"), ("always", "1"))}
        models = c.get("/models", headers=hdr("viewer")).json()
    assert models["active"]["version"] == "1"
    assert [(s["model"], s["version"]) for s in models["shadows"]] == list(shadows)
    assert {r["model_version"] for r in live.values()} == {"1"}  # the live answer is the active model's
    for (name, version), shadow in shadows.items():
        with client_for(f"sqlite:///{tmp_path / f'{name}.db'}", shadow_root, model=name, model_version=version) as alone:
            expected = _feed(alone, streams)
        assert set(shadow) == set(expected)
        for key, want in expected.items():
            assert shadow[key].risk == pytest.approx(want["risk"], abs=1e-6), key
            # the same suppression rule on the shadow's own episodes: where it alone would have alarmed
            assert shadow[key].alarm == (want["alarm_id"] is not None), key
        assert any(r.risk != pytest.approx(live[k]["risk"], abs=1e-4) for k, r in shadow.items())  # another model
    assert sum(r.alarm for r in shadows[("always", "1")].values()) == len(streams)


def test_shadow_alarms_notify_nobody(db_url, shadow_root):
    streams = _streams(hours=5)
    with client_for(db_url, shadow_root, model="never", model_version="1", shadow_models="always:1") as c:
        live = _feed(c, streams)
        shadow = _shadow_rows(c, "always", "1")
        alarms = c.get("/alarms", headers=hdr("viewer")).json()
        metrics = c.get("/metrics", headers=hdr("monitor")).text
        queue = [p for p in c.get("/patients", headers=hdr("viewer")).json() if p["active_alarm_id"] is not None]
    assert alarms == [] and queue == [] and not any(r["alarm_id"] for r in live.values())
    assert 'sepsis_alarm_events_total{event="raised"}' not in metrics
    # the shadow would have alarmed once per patient, at its first observation, then stayed suppressed
    first = {(pid, iso(T0 + dt.timedelta(hours=rows[0][0]))) for pid, rows in streams.items()}
    assert {k for k, r in shadow.items() if r.alarm} == first
    assert len(shadow) == sum(len(r) for r in streams.values())


def test_a_failing_shadow_leaves_the_live_answer_and_is_rebuilt_after(db_url, shadow_root, tmp_path):
    rows = vitals_stream(8, seed=3)
    with client_for(db_url, shadow_root, shadow_models="sepsis-cfc:2") as c:
        services = c.app.state.services
        shadow = services.shadows.models[0]
        _feed(c, {"f": rows[:3]})
        step = shadow.runtime.step

        def broken(*args, **kwargs):
            raise RuntimeError("shadow runtime down")

        shadow.runtime.step = broken
        try:
            during = _feed(c, {"f": rows[3:5]}, batch_from=1)
        finally:
            shadow.runtime.step = step
        assert len(during) == 2 and {r["model_version"] for r in during.values()} == {"1"}
        assert len(_shadow_rows(c, "sepsis-cfc", "2")) == 3  # the failed ones rolled back alone
        assert 'sepsis_shadow_failures_total{model="sepsis-cfc",version="2"} 2.0' in \
            c.get("/metrics", headers=hdr("monitor")).text
        _feed(c, {"f": rows[5:]})
        stored = _shadow_rows(c, "sepsis-cfc", "2")
        with services.engine.connect() as conn:
            state = conn.execute(select(ShadowState)).one()
    with client_for(f"sqlite:///{tmp_path / 'alone.db'}", shadow_root, model_version="2") as alone:
        expected = _feed(alone, {"f": rows})
    assert set(stored) == set(expected)  # the missed observations were back-filled from the stored ones
    for key, want in expected.items():
        assert stored[key].risk == pytest.approx(want["risk"], abs=1e-6)
    assert state.n_observations == len(rows)


N_HOURS, LATE_HOUR = 10, 4  # an n-hour stay (ICULOS 1..n) and the hour a late value revises


def _late(hour: int) -> dict:
    """A lab drawn in ICULOS `hour` (half an hour into it), arriving after the later hours' vitals."""
    return obs("late", hour - 0.5, Lactate=4.2 + hour / 10)


def _counted(c) -> tuple[CountingStep, CountingStep]:
    """Count the runtime calls of the active model and of the shadow (one call per hour stepped
    for a single patient: the live run steps a request's hours one by one, a shadow's replay too)."""
    services = c.app.state.services
    live, shadow = services.model.runtime, services.shadows.models[0].runtime
    live.step, shadow.step = CountingStep(live.step), CountingStep(shadow.step)
    return live.step, shadow.step


def _alone_after(tmp_path, shadow_root, posts: list[dict]) -> dict:
    """The shadow model's stored risks when it alone serves the same posts."""
    with client_for(f"sqlite:///{tmp_path / 'alone.db'}", shadow_root, model_version="2") as alone:
        for body in posts:
            assert alone.post("/predict", json=body, headers=hdr("ingest")).status_code == 200
        return {(e["timestamp"]): e["risk"] for e in
                alone.get("/patients/late", headers=hdr("viewer")).json()["timeline"]}


def _shadow_risks(c) -> dict:
    return {ts: r.risk for (pid, ts), r in _shadow_rows(c, "sepsis-cfc", "2").items() if pid == "late"}


def test_a_late_value_re_steps_the_shadow_only_from_its_hour(db_url, shadow_root, tmp_path):
    """Like the live model, a shadow rewinds to its state stored before the revised hour: a late
    value for hour h of an n-hour stay re-steps hours h..n, not the stay from its admission."""
    posts = [obs("late", h, **v) for h, v in vitals_stream(N_HOURS, seed=4)]
    with client_for(db_url, shadow_root, shadow_models="sepsis-cfc:2", explain=False) as c:
        for body in posts:
            assert c.post("/predict", json=body, headers=hdr("ingest")).status_code == 200
        live, shadow = _counted(c)
        r = c.post("/predict", json=_late(LATE_HOUR), headers=hdr("ingest"))
        assert r.status_code == 200, r.text
        assert r.json()["revised_hours"]  # a rewind indeed: stored hours were re-stepped
        assert live.calls == [1] * (N_HOURS - LATE_HOUR + 1)
        assert shadow.calls == [1] * (N_HOURS - LATE_HOUR + 1)
        risks = _shadow_risks(c)
    # the same risks as the shadow model serving the same posts alone (its rewind is the live one)
    want = _alone_after(tmp_path, shadow_root, posts + [_late(LATE_HOUR)])
    assert set(risks) == set(want) and len(want) == N_HOURS
    for ts, risk in want.items():
        assert risks[ts] == pytest.approx(risk, abs=1e-6), ts


def test_shadow_scores_without_states_replay_the_stay_once(db_url, shadow_root, tmp_path):
    """Scores stored before the shadow kept its state per hour (migration 0014) have none: a rewind
    that needs one replays the stay from the admission, with the same risks, and writes the states,
    so the next late value re-steps only from its own hour."""
    posts = [obs("late", h, **v) for h, v in vitals_stream(N_HOURS, seed=6)]
    with client_for(db_url, shadow_root, shadow_models="sepsis-cfc:2", explain=False) as c:
        for body in posts:
            assert c.post("/predict", json=body, headers=hdr("ingest")).status_code == 200
        with c.app.state.services.engine.begin() as conn:  # as migration 0014 leaves the older rows
            conn.execute(update(ShadowScore).where(ShadowScore.ts < T0 + dt.timedelta(hours=LATE_HOUR))
                         .values(state=None))
        live, shadow = _counted(c)
        assert c.post("/predict", json=_late(LATE_HOUR), headers=hdr("ingest")).status_code == 200
        assert len(live.calls) == N_HOURS - LATE_HOUR + 1
        assert len(shadow.calls) == N_HOURS  # hours 1..h-1 replayed, then h..n re-stepped
        with c.app.state.services.engine.connect() as conn:
            assert conn.execute(select(ShadowScore).where(ShadowScore.state.is_(None))).all() == []
        shadow.calls.clear()
        assert c.post("/predict", json=_late(LATE_HOUR + 2), headers=hdr("ingest")).status_code == 200
        assert len(shadow.calls) == N_HOURS - LATE_HOUR - 1
        risks = _shadow_risks(c)
    want = _alone_after(tmp_path, shadow_root, posts + [_late(LATE_HOUR), _late(LATE_HOUR + 2)])
    assert set(risks) == set(want)
    for ts, risk in want.items():
        assert risks[ts] == pytest.approx(risk, abs=1e-6), ts


def test_a_shadow_failing_on_a_rewind_replays_at_the_next_one(db_url, shadow_root, tmp_path):
    """A rewind rolled back for the shadow leaves the patient's count and latest hour as they were,
    and the shadow's scores from the rewound hour as they were before the revision: the next late
    value must not resume from them, but replay the stay."""
    posts = [obs("late", h, **v) for h, v in vitals_stream(N_HOURS, seed=8)]
    with client_for(db_url, shadow_root, shadow_models="sepsis-cfc:2", explain=False) as c:
        for body in posts:
            assert c.post("/predict", json=body, headers=hdr("ingest")).status_code == 200
        shadow = c.app.state.services.shadows.models[0]
        step = shadow.runtime.step

        def broken(*args, **kwargs):
            raise RuntimeError("shadow runtime down")

        shadow.runtime.step = broken
        try:
            assert c.post("/predict", json=_late(LATE_HOUR), headers=hdr("ingest")).status_code == 200
        finally:
            shadow.runtime.step = step
        assert c.post("/predict", json=_late(LATE_HOUR + 3), headers=hdr("ingest")).status_code == 200
        risks = _shadow_risks(c)
    want = _alone_after(tmp_path, shadow_root, posts + [_late(LATE_HOUR), _late(LATE_HOUR + 3)])
    assert set(risks) == set(want)
    for ts, risk in want.items():
        assert risks[ts] == pytest.approx(risk, abs=1e-6), ts


def _pairs_auroc(pos: list[float], neg: list[float]) -> float:
    """The definition itself: the share of (positive, negative) pairs ranked right, ties half."""
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_shadow_would_be_alarms_wait_for_the_first_measured_value(db_url, shadow_root):
    """As live (tests/service/test_first_measured.py): the hours between the admission and the first
    vital sign or lab raise no would-be alarm and count in none of the shadow's figures."""
    with client_for(db_url, shadow_root, model="never", model_version="1", shadow_models="always:1") as c:
        r = c.post("/patients", json={"patient_id": "w1", "age": 64, "unit": "SICU", "icu_admit_time": iso(T0)},
                   headers=hdr("ingest"))
        assert r.status_code == 201, r.text
        for h in (0.0, 1.0, 2.0):  # hours 1-3: nothing measured (the shadow's risk is at its threshold 0)
            assert c.post("/predict", json=obs("w1", h), headers=hdr("ingest")).status_code == 200
        for h in (3.0, 4.0):
            assert c.post("/predict", json=obs("w1", h, HR=95.0), headers=hdr("ingest")).status_code == 200
        shadow = _shadow_rows(c, "always", "1")
        figures = c.get("/stats/models", headers=hdr("viewer")).json()["models"][1]
    assert {k[1] for k, r in shadow.items() if r.alarm} == {iso(T0 + dt.timedelta(hours=3))}
    assert len(shadow) == 5
    assert (figures["model"], figures["alarms"], figures["patient_days"]) == ("always", 1, 2 / 24)


def test_a_late_value_after_the_outcome_keeps_the_shadow_would_be_alarms_raised_before_it(db_url, shadow_root):
    """As live: once an outcome is recorded nothing new is raised, and what was raised before stands.
    A late value rewinding the shadow re-steps hours whose would-be alarm it had already sent."""
    with client_for(db_url, shadow_root, model="never", model_version="1", shadow_models="always:1") as c:
        r = c.post("/patients", json={"patient_id": "w2", "age": 64, "unit": "SICU", "icu_admit_time": iso(T0)},
                   headers=hdr("ingest"))
        assert r.status_code == 201, r.text
        for h in (0.0, 1.0, 2.0, 3.0):
            assert c.post("/predict", json=obs("w2", h, HR=95.0), headers=hdr("ingest")).status_code == 200
        before = {k[1] for k, r in _shadow_rows(c, "always", "1").items() if r.alarm}
        r = c.post("/patients/w2/outcome", json={"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=10)),
                                                 "recorded_by": "dr r"}, headers=hdr("clinician"))
        assert r.status_code == 200, r.text
        late = c.post("/predict", json=obs("w2", 0.5, Lactate=2.0), headers=hdr("ingest"))  # hour 1, after the rest
        assert late.status_code == 200 and late.json()["revised_hours"] == [1, 2, 3, 4], late.text
        after = _shadow_rows(c, "always", "1")
    assert before == {iso(T0)}  # sent at the first measured hour
    assert {k[1] for k, r in after.items() if r.alarm} == before and len(after) == 4


def test_comparison_on_a_recorded_cohort(db_url, shadow_root, tmp_path):
    streams = {f"c{i}": vitals_stream(14, seed=10 + i) for i in range(4)}
    outcomes = {"c0": {"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=10))},
                "c1": {"outcome": "sepsis", "onset_time": iso(T0 + dt.timedelta(hours=20))},
                "c2": {"outcome": "no_sepsis", "discharged_at": iso(T0 + dt.timedelta(hours=14))}}  # c3: none yet

    def run(url, **kw):
        with client_for(url, shadow_root, **kw) as c:
            scored = _feed(c, streams)
            for pid, body in outcomes.items():
                assert c.post(f"/patients/{pid}/outcome", json={**body, "recorded_by": "dr r"},
                              headers=hdr("clinician")).status_code == 200
            return scored, c.get("/stats", headers=hdr("viewer")).json(), \
                c.get("/stats/models", headers=hdr("viewer")).json()

    live, live_stats, got = run(db_url, model="always", model_version="1", shadow_models="sepsis-cfc:2")
    alone, alone_stats, _ = run(f"sqlite:///{tmp_path / 'alone.db'}", model="sepsis-cfc", model_version="2")
    assert got["observations"] == sum(len(r) for r in streams.values()) and got["patients"] == 4
    assert got["patients_with_outcome"] == 3
    active, shadow = got["models"]
    assert (active["role"], active["model"], shadow["role"], shadow["model"]) == ("active", "always", "shadow", "sepsis-cfc")
    # alarm figures: what GET /stats says of the same stream served by that model
    for entry, stats in ((active, live_stats), (shadow, alone_stats)):
        for k in ("alarms", "patient_days", "alarms_per_patient_day", "true_alarms", "false_alarms",
                  "positive_predictive_value", "false_positive_rate", "median_lead_time_hours",
                  "septic_patients_alarmed_in_time"):
            assert entry[k] == pytest.approx(stats[k]), (entry["model"], k)
    # each of the 4 stays alarms at hour 0 and, nobody answering, again at hour 12 (the lockout):
    # true are c0's two (onset at hour 10) and c1's second (onset at hour 20; its first is too early)
    assert active["alarms"] == 8 and active["true_alarms"] == 3
    # AUROC by pairs, from the risks each model gave: window hours of septic stays against the rest
    onsets = {"c0": 10.0, "c1": 20.0}
    for entry, scored in ((active, live), (shadow, alone)):
        pos, neg = [], []
        for (pid, ts), r in scored.items():
            if pid == "c3":
                continue
            hour = (dt.datetime.fromisoformat(ts.replace("Z", "+00:00")) - T0).total_seconds() / 3600
            inside = pid in onsets and onsets[pid] - 12 <= hour <= onsets[pid] + 3
            (pos if inside else neg).append(r["risk"])
        assert entry["hours_in_window"] == len(pos) and entry["hours_with_outcome"] == len(pos) + len(neg)
        assert entry["auroc"] == pytest.approx(_pairs_auroc(pos, neg), abs=1e-9)
    assert shadow["auroc"] != pytest.approx(active["auroc"])


def test_shadow_models_setting_is_checked(shadow_root, sqlite_url):
    from service.lifecycle.shadows import parse_shadow_models

    assert parse_shadow_models(" a:1, b:2 ,") == [("a", "1"), ("b", "2")]
    for bad in ("a", "a:", ":1", "a:1,a:1"):
        with pytest.raises(ValueError, match="SEPSIS_SHADOW_MODELS"):
            parse_shadow_models(bad)
    with pytest.raises(LookupError, match="no model 'sepsis-cfc' version '9'"):
        with client_for(sqlite_url, shadow_root, shadow_models="sepsis-cfc:9"):
            pass
