"""docker-compose.yml, the Dockerfiles and the Prometheus config agree with each other and with the
service's settings (docker itself is not available to the tests)."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml")

from service.config import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict, base: dict) -> dict:
    return {**base, **service.get("environment", {})}


def test_services_and_profiles(compose):
    services = compose["services"]
    assert {"postgres", "service", "prometheus", "replay"} <= set(services)
    assert services["replay"]["profiles"] == ["replay"]
    assert "profiles" not in services["service"] and "profiles" not in services["prometheus"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_images_built_from_existing_dockerfiles_that_serve_the_exposed_port(compose):
    built = {}
    for name, svc in compose["services"].items():
        if "build" in svc:
            dockerfile = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            text = dockerfile.read_text()
            if "ports" not in svc:  # the replay client serves nothing
                built[svc["image"]] = None
                continue
            exposed = re.findall(r"^EXPOSE (\d+)", text, re.M)
            cmd_port = re.search(r'"--port", "(\d+)"', text).group(1)
            assert exposed == [cmd_port]
            built[svc["image"]] = int(cmd_port)
    assert (ROOT / "docker" / "trainer.Dockerfile").is_file()
    assert "onnxruntime-gpu" in (ROOT / "docker" / "service-gpu.Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:.*cudnn-runtime", (ROOT / "docker" / "service-gpu.Dockerfile").read_text(), re.M)
    # the replay runs an image that compose builds, with the extra that holds what it imports
    assert compose["services"]["replay"]["image"] in built
    replay_file = (ROOT / compose["services"]["replay"]["build"]["dockerfile"]).read_text()
    assert 'pip install ".[replay]"' in replay_file and "COPY training" in replay_file
    assert "python -m training.sepsis.replay" in compose["services"]["replay"]["command"]
    for name in ("service-cpu", "service-gpu"):  # the service images carry no training code
        assert "COPY training" not in (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    for name in ("service", "service-gpu"):
        svc = compose["services"][name]
        env = {k: str(v) for k, v in _env(svc, {}).items()}
        host, container = svc["ports"][0].split(":")
        assert int(container) == built[svc["image"]] == int(env["SEPSIS_PORT"])
    hosts = [s["ports"][0].split(":")[0] for s in compose["services"].values() if s.get("ports")]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"


def test_database_url_points_at_the_postgres_service(compose):
    pg = compose["services"]["postgres"]["environment"]
    url = urlparse(compose["services"]["service"]["environment"]["SEPSIS_DB_URL"])
    assert url.scheme == "postgresql+psycopg" and url.hostname == "postgres" and url.port == 5432
    assert (url.username, url.password, url.path.lstrip("/")) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert set(compose["services"]["service"]["environment"]) <= {f"SEPSIS_{f.upper()}" for f in Settings.model_fields}


def test_prometheus_scrapes_the_service_metrics(compose):
    prom_svc = compose["services"]["prometheus"]
    mount = next(v for v in prom_svc["volumes"] if "prometheus.yml" in v)
    local = ROOT / mount.split(":")[0]
    assert local == ROOT / "deploy" / "prometheus.yml"
    config = yaml.safe_load(local.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sepsis-service")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    target = job["static_configs"][0]["targets"][0]
    host, port = target.split(":")
    assert host in compose["services"]
    assert int(port) == int(compose["services"][host]["ports"][0].split(":")[1])


def test_prometheus_scrapes_with_a_monitor_key(compose):
    """/metrics needs the metrics permission: the key compose seeds as a monitor key is the bearer
    token Prometheus reads from the mounted config."""
    from service.auth import GRANTS

    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sepsis-service")
    auth = job["authorization"]
    assert auth["type"] == "Bearer"
    mount = next(c for c in compose["services"]["prometheus"]["configs"] if c["target"] == auth["credentials_file"])
    content = compose["configs"][mount["source"]]["content"]
    seeded = compose["services"]["service"]["environment"]["SEPSIS_BOOTSTRAP_KEYS"]
    variable = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", content).group(1)
    role = re.search(r"(\w+):\$\{" + variable + r"\b", seeded).group(1)
    assert "metrics" in GRANTS[role] and GRANTS[role] == frozenset({"metrics"})
