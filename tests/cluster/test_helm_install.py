"""`helm install` of charts/modelops into the real control plane, then the operator under the
chart's own RBAC.

The release goes into a namespace that enforces the restricted Pod Security Standard, so
the API server itself checks the chart's pods (KWOK runs them as fakes and marks them
Ready, so `helm install --wait` waits for a real rollout). The webhook configuration is
limited by `webhook.namespaceSelector` to namespaces labelled for this module, so the
release cannot disturb other tests of the session; it is uninstalled at the end.

The last test runs `modelops operator` on the host with a token of the chart's
ServiceAccount: every call the operator makes is authorised by the chart's RBAC only, and
a TrainingJob applied with kubectl must get its pods.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.operator_fixture import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelops"
RELEASE = "modelops"
NAMESPACE = "modelops-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
SELECT_LABEL = "modelops.dev/helm-test"
WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


class Release:
    """The installed release and the namespaces of this module."""

    def __init__(self, control_plane: Any) -> None:
        self.cp = control_plane
        self.token = uuid.uuid4().hex[:8]
        self.guarded = f"helm-guarded-{self.token}"  # the webhook applies here
        self.workloads = f"helm-workloads-{self.token}"  # and not here

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cp.kubectl(*args, check=check, input=input)

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def helm(self, *args: str) -> str:
        out: str = self.cp.helm(*args).stdout
        return out

    def values(self, **extra: Any) -> list[str]:
        selector = {"matchLabels": {SELECT_LABEL: self.token}}
        args = [
            "--set-json", f"webhook.namespaceSelector={json.dumps(selector)}",
            "--set", "webhook.timeoutSeconds=3",
        ]  # fmt: skip
        for key, value in extra.items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        return args

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(body))

    def can(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`kubectl auth can-i` as the operator; `resource` may be `plural[.group][/sub]`."""
        resource, _, subresource = resource.partition("/")
        args = ["auth", "can-i", verb, resource, "--as", SERVICE_ACCOUNT]
        if subresource:
            args.append(f"--subresource={subresource}")
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        result = self.kubectl(*args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
        return bool(result.stdout.strip() == "yes")


@pytest.fixture(scope="module")
def release(control_plane: Any) -> Iterator[Release]:
    rel = Release(control_plane)
    restricted = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    rel.namespace(NAMESPACE, restricted)
    rel.namespace(rel.guarded, {SELECT_LABEL: rel.token, **restricted})
    rel.namespace(rel.workloads, {})
    rel.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout", "3m",
        *rel.values(),
    )  # fmt: skip
    try:
        yield rel
    finally:
        control_plane.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
        for name in (rel.guarded, rel.workloads):
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- the install ----------------------------------------------------------------------------


def test_install_rolls_out_the_operator(release: Release) -> None:
    status = json.loads(release.helm("status", RELEASE, "-n", NAMESPACE, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    deployment = release.get("deployment", RELEASE, "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["availableReplicas"] == 2
    pdb = release.get("poddisruptionbudget", RELEASE, "-n", NAMESPACE)
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["disruptionsAllowed"] == 1
    for crd in (
        "trainingjobs.modelops.dev", "modeldeployments.modelops.dev",
        "incrementalupdates.modelops.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
    ):  # fmt: skip
        conditions = release.get("crd", crd)["status"]["conditions"]
        assert any(c["type"] == "Established" and c["status"] == "True" for c in conditions), crd
    assert release.get("clusterkopfpeering", RELEASE)["metadata"]["name"] == RELEASE
    sa = release.get("serviceaccount", RELEASE, "-n", NAMESPACE)
    assert sa["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_the_namespace_enforces_restricted_so_the_pods_comply(release: Release) -> None:
    """The operator pods exist in a restricted namespace; a non-compliant pod does not get in."""
    pods = release.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator")
    assert len(pods["items"]) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods["items"])
    rogue = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rogue", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    result = release.kubectl("apply", "-f", "-", input=json.dumps(rogue), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr


def test_the_webhook_intercepts_modelops_objects(release: Release) -> None:
    """Creates in a selected namespace go through the webhook: with no real server behind
    the Service (KWOK pods), failurePolicy Fail rejects them; other namespaces are untouched."""
    config = release.cp.rest.get(f"{WEBHOOK_CONFIGS}/{RELEASE}")
    secret = release.get("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)
    assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {secret["data"]["ca.crt"]}
    manifest = (ROOT / "examples" / "digits" / "trainingjob.yaml").read_text()
    rejected = release.kubectl(
        "apply", "-n", release.guarded, "-f", "-", input=manifest, check=False
    )
    assert rejected.returncode != 0
    assert 'failed calling webhook "trainingjobs.validate.modelops.dev"' in rejected.stderr
    accepted = release.kubectl(
        "apply", "--dry-run=server", "-n", release.workloads, "-f", "-", input=manifest
    )
    assert "trainingjob.modelops.dev/digits-mlp" in accepted.stdout


def test_upgrade_keeps_the_webhook_certificate(release: Release) -> None:
    before = release.get("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"]
    # The admin key too: a new one would change every ModelDeployment's admin token.
    key_before = release.get("secret", f"{RELEASE}-admin-key", "-n", NAMESPACE)["data"]
    release.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout", "3m",
        *release.values(), "--set", "podAnnotations.upgraded=yes",
    )  # fmt: skip
    after = release.get("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"]
    assert after == before
    assert release.get("secret", f"{RELEASE}-admin-key", "-n", NAMESPACE)["data"] == key_before
    config = release.cp.rest.get(f"{WEBHOOK_CONFIGS}/{RELEASE}")
    assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {before["ca.crt"]}
    template = release.get("deployment", RELEASE, "-n", NAMESPACE)["spec"]["template"]
    assert template["metadata"]["annotations"]["upgraded"] == "yes"
    history = json.loads(release.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json"))
    assert [h["status"] for h in history][-1] == "deployed" and len(history) == 2


def test_rbac_is_least_privilege(release: Release) -> None:
    ns = release.workloads
    for verb, resource in (
        ("create", "pods"), ("deletecollection", "pods"), ("create", "roles"),
        ("patch", "trainingjobs.modelops.dev/status"), ("update", "modeldeployments.modelops.dev/scale"),
        ("create", "deployments.apps"), ("create", "jobs.batch"), ("create", "events"),
    ):  # fmt: skip
        assert release.can(verb, resource, ns), f"cannot {verb} {resource}"
    # ModelDeployments' admin token Secrets are applied (create, patch), never read.
    assert release.can("create", "secrets", ns) and release.can("patch", "secrets", ns)
    assert release.can("patch", "clusterkopfpeerings.kopf.dev")
    assert release.can("list", "customresourcedefinitions.apiextensions.k8s.io")
    for verb, resource in (
        ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "clusterroles"),
        ("create", "clusterrolebindings"), ("delete", "nodes"), ("*", "*"), ("escalate", "roles"),
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
        ("impersonate", "serviceaccounts"), ("create", "pods/exec"),
    ):  # fmt: skip
        assert not release.can(verb, resource, ns), f"can {verb} {resource}"


# -- the operator under the chart's RBAC ----------------------------------------------------


def _service_account_kubeconfig(release: Release, path: Path) -> Path:
    token = release.kubectl(
        "create", "token", RELEASE, "-n", NAMESPACE, "--duration", "1h"
    ).stdout.strip()
    ca = base64.b64encode((release.cp.pki / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": release.cp.api_url, "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "c", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _chart_env(release: Release) -> dict[str, str]:
    """The MODELOPS_* settings the chart gives the in-cluster operator (ports excepted)."""
    pod = release.get("deployment", RELEASE, "-n", NAMESPACE)["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    # The admin key is a file mounted in the chart's pod; an operator on the host makes its own.
    skip = {"MODELOPS_METRICS_PORT", "MODELOPS_HEALTH_PORT", "MODELOPS_WEBHOOK_PORT",
            "MODELOPS_ADMIN_KEY_FILE"}  # fmt: skip
    return {k: v for k, v in env.items() if k.startswith("MODELOPS_") and k not in skip}


def test_the_operator_runs_with_the_chart_rbac(release: Release, tmp_path: Path) -> None:
    kubeconfig = _service_account_kubeconfig(release, tmp_path / "operator.kubeconfig")
    env = {**_chart_env(release), "KUBECONFIG": str(kubeconfig)}
    assert env["MODELOPS_PEERING"] == RELEASE
    operator = OperatorProcess(
        release.cp,
        name=f"helm-{release.token}",
        webhook=False,
        env={k: v for k, v in env.items() if not k.startswith("MODELOPS_WEBHOOK")},
        extra_args=["--kubeconfig", str(kubeconfig), "--peering", RELEASE],
    )
    ns = release.workloads
    try:
        operator.start()
        manifest = (ROOT / "examples" / "digits" / "trainingjob.yaml").read_text()
        release.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
        selector = "modelops.dev/trainingjob=digits-mlp"

        def pods() -> set[str] | None:
            items = release.get("pods", "-n", ns, "-l", selector)["items"]
            names = {p["metadata"]["name"] for p in items}
            return names if len(names) >= 3 else None

        names = wait_for("the TrainingJob's pods", pods, timeout=120)
        assert names == {"digits-mlp-0-head", "digits-mlp-0-worker-0", "digits-mlp-0-worker-1"}
        for kind in ("serviceaccount", "role", "rolebinding"):
            assert release.get(kind, "digits-mlp-driver", "-n", ns)["metadata"]["ownerReferences"]
        job = wait_for(
            "a status written through the status subresource",
            lambda: (release.get("trainingjob", "digits-mlp", "-n", ns).get("status") or {}).get("phase"),
            timeout=60,
        )  # fmt: skip
        assert job in ("Provisioning", "Running")
        peering = release.get("clusterkopfpeering", RELEASE)
        assert peering.get("status"), "the operator did not announce itself in the peering"
        release.kubectl("delete", "trainingjob", "digits-mlp", "-n", ns, "--timeout=60s")
        denied = re.findall(
            rf'User "{re.escape(SERVICE_ACCOUNT)}" cannot [^"\n]+', operator.log_tail(2000)
        )
        assert not denied, "RBAC denials:\n" + "\n".join(sorted(set(denied)))
    finally:
        operator.stop()


def _pods_of(release: Release, job: str, count: int) -> set[str] | None:
    items = release.get("pods", "-n", release.workloads, "-l", f"modelops.dev/trainingjob={job}")
    names = {p["metadata"]["name"] for p in items["items"]}
    return names if len(names) >= count else None


def test_two_replicas_one_active_then_failover(release: Release, tmp_path: Path) -> None:
    """The chart's HA story: two operators on the same peering, one acts, the other takes
    over when it stops (what two replicas of the Deployment do)."""
    kubeconfig = _service_account_kubeconfig(release, tmp_path / "operator.kubeconfig")
    env = {**_chart_env(release), "KUBECONFIG": str(kubeconfig)}
    env = {k: v for k, v in env.items() if not k.startswith("MODELOPS_WEBHOOK")}
    replicas = [
        OperatorProcess(
            release.cp,
            name=f"helm-ha{i}-{release.token}",
            webhook=False,
            env=env,
            extra_args=["--kubeconfig", str(kubeconfig), "--peering", RELEASE],
        )
        for i in range(2)
    ]
    manifest = yaml.safe_load((ROOT / "examples" / "digits" / "trainingjob.yaml").read_text())
    ns = release.workloads
    try:
        for replica in replicas:
            replica.start()
        for job in ("ha-first", "ha-second"):
            if job == "ha-second":
                # Peers find each other through their peering records within seconds of
                # starting; until then each may run alone, so wait for the election.
                paused = wait_for(
                    "exactly one replica to stand by",
                    lambda: (
                        p := [r for r in replicas if "Pausing operations" in r.log_tail(4000)]
                    )
                    and len(p) == 1
                    and p,
                    timeout=90,
                )
                active = next(r for r in replicas if r not in paused)
                active.stop()
            manifest["metadata"]["name"] = job
            release.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
            wait_for(f"the pods of {job}", lambda job=job: _pods_of(release, job, 3), timeout=120)
        for job in ("ha-first", "ha-second"):
            release.kubectl("delete", "trainingjob", job, "-n", ns, "--timeout=60s")
    finally:
        for replica in replicas:
            replica.stop()
