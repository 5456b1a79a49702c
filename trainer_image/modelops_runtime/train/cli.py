"""`python -m modelops_runtime train --spec FILE`: run one TrainingJob manifest.

Exit codes: 0 the version is stored (trained, resumed or reused); 2 the manifest is
invalid; 3 a warm start found no new data. The last stdout line is `MODELOPS_RESULT
<json>` (the version's reference: name, version, uri, metrics, dataSnapshot,
parentVersion, the trials of a search, and origin: how the version came about,
Trained, Resumed or Reused, and why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from modelops.api.training import TrainingJob
from modelops.api.validation import parse_resource
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
    parser.add_argument("--local", action="store_true",
                        help="run the loop in this process without Ray (one worker, no search)")
    return parser


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

    if not args.local:
        import ray

        ray.init(address=args.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    printer = progress.Printer(progress_file)
    printer.start()
    try:
        result = job.run(
            training_job, job_id, version=args.version, progress_path=progress_file, use_ray=not args.local
        )
    except NothingToTrain as error:
        print(error, file=sys.stderr)
        return 3
    finally:
        printer.stop()
    print(progress.RESULT_MARKER + json.dumps(result.summary(), sort_keys=True), flush=True)
    return 0
