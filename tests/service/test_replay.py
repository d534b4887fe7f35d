"""The replay client streams .psv stays through the API so that the service sees the file's
ICULOS, demographics and outcome."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from service.ranges import FEATURES
from training.sepsis.replay import plan_stay, plan_stay_before, replay
from tests.service.conftest import KEYS, client_for, hdr

HEADER = "|".join(FEATURES) + "|SepsisLabel"


def write_psv(path, rows):
    lines = [HEADER] + ["|".join("NaN" if (isinstance(v, float) and np.isnan(v)) else f"{v:g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def make_rows(n, first_iculos, septic_from=None, temp_bad_at=None):
    rows = []
    for t in range(n):
        r = [np.nan] * 41
        r[FEATURES.index("HR")] = 80 + t
        if t % 2 == 0:
            r[FEATURES.index("Temp")] = 37.0 + t / 10
        if t == temp_bad_at:
            r[FEATURES.index("Temp")] = 3e6  # garbage no unit explains: the service refuses it
        r[FEATURES.index("Age")] = 64
        r[FEATURES.index("Gender")] = 0
        r[FEATURES.index("Unit1")] = 0
        r[FEATURES.index("Unit2")] = 1
        r[FEATURES.index("HospAdmTime")] = -2.5
        r[FEATURES.index("ICULOS")] = first_iculos + t
        r[40] = 1 if septic_from is not None and t >= septic_from else 0
        rows.append(r)
    return rows


def test_plan_places_icu_admission_so_iculos_matches_the_file():
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    values = np.array(make_rows(4, first_iculos=3, septic_from=2), dtype=np.float32)[:, :40]
    plan = plan_stay("x", values, np.array([0, 0, 1, 1], np.int8), start)
    assert plan.admission["icu_admit_time"] == (start - dt.timedelta(hours=2)).isoformat()
    assert plan.admission["unit"] == "SICU" and plan.admission["gender"] == 0
    assert [o["hour"] for o in plan.observations] == [0, 1, 2, 3]
    assert "ICULOS" not in plan.observations[0]["body"]["vitals"] and "Age" not in plan.observations[0]["body"]["vitals"]
    assert plan.outcome["onset_time"] == (start + dt.timedelta(hours=2 + 6)).isoformat()


def test_a_stay_is_placed_before_now():
    """The service refuses times ahead of its clock: every time a plan posts lies at or before now."""
    now = dt.datetime(2024, 5, 1, 10, 37, tzinfo=dt.timezone.utc)
    for septic_from in (None, 3):  # the onset (first label + 6 h) lies after the last row
        values = np.array(make_rows(5, first_iculos=2, septic_from=septic_from), dtype=np.float32)[:, :40]
        labels = np.array([0] * 5 if septic_from is None else [0, 0, 0, 1, 1], np.int8)
        plan = plan_stay_before("x", values, labels, now)
        times = [dt.datetime.fromisoformat(o["body"]["timestamp"]) for o in plan.observations]
        times.append(dt.datetime.fromisoformat(plan.outcome.get("onset_time") or plan.outcome["discharged_at"]))
        assert max(times) == plan.latest <= now and now - plan.latest < dt.timedelta(hours=1)
        assert times[0].minute == times[0].second == 0
        # the same stay as plan_stay lays it out, only moved
        same = plan_stay("x", values, labels, times[0])
        assert same.observations == plan.observations and same.outcome == plan.outcome


def test_replay_through_the_api(tmp_path, sqlite_url, models_root):
    from training.sepsis.data import iter_stays

    data = tmp_path / "setA"
    data.mkdir()
    write_psv(data / "p000001.psv", make_rows(5, first_iculos=1, septic_from=3, temp_bad_at=4))
    write_psv(data / "p000002.psv", make_rows(3, first_iculos=4))
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:  # nothing posted may lie ahead of now
        totals = replay(iter_stays(tmp_path), c, speed=0, api_key=KEYS["admin"], concurrency=2, prefix="r-",
                        progress=False)
        assert totals.errors == [] and (totals.stays, totals.posted, totals.dropped_values) == (2, 8, 1)
        one = c.get("/patients/r-p000001", headers=hdr("viewer")).json()
        two = c.get("/patients/r-p000002", headers=hdr("viewer")).json()
    assert [e["iculos"] for e in one["timeline"]] == [1, 2, 3, 4, 5]
    # a file that starts at ICULOS 4: the service steps from the admission's hour 1 (the three before empty)
    assert [e["iculos"] for e in two["timeline"]] == [1, 2, 3, 4, 5, 6]
    assert [e["vitals"] for e in two["timeline"][:3]] == [{}, {}, {}]
    assert "Temp" not in one["timeline"][4]["vitals"] and one["timeline"][4]["vitals"]["HR"] == 84
    assert (one["age"], one["unit2"], one["hosp_adm_time"]) == (64, 1, -2.5)
    assert one["outcome"] == "sepsis" and two["outcome"] == "no_sepsis"
    onset = dt.datetime.fromisoformat(one["onset_time"].replace("Z", "+00:00"))
    first = dt.datetime.fromisoformat(one["timeline"][3]["timestamp"].replace("Z", "+00:00"))
    assert onset - first == dt.timedelta(hours=6)


def test_replay_can_take_only_the_test_split(tmp_path, monkeypatch):
    """The demo replays stays the shipped model never trained on: exactly the test split's."""
    from training.sepsis.replay import select_stays
    from tests.training.conftest import make_archive, synthetic_stays
    from training.sepsis.data import load_cohort
    from training.sepsis.splits import patient_split

    monkeypatch.chdir(tmp_path)  # the cohort cache goes under ./.cache
    archive = make_archive(tmp_path, synthetic_stays(n=60, seed=3))
    cohort = load_cohort(archive, cache_dir=tmp_path / ".cache" / "sepsis", progress=False)
    expected = {str(cohort.patient_ids[i]) for i in patient_split(cohort, seed=0).test}
    chosen = select_stays(str(archive), "test", 0, None)
    assert {s.patient_id for s in chosen} == expected
    assert len(select_stays(str(archive), "test", 0, 3)) == 3
    assert len(select_stays(str(archive), "all", 0, None)) == 60


def test_the_service_imports_nothing_from_training():
    """service/ depends on models/ and its own storage only: its images carry no training code."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "service"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in ("training", "dashboard")]
    assert offenders == []


# What the replay image has (pip install ".[replay]": the core dependencies and pandas, httpx,
# tqdm); a module outside it fails the run as it would there.
_GUARD = """
import runpy, sys
OUTSIDE = {"torch", "sklearn", "scipy", "matplotlib", "ncps", "lightgbm", "fastapi", "sqlalchemy", "alembic",
           "uvicorn", "prometheus_client", "psycopg", "streamlit", "service", "dashboard", "triton"}
class Outside:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OUTSIDE:
            raise ModuleNotFoundError(f"{name} is not in the replay image")
sys.meta_path.insert(0, Outside())
sys.argv = ["python -m training.sepsis.replay"] + sys.argv[1:]
runpy.run_module("training.sepsis.replay", run_name="__main__")
"""


@pytest.mark.parametrize("split", ["all", "test"])
def test_the_replay_entry_point_runs_with_only_its_extra(tmp_path, sqlite_url, models_root, split):
    """The compose replay profile's command against a live service on loopback, with every module
    outside the replay extra refused at import."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx
    import uvicorn

    from service.app import create_app
    from tests.service.conftest import make_settings
    from tests.training.conftest import make_archive, synthetic_stays

    archive = make_archive(tmp_path, synthetic_stays(n=30, seed=5))  # 15% test: at least 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(make_settings(sqlite_url, models_root)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        run = subprocess.run([sys.executable, "-c", _GUARD, "--data", str(archive), "--url", url,
                              "--api-key", KEYS["admin"], "--speed", "0", "--limit", "3", "--split", split,
                              "--concurrency", "2"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        listed = httpx.get(f"{url}/patients", headers=hdr("viewer")).json()
        assert len([p for p in listed if p["patient_id"].startswith("replay-")]) == 3
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- ward mode: the demo's feed ----------------------------------------------------------------

def _stays(tmp_path, specs):
    from training.sepsis.data import iter_stays

    data = tmp_path / "ward"
    data.mkdir(exist_ok=True)
    for i, (n, septic_from) in enumerate(specs):
        write_psv(data / f"p{i + 1:06}.psv", make_rows(n, first_iculos=1, septic_from=septic_from))
    return list(iter_stays(data))


def test_discharge_comes_at_the_stay_end_with_the_outcome():
    from training.sepsis.replay import discharge_outcome

    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    quiet = plan_stay("q", np.array(make_rows(4, 1), np.float32)[:, :40], np.zeros(4, np.int8), start)
    assert discharge_outcome(quiet) == quiet.outcome  # already carries discharged_at = last row + 1 h
    septic = plan_stay("s", np.array(make_rows(10, 1, septic_from=8), np.float32)[:, :40],
                       np.array([0] * 8 + [1, 1], np.int8), start)
    out = discharge_outcome(septic)
    # onset (label + 6 h = hour 14) after the last row (hour 9): discharged at the onset, outcome sepsis
    assert out["outcome"] == "sepsis" and out["onset_time"] == (start + dt.timedelta(hours=14)).isoformat()
    assert out["discharged_at"] == (start + dt.timedelta(hours=14)).isoformat()


def test_feed_clock_never_runs_ahead_of_the_wall_clock():
    import time

    from training.sepsis.replay import FeedClock

    wall = dt.datetime.now(dt.timezone.utc)
    feed = FeedClock(wall - dt.timedelta(hours=1), speed=36000)  # 10 data hours a second
    time.sleep(0.2)
    assert feed.now() <= dt.datetime.now(dt.timezone.utc)
    assert feed.now() - (wall - dt.timedelta(hours=1)) > dt.timedelta(minutes=50)


def test_ward_replay_loops_with_fresh_ids_and_discharges_at_the_stay_end(tmp_path, sqlite_url, models_root):
    from training.sepsis.replay import replay_ward

    stays = _stays(tmp_path, [(6, None), (4, 2), (5, None)])
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:  # nothing posted may lie ahead of now
        totals = replay_ward(stays, c, beds=2, speed=36000, duration_s=5, api_key=KEYS["admin"], prefix="w-",
                             max_admissions=5, progress=False)
        listed = {p["patient_id"]: p for p in c.get("/patients", headers=hdr("viewer")).json()}
        details = {pid: c.get(f"/patients/{pid}", headers=hdr("viewer")).json() for pid in listed}
    assert totals.errors == [] and (totals.admitted, totals.stays) == (5, 5)
    # round 2 of the first two stays came back as new patients
    assert set(listed) == {"w-p000001-r1", "w-p000002-r1", "w-p000003-r1", "w-p000001-r2", "w-p000002-r2"}
    assert all(p["status"] == "discharged" for p in listed.values())  # every stay ended with its discharge
    assert [len(details[f"w-p00000{i}-r1"]["timeline"]) for i in (1, 2, 3)] == [6, 4, 5]
    assert details["w-p000002-r1"]["outcome"] == "sepsis" and details["w-p000001-r1"]["outcome"] == "no_sepsis"
    # the septic stay was confirmed at its onset and discharged at its end: in treatment between
    actions = [a["action"] for a in details["w-p000002-r1"]["audit"] if a["action"] in ("outcome", "discharge")]
    assert actions == ["outcome", "discharge"]
    assert [a["action"] for a in details["w-p000001-r1"]["audit"] if a["action"] in ("outcome", "discharge")] == ["outcome"]
    assert {d["bed"] for d in details.values()} == {"B01", "B02"}  # each bed's patients carry its name
    for d in details.values():
        last = max(dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in d["timeline"])
        assert dt.datetime.fromisoformat(d["discharged_at"].replace("Z", "+00:00")) >= last + dt.timedelta(hours=1)
    # a round-2 stay is admitted after its round-1 self ended: the feed moves on
    first = dt.datetime.fromisoformat(details["w-p000001-r1"]["discharged_at"].replace("Z", "+00:00"))
    again = dt.datetime.fromisoformat(details["w-p000001-r2"]["timeline"][0]["timestamp"].replace("Z", "+00:00"))
    assert again >= first - dt.timedelta(hours=6)


def test_ward_replay_keeps_every_bed_occupied_while_it_runs(tmp_path, sqlite_url, models_root):
    import threading
    import time

    from training.sepsis.replay import replay_ward

    stays = _stays(tmp_path, [(8, None), (6, None), (7, None)])
    stop = threading.Event()
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:
        runner = threading.Thread(target=replay_ward, args=(stays, c, 3, 7200, 600, KEYS["admin"]),
                                  kwargs=dict(prefix="b-", stop=stop, progress=False))
        runner.start()
        on_ward, seen = [], set()
        try:
            for _ in range(12):  # 6 s at 2 data hours per second: every bed discharges and readmits
                time.sleep(0.5)
                listed = c.get("/patients", headers=hdr("viewer")).json()
                on_ward.append(sum(p["status"] != "discharged" for p in listed))
                seen |= {p["patient_id"] for p in listed}
        finally:
            stop.set()
            runner.join(30)
    assert min(on_ward[2:]) >= 2 and max(on_ward) == 3  # never emptied once the beds filled
    assert len(seen) > 3  # discharges were followed by new admissions


def test_ward_replay_as_fhir_bundles(tmp_path, sqlite_url, models_root):
    from training.sepsis.replay import replay_ward

    from training.sepsis.data import iter_stays

    data = tmp_path / "fhir"
    data.mkdir()
    write_psv(data / "p000001.psv", make_rows(3, first_iculos=1, temp_bad_at=2))  # garbage at hour 2
    write_psv(data / "p000002.psv", make_rows(4, first_iculos=1))
    stays = list(iter_stays(data))
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:
        totals = replay_ward(stays, c, beds=2, speed=36000, duration_s=5, api_key=KEYS["admin"], prefix="f-",
                             fmt="fhir", max_admissions=2, progress=False)
        one = c.get("/patients/f-p000001-r1", headers=hdr("viewer")).json()
    assert totals.errors == [] and totals.stays == 2 and totals.dropped_values == 1
    assert "Temp" not in one["timeline"][2]["vitals"] and one["timeline"][2]["vitals"]["HR"] == 82
    assert len(one["timeline"]) == 3 and one["unit2"] == 1 and one["status"] == "discharged"
    assert one["timeline"][0]["vitals"]["HR"] == 80


# -- the realistic feed: per-value messages, late labs, duplicates, amendments -------------------

def test_plan_rows_fall_in_their_files_hour_on_the_models_grid():
    from models.grid import hour_of

    start = dt.datetime(2024, 1, 1, 6, tzinfo=dt.timezone.utc)
    values = np.array(make_rows(5, first_iculos=7), dtype=np.float32)[:, :40]
    plan = plan_stay("x", values, np.zeros(5, np.int8), start)
    admit = dt.datetime.fromisoformat(plan.admission["icu_admit_time"])
    assert [hour_of(dt.datetime.fromisoformat(o["body"]["timestamp"]), admit) for o in plan.observations] == \
        [7, 8, 9, 10, 11]


def _lab_rows(n, first_iculos=1):
    rows = make_rows(n, first_iculos=first_iculos)
    for t, r in enumerate(rows):
        if t % 3 == 1:
            r[FEATURES.index("Lactate")] = 1.5 + t / 10
            r[FEATURES.index("WBC")] = 9 + t
    return rows


@pytest.mark.parametrize("fmt", ["json", "fhir"])
def test_a_realistic_feed_is_sent_and_refusals_are_counted_by_reason(tmp_path, sqlite_url, models_root, fmt):
    """Each value its own message, labs after later vitals, duplicates, amendments: the service files
    every one in its hour and refuses none (the replay would count refusals by reason)."""
    from training.sepsis.data import iter_stays
    from training.sepsis.feed import realistic_feed
    from training.sepsis.replay import place_feed

    data = tmp_path / "feed"
    data.mkdir()
    write_psv(data / "p000001.psv", _lab_rows(8))
    write_psv(data / "p000002.psv", _lab_rows(6, first_iculos=3))
    stays = list(iter_stays(data))
    now = dt.datetime.now(dt.timezone.utc)
    sent = sum(len(place_feed("r-" + s.patient_id, s, now, seed=1)[1]) for s in stays)
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:
        totals = replay(stays, c, speed=0, api_key=KEYS["admin"], concurrency=1, prefix="r-", progress=False,
                        feed="realistic", fmt=fmt, seed=1)
        one = c.get("/patients/r-p000001", headers=hdr("viewer")).json()
    assert totals.errors == [] and totals.stays == 2
    assert totals.posted == sent and not totals.refused
    assert one["outcome"] == "no_sepsis" and one["timeline"]
    assert realistic_feed("x", np.array(_lab_rows(8), np.float32)[:, :40], now, seed=1)  # labs are in it


def test_a_realistic_feed_is_placed_before_now():
    """A stay's last lab result (and its amendment) comes hours after its last row: the whole feed
    is moved back so that nothing is sent from the future."""
    from types import SimpleNamespace

    from training.sepsis.replay import place_feed

    from training.sepsis.feed import realistic_feed

    now = dt.datetime(2024, 5, 1, 10, 37, tzinfo=dt.timezone.utc)
    values = np.array(_lab_rows(11), np.float32)[:, :40]  # labs drawn in the last hour
    stay = SimpleNamespace(values=values, labels=np.zeros(11, np.int8))
    rows_only = plan_stay_before("x", values, stay.labels, now)
    first_row = dt.datetime.fromisoformat(rows_only.observations[0]["body"]["timestamp"])
    assert realistic_feed("x", values, first_row, seed=3)[-1].sent > now  # placed as rows, results would be late
    plan, messages = place_feed("x", stay, now, seed=3)
    assert messages[-1].sent <= now and plan.latest <= now
    assert now - messages[-1].sent < dt.timedelta(hours=1) + dt.timedelta(minutes=1) or \
        now - plan.latest < dt.timedelta(hours=1)  # moved back no further than needed
    first = dt.datetime.fromisoformat(plan.observations[0]["body"]["timestamp"])
    assert first.minute == first.second == 0 and min(m.charted.time for m in messages) >= first


@pytest.mark.parametrize("fmt", ["json", "fhir"])
def test_ward_replay_with_the_realistic_feed(tmp_path, sqlite_url, models_root, fmt):
    """The demo's ward: each value its own message at its arrival, labs late, duplicates and
    amendments; nothing refused, every stay discharged, each hour holding its file's values."""
    from training.sepsis.data import iter_stays
    from training.sepsis.replay import replay_ward

    data = tmp_path / "ward-feed"
    data.mkdir()
    write_psv(data / "p000001.psv", _lab_rows(6))
    write_psv(data / "p000002.psv", _lab_rows(5))
    stays = list(iter_stays(data))
    with client_for(sqlite_url, models_root, future_margin_hours=0) as c:
        totals = replay_ward(stays, c, beds=2, speed=36000, duration_s=5, api_key=KEYS["admin"], prefix="v-",
                             fmt=fmt, max_admissions=2, progress=False, messages="realistic", seed=2)
        one = c.get("/patients/v-p000001-r1", headers=hdr("viewer")).json()
    assert totals.errors == [] and totals.stays == 2 and not totals.refused and totals.posted > 0
    assert one["status"] == "discharged"
    rows = np.array(_lab_rows(6), np.float32)[:, :40]
    for e, row in zip(one["timeline"], rows):
        want = {n: float(row[i]) for i, n in enumerate(FEATURES[:34]) if np.isfinite(row[i])}
        assert e["vitals"] == pytest.approx(want)
