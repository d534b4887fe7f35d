"""The API client: typed results and every failure turned into a message for the screen."""
from __future__ import annotations

import httpx
import pytest

from dashboard.client import ApiError, ServiceClient
from devtools.processes import free_port


def test_reads_are_typed(stack):
    c = ServiceClient(stack.url, stack.keys["viewer"])
    p = c.patient(stack.septic)
    assert p.unit == "SICU" and p.summary.outcome == "sepsis" and p.summary.onset_time.tzinfo is not None
    assert [t.vitals["HR"] for t in p.timeline] == [80.0, 83.0, 86.0, 89.0]
    assert {s.patient_id: s.unit for s in c.patients()}[stack.septic] == "SICU"
    assert p.alarms[0].verdict == "true"
    r = c.ready()
    assert (r.model, r.model_version, r.threshold, r.provider) == ("sepsis-cfc", "1", 0.0, "CPUExecutionProvider")
    assert c.stats().true_alarms == 2  # the septic patient's and the one in treatment without data (bed-gone)


@pytest.mark.parametrize("key,kind,text", [(None, "auth", "No API key given"),
                                           ("nope", "auth", "API key was not accepted")])
def test_missing_or_wrong_key(stack, key, kind, text):
    with pytest.raises(ApiError) as e:
        ServiceClient(stack.url, key).patients()
    assert e.value.kind == kind and text in e.value.message


def test_viewer_acting_is_forbidden_with_the_reason(stack):
    with pytest.raises(ApiError) as e:
        ServiceClient(stack.url, stack.keys["viewer"]).resolve(1, "me")
    assert e.value.status == 403 and "role 'viewer'" in e.value.message and "clinician key" in e.value.message


def test_not_found_and_invalid_input(stack):
    c = ServiceClient(stack.url, stack.keys["clinician"])
    with pytest.raises(ApiError, match="no patient 'ghost'") as e:
        c.patient("ghost")
    assert e.value.kind == "not_found"
    with pytest.raises(ApiError) as e:
        c.snooze(1, "me", minutes=-5)
    assert e.value.kind == "invalid" and "minutes" in e.value.message


def test_unreachable_and_timeout():
    with pytest.raises(ApiError, match="Cannot reach the sepsis service at http://127.0.0.1:") as e:
        ServiceClient(f"http://127.0.0.1:{free_port()}", "k").patients()
    assert e.value.kind == "unreachable"

    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)
    with pytest.raises(ApiError, match="did not answer within 5 s") as e:
        ServiceClient("http://svc", "k", transport=httpx.MockTransport(slow)).patients()
    assert e.value.kind == "timeout"


@pytest.mark.parametrize("status,body,text", [
    (200, b"<html>hi</html>", "not JSON"),
    (200, b'[{"patient_id": 1}]', "does not understand"),
    (500, b'{"detail": "internal error (OperationalError); nothing was stored"}', "HTTP 500"),
])
def test_wrong_answers_become_messages(status, body, text):
    t = httpx.MockTransport(lambda r: httpx.Response(status, content=body))
    with pytest.raises(ApiError, match=text):
        ServiceClient("http://svc", "k", transport=t).patients()


@pytest.mark.parametrize("status,body,allowed", [(200, {"role": "viewer", "permissions": ["viewer"]}, False),
                                                 (200, {"role": "clinician", "permissions": ["clinician", "viewer"]}, True),
                                                 (401, {"detail": "unknown or revoked API key"}, False)])
def test_may_asks_whoami(status, body, allowed):
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path))
        return httpx.Response(status, json=body)

    c = ServiceClient("http://svc", "k", transport=httpx.MockTransport(answer))
    assert c.may("clinician") is allowed
    assert sent == [("GET", "/whoami")]  # asks; never tries an action


def test_may_on_a_real_service_changes_nothing(stack):
    before = httpx.get(f"{stack.url}/alarms", params={"limit": 1000}, headers={"X-API-Key": stack.keys["viewer"]}).json()
    assert ServiceClient(stack.url, stack.keys["viewer"]).may("clinician") is False
    assert ServiceClient(stack.url, stack.keys["clinician"]).may("clinician") is True
    assert ServiceClient(stack.url, stack.keys["clinician"]).may("admin") is False
    assert ServiceClient(stack.url, stack.keys["admin"]).may("admin") is True
    after = httpx.get(f"{stack.url}/alarms", params={"limit": 1000}, headers={"X-API-Key": stack.keys["viewer"]}).json()
    assert after == before


def test_periods_name_what_opened_them_and_an_older_service_still_parses():
    figures = dict(chosen_by=None, patients=1, patient_days=1.0, alarms=0, alarms_per_patient_day=0.0, septic_patients=0,
                   septic_patients_alarmed_in_time=0, caught_in_window=None, median_lead_time_hours=None,
                   alarmed_before_onset=None, ppv_per_stay=None, positive_predictive_value=None, red_share=0.0)
    first = {"unit": "SICU", "point_id": None, "threshold": 0.15, "start": None, "end": "2024-03-01T11:00:00Z", **figures}
    opened = {**first, "threshold": 0.3, "start": "2024-03-01T11:00:00Z", "end": None, "chosen_by": "dr upgrade",
              "cause": "model_switch", "model": "sepsis-cfc", "model_version": "2"}

    def answer(periods):
        body = {"definition": "d", "window_hours": [-12.0, 3.0], "periods": periods}
        return ServiceClient("http://svc", "k", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body)))

    old, new = answer([first]).stats_periods(), answer([first, opened]).stats_periods()
    assert (old[0].cause, old[0].model, old[0].model_version) == (None, None, None)  # a service before switches opened periods
    assert (new[1].cause, new[1].model, new[1].model_version, new[1].start.hour) == ("model_switch", "sepsis-cfc", "2", 11)
