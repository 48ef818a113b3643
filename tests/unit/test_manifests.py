"""The Kubernetes manifests render with `kubectl kustomize` (every overlay), validate
offline against the Kubernetes schemas, and keep the rules operators rely on: non-root,
read-only pods with probes and resources, the roles apart, no migration in the replicas,
a grace period longer than the drain, and no way out to the metadata address."""

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir())
KUBERNETES_VERSION = "1.32.0"
DRAIN_SECONDS = 5 + 20  # the preStop pause, then uvicorn's GRACEFUL_SHUTDOWN_SECONDS
METADATA = ipaddress.ip_address("169.254.169.254")


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # fail, never skip: the manifests would go unchecked
        pytest.fail("kubectl is not installed: it renders the manifests (apt-get install kubectl)")
    rendered = subprocess.run(  # noqa: S603
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_there_are_overlays() -> None:
    assert OVERLAYS == ["dev", "production"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Job", "Service", "Ingress", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "ServiceAccount"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_probed_and_sized(overlay: str) -> None:
    docs = render(overlay)
    templates = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment")]
    templates += [d["spec"]["template"]["spec"] for d in of_kind(docs, "Job")]
    assert len(templates) == 3
    for pod in templates:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["serviceAccountName"] == "seedance-bff"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
            assert "seedance-bff-secrets" in sources  # secrets by reference only


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_and_worker_run_apart_and_outlast_their_drain(overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(render(overlay), "Deployment")}
    assert set(deployments) == {"seedance-bff-api", "seedance-bff-worker"}
    for name, role in (("seedance-bff-api", "api"), ("seedance-bff-worker", "worker")):
        pod = deployments[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert env_of(container)["ROLE"] == role
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(container)
        assert pod["terminationGracePeriodSeconds"] > DRAIN_SECONDS
    api = deployments["seedance-bff-api"]["spec"]
    assert api["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_production_replicas_do_not_migrate_and_keep_no_secret() -> None:
    docs = render("production")
    config = of_kind(docs, "ConfigMap")[0]["data"]
    assert config["MIGRATE_ON_START"] == "false"
    assert config["ENVIRONMENT"] == "production"
    assert of_kind(docs, "Secret") == []
    (job,) = of_kind(docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_egress_reaches_the_metadata_address(overlay: str) -> None:
    (policy,) = of_kind(render(overlay), "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block is None:
                continue
            excepted = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
            inside = METADATA in ipaddress.ip_network(block["cidr"])
            assert not inside or any(METADATA in net for net in excepted), block


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_proxies_let_the_largest_upload_through(overlay: str) -> None:
    """ingress-nginx and the compose fleet's nginx refuse bodies over 1 MiB by default."""
    largest = Settings(_env_file=None).upload_request_max_bytes  # type: ignore[call-arg]
    (ingress,) = of_kind(render(overlay), "Ingress")
    body_size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_size.removesuffix("m")) * 1024 * 1024 >= largest
    fleet = (REPO / "docker" / "nginx-fleet.conf").read_text()
    (megabytes,) = re.findall(r"client_max_body_size (\d+)m;", fleet)
    assert int(megabytes) * 1024 * 1024 >= largest


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_lets_live_streams_through(overlay: str) -> None:
    (ingress,) = of_kind(render(overlay), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600


SERVER_MEMORY = 1024**3  # the API process itself beside its children (docs/operating.md)
UNITS = {"Mi": 1024**2, "Gi": 1024**3}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_pod_holds_the_server_and_its_decoding_children(overlay: str) -> None:
    """A child reserves UPLOAD_SANITIZE_MEMORY_BYTES and all of them stay within
    UPLOAD_SANITIZE_MEMORY_TOTAL_BYTES: the pod's limit must hold that beside the server,
    or the worst photos decoded at once get the pod killed."""
    docs = render(overlay)
    config = of_kind(docs, "ConfigMap")[0]["data"]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        **{
            name.lower(): config[name]
            for name in (
                "UPLOAD_SANITIZE_CONCURRENCY",
                "UPLOAD_SANITIZE_MEMORY_BYTES",
                "UPLOAD_SANITIZE_MEMORY_TOTAL_BYTES",
            )
            if name in config
        },
    )
    (api,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api")]
    limit = api["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]
    children = settings.upload_sanitize_slots * settings.upload_sanitize_memory_bytes
    assert children <= settings.upload_sanitize_memory_total_bytes
    assert int(number) * UNITS[unit] >= SERVER_MEMORY + settings.upload_sanitize_memory_total_bytes
    assert settings.upload_sanitize_slots == int(config["UPLOAD_SANITIZE_CONCURRENCY"])
