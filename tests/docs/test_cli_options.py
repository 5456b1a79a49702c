"""What each command-line flag does, for the flags no other test passes.

`modelops` flags are checked through what the command hands on (the operator's
configuration, the local runner's choice of display) or what it prints and writes;
the runtime's through what the program computes or writes. The operator, the local
runner and the server are stubbed where starting them would say nothing more about
the flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from modelops.cli import main as modelops

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BROKEN = """\
apiVersion: modelops.dev/v1alpha1
kind: ModelDeployment
metadata: {name: digits}
spec:
  model: {name: digits, version: latest}
  autoscaling: {minReplicas: 4, maxReplicas: 2}
"""


# -- modelops validate / crds -----------------------------------------------------------


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_validate_quiet_prints_problems_only(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert modelops(["validate", flag, str(EXAMPLES)]) == 0
    assert capsys.readouterr().out == ""
    assert modelops(["validate", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out.endswith("file(s) valid\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    assert modelops(["validate", flag, str(broken)]) == 1
    assert "spec.autoscaling.minReplicas" in capsys.readouterr().out


def test_crds_dir_writes_there_and_check_reads_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert modelops(["crds", "--dir", str(first), "--dir", str(second)]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 6 and all(Path(p).parent in (first, second) for p in written)
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    assert modelops(["crds", "--check", "--dir", str(first)]) == 0
    victim = next(first.iterdir())
    victim.write_text(victim.read_text() + "# edited\n")
    assert modelops(["crds", "--check", "--dir", str(first), "--dir", str(second)]) == 1
    assert capsys.readouterr().out.strip() == f"stale: {victim} (run `modelops crds`)"


# -- modelops run: the display ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "live"), [(["--live"], True), (["--no-live"], False), ([], None)]
)
def test_run_live_flags_choose_the_display(
    flags: list[str], live: bool | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import modelops.local.runner as runner

    seen: dict[str, Any] = {}

    def fake_run(paths: list[str], state: Path, root: Path, port: int, live: bool | None) -> int:
        seen.update(paths=paths, state=state, root=root, port=port, live=live)
        return 0

    monkeypatch.setattr(runner, "run", fake_run)
    argv = ["run", "examples/digits", "--state", str(tmp_path / "s"), "--root", str(tmp_path)]
    assert modelops([*argv, "--port", "9100", *flags]) == 0
    assert seen == {
        "paths": ["examples/digits"],
        "state": tmp_path / "s",
        "root": tmp_path,
        "port": 9100,
        "live": live,
    }


# -- modelops operator: every flag reaches the configuration -------------------------


def test_operator_flags_reach_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelops.k8s.main as k8s_main

    for name in ("MODELOPS_WORKLOAD_IMAGE", "MODELOPS_STORE_PVC", "MODELOPS_NAMESPACES"):
        monkeypatch.delenv(name, raising=False)
    seen: list[Any] = []
    monkeypatch.setattr(k8s_main, "run", lambda config, options: seen.append((config, options)) or 0)
    argv = [
        "operator", "-n", "ml", "--namespace", "team-b", "--kubeconfig", "/k/config",
        "--image", "registry.example/runtime:2", "--store-pvc", "models",
        "--metrics-port", "9090", "--health-port", "9091", "--no-webhook",
        "--webhook-port", "9444", "--webhook-addr", "127.0.0.1", "--webhook-host", "op.svc",
        "--webhook-cert-dir", "/certs", "--webhook-config-name", "modelops.dev",
        "--peering", "dev", "--retry-backoff", "3", "--resync", "60", "--workers", "2", "-v",
    ]  # fmt: skip
    assert modelops(argv) == 0
    config, options = seen[0]
    assert config.namespaces == ("ml", "team-b")
    assert config.workload_image == "registry.example/runtime:2"
    assert config.store_volume_claim == "models"
    assert (config.metrics_port, config.health_port, config.webhook_port) == (9090, 9091, 9444)
    assert (config.webhook_host, config.webhook_cert_dir) == ("op.svc", "/certs")
    assert config.peering_name == "dev"
    assert options.webhook is False and options.webhook_addr == "127.0.0.1"
    assert options.webhook_config_name == "modelops.dev" and options.kubeconfig == "/k/config"
    assert (options.retry_backoff_seconds, options.resync_seconds) == (3.0, 60.0)
    assert options.reconcile_workers == 2 and options.verbose is True


def test_operator_defaults_without_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelops.k8s.main as k8s_main

    monkeypatch.setenv("MODELOPS_WORKLOAD_IMAGE", "from-env:1")
    monkeypatch.delenv("MODELOPS_STORE_PVC", raising=False)
    seen: list[Any] = []
    monkeypatch.setattr(k8s_main, "run", lambda config, options: seen.append((config, options)) or 0)
    assert modelops(["operator"]) == 0
    config, options = seen[0]
    assert config.workload_image == "from-env:1" and config.store_volume_claim is None
    assert options.webhook is True and options.verbose is False and options.kubeconfig is None
    assert modelops(["operator", "--verbose"]) == 0
    assert seen[1][1].verbose is True


# -- python -m modelops_runtime train ---------------------------------------------------


def test_train_ray_address_flag_and_its_environment_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelops_runtime.train import cli

    monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")
    assert cli._parser().parse_args(["--spec", "tj.yaml"]).ray_address == "ray-head:6379"
    args = cli._parser().parse_args(["--spec", "tj.yaml", "--ray-address", "10.0.0.5:6379"])
    assert args.ray_address == "10.0.0.5:6379"


def test_train_joins_the_ray_address_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--ray-address` is what ray.init gets (stopped there: joining needs a Ray cluster)."""
    import ray

    from modelops_runtime.train import cli

    class Joined(Exception):
        pass

    def fake_init(address: str | None = None, **_: Any) -> None:
        raise Joined(address)

    monkeypatch.setattr(ray, "init", fake_init)
    spec = tmp_path / "tj.yaml"
    spec.write_text((EXAMPLES / "digits" / "trainingjob.yaml").read_text())
    with pytest.raises(Joined, match=r"10\.0\.0\.5:6379"):
        cli.main(["--spec", str(spec), "--ray-address", "10.0.0.5:6379"])


# -- evaluate and compare on a stored random classifier --------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Versions 1 and 2 of model m, and 200 rows labelled two ways: `own` is version 1's
    own prediction, `shifted` the next class, so version 1 scores 1.0 and 0.0 on them."""
    from modelops_runtime import artifacts
    from modelops_runtime.predictor import load_predictor
    from tests.runtime.serve_helpers import CLASSES, N_FEATURES, save_classifier

    root = tmp_path_factory.mktemp("scored")
    store = f"file://{root}/store"
    save_classifier(store, "m", 1)
    save_classifier(store, "m", 2)
    x = np.random.default_rng(0).random((200, N_FEATURES), dtype=np.float32)
    predicted = load_predictor(artifacts.version_uri(store, "m", 1)).scores(x).argmax(1)
    columns: dict[str, Any] = {f"f{i}": x[:, i] for i in range(N_FEATURES)}
    columns["own"] = [CLASSES[i] for i in predicted]
    columns["shifted"] = [CLASSES[(i + 1) % len(CLASSES)] for i in predicted]
    (root / "data").mkdir()
    pq.write_table(pa.table(columns), root / "data" / "part-00000.parquet")
    return {"store": store, "data": (root / "data").as_uri()}


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out


def test_evaluate_label_names_the_column_scored(
    scored: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from modelops_runtime.evaluate import main as evaluate

    base = ["--store", scored["store"], "--model", "m", "--version", "1", "--data", scored["data"]]
    assert evaluate([*base, "--label", "own"]) == 0
    assert _json_out(capsys)["accuracy"] == 1.0
    assert evaluate([*base, "--label", "shifted"]) == 0
    assert _json_out(capsys)["accuracy"] == 0.0


def test_evaluate_seed_and_validation_split_choose_the_rows(
    scored: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from modelops_runtime.evaluate import main as evaluate

    base = ["--store", scored["store"], "--model", "m", "--version", "1", "--data", scored["data"],
            "--label", "own", "--part", "validation"]  # fmt: skip

    def loss(*flags: str) -> float:
        assert evaluate([*base, *flags]) == 0
        return float(_json_out(capsys)["log_loss"])

    assert loss("--seed", "1") == loss("--seed", "1")
    assert loss("--seed", "1") != loss("--seed", "2")
    assert loss("--seed", "1", "--validation-split", "0.5") != loss("--seed", "1")


def test_compare_label_and_metric(
    scored: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelops_runtime import compare

    argv = ["--store", scored["store"], "--model", "m", "--candidate", "2", "--current", "1",
            "--data", scored["data"], "--label", "own"]  # fmt: skip
    assert compare.main(argv) == 0
    report = _json_out(capsys)
    assert report["current"]["accuracy"] == 1.0 and report["candidate"]["accuracy"] < 1.0
    assert set(report["current"]) > {"accuracy"}
    # Past the termination-message limit only the --metric survives.
    encode = compare.encode
    monkeypatch.setattr(compare, "encode", lambda r, keep=None: encode(r, keep, limit=100))
    assert compare.main([*argv, "--metric", "log_loss"]) == 0
    shortened = _json_out(capsys)
    assert set(shortened["current"]) == {"log_loss"} == set(shortened["candidate"])


# -- datasets ----------------------------------------------------------------------------


def test_digits_holdout_fraction(tmp_path: Path) -> None:
    from modelops_runtime.datasets import main as datasets

    def rows(folder: Path) -> int:
        return sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))

    assert datasets(["digits", str(tmp_path / "a"), "--holdout-fraction", "0.5"]) == 0
    held, trained = rows(tmp_path / "a" / "holdout"), rows(tmp_path / "a" / "train")
    assert abs(held - trained) <= 1 and held + trained == 1797


def test_sunspots_holdout_rows_and_seed(tmp_path: Path) -> None:
    from modelops_runtime.datasets import main as datasets

    def series(folder: Path) -> list[float]:
        tables = [pacsv.read_csv(p) for p in sorted(folder.glob("*.csv"))]
        return [v for t in tables for v in t.column("value").to_pylist()]

    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        argv = ["sunspots", str(tmp_path / name), "--rows", "200", "--shards", "1", "--format", "csv",
                "--holdout", str(tmp_path / f"{name}-next"), "--holdout-rows", "50", "--seed", seed]  # fmt: skip
        assert datasets(argv) == 0
    assert len(series(tmp_path / "a")) == 200 and len(series(tmp_path / "a-next")) == 50
    assert series(tmp_path / "a") == series(tmp_path / "b")
    assert series(tmp_path / "a") != series(tmp_path / "c")


# -- serve: the limits reach the server's configuration --------------------------------


def test_serve_limit_flags_reach_the_configuration() -> None:
    from modelops_runtime.serve.config import parse_config

    config = parse_config(
        ["--store", "file:///s", "--model", "m", "--max-body-bytes", "1024",
         "--max-connections", "16", "--feedback-capacity", "50", "--accuracy-window", "20",
         "--torch-threads", "2", "--gil-switch-ms", "1.5", "--drain-seconds", "3"]
    )  # fmt: skip
    assert (config.max_body_bytes, config.max_connections) == (1024, 16)
    assert (config.feedback_capacity, config.accuracy_window) == (50, 20)
    assert (config.torch_threads, config.gil_switch_ms, config.drain_seconds) == (2, 1.5, 3.0)


# -- scan --------------------------------------------------------------------------------


def test_scan_format_reads_csv_shards(tmp_path: Path) -> None:
    from modelops.lifecycle import datascan
    from modelops_runtime.data.scan import main as scan

    data = tmp_path / "data"
    data.mkdir()
    for name, rows in (("part-0.csv", 4), ("part-1.csv", 6)):
        pacsv.write_csv(pa.table({"x": list(range(rows)), "target": [0] * rows}), data / name)
    message = tmp_path / "termination-log"
    common = ["--data", data.as_uri(), "--store", (tmp_path / "store").as_uri(), "--model", "m",
              "--termination-log", str(message)]  # fmt: skip
    assert scan([*common, "--format", "csv"]) == 0
    parsed = datascan.parse(message.read_text())
    assert parsed is not None and parsed.scan is not None, message.read_text()
    assert (parsed.scan.shards, parsed.scan.rows) == (2, 10)
    # Read as parquet (the default) the same folder holds no shard.
    scan(common)
    parsed = datascan.parse(message.read_text())
    assert parsed is not None and (parsed.scan is None or parsed.scan.shards == 0)


def test_train_where_and_log_level_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelops_runtime.train import cli

    monkeypatch.delenv("MODELOPS_LOG_LEVEL", raising=False)
    args = cli._parser().parse_args(["--spec", "tj.yaml", "--ray", "--log-level", "debug"])
    assert (args.ray, args.local, args.log_level) == (True, False, "debug")
    assert cli._parser().parse_args(["--spec", "tj.yaml"]).log_level == "info"
    monkeypatch.setenv("MODELOPS_LOG_LEVEL", "debug")
    assert cli._parser().parse_args(["--spec", "tj.yaml"]).log_level == "debug"
    with pytest.raises(SystemExit):  # one place to run: --ray and --local exclude each other
        cli._parser().parse_args(["--spec", "tj.yaml", "--ray", "--local"])


def test_serve_header_timeout_reaches_the_configuration() -> None:
    from modelops_runtime.serve.config import parse_config

    argv = ["--store", "file:///s", "--model", "m"]
    assert parse_config([*argv, "--header-timeout-s", "2.5"]).header_timeout_s == 2.5
    assert parse_config(argv).header_timeout_s == 10.0
