"""One set of credentials for both API clients: Kopf's and the operator's own `Kube`.

Kopf's default login (`login_via_client`) calls the official client's
`load_kube_config()` without a file, which uses KUBECONFIG as it was when `kubernetes`
was imported: a `--kubeconfig` flag never reached Kopf, which then idled without
credentials. The operator instead loads one client Configuration from the flag, hands
Kopf the same credentials from a login handler, and checks them with one request before
Kopf starts, so a wrong file, address or token ends the process with a message.
"""

from __future__ import annotations

from collections.abc import Sequence

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelops.k8s.kube import ApiError, Kube, load_configuration

# Answers meaning the server is there but will not take these credentials.
_REFUSED = (401, 403)


class StartupError(Exception):
    """The operator cannot use the API with the credentials it was given."""


def configuration_of(kubeconfig: str | None) -> client.Configuration:
    try:
        return load_configuration(kubeconfig)
    except (config.ConfigException, OSError) as error:
        where = kubeconfig or "(in-cluster, KUBECONFIG or ~/.kube/config)"
        raise StartupError(f"cannot load the kubeconfig {where}: {error}") from error


def connect(kubeconfig: str | None, pool_size: int) -> Kube:
    """The operator's client, checked with one request; StartupError when unusable."""
    kube = Kube.from_configuration(configuration_of(kubeconfig), pool_size)
    check_access(kube)
    return kube


def connection_info(configuration: client.Configuration, *, trust_env: bool) -> kopf.ConnectionInfo:
    """Kopf's view of a client Configuration (what Kopf's `login_via_client` extracts)."""
    # The lookup runs the refresh hook of exec plugins and rotating service-account tokens.
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts: Sequence[str] = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=trust_env,
    )


def check_access(kube: Kube) -> None:
    """One authenticated request; StartupError naming the problem when it fails.

    `GET /api` is allowed to every authenticated user (system:discovery), so a refusal
    is about the credentials, not about the operator's RBAC.
    """
    host = kube.api.configuration.host
    try:
        kube.get("/api")
    except ApiError as error:
        if error.status in _REFUSED:
            raise StartupError(
                f"the Kubernetes API at {host} refused the credentials ({error})"
            ) from error
        raise StartupError(
            f"the Kubernetes API at {host} answered GET /api with {error}"
        ) from error
    except (urllib3.exceptions.HTTPError, ApiException, OSError) as error:
        raise StartupError(f"cannot reach the Kubernetes API at {host}: {error}") from error
