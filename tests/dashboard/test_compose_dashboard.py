"""The dashboard's compose entry reaches the service by its compose name and port, and its image
serves the published port."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_service_in_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dash, svc = compose["services"]["dashboard"], compose["services"]["service"]
    api = urlparse(dash["environment"]["SEPSIS_DASHBOARD_API_URL"])
    assert api.hostname == "service" and api.port == int(svc["environment"]["SEPSIS_PORT"])
    assert "service" in dash["depends_on"] and "profiles" not in dash
    dockerfile = (ROOT / dash["build"]["context"] / dash["build"]["dockerfile"]).read_text()
    port = re.search(r'"--port", "(\d+)"', dockerfile).group(1)
    assert re.findall(r"^EXPOSE (\d+)", dockerfile, re.M) == [port]
    assert dash["ports"] == [f"{port}:{port}"]
    # the image holds only the dashboard: it must not need the service's code
    assert "COPY service" not in dockerfile and '".[dashboard]"' in dockerfile
