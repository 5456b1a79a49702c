"""`python -m modelops_runtime train --spec FILE`: run one TrainingJob manifest.

Where it runs: on Ray Train when a Ray cluster is named (`--ray-address`, or
`RAY_ADDRESS`, as in the operator's pods), when the job needs several workers or a
search, or with `--ray`; otherwise the loop runs in this process, which starts in a
fraction of the time and behaves the same (checkpoints, resume, progress, result).
`--local` insists on this process.

At `--log-level info` (the default) Ray's routine chatter (per-report lines, its
placement-group cleaner's polling warnings, the token-auth notice) is left out of the
output; `--log-level debug` keeps everything.

Exit codes: 0 the version is stored (trained, resumed or reused); 2 the manifest is
invalid; 3 a warm start found no new data; 4 the input cannot be trained on (no shards,
missing columns): a retry would fail the same way. The last stdout line is `MODELOPS_RESULT
<json>` (the version's reference: name, version, uri, metrics, dataSnapshot,
parentVersion, the trials of a search, and origin: how the version came about,
Trained, Resumed or Reused, and why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, TextIO

import yaml

from modelops.api.training import TrainingJob
from modelops.api.validation import parse_resource
from modelops.lifecycle.placement import needs_ray
from modelops_runtime.errors import INPUT_ERROR_EXIT_CODE, InputError
from modelops_runtime.train import progress


def load_job(path: str) -> TrainingJob:
    """The TrainingJob in a manifest file, validated like admission does."""
    documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    jobs = [d for d in documents if isinstance(d, dict) and d.get("kind") == "TrainingJob"]
    if len(jobs) != 1:
        raise ValueError(f"{path}: expected one TrainingJob, found {len(jobs)}")
    resource, problems = parse_resource(jobs[0])
    if problems or not isinstance(resource, TrainingJob):
        raise ValueError("\n".join(f"{path}: {problem}" for problem in problems))
    return resource


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelops_runtime train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="TrainingJob manifest (YAML)")
    parser.add_argument("--version", type=int, help="version number to publish (the operator's); the next free "
                        "one when another writer published it first; taken from the store when omitted")
    parser.add_argument("--job-id", help="checkpoint scope: rerunning with the same id, spec and data resumes, "
                        "or reuses the version it published (default: metadata.uid, else a fresh id)")
    parser.add_argument("--progress-file", help="where to keep the progress JSON document")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                        help="Ray cluster to join; a local one is started when omitted")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true",
                       help="run the loop in this process without Ray (one worker, no search)")
    where.add_argument("--ray", action="store_true", help="run on Ray Train even when one worker in this process would do")
    parser.add_argument("--log-level", choices=["info", "debug"], default=os.environ.get("MODELOPS_LOG_LEVEL", "info"),
                        help="debug keeps Ray's own log lines, which info leaves out (default: $MODELOPS_LOG_LEVEL or info)")
    return parser


# Ray's lines that say nothing a user can act on. The cleaner polls the state API, which
# a cluster without a dashboard does not serve, and warns at every poll.
RAY_NOISE = re.compile(
    r"Failed to query Ray Train Controller actor state"
    r"|Reporting training result \d+: "
    r"|Token authentication is enabled for this Ray cluster"
)


class QuietStream:
    """A text stream that drops Ray's noise lines and passes everything else on."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        kept = [line for line in lines if not RAY_NOISE.search(line)]
        if kept:
            self.inner.write("\n".join(kept) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial and not RAY_NOISE.search(self._partial):
            self.inner.write(self._partial)
            self._partial = ""
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        training_job = load_job(args.spec)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    job_id = args.job_id or training_job.metadata.uid or f"{training_job.metadata.name}-{uuid.uuid4().hex[:8]}"
    progress_file = args.progress_file or str(Path(tempfile.mkdtemp(prefix="modelops-")) / "progress.json")
    # Imported after validation: a bad manifest is reported without loading torch.
    from modelops_runtime.train import job
    from modelops_runtime.train.warmstart import NothingToTrain

    use_ray = not args.local and (args.ray or bool(args.ray_address) or needs_ray(training_job.spec))
    if args.log_level == "info":
        # Ray prints its workers' lines through sys.stdout/sys.stderr, looked up per line.
        sys.stdout, sys.stderr = QuietStream(sys.stdout), QuietStream(sys.stderr)
    if use_ray:
        import ray

        from modelops_runtime.train import distributed

        # Set before Ray starts: a local Ray's processes inherit them.
        distributed.tune_environment()
        level = logging.DEBUG if args.log_level == "debug" else logging.WARNING
        ray.init(address=args.ray_address, include_dashboard=False, logging_level=level)
    printer = progress.Printer(progress_file)
    printer.start()
    try:
        result = job.run(
            training_job, job_id, version=args.version, progress_path=progress_file, use_ray=use_ray
        )
    except NothingToTrain as error:
        print(error, file=sys.stderr)
        return 3
    except InputError as error:
        print(error, file=sys.stderr)
        return INPUT_ERROR_EXIT_CODE
    finally:
        printer.stop()
    print(progress.RESULT_MARKER + json.dumps(result.summary(), sort_keys=True), flush=True)
    return 0
