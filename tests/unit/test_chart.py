"""The Helm chart: `helm lint` is clean and `helm template` renders what we promise.

The helm binary is the one the control plane builds (tests/controlplane/cluster.py, pinned
version, cached); MODELOPS_HELM overrides it. A missing binary fails the tests: run
`python tests/controlplane/cluster.py build` (or .ci/controlplane.sh) first.

Renders are checked with the default values and with every option on, cluster-wide and
namespaced, with chart-made and cert-manager certificates: RBAC has no wildcards and
grants what the operator needs, pods meet the restricted Pod Security Standard, the
webhook configuration is present and its CA signs the serving certificate, the alert
rules and dashboard queries parse (promtool) and use metrics the code exports.
"""

from __future__ import annotations

import ast
import base64
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelops"
RELEASE = "modelops"
NAMESPACE = "modelops-system"
CONTROLPLANE_PY = ROOT / "tests" / "controlplane" / "cluster.py"
CONFIG_PY = ROOT / "operator" / "modelops" / "k8s" / "config.py"

Manifest = dict[str, Any]

# -- the helm binary ------------------------------------------------------------------------


def _controlplane() -> ModuleType:
    name = "modelops_controlplane"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, CONTROLPLANE_PY)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def helm_binary() -> Path:
    override = os.environ.get("MODELOPS_HELM")
    path = Path(override) if override else Path(_controlplane().binary("helm"))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"helm not found at {path}: build it with `python tests/controlplane/cluster.py "
            "build` (.ci/controlplane.sh), or point MODELOPS_HELM at a helm v3 binary"
        )
    return path


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def helm(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


# -- values variants ------------------------------------------------------------------------

EVERYTHING_ON: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "workloadImage": {"tag": "0.1.0-gpu"},
    "imagePullSecrets": [{"name": "registry"}],
    "replicaCount": 3,
    "store": {"uri": "s3://models/modelops", "persistentVolumeClaim": "modelops-store"},
    "adminKey": {"existingSecret": "corp-admin-key"},
    "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    "podDisruptionBudget": {"minAvailable": 2},
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"example.com/cost-center": "ml"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "modelops"}},
        }
    ],
    "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 5},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    "networkPolicy": {
        "enabled": True,
        "restrictEgress": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "extraEgressPorts": [9000],
        "extraEgressTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "apiServerCIDRs": ["10.96.0.1/32"],
    },
    "tenancy": {
        "allowedImages": ["registry.example/ml/"],
        "allowedPriorityClasses": ["training"],
        "allowedTolerationKeys": ["nvidia.com/gpu"],
        "allowedPrometheusUrls": ["http://prometheus.monitoring:9090"],
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-cluster-wide-cert-manager": {
        **EVERYTHING_ON,
        "webhook": {**EVERYTHING_ON["webhook"], "certManager": {"enabled": True}},
    },
    "everything-namespaced-self-signed": {**EVERYTHING_ON, "watchNamespaces": ["ml", "ml-dev"]},
    "cert-manager-cluster-issuer": {
        "webhook": {
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
            }
        }
    },
    "minimal": {
        "replicaCount": 1,
        "peering": {"enabled": False},
        "webhook": {"enabled": False},
        "metrics": {"scrapeAnnotations": False},
    },
}


@functools.cache
def _render_text(variant: str, home: Path) -> str:
    values = home / f"{variant}.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[variant]))
    proc = helm(
        home, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values),
        "--include-crds",
    )  # fmt: skip
    return proc.stdout


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _render_docs(variant: str, home: Path) -> tuple[Manifest, ...]:
    return tuple(d for d in yaml.load_all(_render_text(variant, home), Loader=_LOADER) if d)


def render(variant: str, home: Path) -> list[Manifest]:
    """The rendered objects (shared between tests: read them, do not change them)."""
    docs = list(_render_docs(variant, home))
    assert docs, f"{variant}: nothing rendered"
    return docs


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_deployment(docs: list[Manifest]) -> Manifest:
    return one(docs, "Deployment", RELEASE)


def operator_env(docs: list[Manifest]) -> dict[str, Any]:
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "everything-namespaced-self-signed"])
def test_helm_lint_is_clean(helm_home: Path, name: str) -> None:
    values = helm_home / f"lint-{name}.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[name]))
    proc = helm(helm_home, "lint", "--strict", str(CHART), "-f", str(values), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output
    assert "0 chart(s) failed" in output, output


@pytest.mark.parametrize(
    "bad",
    [
        "replicaCount=-1",
        "webhook.failurePolicy=Sometimes",
        "replicas=3",  # a typo of replicaCount: unknown keys are refused
        "image.digest=latest",
        "store.uri=/var/lib/modelops",
        "ports.webhook=70000",
    ],
)
def test_the_values_schema_rejects_bad_values(helm_home: Path, bad: str) -> None:
    proc = helm(helm_home, "template", RELEASE, str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0, f"--set {bad} rendered"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


# -- what is rendered -----------------------------------------------------------------------


def test_the_default_render(helm_home: Path) -> None:
    docs = render("defaults", helm_home)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        }
    )
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/modelops/modelops-operator:0.1.0"
    assert container["command"] == ["modelops", "operator"]
    env = operator_env(docs)
    assert env["MODELOPS_WORKLOAD_IMAGE"] == "ghcr.io/modelops/modelops-runtime:0.1.0"
    assert env["MODELOPS_NAMESPACES"] == ""
    assert env["MODELOPS_PEERING"] == RELEASE
    assert env["MODELOPS_WEBHOOK_CERT_DIR"] == "/etc/modelops/webhook"
    assert env["MODELOPS_WEBHOOK_HOST"] == f"{RELEASE}-webhook.{NAMESPACE}.svc"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == env["MODELOPS_PEERING"]


def test_the_chart_installs_the_generated_crds(helm_home: Path) -> None:
    """The CRDs come from charts/modelops/crds (what `modelops crds` writes) plus Kopf's."""
    crds = of_kind(render("defaults", helm_home), "CustomResourceDefinition")
    names = sorted(c["metadata"]["name"] for c in crds)
    generated = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
    assert len(generated) == 3
    expected = sorted(
        [g["metadata"]["name"] for g in generated]
        + ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    )
    assert names == expected
    for crd in generated:
        assert crd in crds


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (the API server's strict decoding does)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    keys = [loader.construct_object(key) for key, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark
        )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def test_rendered_yaml_has_no_duplicate_keys(helm_home: Path, variant: str) -> None:
    text = _render_text(variant, helm_home)
    documents = text.split("\n---\n")
    for document in documents:
        if "kind: CustomResourceDefinition" not in document:
            yaml.load(document, Loader=_StrictLoader)


def test_every_object_is_labelled_and_namespaced(helm_home: Path, variant: str) -> None:
    cluster_scoped = {
        "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
    }  # fmt: skip
    for doc in render(variant, helm_home):
        meta = doc["metadata"]
        if doc["kind"] == "CustomResourceDefinition":
            continue
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, meta
        assert meta["labels"]["app.kubernetes.io/part-of"] == "modelops", meta
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta, meta
        else:
            assert meta.get("namespace"), f"{doc['kind']} {meta['name']} has no namespace"


def _operator_env_names() -> set[str]:
    """MODELOPS_* names the operator reads: its config, and modules that read os.environ
    (pure builders, which only write env entries for pods, do not count)."""
    names = set(re.findall(r'"(MODELOPS_[A-Z_]+)"', CONFIG_PY.read_text()))
    for path in (ROOT / "operator" / "modelops" / "k8s").rglob("*.py"):
        text = path.read_text()
        if "os.environ" in text and path.name != "driver.py":  # driver.py runs in the pods
            names |= set(re.findall(r'"(MODELOPS_[A-Z_]+)"', text))
    return names


def test_the_env_is_what_the_operator_reads(helm_home: Path, variant: str) -> None:
    """Every MODELOPS_* variable the chart sets is one the operator reads."""
    read = _operator_env_names()
    assert read, "no MODELOPS_* names found in the operator's config"
    env = operator_env(render(variant, helm_home))
    chart_env = {name for name in env if name.startswith("MODELOPS_")}
    assert chart_env <= read, f"the operator does not read {sorted(chart_env - read)}"
    for needed in ("MODELOPS_NAMESPACES", "MODELOPS_WORKLOAD_IMAGE", "MODELOPS_STORE_URI"):
        assert needed in env


def test_everything_on(helm_home: Path) -> None:
    docs = render("everything-cluster-wide-cert-manager", helm_home)
    kinds = {d["kind"] for d in docs}
    assert {
        "ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy", "ConfigMap",
        "Issuer", "Certificate",
    } <= kinds  # fmt: skip
    assert "Secret" not in kinds  # cert-manager writes one, the user brings the admin key
    deployment = operator_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["containers"][0]["image"] == "ghcr.io/modelops/modelops-operator@sha256:" + "a" * 64
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    env = operator_env(docs)
    assert env["MODELOPS_WORKLOAD_IMAGE"] == "ghcr.io/modelops/modelops-runtime:0.1.0-gpu"
    assert env["MODELOPS_STORE_PVC"] == "modelops-store"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["MODELOPS_ADMIN_KEY_FILE"] == "/etc/modelops/admin-key/key"
    assert {"name": "admin-key", "secret": {
        "secretName": "corp-admin-key", "defaultMode": 0o440, "items": [{"key": "key", "path": "key"}],
    }} in pod["volumes"]  # fmt: skip
    dashboard = one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["modelops.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", f"{RELEASE}-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_services_select_the_operator_pods(helm_home: Path, variant: str) -> None:
    docs = render(variant, helm_home)
    deployment = operator_deployment(docs)
    labels = _pod_labels(deployment)
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for service in of_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_the_inference_pod_monitor_selects_inference_pods(helm_home: Path) -> None:
    from modelops.k8s.modeldeployment import names as md_names

    monitor = one(render("everything-namespaced-self-signed", helm_home), "PodMonitor")
    pod_labels = md_names.labels("digits", "digits", md_names.ROLE_SERVER)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "ml-dev"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_high_availability(helm_home: Path) -> None:
    docs = render("defaults", helm_home)
    spec = operator_deployment(docs)["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] < spec["replicas"]
    assert "MODELOPS_PEERING" in operator_env(docs)
    minimal = render("minimal", helm_home)
    assert of_kind(minimal, "PodDisruptionBudget") == []  # one replica: a PDB would block drains
    assert "MODELOPS_PEERING" not in operator_env(minimal)
    assert of_kind(minimal, "ClusterKopfPeering") == []


# -- RBAC -----------------------------------------------------------------------------------


def _rules(docs: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in role.get("rules") or []:
            yield role, rule


def test_rbac_has_no_wildcards_and_no_dangerous_verbs(helm_home: Path, variant: str) -> None:
    docs = render(variant, helm_home)
    assert list(_rules(docs)) or variant == "minimal"
    for role, rule in _rules(docs):
        where = f"{role['kind']} {role['metadata']['name']}: {rule}"
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(key, [])), where
        assert not {"escalate", "impersonate", "bind"} & set(rule["verbs"]), where
        if "secrets" in rule.get("resources", []):
            # Ray and admin tokens are written (server-side apply) and deleted, never read.
            assert set(rule["verbs"]) <= {"create", "patch", "delete"}, where
        assert "nodes" not in rule.get("resources", []), where
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] != "cluster-admin"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]


def _granted(docs: list[Manifest], namespace: str | None) -> set[tuple[str, str, str]]:
    """(group, resource, verb) the operator's ServiceAccount holds in `namespace`."""
    bound: list[Manifest] = []
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in
             of_kind(docs, "ClusterRole") + of_kind(docs, "Role")}  # fmt: skip
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        scope = binding["metadata"].get("namespace")
        if binding["kind"] == "RoleBinding" and scope != namespace:
            continue
        ref = binding["roleRef"]
        role_ns = scope if ref["kind"] == "Role" else None
        bound.append(roles[(ref["kind"], role_ns, ref["name"])])
    return {
        (group, resource, verb)
        for role in bound
        for rule in role.get("rules") or []
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# What the operator does with each resource (the controllers' builders and Kopf itself).
NEEDED = {
    ("modelops.dev", "trainingjobs"): {"get", "list", "watch", "patch", "create", "delete"},
    ("modelops.dev", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modelops.dev", "incrementalupdates"): {"get", "list", "watch", "patch"},
    ("modelops.dev", "trainingjobs/status"): {"patch"},
    ("modelops.dev", "modeldeployments/status"): {"patch"},
    ("modelops.dev", "incrementalupdates/status"): {"patch"},
    ("modelops.dev", "modeldeployments/scale"): {"get", "patch", "update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete", "deletecollection"},
    ("", "configmaps"): {"get", "list", "create", "update", "patch", "delete", "deletecollection"},
    ("", "services"): {"get", "list", "create", "update", "patch", "delete"},
    ("", "serviceaccounts"): {"get", "create", "delete"},
    ("", "events"): {"create"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "create", "update", "patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "update", "delete"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "update", "patch", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "secrets"): {"create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"create", "delete"},
}


@pytest.mark.parametrize(
    ("name", "namespaces"),
    [("defaults", ["ml", "anything"]), ("everything-namespaced-self-signed", ["ml", "ml-dev"])],
)
def test_rbac_grants_what_the_operator_needs(
    helm_home: Path, name: str, namespaces: list[str]
) -> None:
    docs = render(name, helm_home)
    for namespace in namespaces:
        granted = _granted(docs, namespace)
        for (group, resource), verbs in NEEDED.items():
            missing = {v for v in verbs if (group, resource, v) not in granted}
            assert not missing, f"{namespace}: {group}/{resource} lacks {sorted(missing)}"
    cluster = _granted(docs, None)
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list") in cluster


def test_namespaced_install_grants_nothing_cluster_wide(helm_home: Path) -> None:
    docs = render("everything-namespaced-self-signed", helm_home)
    assert {r["metadata"]["namespace"] for r in of_kind(docs, "Role")} == {"ml", "ml-dev"}
    assert _granted(docs, "default") == _granted(docs, None)
    assert not {g for g in _granted(docs, None) if g[1] in ("pods", "trainingjobs")}
    peerings = of_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["ml", "ml-dev"]
    assert of_kind(docs, "ClusterKopfPeering") == []
    granted = _granted(docs, "ml")
    assert ("kopf.dev", "kopfpeerings", "patch") in granted
    assert operator_env(docs)["MODELOPS_NAMESPACES"] == "ml,ml-dev"
    webhook = one(docs, "ValidatingWebhookConfiguration")
    for hook in webhook["webhooks"]:
        expression = hook["namespaceSelector"]["matchExpressions"][0]
        assert expression["values"] == ["ml", "ml-dev"]


@pytest.mark.parametrize("name", ["defaults", "minimal", "everything-namespaced-self-signed"])
def test_the_admin_key_is_mounted_and_the_operator_reads_no_secrets(
    helm_home: Path, name: str
) -> None:
    """The operator derives each ModelDeployment's admin token from a key only it holds:
    a Secret of the release namespace, generated (or the user's own), mounted read-only.
    It writes the tokens' Secrets and never reads one: no get, list or watch anywhere."""
    docs = render(name, helm_home)
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "admin-key")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "admin-key")
    assert mount["readOnly"] is True
    assert volume["secret"]["defaultMode"] == 0o440  # the pod's fsGroup reads it, no one else
    path = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert operator_env(docs)["MODELOPS_ADMIN_KEY_FILE"] == path
    assert "MODELOPS_ADMIN_TOKEN" not in operator_env(docs)
    if name == "everything-namespaced-self-signed":
        assert volume["secret"]["secretName"] == "corp-admin-key"
        assert of_kind(docs, "Secret") == [one(docs, "Secret", f"{RELEASE}-webhook-tls")]
    else:
        secret = one(docs, "Secret", volume["secret"]["secretName"])
        assert secret["metadata"]["namespace"] == NAMESPACE
        key = base64.b64decode(secret["data"][volume["secret"]["items"][0]["key"]]).decode()
        assert len(key) == 48 and key.isalnum()
    namespaces = ["ml", "ml-dev"] if name.startswith("everything") else ["ml", "kube-system"]
    for namespace in [*namespaces, None]:
        granted = {verb for group, resource, verb in _granted(docs, namespace)
                   if (group, resource) == ("", "secrets")}  # fmt: skip
        assert not granted & {"get", "list", "watch"}, (namespace, granted)
        if namespace is not None:
            assert {"create", "patch"} <= granted, (namespace, granted)


# -- Pod Security Standard "restricted" -----------------------------------------------------


def _pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def assert_restricted(pod: Manifest, where: str) -> None:
    """The checks of the restricted Pod Security Standard (v1.29+), plus our own extras."""
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), f"{where}: {flag}"
    for volume in pod.get("volumes") or []:
        allowed = {"configMap", "emptyDir", "projected", "secret", "downwardAPI",
                   "persistentVolumeClaim", "ephemeral", "csi"}  # fmt: skip
        assert set(volume) - {"name"} <= allowed, f"{where}: volume {volume}"
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    assert psc.get("runAsNonRoot") is True, where
    assert psc.get("runAsUser") == 10001, where
    containers = (pod.get("initContainers") or []) + pod["containers"]
    for container in containers:
        sc = container.get("securityContext") or {}
        name = f"{where}/{container['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert sc.get("privileged") in (None, False), name
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not sc.get("capabilities", {}).get("add"), name
        assert sc.get("readOnlyRootFilesystem") is True, name
        assert sc.get("runAsUser", psc.get("runAsUser")) != 0, name
        assert sc.get("seccompProfile", psc.get("seccompProfile"))["type"] == "RuntimeDefault"
        assert not any(p.get("hostPort") for p in container.get("ports") or []), name
        assert "resources" in container and container["resources"].get("requests"), name


def test_pods_meet_the_restricted_pod_security_standard(helm_home: Path, variant: str) -> None:
    workloads = [
        d for d in render(variant, helm_home) if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    assert workloads
    for workload in workloads:
        assert_restricted(workload["spec"]["template"]["spec"], workload["metadata"]["name"])


def test_the_restricted_check_can_fail(helm_home: Path) -> None:
    pod = operator_deployment(render("defaults", helm_home))["spec"]["template"]["spec"]
    broken = json.loads(json.dumps(pod))
    broken["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(AssertionError):
        assert_restricted(broken, "broken")
    helm_set = helm(
        helm_home, "template", RELEASE, str(CHART), "--set",
        "securityContext.readOnlyRootFilesystem=false",
    )  # fmt: skip
    deployment = next(
        d for d in yaml.safe_load_all(helm_set.stdout) if d and d["kind"] == "Deployment"
    )
    with pytest.raises(AssertionError):
        assert_restricted(deployment["spec"]["template"]["spec"], "overridden")


# -- the admission webhook ------------------------------------------------------------------


def _openssl(*args: str, stdin: str | None = None) -> str:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found (apt-get install openssl)")
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_webhook_with_chart_made_certificates(helm_home: Path, tmp_path: Path) -> None:
    docs = render("defaults", helm_home)
    config = one(docs, "ValidatingWebhookConfiguration", RELEASE)
    service = one(docs, "Service", f"{RELEASE}-webhook")
    secret = one(docs, "Secret", f"{RELEASE}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    hooks = {h["rules"][0]["resources"][0]: h for h in config["webhooks"]}
    assert sorted(hooks) == ["incrementalupdates", "modeldeployments", "trainingjobs"]
    for resource, hook in hooks.items():
        assert hook["rules"][0]["apiGroups"] == ["modelops.dev"]
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["failurePolicy"] == "Fail"
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"], ref["port"]) == (
            service["metadata"]["name"], NAMESPACE, service["spec"]["ports"][0]["port"],
        )  # fmt: skip
        assert ref["path"] == f"/validate-{resource[:-1]}"
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    # The CA in the bundle signs the serving certificate, which names the Service.
    (tmp_path / "ca.pem").write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    (tmp_path / "tls.pem").write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    out = _openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "tls.pem"))
    assert out.strip().endswith("OK")
    sans = _openssl("x509", "-in", str(tmp_path / "tls.pem"), "-noout", "-text")
    assert f"DNS:{RELEASE}-webhook.{NAMESPACE}.svc" in sans
    key = base64.b64decode(secret["data"]["tls.key"]).decode()
    assert _openssl("pkey", "-pubout", stdin=key) == _openssl(
        "x509", "-in", str(tmp_path / "tls.pem"), "-noout", "-pubkey"
    )
    # The operator reads the Secret where MODELOPS_WEBHOOK_CERT_DIR says, by these names.
    from modelops.k8s import webhook

    assert {webhook.CERT_FILE, webhook.KEY_FILE} <= set(secret["data"])
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == operator_env(docs)["MODELOPS_WEBHOOK_CERT_DIR"]
    assert mount["readOnly"] is True


def test_webhook_with_cert_manager(helm_home: Path) -> None:
    docs = render("everything-cluster-wide-cert-manager", helm_home)
    config = one(docs, "ValidatingWebhookConfiguration", RELEASE)
    certificate = one(docs, "Certificate", f"{RELEASE}-webhook")
    namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (NAMESPACE, certificate["metadata"]["name"])
    assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if v.get("secret")]
    assert secrets == [certificate["spec"]["secretName"], "corp-admin-key"]
    issuer = certificate["spec"]["issuerRef"]
    ca_issuer = one(docs, "Issuer", issuer["name"])
    ca_certificate = one(docs, "Certificate", f"{RELEASE}-webhook-ca")
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_certificate["spec"]["secretName"]
    assert ca_certificate["spec"]["isCA"] is True
    external = render("cert-manager-cluster-issuer", helm_home)
    assert of_kind(external, "Issuer") == []
    assert one(external, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer",
    }  # fmt: skip


def test_webhook_disabled(helm_home: Path) -> None:
    docs = render("minimal", helm_home)
    assert of_kind(docs, "ValidatingWebhookConfiguration") == []
    assert [s["metadata"]["name"] for s in of_kind(docs, "Secret")] == [f"{RELEASE}-admin-key"]
    env = operator_env(docs)
    assert "MODELOPS_WEBHOOK_CERT_DIR" not in env
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    assert "annotations" not in operator_deployment(docs)["spec"]["template"]["metadata"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "admin-key"]


# -- network policy -------------------------------------------------------------------------


def test_network_policy(helm_home: Path) -> None:
    docs = render("everything-cluster-wide-cert-manager", helm_home)
    policy = one(docs, "NetworkPolicy")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= _pod_labels(operator_deployment(docs)).items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"webhook", "metrics", "health"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443, 8080, 9000} <= egress_ports


# -- alerts and dashboard -------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run .ci/setup.d/promtool.sh (apt-get install prometheus)")
    return path


METRIC_MODULES = (
    ROOT / "operator" / "modelops" / "k8s" / "metrics.py",
    ROOT / "trainer_image" / "modelops_runtime" / "serve" / "metrics.py",
)
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
}


def _exported_metric_names() -> set[str]:
    """Every series name the operator and the inference server can export.

    Read from the metric definitions in the source (a metric is declared as a call of
    Counter/Histogram/Gauge/... with its name first), so the check needs neither torch
    nor a running server; the process collector adds the process_* series.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector

    names = {"up"}
    for path in METRIC_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if not re.fullmatch(r"modelops_[a-z_]+", first.value):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            name = first.value.removesuffix("_total")
            names |= {name + suffix for suffix in _SUFFIXES.get(called, ("",))}
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    return names


def _metric_names(expr: str) -> set[str]:
    found = set(re.findall(r"\b((?:modelops|process)_[a-z_]+)\b", expr))
    found |= set(re.findall(r"\b(up)\{", expr))
    return found


def _rules_file(docs: list[Manifest], tmp_path: Path) -> tuple[Path, list[Manifest]]:
    rule = one(docs, "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path, [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_alert_rules_parse_and_use_exported_metrics(helm_home: Path, tmp_path: Path) -> None:
    path, rules = _rules_file(render("everything-cluster-wide-cert-manager", helm_home), tmp_path)
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = _exported_metric_names()
    for rule in rules:
        used = _metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses {sorted(used - exported)}"
        assert rule["annotations"]["runbook_url"].split("#")[0].endswith("docs/troubleshooting.md")
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert anchor in _troubleshooting_anchors(), f"{rule['alert']}: no section #{anchor}"


def _troubleshooting_anchors() -> set[str]:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_alerts_fire_on_synthetic_series(helm_home: Path, tmp_path: Path) -> None:
    """promtool's rule unit tests: the error-rate and operator-down alerts really fire."""
    path, _ = _rules_file(render("everything-cluster-wide-cert-manager", helm_home), tmp_path)
    ok = 'modelops_requests_total{namespace="ml", model="digits", version="4", code="200"}'
    bad = 'modelops_requests_total{namespace="ml", model="digits", version="4", code="500"}'
    tests = {
        "rule_files": [str(path)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": ok, "values": "0+80x30"},
                    {"series": bad, "values": "0+20x30"},
                    {"series": f'up{{job="{RELEASE}-metrics"}}', "values": "0x30"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "ModelOpsHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "ml",
                                    "model": "digits",
                                },
                                "exp_annotations": _annotations(
                                    path, "ModelOpsHighErrorRate", "ml", "digits", 0.2
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "ModelOpsOperatorDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": _annotations(path, "ModelOpsOperatorDown"),
                            }
                        ],
                    },
                    {"eval_time": "3m", "alertname": "ModelOpsHighErrorRate", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(
        [_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _annotations(
    path: Path, alert: str, namespace: str = "", model: str = "", value: float = 0.0
) -> dict[str, str]:
    """The alert's annotations with the template fields promtool fills in."""
    groups = yaml.safe_load(path.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == alert)
    out = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $labels.namespace }}", namespace)
        text = text.replace("{{ $labels.model }}", model)
        text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:g}%")
        out[key] = text
    return out


def test_dashboard_queries_parse_and_use_exported_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "modelops"
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = _exported_metric_names()
    recording = []
    for index, expr in enumerate(exprs):
        used = _metric_names(expr)
        assert used and used <= exported, f"{expr} uses {sorted(used - exported)}"
        plain = expr.replace("$__rate_interval", "5m")
        plain = plain.replace("$namespace", ".*").replace("$model", ".*")
        recording.append({"record": f"dashboard:query_{index}", "expr": plain})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operations_doc_lists_every_metric_and_alert(helm_home: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for name in sorted(_exported_metric_names()):
        if not name.startswith("modelops_") or name.endswith(("_created", "_sum", "_count")):
            continue
        base = name.removesuffix("_bucket")
        assert f"`{base}`" in text or f"`{base}`," in text, f"docs/operations.md misses {base}"
    rules = one(render("everything-cluster-wide-cert-manager", helm_home), "PrometheusRule")
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, f"docs/operations.md misses {rule['alert']}"


def test_docs_name_what_the_chart_renders(helm_home: Path) -> None:
    """The object names docs/gitops.md and docs/troubleshooting.md tell users to look for."""
    docs = render("defaults", helm_home)
    gitops = (ROOT / "docs" / "gitops.md").read_text()
    blocks = [
        d for b in re.findall(r"```yaml\n(.*?)```", gitops, re.S) for d in yaml.safe_load_all(b)
    ]
    ignored = [
        item
        for block in blocks
        if isinstance(block, dict)
        for item in block.get("ignoreDifferences", [])
        if item.get("name")
    ]
    assert ignored
    for item in ignored:
        one(docs, item["kind"], item["name"])
    assert re.search(r"webhook\.certManager\.enabled: true", gitops)
    assert "clusterkopfpeering <release>" in (ROOT / "docs" / "troubleshooting.md").read_text()
    one(docs, "ClusterKopfPeering", RELEASE)


# -- tenancy --------------------------------------------------------------------------------


def test_tenants_get_exactly_the_three_kinds_through_aggregated_roles(helm_home: Path) -> None:
    """Kubeflow/Argo style: `edit`/`view` in a namespace include the ModelOps kinds."""
    docs = render("defaults", helm_home)
    view, edit = one(docs, "ClusterRole", "modelops-view"), one(docs, "ClusterRole", "modelops-edit")
    labels = view["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    for role in (view, edit):
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["modelops.dev"]
            assert all(r.split("/")[0] in {"trainingjobs", "modeldeployments", "incrementalupdates"}
                       for r in rule["resources"])  # fmt: skip
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    # Status is the operator's to write, never a tenant's.
    for rule in edit["rules"]:
        if any(r.endswith("/status") for r in rule["resources"]):
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    minimal = render("minimal", helm_home)
    assert {r["metadata"]["name"] for r in of_kind(minimal, "ClusterRole")} >= {"modelops-edit"}


def test_the_tenancy_allow_lists_reach_the_operator(helm_home: Path) -> None:
    env = operator_env(render("everything-namespaced-self-signed", helm_home))
    assert env["MODELOPS_ALLOWED_IMAGES"] == "registry.example/ml/"
    assert env["MODELOPS_ALLOWED_PRIORITY_CLASSES"] == "training"
    assert env["MODELOPS_ALLOWED_TOLERATION_KEYS"] == "nvidia.com/gpu"
    assert env["MODELOPS_ALLOWED_PROMETHEUS_URLS"] == "http://prometheus.monitoring:9090"
    assert operator_env(render("defaults", helm_home))["MODELOPS_ALLOWED_IMAGES"] == ""


def test_egress_names_its_peers_not_only_ports(helm_home: Path) -> None:
    """Finding 12: a restricted operator reaches DNS, the API server, the inference pods'
    /metrics and the configured extras, not any host on those ports."""
    policy = one(render("everything-cluster-wide-cert-manager", helm_home), "NetworkPolicy")
    egress = policy["spec"]["egress"]
    assert all(rule.get("to") for rule in egress), egress
    by_port = {rule["ports"][0]["port"]: rule["to"] for rule in egress}
    assert by_port[53][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert by_port[443] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]
    assert by_port[8080] == [
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "modelops-serving",
                    "app.kubernetes.io/managed-by": "modelops",
                }
            },
        }
    ]
    assert by_port[9000] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
