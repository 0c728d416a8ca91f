"""The GWA-T-12 (Bitbrains) importer: conversions, real-trace imports and the error catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.io import read_telemetry
from core.schema import COLUMN_NAMES, RESOURCE_COLUMNS
from core.settings import GwaSettings, Settings
from features.importers.gwa import (
    GwaFormatError,
    ImportSummary,
    import_gwa,
    read_gwa_csv,
    to_telemetry,
)

DATASETS = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets"
BITBRAINS = DATASETS / "bitbrains-rnd"
RAW_CSV_DIR = BITBRAINS / "raw-2013-7"
PARQUET = BITBRAINS / "vms-001-100.parquet"

# The archive's header, as the datasets README lists it.
HEADER = [
    "Timestamp [ms]",
    "CPU cores",
    "CPU capacity provisioned [MHZ]",
    "CPU usage [MHZ]",
    "CPU usage [%]",
    "Memory capacity provisioned [KB]",
    "Memory usage [KB]",
    "Disk read throughput [KB/s]",
    "Disk write throughput [KB/s]",
    "Network received throughput [KB/s]",
    "Network transmitted throughput [KB/s]",
]
T0 = 1372629804  # 2013-06-30 22:03:24 UTC
# Powered on: 2 cores of 2600 MHz, 1300 MHz used -> 0.5 cores; 1 GiB of memory in use;
# 64 + 32 KB/s of disk -> 3 IOPS of 32 KiB -> 900 accesses in 300 s; 100 + 25 KB/s of network
# -> 125 * 1024 * 8 / 1e6 = 1.024 Mbit/s.
ON_ROW = (T0, 2, 5200.0, 1300.0, 25.0, 2097152.0, 1048576.0, 64.0, 32.0, 100.0, 25.0)
# Powered off (no capacity, no cores) yet with residual memory and network readings.
OFF_ROW = (T0 + 300, 0, 0.0, 0.0, 0.0, 2097152.0, 500.0, 0.0, 0.0, 0.0, 1.0)

RAW_NAMES = [
    "timestamp",
    "cpu_cores",
    "cpu_capacity_mhz",
    "cpu_usage_mhz",
    "cpu_usage_pct",
    "mem_capacity_kb",
    "mem_usage_kb",
    "disk_read_kbps",
    "disk_write_kbps",
    "net_rx_kbps",
    "net_tx_kbps",
]


def archive_text(rows, header=HEADER, sep=";\t") -> str:
    """A CSV in the archive's layout: header row, then one row per sample, each line ended."""
    lines = [sep.join(header), *(sep.join(str(v) for v in row) for row in rows)]
    return "\n".join(lines) + "\n"


def write_archive(folder: Path, vm_id: int, rows, **layout) -> Path:
    """Write ``rows`` as the archive file of VM ``vm_id`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{vm_id}.csv"
    path.write_text(archive_text(rows, **layout))
    return path


def raw_frame(rows, vm_ids) -> pd.DataFrame:
    """A raw (Parquet-form) frame from archive-ordered rows and one VM id per row."""
    frame = pd.DataFrame(rows, columns=RAW_NAMES)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    frame.insert(0, "vm_id", vm_ids)
    return frame


def write_parquet_form(path: Path, frame: pd.DataFrame) -> Path:
    """Write a raw frame as a Parquet-form file."""
    frame.to_parquet(path, index=False)
    return path


def needs(path: Path) -> None:
    """Skip the test when a shared dataset file is absent (a fresh checkout has none)."""
    if not path.exists():
        pytest.skip(f"shared dataset not available: {path}")


def assert_valid_telemetry(frame: pd.DataFrame) -> None:
    """Schema columns, non-negative resources and counts, no demand without a session, sorted."""
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert (frame[list(RESOURCE_COLUMNS)] >= 0).all().all()
    assert (frame["data_access_count"] >= 0).all()
    idle = ~frame["session_active"]
    assert (frame.loc[idle, list(RESOURCE_COLUMNS)] == 0).all().all()
    assert (frame.loc[idle, "data_access_count"] == 0).all()
    keys = frame[["user_id", "event_timestamp"]]
    assert keys.equals(keys.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True))


# --- conversions on hand-made inputs -------------------------------------------------------


def test_csv_row_converts_to_hand_computed_telemetry(tmp_path):
    path = write_archive(tmp_path, 7, [ON_ROW, OFF_ROW])

    telemetry = to_telemetry(read_gwa_csv(path), Settings())

    on, off = telemetry.iloc[0], telemetry.iloc[1]
    assert on["user_id"] == "gwa-vm-0007"
    assert on["event_timestamp"] == pd.Timestamp("2013-06-30 22:03:24", tz="UTC")
    assert (on["role"], on["app"]) == ("unknown", "unknown")
    assert on["session_active"]
    assert on["cpu_cores"] == pytest.approx(0.5)
    assert on["ram_gb"] == pytest.approx(1.0)
    assert on["storage_iops"] == pytest.approx(3.0)
    assert on["data_access_count"] == 900
    assert on["network_mbps"] == pytest.approx(1.024)
    assert on["serving_region"] == "azure-westeurope"
    assert telemetry[["lat", "lon", "latency_ms"]].isna().all().all()
    assert telemetry[["geo_source", "client_ip"]].isna().all().all()
    # The powered-off row: no session, so no demand, although the source shows residual usage.
    assert not off["session_active"]
    assert off[list(RESOURCE_COLUMNS)].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert off["data_access_count"] == 0


def test_settings_drive_the_assumptions():
    settings = Settings(
        gwa=GwaSettings(
            io_size_kib=4,
            kb_bytes=1000,
            serving_region="eu-test-1",
            user_prefix="vm-",
            vm_id_digits=2,
            interval_seconds=60,
        )
    )
    telemetry = to_telemetry(raw_frame([ON_ROW], [3]), settings)

    row = telemetry.iloc[0]
    assert row["user_id"] == "vm-03"
    assert row["serving_region"] == "eu-test-1"
    assert row["ram_gb"] == pytest.approx(1048576 * 1000 / 2**30)
    assert row["storage_iops"] == pytest.approx(96 * 1000 / 4096)
    assert row["data_access_count"] == round(96 * 1000 / 4096 * 60)
    assert row["network_mbps"] == pytest.approx(125 * 1000 * 8 / 1e6)
    assert row["cpu_cores"] == pytest.approx(0.5)  # MHz per core does not depend on settings


def test_output_is_sorted_by_user_id_text_and_keeps_repeated_timestamps():
    settings = Settings(gwa=GwaSettings(vm_id_digits=1))
    later = (T0 + 600, *ON_ROW[1:])
    repeat = (T0, *ON_ROW[1:6], 2 * 1048576.0, *ON_ROW[7:])  # same stamp, twice the memory
    raw = raw_frame([later, ON_ROW, ON_ROW, repeat], [9, 10, 9, 9])

    telemetry = to_telemetry(raw, settings)

    assert len(telemetry) == len(raw)
    assert telemetry["user_id"].tolist() == ["gwa-vm-10", "gwa-vm-9", "gwa-vm-9", "gwa-vm-9"]
    vm9 = telemetry[telemetry["user_id"] == "gwa-vm-9"]
    assert vm9["event_timestamp"].is_monotonic_increasing
    # Rows with equal keys stay in input order: the single-memory row came first.
    assert vm9["ram_gb"].tolist() == pytest.approx([1.0, 2.0, 1.0])


def test_cpu_cores_use_each_vms_own_clock_rate():
    fast = (T0, 4, 12000.0, 3000.0, 25.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)  # 3000 MHz per core
    telemetry = to_telemetry(raw_frame([fast], [1]), Settings())
    assert telemetry["cpu_cores"].iloc[0] == pytest.approx(1.0)


def test_to_telemetry_refuses_impossible_values():
    negative = (T0, 2, 5200.0, -1.0, *ON_ROW[4:])
    with pytest.raises(GwaFormatError, match=r"row 1: column 'cpu_usage_mhz' is negative"):
        to_telemetry(raw_frame([ON_ROW, negative], [1, 1]), Settings())


def test_import_writes_one_part_per_batch_of_vms_and_reports_progress(tmp_path):
    source = tmp_path / "trace"
    write_archive(source, 2, [ON_ROW, OFF_ROW])
    write_archive(source, 1, [ON_ROW])
    calls = []
    settings = Settings(gwa=GwaSettings(vms_per_part=1))

    summary = import_gwa(source, tmp_path / "out", lambda d, t: calls.append((d, t)), settings)

    assert summary == ImportSummary(
        rows_in=3,
        rows_out=3,
        vms=2,
        files=[tmp_path / "out" / "part-00000.parquet", tmp_path / "out" / "part-00001.parquet"],
        source_format="csv",
        powered_off_rows=1,
        zeroed_usage_rows=1,
        duplicate_timestamps=0,
    )
    assert calls == [(1, 2), (2, 2)]
    telemetry = read_telemetry(tmp_path / "out")
    assert telemetry["user_id"].tolist() == ["gwa-vm-0001", "gwa-vm-0002", "gwa-vm-0002"]
    assert_valid_telemetry(telemetry)


def test_reimport_leaves_no_stale_parts(tmp_path):
    source = tmp_path / "trace"
    for vm in (1, 2, 3):
        write_archive(source, vm, [ON_ROW])
    out = tmp_path / "out"
    import_gwa(source, out, settings=Settings(gwa=GwaSettings(vms_per_part=1)))

    summary = import_gwa(source / "2.csv", out)

    assert [p.name for p in sorted(out.glob("part-*.parquet"))] == ["part-00000.parquet"]
    assert summary.vms == 1
    assert read_telemetry(out)["user_id"].tolist() == ["gwa-vm-0002"]


def test_parquet_form_and_csv_give_the_same_telemetry(tmp_path):
    write_archive(tmp_path / "csv", 5, [ON_ROW, OFF_ROW])
    write_parquet_form(tmp_path / "trace.parquet", raw_frame([ON_ROW, OFF_ROW], [5, 5]))

    from_csv = import_gwa(tmp_path / "csv", tmp_path / "a")
    from_parquet = import_gwa(tmp_path / "trace.parquet", tmp_path / "b")

    assert (from_csv.source_format, from_parquet.source_format) == ("csv", "parquet")
    pd.testing.assert_frame_equal(read_telemetry(tmp_path / "a"), read_telemetry(tmp_path / "b"))


# --- the error catalogue -----------------------------------------------------------------


def test_truncated_last_line_names_the_line(tmp_path):
    path = write_archive(tmp_path, 1, [ON_ROW, ON_ROW, ON_ROW])
    text = path.read_text()
    path.write_text(text[: text.rindex(";") - 3])  # cut inside the last row, no line end

    with pytest.raises(GwaFormatError, match=r"1\.csv: line 4: .*truncated"):
        read_gwa_csv(path)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("1372630104;\t2;\t5200.0", r"line 3: 3 fields, expected 11"),
        (";\t".join(["1372630104", *["1"] * 11]), r"line 3: 12 fields, expected 11"),
        ("", r"line 3: blank line"),
        (
            ";\t".join(["1372630104", "2", "abc", *["1"] * 8]),
            r"line 3: column 'CPU capacity provisioned \[MHZ\]' is not a number \('abc'\)",
        ),
        (
            ";\t".join(["1372630104", "2", "5200", "", *["1"] * 7]),
            r"line 3: column 'CPU usage \[MHZ\]' is missing",
        ),
        (
            ";\t".join(["1372630104", "2", "5200", "1", "1", "1", "-5", *["1"] * 4]),
            r"line 3: column 'Memory usage \[KB\]' is negative \(-5\.0\)",
        ),
        (
            ";\t".join(["1372630104", "1.5", *["1"] * 9]),
            r"line 3: column 'CPU cores' is not a whole number",
        ),
        (
            ";\t".join(["1372630104000", "2", *["1"] * 9]),
            r"line 3: column 'Timestamp \[ms\]' is too large for epoch seconds",
        ),
    ],
)
def test_garbled_line_names_file_and_line(tmp_path, bad_line, expected):
    text = archive_text([ON_ROW])
    path = tmp_path / "1.csv"
    path.write_text(text + bad_line + "\n" + archive_text([ON_ROW]).split("\n", 1)[1])

    with pytest.raises(GwaFormatError, match=r"1\.csv: " + expected):
        read_gwa_csv(path)


def test_wrong_separator_is_named(tmp_path):
    path = write_archive(tmp_path, 1, [ON_ROW], sep=",")
    with pytest.raises(GwaFormatError, match=r"1\.csv: line 1: .*not separated by ';'.*','"):
        read_gwa_csv(path)


def test_missing_header_column_is_named(tmp_path):
    rows = [ON_ROW[:-1]]
    path = write_archive(tmp_path, 1, rows, header=HEADER[:-1])
    with pytest.raises(
        GwaFormatError, match=r"line 1: the header lacks .*'Network transmitted throughput"
    ):
        read_gwa_csv(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "1.csv"
    path.write_bytes(b"")
    with pytest.raises(GwaFormatError, match=r"1\.csv: line 1: the file is empty"):
        read_gwa_csv(path)


def test_file_name_must_be_the_vm_id(tmp_path):
    path = tmp_path / "vm-one.csv"
    path.write_text(archive_text([ON_ROW]))
    with pytest.raises(GwaFormatError, match=r"vm-one\.csv: the file name must be the VM id"):
        read_gwa_csv(path)


def test_unreadable_parquet_is_named(tmp_path):
    path = tmp_path / "trace.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(GwaFormatError, match=r"trace\.parquet: unreadable Parquet"):
        import_gwa(path, tmp_path / "out")


def test_missing_parquet_column_is_named(tmp_path):
    frame = raw_frame([ON_ROW], [1]).drop(columns="net_tx_kbps")
    path = write_parquet_form(tmp_path / "trace.parquet", frame)
    with pytest.raises(GwaFormatError, match=r"trace\.parquet: missing column\(s\) 'net_tx_kbps'"):
        import_gwa(path, tmp_path / "out")


def test_impossible_parquet_value_names_the_row(tmp_path):
    frame = raw_frame([ON_ROW, ON_ROW, ON_ROW], [1, 1, 1])
    frame.loc[2, "disk_read_kbps"] = np.nan
    path = write_parquet_form(tmp_path / "trace.parquet", frame)
    expected = r"trace\.parquet: row 2 \(vm_id 1, .*'disk_read_kbps' is missing"
    with pytest.raises(GwaFormatError, match=expected):
        import_gwa(path, tmp_path / "out")


def test_naive_parquet_timestamps_are_refused(tmp_path):
    frame = raw_frame([ON_ROW], [1])
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    path = write_parquet_form(tmp_path / "trace.parquet", frame)
    with pytest.raises(GwaFormatError, match=r"'timestamp' has type .*timezone-aware"):
        import_gwa(path, tmp_path / "out")


def test_failed_import_leaves_no_dataset(tmp_path):
    source = tmp_path / "trace"
    write_archive(source, 1, [ON_ROW])
    (source / "2.csv").write_text(archive_text([ON_ROW]) + "1372630104;\t2\n")
    out = tmp_path / "out"
    import_gwa(source / "1.csv", out)  # an earlier, good import into the same folder

    with pytest.raises(GwaFormatError, match=r"2\.csv: line 3"):
        import_gwa(source, out, settings=Settings(gwa=GwaSettings(vms_per_part=1)))

    assert list(out.glob("part-*.parquet")) == []


def test_folder_mixing_formats_is_refused(tmp_path):
    write_archive(tmp_path, 1, [ON_ROW])
    write_parquet_form(tmp_path / "more.parquet", raw_frame([ON_ROW], [2]))
    with pytest.raises(GwaFormatError, match=r"mixes \.csv and \.parquet"):
        import_gwa(tmp_path, tmp_path / "out")


def test_same_vm_twice_in_a_folder_is_refused(tmp_path):
    write_archive(tmp_path, 1, [ON_ROW])
    (tmp_path / "01.csv").write_text(archive_text([ON_ROW]))
    with pytest.raises(GwaFormatError, match="VM 1 already read"):
        import_gwa(tmp_path, tmp_path / "out")


# --- the real trace ----------------------------------------------------------------------


@pytest.mark.parametrize("vm_id", [1, 2, 3])
def test_real_archive_csv_keeps_every_row(vm_id):
    path = RAW_CSV_DIR / f"{vm_id}.csv"
    needs(path)
    lines = path.read_bytes().count(b"\n")

    raw = read_gwa_csv(path)

    assert len(raw) == lines - 1  # every line but the header
    assert (raw["vm_id"] == vm_id).all()
    assert raw["timestamp"].dt.year.eq(2013).all()


def test_real_archive_folder_imports_to_valid_telemetry(tmp_path):
    needs(RAW_CSV_DIR)
    expected_rows = sum(p.read_bytes().count(b"\n") - 1 for p in RAW_CSV_DIR.glob("*.csv"))

    summary = import_gwa(RAW_CSV_DIR, tmp_path / "out")

    assert summary.rows_in == summary.rows_out == expected_rows
    assert summary.vms == 3
    telemetry = read_telemetry(tmp_path / "out")
    assert len(telemetry) == expected_rows
    assert set(telemetry["user_id"]) == {"gwa-vm-0001", "gwa-vm-0002", "gwa-vm-0003"}
    assert_valid_telemetry(telemetry)


def test_real_csv_and_parquet_forms_agree(tmp_path):
    needs(RAW_CSV_DIR)
    needs(PARQUET)
    subset = pq.read_table(PARQUET, filters=[("vm_id", "in", [1, 2, 3])])
    pq.write_table(subset, tmp_path / "vms-001-003.parquet")

    import_gwa(RAW_CSV_DIR, tmp_path / "csv")
    import_gwa(tmp_path / "vms-001-003.parquet", tmp_path / "parquet")

    from_csv = read_telemetry(tmp_path / "csv")
    from_parquet = read_telemetry(tmp_path / "parquet")
    both = from_csv.merge(from_parquet, on=["user_id", "event_timestamp"], suffixes=("", "_p"))
    assert len(both) == len(from_csv)  # the Parquet form covers every CSV sample
    assert (both["session_active"] == both["session_active_p"]).all()
    for column in RESOURCE_COLUMNS:  # the Parquet form stores float32
        np.testing.assert_allclose(both[column], both[f"{column}_p"], rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def full_parquet_import(tmp_path_factory) -> tuple[ImportSummary, Path]:
    """The whole shared Parquet form (2.69 M rows), imported once for the tests below."""
    needs(PARQUET)
    out = tmp_path_factory.mktemp("gwa") / "out"
    return import_gwa(PARQUET, out), out


def test_real_parquet_keeps_every_row_and_counts_its_quirks(full_parquet_import):
    summary, _ = full_parquet_import
    rows = pq.ParquetFile(PARQUET).metadata.num_rows

    assert summary.source_format == "parquet"
    assert summary.rows_in == summary.rows_out == rows
    assert summary.vms == 100
    assert len(summary.files) == 4  # 25 VMs per part
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in summary.files) == rows
    # Known properties of the trace (datasets README): about 11% powered off; repeated stamps.
    assert 0.10 < summary.powered_off_rows / rows < 0.13
    assert summary.duplicate_timestamps > 0
    assert 0 < summary.zeroed_usage_rows < summary.powered_off_rows


def test_real_parquet_import_is_valid_telemetry(full_parquet_import):
    _, out = full_parquet_import
    table = pq.read_table(out)
    assert table.schema.names == list(COLUMN_NAMES)

    numbers = table.select(["session_active", "data_access_count", *RESOURCE_COLUMNS]).to_pandas()
    assert (numbers >= 0).all().all()
    idle = ~numbers["session_active"]
    assert (numbers.loc[idle, ["data_access_count", *RESOURCE_COLUMNS]] == 0).all().all()
    assert numbers.loc[~idle, "cpu_cores"].gt(0).mean() > 0.9

    keys = pa.table({"u": table["user_id"], "t": table["event_timestamp"]}).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    same_user = keys["u"].iloc[1:].to_numpy() == keys["u"].iloc[:-1].to_numpy()
    assert (keys["u"].iloc[1:].to_numpy() >= keys["u"].iloc[:-1].to_numpy()).all()
    assert (np.diff(keys["t"].astype("int64").to_numpy())[same_user] >= 0).all()
    assert keys["u"].nunique() == 100
