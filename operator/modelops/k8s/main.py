"""The operator's entry point: Kopf settings, the handler modules, and `run`.

Kopf keeps its handler progress and last-handled spec in annotations under
`modelops.dev/` (the CRD schemas have no `status.kopf`, and the API server would prune
it). The operator runs standalone unless a peering name is configured (then the Kopf
peering CRDs must be installed and only one operator of that name is active at a time).
"""

from __future__ import annotations

import importlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelops.k8s import login, metrics
from modelops.k8s.config import OperatorConfig
from modelops.k8s.kube import Kube
from modelops.k8s.trainingjob.builders import ClusterSettings
from modelops.k8s.trainingjob.reconcile import TrainingSettings

# Modules whose import registers Kopf handlers; each resource's controller adds its own.
HANDLER_MODULES: list[str] = [
    "modelops.k8s.trainingjob.handlers",
    "modelops.k8s.modeldeployment.handlers",
    "modelops.k8s.incrementalupdate.handlers",
]
WEBHOOK_MODULE = "modelops.k8s.webhook"

PREFIX = "modelops.dev"
FINALIZER = f"{PREFIX}/finalizer"
REPORTING_COMPONENT = "modelops-operator"


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that are not part of OperatorConfig."""

    webhook: bool = True
    webhook_addr: str = "0.0.0.0"
    # Kopf creates and patches this ValidatingWebhookConfiguration; None leaves it to the
    # Helm chart (Kopf would also strip it on shutdown, disabling admission mid-rollout).
    webhook_config_name: str | None = None
    kubeconfig: str | None = None
    retry_backoff_seconds: float = 10.0
    resync_seconds: float = 300.0
    reconcile_workers: int = 8
    verbose: bool = False
    extra_modules: list[str] = field(default_factory=list)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig, options: RunOptions) -> None:
    """Apply the operator's Kopf settings (a plain function, so tests can check them)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.event_name_prefix = "modelops-"
    settings.peering.standalone = config.peering_name is None
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = not config.namespaces
        # Peers of equal priority all pause; distinct random priorities elect one active
        # replica and keep the others on standby until its peering record expires.
        settings.peering.priority = random.randint(1, 2**31 - 1)
    # Watches are re-established on this period, bounding how stale a missed event leaves us.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = options.reconcile_workers
    if options.webhook:
        from modelops.k8s import webhook

        settings.admission.server = webhook.server(
            port=config.webhook_port,
            addr=options.webhook_addr,
            host=config.webhook_host,
            cert_dir=config.webhook_cert_dir,
        )
        if options.webhook_config_name:
            settings.admission.managed = options.webhook_config_name


def handler_modules(options: RunOptions) -> list[str]:
    modules = [*HANDLER_MODULES, *options.extra_modules]
    if options.webhook:
        modules.append(WEBHOOK_MODULE)
    return modules


def make_memo(config: OperatorConfig, options: RunOptions, kube: Kube) -> kopf.Memo:
    return kopf.Memo(
        config=config,
        options=options,
        kube=kube,
        policy=config.policy(),
        training_settings=TrainingSettings(
            cluster=ClusterSettings(
                image=config.workload_image,
                store_volume_claim=config.store_volume_claim,
                store_layout=config.store_layout,
                head_cpu=config.ray_head_cpu,
                head_memory=config.ray_head_memory,
            ),
            retry_backoff_seconds=options.retry_backoff_seconds,
            resync_seconds=options.resync_seconds,
            workers=options.reconcile_workers,
            policy=config.policy(),
        ),
    )


def run(config: OperatorConfig, options: RunOptions) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    logging.basicConfig(
        level=logging.DEBUG if options.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not options.verbose:
        # One line per watch event and per admission request drowns the log (and costs
        # CPU at 200 jobs); failures and our own warnings still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        kube = login.connect(options.kubeconfig, pool_size=options.reconcile_workers * 2)
    except login.StartupError as error:
        # Kopf would start anyway and idle without credentials; a failing pod is visible.
        logging.getLogger(__name__).error("modelops operator cannot start: %s", error)
        return 1
    for module in handler_modules(options):
        importlib.import_module(module)

    @kopf.on.startup()
    def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, config, options)

    @kopf.on.login()
    def _login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        # Loaded again on every (re-)login, so rotated tokens and exec plugins stay fresh.
        configuration = login.configuration_of(options.kubeconfig)
        return login.connection_info(configuration, trust_env=settings.networking.trust_env)

    kube.observe = metrics.METRICS.observe_request
    server = metrics.serve(config.metrics_port)
    try:
        kopf.run(
            standalone=config.peering_name is None,
            peering_name=config.peering_name,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
            memo=make_memo(config, options, kube),
        )
    finally:
        server.shutdown()
        kube.close()
    return 0
