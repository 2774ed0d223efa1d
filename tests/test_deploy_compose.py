"""docker-compose.yml, the Dockerfile and .dockerignore: parsed and checked against the chart.

No container runtime runs here: the files are read (PyYAML) and compared with the Helm
chart's rendered manifests, so the two deployments keep describing the same service.
"""

import re
import shlex
from typing import Any

import pytest
import yaml
from deploy_chart import COMPOSE, ROOT, env_values, find, pod_spec, render

from app.main import create_app
from app.settings import Settings

INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEYS?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render(None)


@pytest.fixture(scope="module")
def routes(settings: Settings) -> set[str]:
    return {getattr(route, "path", "") for route in create_app(settings).routes}


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_services_and_their_order(compose):
    services = compose["services"]
    assert {"api", "scheduler", "worker", "postgres", "s3", "s3-bucket", "demo"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    api = services["api"]["depends_on"]
    assert api["postgres"]["condition"] == "service_healthy"
    assert api["s3-bucket"]["condition"] == "service_completed_successfully"
    assert api["demo"]["condition"] == "service_completed_successfully"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # The bucket is created on start, and only once the store answers.
    bucket = services["s3-bucket"]
    assert "mc mb --ignore-existing" in " ".join(bucket["command"])
    assert bucket["depends_on"]["s3"]["condition"] == "service_healthy"


def test_ports_are_published_on_loopback(compose):
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    for port in published:
        assert str(port).startswith("127.0.0.1:"), port


def test_no_hard_coded_secrets(compose):
    example = (ROOT / ".env.example").read_text()
    defined = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert used <= defined, f"not in .env.example: {used - defined}"
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}: {key} is hard-coded"
        database = _env(service).get("TERRATILER_DATABASE_URL")
        if database:
            assert "${POSTGRES_PASSWORD" in database


def test_batch_outputs_on_s3(compose):
    for name in ("api", "worker"):
        env = _env(compose["services"][name])
        assert env["TERRATILER_BATCH_OUTPUTS"].startswith("s3://")
        assert env["TERRATILER_S3_ENDPOINT_URL"] == "http://s3:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    # The bucket the outputs go to is the one created on start.
    bucket = _env(compose["services"]["s3-bucket"])["S3_BUCKET"]
    outputs = _env(compose["services"]["api"])["TERRATILER_BATCH_OUTPUTS"]
    assert outputs == f"s3://{bucket}/jobs"


def test_compose_agrees_with_the_chart(compose, chart):
    services = compose["services"]
    # One image for the API, the scheduler and the workers, in both.
    images = {services[n]["image"] for n in ("api", "scheduler", "worker")}
    assert len(images) == 1 and services["api"]["build"] == "."
    # The scheduler: `dask scheduler` on the chart's port; the API and the workers point at it.
    scheduler_port = find(chart, "Service", "scheduler")["spec"]["ports"][0]["port"]
    chart_scheduler = pod_spec(find(chart, "Deployment", "scheduler"))["containers"][0]
    compose_scheduler = services["scheduler"]
    assert chart_scheduler["command"] == compose_scheduler["entrypoint"] == ["dask"]
    assert chart_scheduler["args"][0] == compose_scheduler["command"][0] == "scheduler"
    command = compose_scheduler["command"]
    assert int(command[command.index("--port") + 1]) == scheduler_port
    address = f"tcp://scheduler:{scheduler_port}"
    for name in ("api", "worker"):
        assert _env(services[name])["TERRATILER_DASK_SCHEDULER"] == address
    # Workers: `dask worker <scheduler>` with threads and a memory limit, in both.
    chart_worker = pod_spec(find(chart, "Deployment", "workers"))["containers"][0]
    compose_worker = services["worker"]
    assert chart_worker["command"] == compose_worker["entrypoint"] == ["dask"]
    assert compose_worker["command"][:2] == ["worker", address]
    for flag in ("--nworkers", "--nthreads", "--memory-limit", "--local-directory"):
        assert flag in chart_worker["args"] and flag in compose_worker["command"], flag
    # The API: `terratiler serve` on the port the chart probes.
    chart_api = pod_spec(find(chart, "Deployment", "api"))["containers"][0]
    port = next(p["containerPort"] for p in chart_api["ports"] if p["name"] == "http")
    assert services["api"]["command"][0] == chart_api["args"][0] == "serve"
    assert services["api"]["ports"][0].endswith(f":{port}")
    # Read-only root file systems with a writable /tmp, in both.
    for name in ("api", "scheduler", "worker"):
        assert services[name]["read_only"] is True and "/tmp" in services[name]["tmpfs"]
    # The same settings reach the containers: the chart's env names are what compose sets.
    chart_env = env_values(chart_api)
    for key in ("TERRATILER_DASK_SCHEDULER", "TERRATILER_DATABASE_URL"):
        assert key in chart_env and key in _env(services["api"])
    # PostgreSQL: the same major version as the chart's bundled StatefulSet.
    bundled = pod_spec(find(chart, "StatefulSet", "postgresql"))["containers"][0]["image"]
    assert services["postgres"]["image"].split(":")[1] == bundled.split(":")[1]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile(routes):
    instructions = _dockerfile_instructions()
    text = (ROOT / "Dockerfile").read_text()
    health = [arg for name, arg in instructions if name == "HEALTHCHECK"]
    assert len(health) == 1
    path = re.search(r"http://127\.0\.0\.1:8000(/[a-z]+)", health[0]).group(1)
    assert path == "/healthz" and path in routes
    # No proxy is trusted unless configured; the demo is generated by an explicit command.
    assert "forwarded-allow-ips" not in text
    command = dict(instructions)["CMD"]
    assert "demo" not in command and "serve" in command
    assert dict(instructions)["ENTRYPOINT"] == '["terratiler"]'
    user = dict(instructions)["USER"]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"


def test_dockerignore():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv*", "data/", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".git"} <= ignored
    # What the Dockerfile copies is not ignored.
    copied = {
        word
        for name, arg in _dockerfile_instructions()
        if name == "COPY"
        for word in shlex.split(arg)[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "app"}
    assert not copied & ignored
