"""The Helm chart under deploy/helm, rendered offline with Helm's own library (helm-python-sdk)."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "terratiler"
PRODUCTION = ROOT / "deploy" / "helm" / "values-production.yaml"
COMPOSE = ROOT / "docker-compose.yml"
# The Kubernetes version the manifests are validated against (kubernetes-validate's bundled
# schemas, offline) and the chart is linted for.
KUBERNETES_VERSION = "1.31.0"
RELEASE = "tt"


def production_values() -> dict[str, Any]:
    """The production example's values."""
    return yaml.safe_load(PRODUCTION.read_text())


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest the chart renders with ``values`` (release ``tt`` in namespace ``ns``)."""
    import helm_python

    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values=values, name=RELEASE, namespace="ns")
    return [
        doc
        for name, text in sorted(rendered.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def find(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The one manifest of ``kind`` whose name ends with ``-suffix``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(f"-{suffix}")]
    assert len(found) == 1, f"{kind} *-{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or StatefulSet."""
    return doc["spec"]["template"]["spec"]


def env_values(container: dict[str, Any]) -> dict[str, Any]:
    """A container's ``env``: name -> value (a string) or valueFrom (a dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
