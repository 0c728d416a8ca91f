"""The validation gate on files: outputs, whole-batch rejections, idempotence, Data Docs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.io import read_telemetry, write_telemetry_part
from core.schema import conform
from features.validation import BatchRejected, ValidationReport, file_hash, validate_batch
from tests.features.test_validation import NOW, telemetry_frame

REPORT_KEYS = {
    "batch_id",
    "rows_in",
    "rows_valid",
    "rows_quarantined",
    "failed_expectations",
    "accepted",
    "reason",
    "bad_fraction",
    "seconds",
    "rows_per_s",
    "data_docs",
}


def _corrupted() -> pd.DataFrame:
    frame = telemetry_frame()
    frame.loc[5, "cpu_cores"] = -1.0
    frame.loc[6, "role"] = "pirate"
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def test_an_accepted_batch_writes_valid_quarantine_report_and_data_docs(tmp_path: Path) -> None:
    source = _write(_corrupted(), tmp_path / "in.parquet")
    out = tmp_path / "out"

    report = validate_batch(source, out, now=NOW)

    valid = read_telemetry(out / "valid")
    quarantine = pd.read_parquet(out / "quarantine")
    assert len(valid) == 46 and len(quarantine) == 2
    pd.testing.assert_frame_equal(valid, conform(_corrupted().drop(index=[5, 6])))
    assert quarantine["reasons"].tolist() == [
        "expect_column_values_to_be_between(cpu_cores)",
        "expect_column_values_to_be_in_set(role)",
    ]
    written = _report(out)
    assert set(written) >= REPORT_KEYS
    assert written == json.loads(json.dumps(report.to_json()))
    assert written["accepted"] is True
    assert written["rows_in"] == written["rows_valid"] + written["rows_quarantined"] == 48
    assert written["failed_expectations"] == {
        "expect_column_values_to_be_between(cpu_cores)": 1,
        "expect_column_values_to_be_in_set(role)": 1,
    }
    index = out / "data_docs" / "index.html"
    assert written["data_docs"] == str(index)
    assert "telemetry" in index.read_text()
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "cpu_cores" in pages[0].read_text()


def test_quarantined_rows_keep_their_values_as_they_came(tmp_path: Path) -> None:
    frame = telemetry_frame()
    frame["data_access_count"] = frame["data_access_count"].astype("int32")
    frame.loc[7, "serving_region"] = "mars-north-1"
    source = _write(frame, tmp_path / "in.parquet")

    validate_batch(source, tmp_path / "out", now=NOW)

    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    assert quarantine["data_access_count"].dtype == "int32"
    assert quarantine["serving_region"].tolist() == ["mars-north-1"]


def test_a_dataset_folder_is_one_batch(tmp_path: Path) -> None:
    frame = _corrupted()
    write_telemetry_part(frame.iloc[:20], tmp_path / "in", 0)
    write_telemetry_part(frame.iloc[20:], tmp_path / "in", 1)

    report = validate_batch(tmp_path / "in", tmp_path / "out", now=NOW)

    assert (report.rows_in, report.rows_valid, report.rows_quarantined) == (48, 46, 2)


def test_rerunning_on_the_same_batch_gives_the_same_files(tmp_path: Path) -> None:
    source = _write(_corrupted(), tmp_path / "in.parquet")
    out = tmp_path / "out"

    first = validate_batch(source, out, now=NOW)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = validate_batch(source, out, now=NOW)

    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again.keys() == files.keys()
    for name in ("valid/part-00000.parquet", "quarantine/part-00000.parquet"):
        assert again[Path(name)] == files[Path(name)]
    assert len(pd.read_parquet(out / "valid")) == 46
    timing = {"seconds", "rows_per_s"}
    assert {k: v for k, v in first.to_json().items() if k not in timing} == {
        k: v for k, v in second.to_json().items() if k not in timing
    }


def test_a_run_clears_what_earlier_runs_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = [out / "valid" / "part-00007.parquet", out / "quarantine" / "part-00003.parquet"]
    for path in stale:
        _write(telemetry_frame(users=1), path)
    (out / "data_docs").mkdir()
    (out / "data_docs" / "old.html").write_text("old")

    validate_batch(_write(telemetry_frame(), tmp_path / "in.parquet"), out, now=NOW)

    assert not any(path.exists() for path in stale)
    assert not (out / "data_docs" / "old.html").exists()
    assert len(pd.read_parquet(out / "valid")) == 48


def test_a_rejected_batch_leaves_no_valid_rows_even_after_an_accepted_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    validate_batch(_write(telemetry_frame(), tmp_path / "good.parquet"), out, now=NOW)
    bad = telemetry_frame()
    bad.loc[:9, "cpu_cores"] = -1.0

    with pytest.raises(BatchRejected, match=r"bad fraction 0\.2083 is above the threshold 0\.0500"):
        validate_batch(_write(bad, tmp_path / "bad.parquet"), out, now=NOW)

    assert _parts(out / "valid") == []
    written = _report(out)
    assert written["accepted"] is False and written["rows_valid"] == 0
    assert written["rows_in"] == written["rows_quarantined"] == 48
    assert written["failed_expectations"] == {"expect_column_values_to_be_between(cpu_cores)": 10}
    assert len(pd.read_parquet(out / "quarantine")) == 48
    assert (out / "data_docs" / "index.html").exists()


def test_the_threshold_is_a_parameter(tmp_path: Path) -> None:
    bad = telemetry_frame()
    bad.loc[:9, "cpu_cores"] = -1.0

    report = validate_batch(
        _write(bad, tmp_path / "in.parquet"), tmp_path / "out", max_bad_fraction=0.25, now=NOW
    )

    assert report.accepted and report.rows_quarantined == 10


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not really a parquet file")


def _truncated(path: Path) -> None:
    _write(telemetry_frame(), path)
    path.write_bytes(path.read_bytes()[:200])


def _no_rows(path: Path) -> None:
    _write(telemetry_frame().iloc[:0], path)


def _extra_column(path: Path) -> None:
    _write(telemetry_frame().assign(colour="red"), path)


UNREADABLE = {
    "empty file": (_empty_file, "empty file: .* has no bytes", 0),
    "unreadable parquet": (_garbage, "unreadable Parquet", 0),
    "truncated parquet": (_truncated, "unreadable Parquet", 0),
    "zero rows": (_no_rows, "empty batch: the input has no rows", 0),
    "extra column": (_extra_column, "unexpected columns: colour", 48),
}


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_a_broken_file_is_rejected_with_a_report(kind: str, tmp_path: Path) -> None:
    make, message, rows = UNREADABLE[kind]
    source = tmp_path / "in.parquet"
    make(source)
    out = tmp_path / "out"

    with pytest.raises(BatchRejected, match=message):
        validate_batch(source, out, now=NOW)

    written = _report(out)
    assert written["accepted"] is False and message.split(":")[0] in written["reason"]
    assert written["rows_in"] == written["rows_quarantined"] == rows
    assert written["rows_valid"] == 0 and _parts(out / "valid") == []
    assert written["input"] == str(source)


def test_a_missing_input_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BatchRejected, match="input not found"):
        validate_batch(tmp_path / "nowhere.parquet", tmp_path / "out", now=NOW)
    assert _report(tmp_path / "out")["accepted"] is False


def test_a_structurally_broken_batch_is_quarantined_whole(tmp_path: Path) -> None:
    frame = telemetry_frame().drop(columns=["lat"])
    out = tmp_path / "out"

    source = _write(frame, tmp_path / "in.parquet")

    with pytest.raises(BatchRejected, match="missing columns: lat") as caught:
        validate_batch(source, out, now=NOW)

    quarantine = pq.read_table(out / "quarantine")
    rows = quarantine.drop_columns(["reasons"])
    assert rows.schema.remove_metadata() == pq.read_schema(source).remove_metadata()
    assert rows.to_pylist() == pq.read_table(source).to_pylist()
    assert set(quarantine["reasons"].to_pylist()) == {"batch rejected: missing columns: lat"}
    assert isinstance(caught.value.report, ValidationReport)
    assert caught.value.report.data_docs is None


def test_the_batch_id_is_a_content_hash(tmp_path: Path) -> None:
    a = _write(telemetry_frame(), tmp_path / "a.parquet")
    b = _write(telemetry_frame(), tmp_path / "b" / "same.parquet")
    c = _write(_corrupted(), tmp_path / "c.parquet")
    write_telemetry_part(telemetry_frame(), tmp_path / "folder", 0)

    assert file_hash(a) == file_hash(b) != file_hash(c)
    assert file_hash(tmp_path / "folder") != file_hash(tmp_path / "folder" / "part-00000.parquet")
    assert validate_batch(a, tmp_path / "out", now=NOW).batch_id == file_hash(a)
