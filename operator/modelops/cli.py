"""The `modelops` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelops import crdgen
from modelops.api.validation import manifest_files, validate_text

DEFAULT_CRD_DIRS = ("crds", "charts/modelops/crds")


def cmd_validate(args: argparse.Namespace) -> int:
    """Print one line per problem, `file: field.path: message`; exit 1 when any."""
    failed = False
    files = manifest_files(args.files)
    if not files:
        print("modelops validate: no manifest files given", file=sys.stderr)
        return 2
    for path in files:
        try:
            text = path.read_text()
        except OSError as error:
            print(f"{path}: (file): {error.strerror}")
            failed = True
            continue
        for problem in validate_text(text):
            print(f"{path}: {problem}")
            failed = True
    if not failed and not args.quiet:
        print(f"{len(files)} file(s) valid")
    return 1 if failed else 0


def cmd_crds(args: argparse.Namespace) -> int:
    """Write the CRDs, or with --check report stale copies and exit 1."""
    dirs = [Path(d) for d in (args.dir or DEFAULT_CRD_DIRS)]
    if args.check:
        stale = [f"{d / name}" for d in dirs for name in crdgen.stale_files(d)]
        for path in stale:
            print(f"stale: {path} (run `modelops crds`)")
        return 1 if stale else 0
    for directory in dirs:
        for name in crdgen.write(directory):
            print(directory / name)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run manifests locally: training, serving, autoscaling and updates as processes."""
    from modelops.local.runner import run  # rich, aiohttp: only for this command

    live = True if args.live else False if args.no_live else None
    return run(args.paths, Path(args.state), Path(args.root), args.port, live)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the state of a local run, from another terminal."""
    from modelops.local.runner import status

    return status(Path(args.state))


def cmd_import(args: argparse.Namespace) -> int:
    """Publish an ONNX model trained elsewhere as a new version in the store."""
    from modelops_runtime.importer import main as import_main  # onnx, torch: only for this command

    code: int = import_main(args.rest)
    return code


def cmd_source_push(args: argparse.Namespace) -> int:
    """Pack a custom network's source folder into the store; print its model.source URI."""
    from modelops import source_archive
    from modelops_runtime import artifacts  # fsspec and s3fs: only for this command

    try:
        archive = source_archive.pack(Path(args.folder))
        uri = source_archive.archive_uri(args.store, args.name, archive.sha256)
    except source_archive.SourceError as error:
        print(f"modelops source push: {error}", file=sys.stderr)
        return 2
    fs, path = artifacts.filesystem(uri)
    # Named by its content: one already there holds these very bytes.
    if not fs.exists(path):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as handle:
            handle.write(archive.blob)
    print(uri)
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the Kubernetes operator (Kopf); settings from MODELOPS_* env, flags override."""
    import dataclasses

    from modelops.k8s.config import OperatorConfig
    from modelops.k8s.main import RunOptions, run

    config = OperatorConfig.from_env()
    overrides = {
        "namespaces": tuple(args.namespace) if args.namespace else None,
        "metrics_port": args.metrics_port,
        "health_port": args.health_port,
        "webhook_port": args.webhook_port,
        "webhook_host": args.webhook_host,
        "webhook_cert_dir": args.webhook_cert_dir,
        "peering_name": args.peering,
        "workload_image": args.image,
        "store_volume_claim": args.store_pvc,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    options = RunOptions(
        webhook=not args.no_webhook,
        webhook_addr=args.webhook_addr,
        webhook_config_name=args.webhook_config_name,
        kubeconfig=args.kubeconfig,
        retry_backoff_seconds=args.retry_backoff,
        resync_seconds=args.resync,
        reconcile_workers=args.workers,
        verbose=args.verbose,
    )
    return run(config, options)


def _add_operator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = sub.add_parser("operator", help="run the Kubernetes operator")
    op.add_argument(
        "-n", "--namespace", action="append", help="watch only this namespace (repeatable)"
    )
    op.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    op.add_argument("--image", help="workload image (MODELOPS_WORKLOAD_IMAGE)")
    op.add_argument("--store-pvc", help="PVC holding file:// stores (MODELOPS_STORE_PVC)")
    op.add_argument("--metrics-port", type=int, help="/metrics port (MODELOPS_METRICS_PORT)")
    op.add_argument("--health-port", type=int, help="/healthz port (MODELOPS_HEALTH_PORT)")
    op.add_argument("--no-webhook", action="store_true", help="serve no admission webhook")
    op.add_argument("--webhook-port", type=int, help="webhook port (MODELOPS_WEBHOOK_PORT)")
    op.add_argument("--webhook-addr", default="0.0.0.0", help="address the webhook listens on")
    op.add_argument(
        "--webhook-host", help="host the API server calls the webhook at (MODELOPS_WEBHOOK_HOST)"
    )
    op.add_argument("--webhook-cert-dir", help="tls.crt/tls.key; generated there when absent")
    op.add_argument(
        "--webhook-config-name",
        help="let the operator manage this ValidatingWebhookConfiguration "
        "(unmanaged when omitted: the Helm chart owns it)",
    )
    op.add_argument("--peering", help="Kopf peering name (MODELOPS_PEERING); standalone if unset")
    op.add_argument(
        "--retry-backoff", type=float, default=10.0, help="first retry delay of a failed attempt"
    )
    op.add_argument("--resync", type=float, default=300.0, help="seconds between full passes")
    op.add_argument("--workers", type=int, default=8, help="reconcile threads")
    op.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    op.set_defaults(func=cmd_operator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check manifests as admission would")
    validate.add_argument("files", nargs="+", help="manifest files or folders")
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    validate.set_defaults(func=cmd_validate)

    crds = sub.add_parser("crds", help="generate CustomResourceDefinitions from the models")
    crds.add_argument("--check", action="store_true", help="fail when a copy is stale")
    crds.add_argument(
        "--dir", action="append", help=f"output folder (default: {', '.join(DEFAULT_CRD_DIRS)})"
    )
    crds.set_defaults(func=cmd_crds)

    run = sub.add_parser("run", help="run manifests on this machine (local mode)")
    run.add_argument("paths", nargs="+", help="manifest files or folders")
    run.add_argument("--state", default=".modelops/state", help="state folder")
    run.add_argument(
        "--root",
        default=".modelops",
        help="local folder standing for file:///var/lib/modelops in the manifests",
    )
    run.add_argument("--port", type=int, default=8000, help="first ModelDeployment's port")
    run.add_argument("--live", action="store_true", help="live table even without a terminal")
    run.add_argument("--no-live", action="store_true", help="event lines instead of a table")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="show the state of a local run")
    status.add_argument("--state", default=".modelops/state", help="state folder")
    status.set_defaults(func=cmd_status)

    importing = sub.add_parser(
        "import",
        help="publish an ONNX model as a new version in the store",
        # Every argument, --help included, goes to the runtime's parser, which owns them.
        add_help=False,
        prefix_chars="\0",
    )
    importing.add_argument("rest", nargs="*", help="FILE --store URI --model NAME ...")
    importing.set_defaults(func=cmd_import)

    source = sub.add_parser("source", help="source archives of custom networks")
    source_sub = source.add_subparsers(dest="source_command", required=True)
    push = source_sub.add_parser(
        "push", help="pack a folder into <store>/_sources/<name>/ and print its URI"
    )
    push.add_argument("folder", help="folder holding the factory's package")
    push.add_argument("--store", required=True, help="store URI (file:// or s3://)")
    push.add_argument("--name", required=True, help="source name, a DNS-1123 label")
    push.set_defaults(func=cmd_source_push)

    _add_operator_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
