"""The validation gate on in-memory frames: the corruption catalogue and whole-batch rejection."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from core.regions import load_regions
from core.schema import PANDAS_DTYPES, conform
from core.settings import get_settings
from features.validation import BatchRejected, ValidationReport, validate_frame

# Reference "now" of the tests: a day after the frames' first timestamp.
NOW = pd.Timestamp("2026-01-06", tz="UTC")


def telemetry_frame(users: int = 4, steps: int = 12, start: str = "2026-01-05") -> pd.DataFrame:
    """``users`` users at 5-minute steps with plausible values that pass every expectation.

    Every fourth step has no session (idle app, no demand). Even users report GPS, odd users
    are located by IP; serving regions come from the catalogue. Strings are plain Python
    objects, as ``pandas.read_parquet`` returns them. Row ``u * steps + k`` is user u, step k.
    """
    codes = load_regions().codes
    user = np.repeat(np.arange(users), steps)
    step = np.tile(np.arange(steps), users)
    active = step % 4 != 3
    return pd.DataFrame(
        {
            "user_id": [f"user-{u:03d}" for u in user],
            "event_timestamp": pd.Timestamp(start, tz="UTC")
            + pd.to_timedelta(step * 5, unit="min"),
            "role": np.where(user % 2 == 0, "analyst", "software_engineer").astype(object),
            "app": np.where(active, "browser", "idle").astype(object),
            "session_active": active,
            "data_access_count": np.where(active, 3 + step % 5, 0).astype("int64"),
            "lat": 52.37 + user * 0.5,
            "lon": 4.89 - user * 0.5,
            "geo_source": np.where(user % 2 == 1, "ip", "gps").astype(object),
            "client_ip": [f"81.2.69.{10 + u}" if u % 2 else None for u in user],
            "serving_region": [codes[u % len(codes)] for u in user],
            "latency_ms": 12.0 + step,
            "cpu_cores": np.where(active, 1.5 + 0.1 * step, 0.0),
            "ram_gb": np.where(active, 4.0 + user, 0.0),
            "storage_iops": np.where(active, 120.0, 0.0),
            "network_mbps": np.where(active, 8.0, 0.0),
        }
    )


def _assert_conformed(valid: pd.DataFrame, rows: pd.DataFrame) -> None:
    """``valid`` holds ``rows`` with the schema's dtypes (text may be stored by Arrow)."""
    assert {name: str(dtype) for name, dtype in valid.dtypes.items()} == PANDAS_DTYPES
    pd.testing.assert_frame_equal(valid, conform(rows), check_dtype=False)


@dataclass(frozen=True)
class Corruption:
    """One kind of row-level corruption: set ``column`` of ``row`` to ``value``.

    Rows refer to a two-user frame: user 0 is rows 0-11 (located by GPS), user 1 rows 12-23
    (located by IP); steps 3, 7 and 11 of each user have no session. A callable ``value`` is
    computed from the frame.
    """

    row: int
    column: str
    value: object
    check: str  # the label of the expectation that must catch it

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        value = self.value(frame) if callable(self.value) else self.value
        frame.loc[self.row, self.column] = value
        return frame


CATALOGUE: dict[str, Corruption] = {
    "negative cpu": Corruption(
        5, "cpu_cores", -0.5, "expect_column_values_to_be_between(cpu_cores)"
    ),
    "infinite cpu": Corruption(
        16, "cpu_cores", np.inf, "expect_column_values_to_be_between(cpu_cores)"
    ),
    "NaN in a non-null column": Corruption(
        6, "ram_gb", np.nan, "expect_column_values_to_not_be_null(ram_gb)"
    ),
    "null user_id": Corruption(8, "user_id", None, "expect_column_values_to_not_be_null(user_id)"),
    "empty user_id": Corruption(
        9, "user_id", "", "expect_column_value_lengths_to_be_between(user_id)"
    ),
    "unknown role": Corruption(2, "role", "pirate", "expect_column_values_to_be_in_set(role)"),
    "unknown app": Corruption(4, "app", "minesweeper", "expect_column_values_to_be_in_set(app)"),
    "unknown region": Corruption(
        14, "serving_region", "mars-north-1", "expect_column_values_to_be_in_set(serving_region)"
    ),
    "lat out of bounds": Corruption(1, "lat", 91.0, "expect_column_values_to_be_between(lat)"),
    "lon out of bounds": Corruption(13, "lon", -181.0, "expect_column_values_to_be_between(lon)"),
    "bad geo_source": Corruption(
        10, "geo_source", "wifi", "expect_column_values_to_be_in_set(geo_source)"
    ),
    "duplicate key": Corruption(
        6,
        "event_timestamp",
        lambda frame: frame.loc[5, "event_timestamp"],
        "expect_compound_columns_to_be_unique(user_id, event_timestamp)",
    ),
    "future timestamp": Corruption(
        20,
        "event_timestamp",
        NOW + pd.Timedelta(hours=1),
        "expect_column_values_to_be_between(event_timestamp)",
    ),
    "absurdly old timestamp": Corruption(
        21,
        "event_timestamp",
        pd.Timestamp("1999-12-31 23:55", tz="UTC"),
        "expect_column_values_to_be_between(event_timestamp)",
    ),
    "demand without session": Corruption(
        3,
        "data_access_count",
        7,
        "expect_column_values_to_be_between(data_access_count) when session_active is false",
    ),
    "foreground app without session": Corruption(
        7, "app", "ide", "expect_column_values_to_be_in_set(app) when session_active is false"
    ),
    "ram beyond what any region offers": Corruption(
        14, "ram_gb", 1.0e6, "expect_column_values_to_be_between(ram_gb)"
    ),
    "cpu in use without session": Corruption(
        11,
        "cpu_cores",
        2.0,
        "expect_column_values_to_be_between(cpu_cores) when session_active is false",
    ),
    "negative data access count": Corruption(
        18, "data_access_count", -1, "expect_column_values_to_be_between(data_access_count)"
    ),
    "negative latency": Corruption(
        17, "latency_ms", -3.0, "expect_column_values_to_be_between(latency_ms)"
    ),
    "absurd latency": Corruption(
        22, "latency_ms", 1.0e9, "expect_column_values_to_be_between(latency_ms)"
    ),
    "malformed client ip": Corruption(
        19, "client_ip", "999.1.2.3", "expect_column_values_to_match_regex(client_ip)"
    ),
    "lat without lon": Corruption(
        0, "lon", np.nan, "expect_column_values_to_not_be_null(lon) when lat is set"
    ),
    "location without a source": Corruption(
        11, "geo_source", None, "expect_column_values_to_not_be_null(geo_source) when lat is set"
    ),
    "located by ip without an ip": Corruption(
        23,
        "client_ip",
        None,
        "expect_column_values_to_not_be_null(client_ip) when geo_source is ip",
    ),
}
BLOCK_ROWS = 24  # each kind of corruption is applied to its own two-user block


@dataclass(frozen=True)
class CatalogueRun:
    """One gate run over a frame with every kind of corruption, each in its own block."""

    frame: pd.DataFrame
    rows: dict[str, int]  # kind -> position of its corrupted row in ``frame``
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport


@pytest.fixture(scope="module")
def catalogue_run() -> CatalogueRun:
    """Validate every corruption of the catalogue in one GX run (a run costs about a second)."""
    blocks, rows = [], {}
    for index, (kind, corruption) in enumerate(CATALOGUE.items()):
        block = telemetry_frame(users=2)
        block["user_id"] = f"block-{index:02d}-" + block["user_id"]
        blocks.append(corruption.apply(block))
        rows[kind] = index * BLOCK_ROWS + corruption.row
    frame = pd.concat(blocks, ignore_index=True)
    with pytest.MonkeyPatch.context() as patch:  # the default settings, whatever the shell has
        for name in [n for n in os.environ if n.startswith("PREWARM_")]:
            patch.delenv(name)
        get_settings.cache_clear()
        valid, quarantine, report = validate_frame(frame, now=NOW)
    get_settings.cache_clear()
    return CatalogueRun(frame, rows, valid, quarantine, report)


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_each_corruption_is_quarantined_with_the_failed_expectation(
    kind: str, catalogue_run: CatalogueRun
) -> None:
    run = catalogue_run
    position = sorted(run.rows.values()).index(run.rows[kind])
    quarantined = run.quarantine.iloc[[position]].drop(columns="reasons").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        quarantined, run.frame.iloc[[run.rows[kind]]].reset_index(drop=True)
    )
    assert run.quarantine["reasons"].iloc[position] == CATALOGUE[kind].check


def test_the_catalogue_quarantines_exactly_the_corrupted_rows(catalogue_run: CatalogueRun) -> None:
    run = catalogue_run
    rows = sorted(run.rows.values())
    pd.testing.assert_frame_equal(
        run.quarantine.drop(columns="reasons"), run.frame.iloc[rows].reset_index(drop=True)
    )
    _assert_conformed(run.valid, run.frame.drop(index=rows))
    assert run.report.accepted
    assert run.report.rows_in == run.report.rows_valid + run.report.rows_quarantined
    assert run.report.rows_quarantined == len(CATALOGUE)
    expected = pd.Series([c.check for c in CATALOGUE.values()]).value_counts().to_dict()
    assert run.report.failed_expectations == expected


def test_a_corruption_alone_is_quarantined_alone() -> None:
    corruption = CATALOGUE["demand without session"]
    frame = corruption.apply(telemetry_frame(users=2))

    valid, quarantine, report = validate_frame(frame, now=NOW)

    pd.testing.assert_frame_equal(
        quarantine.drop(columns="reasons"), frame.iloc[[corruption.row]].reset_index(drop=True)
    )
    assert quarantine["reasons"].tolist() == [corruption.check]
    assert report.failed_expectations == {corruption.check: 1}
    assert len(valid) == report.rows_valid == len(frame) - 1


def test_a_clean_frame_passes_whole_and_conformed() -> None:
    frame = telemetry_frame()

    valid, quarantine, report = validate_frame(frame, now=NOW)

    _assert_conformed(valid, frame)
    assert quarantine.empty and "reasons" in quarantine.columns
    assert report.accepted and report.reason is None
    assert report.failed_expectations == {}
    assert report.bad_fraction == 0.0
    assert report.expectations_evaluated > 40


def test_several_corruptions_at_once_are_each_quarantined_with_their_reasons() -> None:
    kinds = ["negative cpu", "unknown role", "lat out of bounds", "malformed client ip"]
    frame = telemetry_frame(users=8)
    for kind in kinds:
        frame = CATALOGUE[kind].apply(frame)
    frame.loc[40, ["cpu_cores", "role"]] = [-1.0, "pirate"]  # one row, two failures

    valid, quarantine, report = validate_frame(frame, now=NOW, max_bad_fraction=0.1)

    rows = sorted([CATALOGUE[k].row for k in kinds] + [40])
    pd.testing.assert_frame_equal(
        quarantine.drop(columns="reasons"), frame.iloc[rows].reset_index(drop=True)
    )
    assert quarantine["reasons"].iloc[-1] == (
        "expect_column_values_to_be_in_set(role); expect_column_values_to_be_between(cpu_cores)"
    )
    assert report.failed_expectations["expect_column_values_to_be_between(cpu_cores)"] == 2
    assert report.rows_in == report.rows_valid + report.rows_quarantined == len(frame)
    assert len(valid) + len(quarantine) == len(frame)


def test_rows_are_mapped_back_by_position_whatever_the_index() -> None:
    frame = CATALOGUE["unknown app"].apply(telemetry_frame())
    shuffled = frame.sample(frac=1.0, random_state=7).set_axis(range(100, 148))

    _, quarantine, _ = validate_frame(shuffled, now=NOW)

    assert quarantine["app"].tolist() == ["minesweeper"]
    assert quarantine["event_timestamp"].tolist() == [frame.loc[4, "event_timestamp"]]


def test_of_duplicate_keys_the_first_otherwise_clean_copy_is_valid() -> None:
    frame = telemetry_frame()
    frame.loc[6, "event_timestamp"] = frame.loc[5, "event_timestamp"]
    frame.loc[5, "cpu_cores"] = -1.0  # the first copy is bad for another reason

    valid, quarantine, report = validate_frame(frame, now=NOW)

    duplicate = "expect_compound_columns_to_be_unique(user_id, event_timestamp)"
    assert quarantine["reasons"].tolist() == [
        f"expect_column_values_to_be_between(cpu_cores); {duplicate}"
    ]
    key = (valid["user_id"] == "user-000") & (
        valid["event_timestamp"] == frame.loc[5, "event_timestamp"]
    )
    assert valid.loc[key, "cpu_cores"].tolist() == [frame.loc[6, "cpu_cores"]]
    assert report.failed_expectations[duplicate] == 1


def test_all_copies_of_a_key_beyond_the_first_are_quarantined() -> None:
    frame = telemetry_frame()
    frame.loc[[6, 7], "event_timestamp"] = frame.loc[5, "event_timestamp"]
    frame.loc[7, ["app", "data_access_count"]] = ["browser", 2]

    _, quarantine, _ = validate_frame(frame, now=NOW)

    assert quarantine["cpu_cores"].tolist() == frame.loc[[6, 7], "cpu_cores"].tolist()


def test_without_now_the_current_time_bounds_the_future() -> None:
    recent = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=2)
    frame = telemetry_frame(start=recent.isoformat())
    frame.loc[3, "event_timestamp"] = recent + pd.Timedelta(days=1)

    _, quarantine, _ = validate_frame(frame)

    assert quarantine["reasons"].tolist() == ["expect_column_values_to_be_between(event_timestamp)"]


def test_a_small_clock_skew_is_tolerated() -> None:
    frame = telemetry_frame()
    frame.loc[3, "event_timestamp"] = NOW + pd.Timedelta(minutes=5)

    _, quarantine, _ = validate_frame(frame, now=NOW)

    assert quarantine.empty


def _corrupt_rows(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[: count - 1, "cpu_cores"] = -1.0
    return frame


def test_bad_fraction_above_the_threshold_rejects_the_batch() -> None:
    frame = _corrupt_rows(telemetry_frame(), 5)  # 5 of 48 rows

    with pytest.raises(BatchRejected, match=r"bad fraction 0\.1042 is above the threshold 0\.05"):
        validate_frame(frame, now=NOW)


def test_a_rejected_batch_quarantines_every_row_and_validates_none() -> None:
    frame = _corrupt_rows(telemetry_frame(), 5)

    with pytest.raises(BatchRejected) as caught:
        validate_frame(frame, now=NOW)

    report, quarantine = caught.value.report, caught.value.quarantine
    assert not report.accepted and report.reason == str(caught.value)
    assert report.rows_valid == 0 and report.rows_quarantined == report.rows_in == len(frame)
    assert report.failed_expectations == {"expect_column_values_to_be_between(cpu_cores)": 5}
    pd.testing.assert_frame_equal(quarantine.drop(columns="reasons"), frame)
    assert quarantine["reasons"].str.contains("batch rejected: bad fraction").all()
    assert quarantine["reasons"].str.startswith("expect_column_values_to_be_between").sum() == 5


def test_the_threshold_can_be_raised_per_call_and_in_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = _corrupt_rows(telemetry_frame(), 5)

    _, quarantine, report = validate_frame(frame, now=NOW, max_bad_fraction=0.2)
    assert report.accepted and len(quarantine) == 5

    monkeypatch.setenv("PREWARM_VALIDATION__MAX_BAD_FRACTION", "0.2")
    get_settings.cache_clear()
    _, _, report = validate_frame(frame, now=NOW)
    assert report.accepted and report.max_bad_fraction == 0.2


def _without(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.drop(columns=[column])


STRUCTURAL: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "missing column": (_without("lat"), r"missing columns: lat"),
    "extra column": (lambda f: f.assign(colour="red"), r"unexpected columns: colour"),
    "mistyped column": (
        lambda f: f.assign(cpu_cores=f["cpu_cores"].astype(str)),
        r"column 'cpu_cores' has dtype object, expected float64",
    ),
    "naive timestamps": (
        lambda f: f.assign(event_timestamp=f["event_timestamp"].dt.tz_localize(None)),
        r"column 'event_timestamp' has dtype datetime64\[ns\], expected datetime64\[ns, UTC\]",
    ),
    "no rows": (lambda f: f.iloc[:0], r"empty batch: the input has no rows"),
}


@pytest.mark.parametrize("kind", list(STRUCTURAL))
def test_structural_corruption_rejects_the_whole_batch(kind: str) -> None:
    corrupt, message = STRUCTURAL[kind]
    frame = corrupt(telemetry_frame())

    with pytest.raises(BatchRejected, match=message) as caught:
        validate_frame(frame, now=NOW)

    report = caught.value.report
    assert not report.accepted and report.rows_valid == 0
    assert report.rows_in == report.rows_quarantined == len(frame)
    assert len(caught.value.quarantine) == len(frame)
    assert caught.value.quarantine["reasons"].str.startswith("batch rejected: ").all()
