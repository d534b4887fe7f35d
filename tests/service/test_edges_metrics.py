"""Request metrics have a bounded set of labels: made-up methods and paths no route has are folded
("other", "unmatched"), so a flood of junk requests cannot grow every scrape without bound."""
from __future__ import annotations

from tests.service.conftest import client_for, hdr


def _series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines()
            if line.startswith("sepsis_http_request_duration_seconds_count")}


def test_junk_requests_add_a_bounded_set_of_series(sqlite_url, models_root):
    with client_for(sqlite_url, models_root) as c:
        def junk(i: int) -> None:
            c.request(f"FOO{i}", "/predict")
            c.request(f"BAR{i}", f"/nowhere/{i}")
            c.request("GET", f"/nowhere/{i}?x={i}")
            c.request("PATCH", f"/alarms/{i}/ack")
            c.request("GET", f"/patients/p{i}")

        c.get("/metrics", headers=hdr("monitor"))  # the scrape's own series
        for i in range(5):
            junk(i)
        first = c.get("/metrics", headers=hdr("monitor")).text
        for i in range(5, 40):
            junk(i)
        then = c.get("/metrics", headers=hdr("monitor")).text
        assert _series(then) == _series(first), _series(then) - _series(first)
        assert len(_series(then)) < 12
        labels = " ".join(_series(then))
        assert 'method="other",route="/predict",status="405"' in labels
        assert 'method="other",route="unmatched",status="404"' in labels
        assert 'method="GET",route="/patients/{patient_id}",status="401"' in labels
