"""A FHIR bundle over the row cap (SEPSIS_MAX_BATCH_ROWS Observations with values) is a 413 naming the
limit before any entry is validated; one at the cap (a patient by fullUrl or Patient/ID, a time in
any zone, an Observation without a value not counted) is not refused."""
from __future__ import annotations

from service.fhir.reading import count_scored
from tests.service.conftest import client_for, hdr
from tests.service.test_fhir import at, bundle, issues, observation, patient, post

CAP = 5


def test_a_bundle_over_the_cap_is_refused_before_its_entries_are_validated(sqlite_url, models_root):
    rows = [observation("c1", h, "8867-4", 80 + h, "/min") for h in range(CAP + 1)]
    rows[0]["status"] = "not-a-status"  # validation would name this entry first
    with client_for(sqlite_url, models_root, max_batch_rows=CAP) as c:
        r = post(c, bundle(patient("c1"), *rows))
        assert r.status_code == 413, r.text
        [issue] = issues(r)
        assert issue["code"] == "too-costly" and issue["expression"] == ["Bundle.entry"]
        assert f"{CAP + 1} Observations with values" in issue["diagnostics"] and f"at most {CAP}" in issue["diagnostics"]
        assert "SEPSIS_MAX_BATCH_ROWS" in issue["diagnostics"]
        assert c.get("/patients/c1", headers=hdr()).status_code == 404  # nothing stored


def test_a_bundle_at_the_cap_is_scored_however_it_names_patients_and_times(sqlite_url, models_root):
    half = CAP // 2
    body = bundle(patient("c2"), *[observation("c2", h, "8867-4", 80 + h, "/min") for h in range(half)])
    by_url = body["entry"][0]["fullUrl"]
    for h in range(CAP - half):  # the patient by its fullUrl, the time an hour east of UTC
        o = observation("c2", h, "9279-1", 16, "/min", subject={"reference": by_url})
        o["effectiveDateTime"] = at(h + 1).replace("Z", "+01:00")
        body["entry"].append({"fullUrl": f"urn:uuid:r{h}", "resource": o, "request": {"method": "POST", "url": "Observation"}})
    absent = observation("c2", CAP + 1, "8867-4", 80, "/min", dataAbsentReason={"text": "not measured"})
    del absent["valueQuantity"]  # not measured: not counted
    body["entry"].append({"fullUrl": "urn:uuid:absent", "resource": absent, "request": {"method": "POST", "url": "Observation"}})
    assert count_scored(body["entry"]) == CAP
    with client_for(sqlite_url, models_root, max_batch_rows=CAP) as c:
        r = post(c, body)
        assert r.status_code == 200, r.text
        timeline = c.get("/patients/c2", headers=hdr()).json()["timeline"]
    assert len(timeline) == CAP - half and all(e["vitals"]["Resp"] == 16 for e in timeline)
