"""The telemetry contract: one row per user per interval (DESIGN.md section 4).

This module is the single source of truth for the telemetry's column names, dtypes, bounds and
allowed categories. The simulator and importers write frames through :func:`conform`; the
validation gate builds its expectations from :data:`TELEMETRY_COLUMNS`; the feature sources take
their field types from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

ROLES: tuple[str, ...] = (
    "software_engineer",
    "data_scientist",
    "sales",
    "executive",
    "designer",
    "support_agent",
    "field_engineer",
    "analyst",
    "unknown",  # sources that do not record a role (e.g. the GWA-T-12 trace)
)

APPS: tuple[str, ...] = (
    "ide",
    "browser",
    "office",
    "email",
    "video_conference",
    "crm",
    "ml_training",
    "data_analytics",
    "cad_render",
    "remote_desktop",
    "ticketing",
    "idle",  # no session: nothing in the foreground
    "unknown",  # sources that do not record the application
)

GEO_SOURCES: tuple[str, ...] = ("gps", "ip")

# Marker for categories that come from the region catalogue rather than from this module.
REGION_CATALOGUE = "region_catalogue"


@dataclass(frozen=True)
class Column:
    """One telemetry column: its name, pandas dtype, nullability, bounds and categories."""

    name: str
    dtype: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | str | None = None
    description: str = ""


TELEMETRY_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "string", description="Stable pseudonymous user identifier."),
    Column("event_timestamp", "datetime64[ns, UTC]", description="Start of the interval, UTC."),
    Column("role", "string", allowed=ROLES, description="The user's job role."),
    Column("app", "string", allowed=APPS, description="Dominant application class."),
    Column("session_active", "bool", description="Whether the user had a session open."),
    Column("data_access_count", "int64", min=0, description="Data accesses in the interval."),
    Column("lat", "float64", nullable=True, min=-90.0, max=90.0, description="Latitude."),
    Column("lon", "float64", nullable=True, min=-180.0, max=180.0, description="Longitude."),
    Column(
        "geo_source",
        "string",
        nullable=True,
        allowed=GEO_SOURCES,
        description="Where lat/lon came from: the client's GPS or its IP address.",
    ),
    Column("client_ip", "string", nullable=True, description="Client IPv4 address, if known."),
    Column(
        "serving_region",
        "string",
        allowed=REGION_CATALOGUE,
        description="Region code of the resources serving the user.",
    ),
    Column(
        "latency_ms",
        "float64",
        nullable=True,
        min=0.0,
        description="Measured round trip to the serving region; null where not measured.",
    ),
    Column("cpu_cores", "float64", min=0.0, description="CPU cores in use."),
    Column("ram_gb", "float64", min=0.0, description="Memory in use, GiB."),
    Column("storage_iops", "float64", min=0.0, description="Storage I/O operations per second."),
    Column("network_mbps", "float64", min=0.0, description="Network throughput, Mbit/s."),
)

COLUMNS: dict[str, Column] = {c.name: c for c in TELEMETRY_COLUMNS}
COLUMN_NAMES: tuple[str, ...] = tuple(COLUMNS)
PANDAS_DTYPES: dict[str, str] = {c.name: c.dtype for c in TELEMETRY_COLUMNS}
RESOURCE_COLUMNS: tuple[str, ...] = ("cpu_cores", "ram_gb", "storage_iops", "network_mbps")
ENTITY_KEY: tuple[str, str] = ("user_id", "event_timestamp")

_ARROW_TYPES = {
    "string": pa.string(),
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "float64": pa.float64(),
}
ARROW_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.dtype], nullable=c.nullable) for c in TELEMETRY_COLUMNS]
)


class SchemaError(ValueError):
    """A frame does not have the telemetry's structure (columns or dtypes)."""


def structural_problems(frame: pd.DataFrame) -> list[str]:
    """List what makes ``frame`` structurally non-conforming: missing, extra or mistyped columns.

    Returns an empty list for a conforming frame. Row-level problems (bounds, categories, nulls)
    are the validation gate's business, not this function's.
    """
    problems: list[str] = []
    present = list(frame.columns)
    missing = [name for name in COLUMN_NAMES if name not in present]
    extra = [name for name in present if name not in COLUMNS]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected columns: {', '.join(map(str, extra))}")
    for name in COLUMN_NAMES:
        if name in present and not _dtype_compatible(frame[name], COLUMNS[name].dtype):
            problems.append(
                f"column {name!r} has dtype {frame[name].dtype}, expected {COLUMNS[name].dtype}"
            )
    return problems


def _dtype_compatible(series: pd.Series, expected: str) -> bool:
    """Whether ``series`` can be cast losslessly to the schema dtype ``expected``."""
    dtype = series.dtype
    if expected == "string":
        if pd.api.types.is_string_dtype(dtype):
            return True
        return dtype is np.dtype(object) and series.dropna().map(type).eq(str).all()
    if expected.startswith("datetime64"):
        return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"
    if expected == "bool":
        return pd.api.types.is_bool_dtype(dtype)
    if expected == "int64":
        return pd.api.types.is_integer_dtype(dtype)
    if expected == "float64":
        return pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
    return False


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, cast to the schema dtypes.

    Raises :class:`SchemaError` naming every structural problem, so that a writer can never emit
    telemetry that readers would misinterpret.
    """
    problems = structural_problems(frame)
    if problems:
        raise SchemaError("; ".join(problems))
    out = frame.loc[:, list(COLUMN_NAMES)].copy()
    for name, dtype in PANDAS_DTYPES.items():
        if str(out[name].dtype) != dtype:
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


def empty_frame() -> pd.DataFrame:
    """A zero-row telemetry frame with the schema's columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in PANDAS_DTYPES.items()})


def nullable_columns() -> Iterable[str]:
    """Names of the columns that may hold nulls."""
    return (c.name for c in TELEMETRY_COLUMNS if c.nullable)
