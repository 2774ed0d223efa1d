"""The Helm chart (deploy/helm/terratiler): lint, render, validate, wiring; offline.

Helm's own library lints and renders the chart (helm-python-sdk bundles Helm 4); every
manifest is validated against Kubernetes' OpenAPI schemas of KUBERNETES_VERSION
(kubernetes-validate, bundled, no cluster). No Kubernetes runs here: what is checked is that
the manifests are valid and wired to each other and to the service as it is.
"""

import importlib.util
import os
import sys
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from deploy_chart import (
    CHART,
    KUBERNETES_VERSION,
    RELEASE,
    env_values,
    find,
    pod_spec,
    production_values,
    render,
)

from app.main import create_app
from app.settings import Settings

SETUPS = ["default", "production"]


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """The chart rendered with its defaults and with the production example."""
    return {"default": render(None), "production": render(production_values())}


@pytest.fixture(scope="module")
def routes(settings: Settings) -> set[str]:
    """The paths the service answers (``create_app``'s routes)."""
    return {getattr(route, "path", "") for route in create_app(settings).routes}


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("setup", SETUPS)
def test_chart_lints_clean(setup):
    values = production_values() if setup == "production" else None
    report = helm_python.lint(
        CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}", quiet=False
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("setup", SETUPS)
def test_every_manifest_validates(manifests, setup):
    docs = manifests[setup]
    kinds = {d["kind"] for d in docs}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret"}
    assert expected <= kinds
    # The bundled PostgreSQL by default; an external one (a Secret of the user's) in production.
    assert ("StatefulSet" in kinds) == (setup == "default")
    assert ("Ingress" in kinds) == (setup == "production")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # The autoscaler drives the API's Deployment, which then leaves its replicas to it.
    api = find(docs, "Deployment", "api")
    target = find(docs, "HorizontalPodAutoscaler", "api")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    assert "replicas" not in api["spec"]
    if setup == "production":
        backend = find(docs, "Ingress", "api")["spec"]["rules"][0]["http"]["paths"][0]
        assert (
            backend["backend"]["service"]["name"]
            == find(docs, "Service", "api")["metadata"]["name"]
        )


def test_validation_would_catch_a_bad_manifest(manifests):
    api = find(manifests["default"], "Deployment", "api")
    broken = yaml.safe_load(yaml.safe_dump(api))
    pod_spec(broken)["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("setup", SETUPS)
def test_dask_wiring(manifests, setup):
    docs = manifests[setup]
    scheduler_service = find(docs, "Service", "scheduler")
    port = next(p for p in scheduler_service["spec"]["ports"] if p["name"] == "scheduler")
    address = f"tcp://{scheduler_service['metadata']['name']}:{port['port']}"
    api = pod_spec(find(docs, "Deployment", "api"))["containers"][0]
    assert env_values(api)["TERRATILER_DASK_SCHEDULER"] == address
    worker = pod_spec(find(docs, "Deployment", "workers"))["containers"][0]
    assert worker["command"] == ["dask"] and worker["args"][:2] == ["worker", address]
    assert env_values(worker)["TERRATILER_DASK_SCHEDULER"] == address
    scheduler = pod_spec(find(docs, "Deployment", "scheduler"))
    container = scheduler["containers"][0]
    assert container["args"][0] == "scheduler"
    assert container["args"][container["args"].index("--port") + 1] == str(port["port"])
    # The Service selects the scheduler pods and reaches the port it listens on.
    labels = find(docs, "Deployment", "scheduler")["spec"]["template"]["metadata"]["labels"]
    assert scheduler_service["spec"]["selector"].items() <= labels.items()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == port["port"]
    # Threads and memory from values reach the worker's command line and its limit.
    values = (
        production_values()
        if setup == "production"
        else yaml.safe_load((CHART / "values.yaml").read_text())
    )
    workers = values["dask"]["workers"]
    args = worker["args"]
    assert args[args.index("--nthreads") + 1] == str(workers["threads"])
    assert args[args.index("--memory-limit") + 1] == workers["memoryLimit"]
    assert worker["resources"]["limits"]["memory"] == workers["memoryLimit"]


@pytest.mark.parametrize("setup", SETUPS)
def test_same_image_for_api_scheduler_and_workers(manifests, setup):
    docs = manifests[setup]
    images = {
        name: pod_spec(find(docs, "Deployment", name))["containers"][0]["image"]
        for name in ("api", "scheduler", "workers")
    }
    assert len(set(images.values())) == 1, images
    if setup == "production":
        assert images["api"] == "registry.example.com/terratiler:0.1.0"


@pytest.mark.parametrize("setup", SETUPS)
def test_probes_and_metrics_hit_routes_that_exist(manifests, routes, setup):
    deployment = find(manifests[setup], "Deployment", "api")
    api = pod_spec(deployment)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in routes and get["path"] == "/healthz"
        assert get["port"] in ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    # The API listens where the probes look.
    args = api["args"]
    assert api["command"] == ["terratiler"] and args[0] == "serve"
    assert int(args[args.index("--port") + 1]) == ports["http"]
    assert "*" not in args


def _secret_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    refs: set[tuple[str, str | None]] = set()
    for doc in _workloads(docs):
        for container in pod_spec(doc)["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    refs.add((source["secretRef"]["name"], None))
    return refs


@pytest.mark.parametrize("setup", SETUPS)
def test_secrets_referenced_exist(manifests, setup):
    docs = manifests[setup]
    rendered = {
        d["metadata"]["name"]: {**d.get("data", {}), **(d.get("stringData") or {})}
        for d in docs
        if d["kind"] == "Secret"
    }
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    # Production names Secrets the operator creates beforehand (the file's comment says how).
    values = production_values() if setup == "production" else {}
    external = {
        values.get("postgresql", {}).get("external", {}).get("existingSecret"),
        values.get("objectStorage", {}).get("existingSecret"),
        *[
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in values.get("extraEnv", [])
            if "valueFrom" in e
        ],
    } - {None, ""}
    refs = _secret_refs(docs)
    assert refs
    for name, key in refs:
        if name in external:
            continue
        assert name in rendered, f"secret {name} is referenced but not rendered"
        assert key is None or key in rendered[name], f"secret {name} has no key {key}"
    assert {name for name, _ in refs} & external == external
    for doc in _workloads(docs):
        for container in pod_spec(doc)["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
    if setup == "default":
        # The bundled database's URL takes its password from the rendered Secret.
        api = pod_spec(find(docs, "Deployment", "api"))["containers"][0]
        env = env_values(api)
        assert env["TERRATILER_PG_PASSWORD"]["secretKeyRef"]["name"].endswith("-postgresql")
        assert "$(TERRATILER_PG_PASSWORD)@" in env["TERRATILER_DATABASE_URL"]
        postgres = find(docs, "Service", "postgresql")["metadata"]["name"]
        assert f"@{postgres}:5432/" in env["TERRATILER_DATABASE_URL"]
    else:
        api = pod_spec(find(docs, "Deployment", "api"))["containers"][0]
        assert env_values(api)["TERRATILER_DATABASE_URL"]["secretKeyRef"]["name"] == "terratiler-db"


@pytest.mark.parametrize("setup", SETUPS)
def test_pods_are_non_root_read_only_and_bounded(manifests, setup):
    for doc in _workloads(manifests[setup]):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        mounted_volumes = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts and mounts["/tmp"] in mounted_volumes, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
        for container in spec["containers"]:
            if container["name"] in ("api", "worker"):
                assert spec["securityContext"]["runAsUser"] == 10001
                assert env_values(container)["HOME"] == "/tmp"


def _load_generator():
    path = CHART.parent / "settings_values.py"
    spec = importlib.util.spec_from_file_location("settings_values", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("settings_values", module)
    spec.loader.exec_module(module)
    return module


def test_values_list_every_setting():
    generator = _load_generator()
    text = (CHART / "values.yaml").read_text()
    assert generator.settings_block() in text, "run python deploy/helm/settings_values.py"
    values = yaml.safe_load(text)
    assert list(values["settings"]) == list(Settings.model_fields)


def _sample(name: str) -> Any:
    """A value of setting ``name`` to set through values: not its default, of its type."""
    special = {
        "catalog": "s3://bucket/catalog",
        "public_url": "https://tiles.example.com/terratiler",
        "database_url": "postgresql+psycopg://u:p@db:5432/t",
        "dask_scheduler": "tcp://elsewhere:8786",
        "s3_endpoint_url": "http://minio:9000",
        "api_keys": ["k1", "k2"],
        "allowed_sources": ["s3://bucket/", "https://cogs.example.com/"],
        "batch_outputs": ["s3://bucket/out"],
        "gdal_skip_drivers": ["WMS", "HTTP"],
        "scl_mask_classes": [0, 8, 9],
        "data_dir": "/data/elsewhere",
        "collection": "sentinel-2-c1-l2a",
        "cache_control": "public, max-age=60",
        "stats_max_vertices": 5000,
        "batch_malloc_trim_threshold": 131072,
        "default_preset": "ndvi",
    }
    if name in special:
        return special[name]
    default = Settings.model_fields[name].default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default * 3 + 1  # large ones too: Helm holds numbers as float64
    if isinstance(default, float):
        return default * 2 + 0.25
    raise AssertionError(f"no sample for {name} ({default!r})")


def test_every_setting_reaches_the_service(monkeypatch):
    samples = {name: _sample(name) for name in Settings.model_fields}
    docs = render({"settings": samples})
    config = find(docs, "ConfigMap", "settings")["data"]
    secret = find(docs, "Secret", "settings")["stringData"]
    api = pod_spec(find(docs, "Deployment", "api"))["containers"][0]
    explicit = {k: v for k, v in env_values(api).items() if isinstance(v, str)}
    # As the container sees it: envFrom first, explicit env entries win.
    environment = {**config, **secret, **explicit}
    for name in Settings.model_fields:
        assert f"TERRATILER_{name.upper()}" in environment, name
    assert set(secret) == {"TERRATILER_DATABASE_URL", "TERRATILER_API_KEYS"}
    for key in list(os.environ):
        if key.startswith("TERRATILER_"):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    parsed = Settings()
    for name, value in samples.items():
        got = getattr(parsed, name)
        want = type(got)(value) if name == "data_dir" else value
        assert got == want, f"{name}: {got!r} != {value!r}"
    assert environment["TERRATILER_DASK_SCHEDULER"] == "tcp://elsewhere:8786"
    assert RELEASE in find(docs, "Service", "scheduler")["metadata"]["name"]
