"""Admission checks, webhook certificates, version books, operator settings and metrics."""

from __future__ import annotations

import ssl
from pathlib import Path

import kopf
import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from modelops.api.tenancy import TenancyPolicy
from modelops.api.training import IMMUTABLE_MESSAGE, IMMUTABLE_SPEC_FIELDS
from modelops.k8s import main, webhook
from modelops.k8s.config import OperatorConfig
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.versions import VersionBook
from tests.unit.manifests import incremental_update, model_deployment, mutate, training_job

# -- admission ----------------------------------------------------------------------------


def test_valid_specs_of_every_kind_are_admitted() -> None:
    for kind, manifest in (
        ("TrainingJob", training_job()),
        ("ModelDeployment", model_deployment()),
        ("IncrementalUpdate", incremental_update()),
    ):
        assert webhook.check(kind, manifest["spec"]) == ([], [])


def test_an_invalid_spec_is_rejected_with_its_field_path() -> None:
    bad = mutate(training_job(), "spec.resources.workers", 0)
    problems, _ = webhook.check("TrainingJob", bad["spec"])
    assert [p.path for p in problems] == ["spec.resources.workers"]
    with pytest.raises(kopf.AdmissionError) as raised:
        webhook.validate_trainingjob(spec=bad["spec"], warnings=[], old=None)
    assert "spec.resources.workers" in str(raised.value)
    assert raised.value.code == 422


def test_a_cross_field_rule_names_its_field() -> None:
    bad = mutate(training_job(), "spec.resources.minWorkers", 5)
    problems, _ = webhook.check("TrainingJob", bad["spec"])
    assert "spec.resources.workers" in [p.path for p in problems]


def test_changing_an_immutable_field_is_rejected_on_update() -> None:
    old = training_job()
    new = mutate(old, "spec.output.modelName", "renamed")
    with pytest.raises(kopf.AdmissionError) as raised:
        webhook.validate_trainingjob(spec=new["spec"], warnings=[], old=old)
    assert "spec.output: field is immutable" in str(raised.value)


def test_a_mutable_change_is_admitted_with_a_warning() -> None:
    old = training_job()
    new = mutate(old, "spec.resources.workers", 4)
    warnings: list[str] = []
    webhook.validate_trainingjob(spec=new["spec"], warnings=warnings, old=old)
    assert warnings and warnings[0].startswith("spec.resources changed")


def test_other_kinds_have_no_immutability_rules_here() -> None:
    old = model_deployment()
    new = mutate(old, "spec.model.name", "other")
    webhook.validate_modeldeployment(spec=new["spec"], warnings=[], old=old)


def test_the_crd_rejects_the_same_changes_with_transition_rules() -> None:
    from modelops.api.crd import RESOURCES_BY_KIND, crd_manifest

    crd = crd_manifest(RESOURCES_BY_KIND["TrainingJob"])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    transitions = [r for r in schema["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    rules = {r["fieldPath"]: r["rule"] for r in transitions}
    assert rules[".model"] == "self.model == oldSelf.model"
    assert rules[".warmStart"].startswith("has(self.warmStart) == has(oldSelf.warmStart)")
    assert sorted(rules) == sorted(f"spec.{f}"[4:] for f, _ in IMMUTABLE_SPEC_FIELDS)
    messages = {r["message"] for r in transitions}
    assert messages == {IMMUTABLE_MESSAGE}
    # The webhook checks the same fields and says the same.
    old = training_job()
    new = mutate(old, "spec.warmStart", {"version": 1})
    problems, _ = webhook.check("TrainingJob", new["spec"], old["spec"])
    assert [(p.path, p.message) for p in problems] == [("spec.warmStart", IMMUTABLE_MESSAGE)]


# -- certificates -------------------------------------------------------------------------


def test_self_signed_certificate_carries_ip_and_dns_sans(tmp_path: Path) -> None:
    cert_pem, key_pem = webhook.self_signed(
        ["127.0.0.1", "modelops-webhook.modelops.svc", "0.0.0.0"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["modelops-webhook.modelops.svc"]
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")


def test_cert_files_are_generated_once_and_kept(tmp_path: Path) -> None:
    cert, key = webhook.ensure_cert_files(tmp_path / "certs", ["127.0.0.1"])
    first = cert.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    again, _ = webhook.ensure_cert_files(tmp_path / "certs", ["127.0.0.1"])
    assert again.read_bytes() == first


# -- version books ------------------------------------------------------------------------

_UIDS = st.lists(st.uuids().map(str), min_size=1, max_size=30)


@given(_UIDS, st.randoms())
def test_versions_are_distinct_monotonic_and_stable(uids: list[str], rnd: object) -> None:
    book = VersionBook()
    given_out: dict[str, int] = {}
    for uid in uids:
        book, version = book.assign(uid, f"job-{uid[:4]}")
        if uid in given_out:
            assert version == given_out[uid]
        else:
            assert all(version > v for v in given_out.values())
            given_out[uid] = version
        # A restart reads the book back from the ConfigMap's data.
        book = VersionBook.from_data(book.to_data())
    assert len(set(given_out.values())) == len(given_out)


def test_forgetting_a_job_never_frees_its_number() -> None:
    book, first = VersionBook().assign("a", "job-a")
    book = book.forget("a")
    book, second = book.assign("b", "job-b")
    assert (first, second) == (1, 2)
    book, again = VersionBook.from_data(book.to_data()).assign("a", "job-a")
    assert again == 3


def test_a_book_with_a_low_counter_is_not_trusted() -> None:
    data = {"next": "1", "jobs": '{"x":{"job":"j","version":7}}'}
    assert VersionBook.from_data(data).assign("y", "k")[1] == 8


# -- settings and metrics -----------------------------------------------------------------


def test_kopf_keeps_its_state_in_modelops_annotations() -> None:
    settings = kopf.OperatorSettings()
    main.configure(
        settings,
        OperatorConfig(webhook_host="127.0.0.1"),
        main.RunOptions(webhook_addr="127.0.0.1"),
    )
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "modelops.dev"
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.finalizer == "modelops.dev/finalizer"
    assert settings.peering.standalone is True
    # The chart owns the webhook configuration unless the operator is told to manage one.
    assert settings.admission.managed is None
    assert isinstance(settings.admission.server, webhook.WebhookServer)
    managed = kopf.OperatorSettings()
    main.configure(managed, OperatorConfig(), main.RunOptions(webhook_config_name="modelops.dev"))
    assert managed.admission.managed == "modelops.dev"


def test_peering_when_named_and_no_webhook_when_disabled() -> None:
    settings = kopf.OperatorSettings()
    config = OperatorConfig(peering_name="modelops", namespaces=("a",))
    main.configure(settings, config, main.RunOptions(webhook=False))
    assert settings.peering.standalone is False
    assert settings.peering.name == "modelops" and settings.peering.mandatory
    assert settings.peering.clusterwide is False
    assert settings.peering.priority > 0, "equal priorities would pause every replica"
    assert settings.admission.server is None
    assert main.WEBHOOK_MODULE not in main.handler_modules(main.RunOptions(webhook=False))
    assert "modelops.k8s.trainingjob.handlers" in main.HANDLER_MODULES


def test_reconcile_metrics_count_time_and_errors() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    with metrics.reconcile("trainingjobs", "reconcile"):
        pass
    with pytest.raises(ValueError), metrics.reconcile("trainingjobs", "reconcile"):
        raise ValueError("boom")
    value = registry.get_sample_value
    labels = {"resource": "trainingjobs", "handler": "reconcile"}
    assert value("modelops_reconcile_total", {**labels, "result": "success"}) == 1
    assert value("modelops_reconcile_total", {**labels, "result": "error"}) == 1
    assert value("modelops_reconcile_errors_total", {**labels, "error": "ValueError"}) == 1
    assert value("modelops_reconcile_duration_seconds_count", labels) == 2
    assert value("modelops_reconcile_in_flight", {"resource": "trainingjobs"}) == 0


# -- tenancy policy -----------------------------------------------------------------------

POLICY = OperatorConfig(workload_image="registry.example/modelops-runtime:1").policy()


def _refused(kind: str, path: str, value: object, policy: TenancyPolicy = POLICY) -> list[str]:
    manifest = training_job() if kind == "TrainingJob" else model_deployment()
    spec = mutate(manifest, path, value)["spec"]
    return [str(p) for p in webhook.policy_problems(kind, spec, policy)]


@pytest.mark.parametrize("kind", ["TrainingJob", "ModelDeployment"])
def test_a_tenant_cannot_pick_an_image_by_default(kind: str) -> None:
    """Finding 8: pods that get the store Secret run only the operator's images."""
    problems = _refused(kind, "spec.resources.image", "evil.example/miner:latest")
    assert len(problems) == 1 and problems[0].startswith("spec.resources.image: image ")
    assert "registry.example/modelops-runtime:1" in problems[0]
    assert _refused(kind, "spec.resources.image", "registry.example/modelops-runtime:1") == []
    with pytest.raises(kopf.AdmissionError) as raised:
        spec = mutate(training_job(), "spec.resources.image", "evil.example/x:1")["spec"]
        webhook.validate_trainingjob(
            spec=spec, warnings=[], old=None, memo=kopf.Memo(policy=POLICY)
        )
    assert "spec.resources.image" in str(raised.value)


def test_an_image_allow_list_admits_listed_repositories_only() -> None:
    policy = OperatorConfig(
        workload_image="registry.example/modelops-runtime:1",
        allowed_images=("registry.example/team-images/", "docker.io/library/python:"),
    ).policy()
    for image in ("registry.example/team-images/trainer:2", "docker.io/library/python:3.12"):
        assert _refused("TrainingJob", "spec.resources.image", image, policy) == []
    for image in ("registry.example/team-images-evil/x:1", "docker.io/library/pythonx:1"):
        assert _refused("TrainingJob", "spec.resources.image", image, policy), image


@pytest.mark.parametrize("kind", ["TrainingJob", "ModelDeployment"])
def test_system_priority_classes_are_refused(kind: str) -> None:
    """Finding 8: a tenant's pods must not pre-empt the cluster's own components."""
    for name in ("system-node-critical", "system-cluster-critical"):
        assert _refused(kind, "spec.resources.priorityClassName", name) == [
            f"spec.resources.priorityClassName: priority class {name!r} is reserved for "
            "cluster components"
        ]
    assert _refused(kind, "spec.resources.priorityClassName", "training") == []
    listed = OperatorConfig(allowed_priority_classes=("batch-low",)).policy()
    assert _refused(kind, "spec.resources.priorityClassName", "training", listed)
    assert _refused(kind, "spec.resources.priorityClassName", "batch-low", listed) == []


@pytest.mark.parametrize("kind", ["TrainingJob", "ModelDeployment"])
def test_a_keyless_exists_toleration_is_refused(kind: str) -> None:
    """Finding 8: `operator: Exists` without a key tolerates every taint (control plane)."""
    everything = [{"operator": "Exists"}]
    assert _refused(kind, "spec.resources.tolerations", everything) == [
        "spec.resources.tolerations[0]: a toleration without a key tolerates every taint"
    ]
    gpu = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert _refused(kind, "spec.resources.tolerations", gpu) == []
    listed = OperatorConfig(allowed_toleration_keys=("nvidia.com/gpu",)).policy()
    master = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
    assert _refused(kind, "spec.resources.tolerations", master, listed) == [
        "spec.resources.tolerations[0].key: taint key 'node-role.kubernetes.io/control-plane'"
        " is not allowed; allowed: nvidia.com/gpu"
    ]
    assert _refused(kind, "spec.resources.tolerations", gpu, listed) == []


def test_prometheus_urls_come_from_the_operators_allow_list() -> None:
    """Finding 10: `prometheusUrl` is no longer a way to make the operator call anything."""
    path = "spec.autoscaling.metricsSource.prometheusUrl"
    assert _refused("ModelDeployment", path, "http://169.254.169.254/latest/") == [
        f"{path}: Prometheus 'http://169.254.169.254/latest/' is not allowed; allowed: none "
        "(the pods are scraped instead)"
    ]
    policy = OperatorConfig(allowed_prometheus_urls=("http://prometheus.monitoring:9090",)).policy()
    for url in ("http://prometheus.monitoring:9090", "http://prometheus.monitoring:9090/"):
        assert _refused("ModelDeployment", path, url, policy) == []
    for url in (
        "http://prometheus.monitoring:90901",
        "http://prometheus.monitoring:9090.evil.example/",
        "http://user:pw@prometheus.monitoring:9090/",
    ):
        assert _refused("ModelDeployment", path, url, policy), url


def test_the_policy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOPS_ALLOWED_IMAGES", "a.example/x/, b.example/y:1")
    monkeypatch.setenv("MODELOPS_ALLOWED_PRIORITY_CLASSES", "low")
    monkeypatch.setenv("MODELOPS_ALLOWED_TOLERATION_KEYS", "nvidia.com/gpu")
    monkeypatch.setenv("MODELOPS_ALLOWED_PROMETHEUS_URLS", "http://p:9090")
    policy = OperatorConfig.from_env().policy()
    assert policy.images == ("a.example/x/", "b.example/y:1")
    assert policy.priority_classes == ("low",)
    assert policy.toleration_keys == ("nvidia.com/gpu",)
    assert policy.prometheus_urls == ("http://p:9090",)
