"""The head pod's main process: Ray head, gang wait, training, report.

`python -m modelops_runtime.driver --spec FILE --version N --job-id UID
--workers K --progress-file PATH` runs in the workload image (no Kopf, no Kubernetes
client there, so this module uses only the standard library, with Ray and fsspec
imported where needed):

1. starts the Ray head (`ray start --head`, no CPUs of its own: training runs on workers);
2. waits until K workers have joined (gang semantics: training never starts on a part);
3. runs `python -m modelops_runtime train ...` and relays each `MODELOPS_PROGRESS` line
   to the head pod's `modelops.dev/progress` annotation (at most every few seconds),
   with the pod's own service-account token, which may patch this pod and nothing else;
4. writes the TrainingResult (version, URI, metrics, data snapshot, and whether the
   version was trained, resumed or reused) as the container's termination message, or
   the tail of the output when training failed, and exits with the training's exit
   code, so the pod's phase is the attempt's result. The version is the one the
   runtime reports (`MODELOPS_RESULT` line): it differs from `--version` when another
   writer published that number first, or when the job had published its version before.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import TrainingJob
from modelops.lifecycle.training_report import (
    TERMINATION_MESSAGE_LIMIT,
    TrainingResult,
    VersionOrigin,
    encode_progress,
    snapshot_summary,
)
from modelops.lifecycle.training_rules import checkpoint_uri, version_uri

PROGRESS_MARKER = "MODELOPS_PROGRESS "
RESULT_MARKER = "MODELOPS_RESULT "
PROGRESS_ANNOTATION = "modelops.dev/progress"
TERMINATION_LOG = "/dev/termination-log"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GCS_PORT = 6379
# Long enough for image pulls and GPU node scale-up; a gang never starts on a part.
WORKERS_TIMEOUT = 1800.0


# --------------------------------------------------------------------------------------
# Progress relay
# --------------------------------------------------------------------------------------


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """The progress document of a `MODELOPS_PROGRESS {json}` line, else None."""
    if not line.startswith(PROGRESS_MARKER):
        return None
    try:
        document = json.loads(line[len(PROGRESS_MARKER) :])
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


class PodAnnotator:
    """Patches one annotation of the driver's own pod through the API server."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext) -> None:
        self.url = url
        self.token = token
        self.context = context

    @classmethod
    def from_environment(cls) -> PodAnnotator | None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        pod, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
        token_file = SERVICE_ACCOUNT / "token"
        if not (host and pod and namespace and token_file.exists()):
            return None
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        if ":" in host:
            host = f"[{host}]"
        url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"
        return cls(url, token_file.read_text().strip(), context)

    def annotate(self, key: str, value: str) -> None:
        body = json.dumps({"metadata": {"annotations": {key: value}}}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PATCH",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
            response.read()


class ProgressRelay:
    """Forwards progress documents, at most one per `interval` (the last one always)."""

    def __init__(
        self,
        send: Callable[[str], None],
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self.last: dict[str, Any] | None = None
        self._pending: str | None = None
        self._sent_at: float | None = None

    def offer(self, document: dict[str, Any]) -> None:
        self.last = document
        self._pending = encode_progress(document)
        now = self.clock()
        if self._sent_at is None or now - self._sent_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self._pending is None:
            return
        text, self._pending = self._pending, None
        self._sent_at = self.clock()
        try:
            self.send(text)
        except OSError as error:  # reporting must never stop the training
            print(f"modelops driver: progress not reported: {error}", file=sys.stderr)


def relay_output(stream: IO[str], relay: ProgressRelay, tail: deque[str]) -> None:
    """Echo the training's output to our log, relaying progress lines on the way."""
    for line in stream:
        sys.stdout.write(line)
        tail.append(line.rstrip("\n"))
        document = parse_progress_line(line.rstrip("\n"))
        if document is not None:
            relay.offer(document)
    sys.stdout.flush()
    relay.flush()


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


def _read_text(uri: str) -> str | None:
    if uri.startswith("file://"):
        path = Path(uri[len("file://") :])
        return path.read_text() if path.exists() else None
    import fsspec  # only s3:// stores need it; it is in the workload image

    from modelops_runtime import storage

    try:
        with fsspec.open(uri, "r", **storage.options(uri)) as handle:
            text: str = handle.read()
            return text
    except FileNotFoundError:
        return None


def reported_result(lines: Iterable[str]) -> dict[str, Any] | None:
    """The runtime's own account of its result: the last `MODELOPS_RESULT {json}` line."""
    for line in reversed(list(lines)):
        if line.startswith(RESULT_MARKER):
            try:
                document = json.loads(line[len(RESULT_MARKER) :])
            except json.JSONDecodeError:
                return None
            return document if isinstance(document, dict) else None
    return None


def build_result(
    job: TrainingJob,
    version: int,
    job_id: str,
    last: dict[str, Any] | None,
    reported: dict[str, Any] | None = None,
) -> TrainingResult:
    """The result of a finished training, read from the version folder it published."""
    spec = job.spec
    reported = reported or {}
    # The runtime moves to a later number only when the allocated one was taken; a line
    # that names an earlier one (printed by anything in the training's output) is ignored.
    if isinstance(reported.get("version"), int) and reported["version"] > version:
        version = reported["version"]
    folder = version_uri(spec, version)
    metrics_text = _read_text(f"{folder}/metrics.json")
    metrics = json.loads(metrics_text) if metrics_text else dict((last or {}).get("metrics", {}))
    snapshot_text = _read_text(f"{folder}/snapshot.json")
    snapshot = None
    if snapshot_text:
        manifest = SnapshotManifest.model_validate_json(snapshot_text)
        snapshot = snapshot_summary(manifest, f"{folder}/snapshot.json")
    checkpoint = (last or {}).get("checkpoint")
    epoch = int((last or {}).get("epoch") or 0)
    if not checkpoint and epoch:
        checkpoint = checkpoint_uri(spec, job_id, epoch)
    return TrainingResult(
        version=version,
        uri=folder,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        data_snapshot=snapshot,
        parent_version=reported.get("parentVersion")
        or (spec.warm_start.version if spec.warm_start else None),
        checkpoint=checkpoint,
        origin=_origin(reported.get("origin")),
    )


def _origin(value: Any) -> VersionOrigin | None:
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("how", "why")):
        return None
    return VersionOrigin(how=value["how"], why=value["why"])


def failure_message(code: int, tail: Iterable[str]) -> str:
    """The last lines of output, as much as the termination message holds."""
    lines = [f"training exited with code {code}", *tail]
    text = "\n".join(lines)
    encoded = text.encode()[-TERMINATION_MESSAGE_LIMIT:]
    return encoded.decode(errors="ignore")


def write_termination_message(text: str, path: str = TERMINATION_LOG) -> None:
    try:
        Path(path).write_text(text)
    except OSError as error:
        print(f"modelops driver: no termination message: {error}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------


def start_ray_head() -> None:
    subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={GCS_PORT}",
            "--num-cpus=0",  # the head coordinates; workers train
            "--dashboard-host=0.0.0.0",
            "--disable-usage-stats",
        ],
        check=True,
    )


class WorkersMissing(RuntimeError):
    """Not every worker joined the Ray cluster before the deadline."""


def count_workers(
    count: int,
    nodes: Callable[[], list[dict[str, Any]]],
    deadline: float,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once `count` worker nodes are alive; raise WorkersMissing after `deadline` s.

    Without a deadline a worker that never joins (unschedulable, image pull failing,
    stuck on its init container) would hold the head and every other worker's GPUs
    forever; a failed attempt is retried (within backoffLimit) instead.
    """
    until = clock() + deadline
    while True:
        workers = len([n for n in nodes() if n.get("Alive")]) - 1  # the head is a node too
        print(f"modelops driver: {workers}/{count} workers joined", flush=True)
        if workers >= count:
            return
        if clock() >= until:
            raise WorkersMissing(
                f"{workers}/{count} workers joined within {deadline:.0f}s; giving up the attempt"
            )
        sleep(poll)


def wait_for_workers(count: int, deadline: float, poll: float = 2.0) -> None:
    """Block until `count` worker nodes have joined the Ray cluster, at most `deadline` s."""
    import ray

    ray.init(address="auto", logging_level=logging.WARNING)
    try:
        count_workers(count, ray.nodes, deadline, poll)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def train_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modelops_runtime",
        "train",
        "--spec",
        args.spec,
        "--version",
        str(args.version),
        "--job-id",
        args.job_id,
        "--progress-file",
        args.progress_file,
    ]


def run_training(
    command: Sequence[str], relay: ProgressRelay, tail_lines: int = 40
) -> tuple[int, deque[str]]:
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        relay_output(process.stdout, relay, tail)
        code = process.wait()
    return code, tail


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelops-driver", description=__doc__)
    parser.add_argument("--spec", required=True, help="TrainingJob manifest file")
    parser.add_argument("--version", type=int, required=True, help="model version to write")
    parser.add_argument("--job-id", required=True, help="job id (checkpoints are per job id)")
    parser.add_argument("--workers", type=int, default=1, help="workers to wait for")
    parser.add_argument("--progress-file", required=True, help="runtime progress file")
    parser.add_argument("--no-ray", action="store_true", help="run without a Ray cluster")
    parser.add_argument(
        "--workers-timeout",
        type=float,
        default=WORKERS_TIMEOUT,
        help="seconds to wait for every worker before the attempt fails",
    )
    parser.add_argument("--report-interval", type=float, default=5.0)
    parser.add_argument("--termination-log", default=TERMINATION_LOG)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, command: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import yaml

    job = TrainingJob.model_validate(yaml.safe_load(Path(args.spec).read_text()))
    if not args.no_ray:
        start_ray_head()
        try:
            wait_for_workers(args.workers, args.workers_timeout)
        except WorkersMissing as error:
            write_termination_message(str(error), args.termination_log)
            return 1
    annotator = PodAnnotator.from_environment()

    def send(text: str) -> None:
        if annotator is not None:
            annotator.annotate(PROGRESS_ANNOTATION, text)

    relay = ProgressRelay(send, interval=args.report_interval)
    code, tail = run_training(command or train_command(args), relay)
    if code == 0:
        result = build_result(job, args.version, args.job_id, relay.last, reported_result(tail))
        write_termination_message(result.encode(), args.termination_log)
    else:
        write_termination_message(failure_message(code, tail), args.termination_log)
    return code


if __name__ == "__main__":
    sys.exit(main())
