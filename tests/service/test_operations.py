"""Probes stay open; /metrics needs a key with the metrics permission, given as X-API-Key or as the
bearer token a Prometheus scrape sends."""
from __future__ import annotations

from tests.service.conftest import KEYS, hdr


def test_metrics_need_the_metrics_permission(client):
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert client.get("/metrics", headers={"Authorization": "Bearer sk_unknown"}).status_code == 401
    for role in ("ingest", "clinician", "viewer"):
        r = client.get("/metrics", headers=hdr(role))
        assert r.status_code == 403 and "'metrics' permission" in r.json()["detail"], role
    for headers in (hdr("monitor"), hdr("admin"), {"Authorization": f"Bearer {KEYS['monitor']}"},
                    {"Authorization": f"bearer {KEYS['admin']}"}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 200 and "sepsis_model_info" in r.text, headers


def test_the_monitor_role_reads_nothing_else(client):
    assert client.get("/patients", headers=hdr("monitor")).status_code == 403
    assert client.post("/predict", json={"patient_id": "m", "timestamp": "2024-01-01T00:00:00Z", "vitals": {}},
                       headers=hdr("monitor")).status_code == 403
