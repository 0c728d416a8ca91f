"""The telemetry contract: structure checks and conformance."""

import pandas as pd
import pyarrow as pa
import pytest

from core import schema


def _one_row() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1"],
            "event_timestamp": pd.to_datetime(["2026-01-05 10:00"], utc=True),
            "role": ["analyst"],
            "app": ["office"],
            "session_active": [True],
            "data_access_count": [3],
            "lat": [52.37],
            "lon": [4.89],
            "geo_source": ["gps"],
            "client_ip": [None],
            "serving_region": ["azure-westeurope"],
            "latency_ms": [7.5],
            "cpu_cores": [1.5],
            "ram_gb": [4.0],
            "storage_iops": [120.0],
            "network_mbps": [12],  # an integer column is acceptable for a float field
        }
    )


def test_columns_follow_the_design_contract() -> None:
    assert schema.COLUMN_NAMES == (
        "user_id", "event_timestamp", "role", "app", "session_active", "data_access_count",
        "lat", "lon", "geo_source", "client_ip", "serving_region", "latency_ms",
        "cpu_cores", "ram_gb", "storage_iops", "network_mbps",
    )  # fmt: skip
    assert set(schema.RESOURCE_COLUMNS) <= set(schema.COLUMN_NAMES)
    assert len([r for r in schema.ROLES if r != "unknown"]) >= 6


def test_conform_casts_to_schema_dtypes_and_orders_columns() -> None:
    frame = _one_row()[list(reversed(schema.COLUMN_NAMES))]
    out = schema.conform(frame)
    assert tuple(out.columns) == schema.COLUMN_NAMES
    assert {c: str(t) for c, t in out.dtypes.items()} == schema.PANDAS_DTYPES
    assert out["network_mbps"].iloc[0] == 12.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["ram_gb"]), "missing columns: ram_gb"),
        (lambda f: f.assign(colour="red"), "unexpected columns: colour"),
        (lambda f: f.assign(cpu_cores=["lots"]), "'cpu_cores' has dtype"),
        (lambda f: f.assign(event_timestamp=["2026-01-05"]), "'event_timestamp' has dtype"),
        (
            lambda f: f.assign(event_timestamp=pd.to_datetime(["2026-01-05"])),
            "'event_timestamp' has dtype",
        ),
        (lambda f: f.assign(data_access_count=[1.5]), "'data_access_count' has dtype"),
    ],
)
def test_structural_problems_are_named(mutate, message: str) -> None:
    frame = mutate(_one_row())
    problems = schema.structural_problems(frame)
    assert any(message in p for p in problems), problems
    with pytest.raises(schema.SchemaError, match=message.split(":")[0]):
        schema.conform(frame)


def test_empty_frame_round_trips_through_arrow() -> None:
    frame = schema.empty_frame()
    table = pa.Table.from_pandas(frame, schema=schema.ARROW_SCHEMA, preserve_index=False)
    assert table.schema.names == list(schema.COLUMN_NAMES)
    assert schema.structural_problems(table.to_pandas()) == []
