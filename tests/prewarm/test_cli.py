"""The `prewarm` command as a user calls it (DESIGN.md section 4), through Typer's runner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from core.schema import COLUMN_NAMES, PANDAS_DTYPES
from prewarm.cli import app

runner = CliRunner()


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for part in sorted(folder.glob("*.parquet")):
        digest.update(part.read_bytes())
    return digest.hexdigest()


def _simulate(out: Path, seed: int) -> None:
    args = ["simulate", "--users", "20", "--days", "2", "--seed", str(seed), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_every_subcommand_has_help() -> None:
    for command in ("simulate", "import-gwa", "validate", "bench"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "--out" in result.output


def test_simulate_writes_the_schema_deterministically(tmp_path: Path) -> None:
    _simulate(tmp_path / "a", seed=7)
    _simulate(tmp_path / "b", seed=7)
    _simulate(tmp_path / "c", seed=8)
    frame = pd.read_parquet(tmp_path / "a")
    assert tuple(frame.columns) == COLUMN_NAMES
    assert {c: str(t) for c, t in frame.dtypes.items()} == PANDAS_DTYPES
    assert len(frame) == 20 * 2 * 288
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_import_gwa_keeps_every_csv_row(tmp_path: Path, shared_datasets: Path) -> None:
    src = shared_datasets / "bitbrains-rnd" / "raw-2013-7"
    result = runner.invoke(app, ["import-gwa", str(src), "--out", str(tmp_path / "gwa")])
    assert result.exit_code == 0, result.output
    rows_in = sum(len(p.read_text().splitlines()) - 1 for p in src.glob("*.csv"))
    assert len(pd.read_parquet(tmp_path / "gwa")) == rows_in


def test_import_gwa_garbled_csv_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    header = (
        "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\t"
        "CPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\t"
        "Disk read throughput [KB/s];\tDisk write throughput [KB/s];\t"
        "Network received throughput [KB/s];\tNetwork transmitted throughput [KB/s]"
    )
    good = "1372629600;\t2;\t5000;\t100;\t2.0;\t4000000;\t100000;\t1;\t2;\t3;\t4"
    (src / "7.csv").write_text(f"{header}\n{good}\n1372629900;\t2;\t5000;\tgarbage\n")
    result = runner.invoke(app, ["import-gwa", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "7.csv" in result.output and "line 3" in result.output


def test_import_gwa_missing_source_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import-gwa", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no such file" in result.output


@pytest.mark.parametrize("only", ["nonexistent"])
def test_bench_rejects_unknown_names(tmp_path: Path, only: str) -> None:
    result = runner.invoke(app, ["bench", "--only", only, "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 2
    assert "unknown benchmark" in result.output


def test_validate_accepts_simulated_telemetry(tmp_path: Path) -> None:
    _simulate(tmp_path / "t", seed=3)
    result = runner.invoke(app, ["validate", str(tmp_path / "t"), "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["rows_in"] == report["rows_valid"] + report["rows_quarantined"] == 20 * 2 * 288


def test_validate_rejects_a_structurally_broken_batch_with_exit_2(tmp_path: Path) -> None:
    _simulate(tmp_path / "t", seed=3)
    broken = pd.read_parquet(tmp_path / "t").drop(columns=["latency_ms"])
    broken.to_parquet(tmp_path / "broken.parquet")
    args = ["validate", str(tmp_path / "broken.parquet"), "--out", str(tmp_path / "v")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "latency_ms" in result.output
    assert not list((tmp_path / "v" / "valid").glob("*.parquet"))


def test_backtest_writes_the_contract_json(tmp_path: Path) -> None:
    args = ["simulate", "--users", "6", "--days", "5", "--seed", "2", "--out", str(tmp_path / "t")]
    assert runner.invoke(app, args).exit_code == 0
    out = tmp_path / "bt.json"
    result = runner.invoke(
        app,
        ["backtest", "--telemetry", str(tmp_path / "t"), "--horizon", "24", "--folds", "2",
         "--models", "seasonal_naive", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["horizon"], report["folds"], report["n_series"]) == (24, 2, 6)
    naive = report["models"]["seasonal_naive"]
    for metric in ("mase", "smape", "pinball_p90", "coverage_p90"):
        assert set(naive[metric]) >= {"cpu_cores", "ram_gb", "storage_iops", "network_mbps"}
        assert naive[metric]["mean"] is not None
    assert 0.0 <= naive["region_top1"] <= 1.0


def test_backtest_refuses_unknown_models_and_too_short_data(tmp_path: Path) -> None:
    args = ["simulate", "--users", "2", "--days", "2", "--seed", "2", "--out", str(tmp_path / "t")]
    assert runner.invoke(app, args).exit_code == 0
    base = ["backtest", "--telemetry", str(tmp_path / "t"), "--out", str(tmp_path / "b.json")]
    unknown = runner.invoke(app, [*base, "--models", "prophet"])
    assert unknown.exit_code == 2 and "prophet" in unknown.output
    short = runner.invoke(app, [*base, "--models", "seasonal_naive", "--folds", "3"])
    assert short.exit_code == 2 and "cannot hold" in short.output
