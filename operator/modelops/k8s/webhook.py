"""Validating admission for the three kinds, with the validation `modelops validate` uses.

The API server checks the CRD schema (types, bounds, patterns, CEL rules) before any
webhook; this webhook answers with the same rules from the pydantic models (so an older
CRD copy without some rule still cannot let a bad object through), and adds what a
schema cannot say: a TrainingJob's immutable fields on UPDATE. Each problem names its
field path, as `modelops validate` prints it.

Certificates: a mounted pair (`<cert dir>/tls.crt`, `tls.key`, e.g. from cert-manager)
is used when present; otherwise a self-signed one is generated (with `cryptography`,
so Kopf's optional `certbuilder` is not needed) and kept in the cert dir when one is
given, so a restarted operator presents the same CA the webhook configuration holds.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ValidationError

from modelops.api.base import GROUP, VERSION
from modelops.api.crd import RESOURCES_BY_KIND
from modelops.api.tenancy import TenancyPolicy
from modelops.api.training import TrainingJobSpec
from modelops.api.validation import Problem, validate_spec
from modelops.lifecycle.training import change_notes, immutable_changes

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CERT_DAYS = 3650
# Not DELETE: a deletion carries no new spec, and must never be blocked by validation.
ADMITTED: list[Literal["CREATE", "UPDATE"]] = ["CREATE", "UPDATE"]


def describe(problems: list[Problem]) -> str:
    return "; ".join(str(problem) for problem in problems)


def check(kind: str, spec: Any, old_spec: Any = None) -> tuple[list[Problem], list[str]]:
    """Problems (reject) and warnings (accept, but tell) of one admission request."""
    problems = validate_spec(kind, spec)
    warnings: list[str] = []
    if problems or kind != "TrainingJob" or old_spec is None:
        return problems, warnings
    try:
        old = TrainingJobSpec.model_validate(old_spec)
    except ValidationError:
        return problems, warnings  # an old object this version cannot read: allow the fix
    new = TrainingJobSpec.model_validate(spec)
    problems = [Problem(path, message) for path, message in immutable_changes(old, new)]
    return problems, change_notes(old, new)


def policy_problems(kind: str, spec: Any, policy: TenancyPolicy) -> list[Problem]:
    """What the tenancy policy refuses in a spec that is otherwise valid."""
    info = RESOURCES_BY_KIND[kind]
    spec_model = info.model.model_fields["spec"].annotation
    assert isinstance(spec_model, type) and issubclass(spec_model, BaseModel)
    return policy.problems(kind, spec_model.model_validate(spec))


def _admit(kind: str, spec: Any, old: Any, warnings: list[str], memo: Any) -> None:
    old_spec = (old or {}).get("spec") if old else None
    problems, notes = check(kind, dict(spec), dict(old_spec) if old_spec else None)
    warnings.extend(notes)
    if not problems:
        policy = memo.get("policy") if memo is not None else None
        problems = policy_problems(kind, dict(spec), policy or TenancyPolicy())
    if problems:
        raise kopf.AdmissionError(f"invalid {kind}: {describe(problems)}", code=422)


@kopf.on.validate(GROUP, VERSION, "trainingjobs", id="validate-trainingjob", operations=ADMITTED)
def validate_trainingjob(
    spec: kopf.Spec, warnings: list[str], old: Any = None, memo: Any = None, **_: Any
) -> None:
    _admit("TrainingJob", spec, old, warnings, memo)


@kopf.on.validate(
    GROUP, VERSION, "modeldeployments", id="validate-modeldeployment", operations=ADMITTED
)
def validate_modeldeployment(
    spec: kopf.Spec, warnings: list[str], old: Any = None, memo: Any = None, **_: Any
) -> None:
    _admit("ModelDeployment", spec, old, warnings, memo)


@kopf.on.validate(
    GROUP, VERSION, "incrementalupdates", id="validate-incrementalupdate", operations=ADMITTED
)
def validate_incrementalupdate(
    spec: kopf.Spec, warnings: list[str], old: Any = None, memo: Any = None, **_: Any
) -> None:
    _admit("IncrementalUpdate", spec, old, warnings, memo)


# --------------------------------------------------------------------------------------
# Serving: a Kopf WebhookServer with certificates that need no extra dependency
# --------------------------------------------------------------------------------------


def self_signed(hostnames: Collection[str], days: int = CERT_DAYS) -> tuple[bytes, bytes]:
    """A self-signed CA certificate for the hostnames/IPs (as SANs) and its key, as PEM."""
    ips: list[x509.GeneralName] = []
    dns: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            dns.append(x509.DNSName(host))
            continue
        if not address.is_unspecified:
            ips.append(x509.IPAddress(address))
    common = next((str(d.value) for d in dns), None) or str(ips[0].value)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([*dns, *ips]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


class WebhookServer(kopf.WebhookServer):
    """Kopf's server, generating its self-signed certificate with `cryptography`."""

    @staticmethod
    def build_certificate(
        hostnames: Collection[str], password: str | None = None
    ) -> tuple[bytes, bytes]:
        return self_signed(hostnames)


def ensure_cert_files(cert_dir: Path, hostnames: Collection[str]) -> tuple[Path, Path]:
    """The cert pair in `cert_dir`, generated once when absent."""
    cert, key = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    if not (cert.exists() and key.exists()):
        cert_dir.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = self_signed(hostnames)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        cert.write_bytes(cert_pem)
    return cert, key


def server(port: int, addr: str, host: str | None, cert_dir: str | None) -> kopf.WebhookServer:
    """The admission server: listens on addr:port, tells the API server https://host:port."""
    hostnames = [name for name in (host, addr) if name]
    if cert_dir:
        cert, key = ensure_cert_files(Path(cert_dir), hostnames)
        return WebhookServer(addr=addr, port=port, host=host, certfile=cert, pkeyfile=key)
    return WebhookServer(addr=addr, port=port, host=host)
