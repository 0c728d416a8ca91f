"""The great-expectations suite of the telemetry validation gate, generated from the schema.

Every column of :data:`core.schema.TELEMETRY_COLUMNS` yields its expectations (type, nulls,
bounds, allowed categories); the region catalogue supplies the allowed serving regions and the
most any region offers; the settings supply plausibility caps and the time window. A handful
of cross-column plausibility rules complete the suite.

Each expectation carries a unique ``meta["check"]`` label such as
``expect_column_values_to_be_between(cpu_cores)``: the gate writes these labels into the
``reasons`` of quarantined rows and the keys of ``failed_expectations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.row_conditions import Column as Col
from great_expectations.expectations.row_conditions import (
    ComparisonCondition,
    Condition,
    Operator,
)

from core.regions import RegionCatalogue, load_regions
from core.schema import (
    COLUMN_NAMES,
    ENTITY_KEY,
    REGION_CATALOGUE,
    RESOURCE_COLUMNS,
    TELEMETRY_COLUMNS,
    Column,
)
from core.settings import Settings, get_settings

SUITE_NAME = "telemetry"
CHECK_KEY = "check"
# The label of the duplicate-key check, which the gate treats specially (first copy is valid).
UNIQUE_KEY_CHECK = f"expect_compound_columns_to_be_unique({', '.join(ENTITY_KEY)})"

# GX's name for the type of a column's values, per schema dtype (what it reports as observed).
_GX_TYPE_NAMES = {
    "string": "str",
    "datetime64[ns, UTC]": "Timestamp",
    "bool": "bool",
    "int64": "int64",
    "float64": "float64",
}

# Dotted-quad IPv4, each octet 0-255.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_REGEX = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"

# Applications a user can show without an open session.
NO_SESSION_APPS = ("idle", "unknown")


def build_suite(
    now: datetime | None = None,
    regions: RegionCatalogue | None = None,
    settings: Settings | None = None,
) -> gx.ExpectationSuite:
    """Build the telemetry expectation suite (not yet attached to any GX context).

    ``now`` (default: the current UTC time) bounds timestamps from above, plus the tolerance of
    ``settings.validation``; ``settings.earliest_event`` bounds them from below. ``regions``
    (default: the configured catalogue) gives the allowed ``serving_region`` codes and the
    largest capacity any region offers, which caps each resource column.
    """
    settings = settings or get_settings()
    regions = regions or load_regions()
    now = utc_timestamp(now)
    expectations = [
        *_table_expectations(),
        *_column_expectations(now, regions, settings),
        *_cross_column_expectations(),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def utc_timestamp(moment: datetime | None) -> pd.Timestamp:
    """``moment`` as a UTC timestamp (naive means UTC); ``None`` means the current time."""
    stamp = pd.Timestamp(moment) if moment is not None else pd.Timestamp.now(tz="UTC")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def check_name(expectation_type: str, columns: Sequence[str], when: str = "") -> str:
    """The label of a check: ``type(col, ...)``, plus ``when <condition>`` for conditional ones."""
    return f"{expectation_type}({', '.join(columns)})" + (f" when {when}" if when else "")


def check_label(expectation: gxe.Expectation | ExpectationConfiguration) -> str:
    """The label naming ``expectation`` in reasons and reports (its ``meta["check"]``)."""
    return str((expectation.meta or {})[CHECK_KEY])


def resource_caps(regions: RegionCatalogue, settings: Settings) -> dict[str, float]:
    """Upper bound of each resource column: the most any region offers, or a per-user cap.

    The per-user caps of ``settings.validation`` apply where they are stricter than the largest
    region's capacity.
    """
    frame = regions.to_frame()
    limits = settings.validation
    return {
        "cpu_cores": min(limits.max_user_cpu_cores, float(frame["capacity_vcpu"].max())),
        "ram_gb": min(limits.max_user_ram_gb, float(frame["capacity_ram_gb"].max())),
        "storage_iops": float(frame["capacity_storage_iops"].max()),
        "network_mbps": float(frame["capacity_network_gbps"].max()) * 1000.0,
    }


def _expect(
    kind: type[gxe.Expectation],
    columns: Sequence[str],
    *,
    condition: Condition | None = None,
    when: str = "",
    **kwargs: object,
) -> gxe.Expectation:
    """Create a ``kind`` expectation labelled ``type(columns)``, or ``type(columns) when ...``
    when it applies only to the rows matching ``condition`` (described in words by ``when``)."""
    label = check_name(kind.expectation_type, columns, when)
    if condition is not None:
        kwargs["row_condition"] = condition
    return kind(meta={CHECK_KEY: label}, **kwargs)


def _table_expectations() -> list[gxe.Expectation]:
    """The batch as a whole: at least one row, exactly the schema's columns in order."""
    return [
        _expect(gxe.ExpectTableRowCountToBeBetween, ["table"], min_value=1),
        _expect(
            gxe.ExpectTableColumnsToMatchOrderedList, ["table"], column_list=list(COLUMN_NAMES)
        ),
    ]


def _column_expectations(
    now: pd.Timestamp, regions: RegionCatalogue, settings: Settings
) -> list[gxe.Expectation]:
    """Type, nulls, bounds and categories of every schema column; the time window; formats."""
    caps = {**resource_caps(regions, settings), "latency_ms": settings.validation.max_latency_ms}
    expectations: list[gxe.Expectation] = []
    for column in TELEMETRY_COLUMNS:
        name = column.name
        expectations.append(
            _expect(
                gxe.ExpectColumnValuesToBeOfType,
                [name],
                column=name,
                type_=_GX_TYPE_NAMES[column.dtype],
            )
        )
        if not column.nullable:
            expectations.append(_expect(gxe.ExpectColumnValuesToNotBeNull, [name], column=name))
        upper = _upper_bound(column, caps.get(name))
        if column.min is not None or upper is not None:
            expectations.append(
                _expect(
                    gxe.ExpectColumnValuesToBeBetween,
                    [name],
                    column=name,
                    min_value=column.min,
                    max_value=upper,
                )
            )
        if column.allowed is not None:
            allowed = regions.codes if column.allowed == REGION_CATALOGUE else column.allowed
            expectations.append(
                _expect(
                    gxe.ExpectColumnValuesToBeInSet, [name], column=name, value_set=list(allowed)
                )
            )
    earliest = pd.Timestamp(settings.earliest_event, tz="UTC")
    latest = now + timedelta(minutes=settings.validation.future_tolerance_minutes)
    return [
        *expectations,
        _expect(
            gxe.ExpectColumnValuesToBeBetween,
            ["event_timestamp"],
            column="event_timestamp",
            min_value=earliest.isoformat(),
            max_value=latest.isoformat(),
        ),
        _expect(
            gxe.ExpectColumnValueLengthsToBeBetween, ["user_id"], column="user_id", min_value=1
        ),
        _expect(
            gxe.ExpectColumnValuesToMatchRegex, ["client_ip"], column="client_ip", regex=IPV4_REGEX
        ),
        _expect(gxe.ExpectCompoundColumnsToBeUnique, ENTITY_KEY, column_list=list(ENTITY_KEY)),
    ]


def _upper_bound(column: Column, cap: float | None) -> float | None:
    """The schema's upper bound of ``column``, tightened by ``cap`` where one is given."""
    bounds = [b for b in (column.max, cap) if b is not None]
    return min(bounds) if bounds else None


def _cross_column_expectations() -> list[gxe.Expectation]:
    """Plausibility across columns: no demand without a session, coherent location fields."""
    no_session = ComparisonCondition(
        column=Col("session_active"), operator=Operator.EQUAL, parameter=False
    )
    has_lat, has_lon = Col("lat").is_not_null(), Col("lon").is_not_null()
    from_ip = Col("geo_source").is_in(["ip"])
    idle = "session_active is false"
    no_demand = [
        _expect(
            gxe.ExpectColumnValuesToBeBetween,
            [resource],
            condition=no_session,
            when=idle,
            column=resource,
            max_value=0,
        )
        for resource in RESOURCE_COLUMNS
    ]
    return [
        *no_demand,
        _expect(
            gxe.ExpectColumnValuesToBeBetween,
            ["data_access_count"],
            condition=no_session,
            when=idle,
            column="data_access_count",
            max_value=0,
        ),
        _expect(
            gxe.ExpectColumnValuesToBeInSet,
            ["app"],
            condition=no_session,
            when=idle,
            column="app",
            value_set=list(NO_SESSION_APPS),
        ),
        _expect(
            gxe.ExpectColumnValuesToNotBeNull,
            ["lon"],
            condition=has_lat,
            when="lat is set",
            column="lon",
        ),
        _expect(
            gxe.ExpectColumnValuesToNotBeNull,
            ["lat"],
            condition=has_lon,
            when="lon is set",
            column="lat",
        ),
        _expect(
            gxe.ExpectColumnValuesToNotBeNull,
            ["geo_source"],
            condition=has_lat,
            when="lat is set",
            column="geo_source",
        ),
        _expect(
            gxe.ExpectColumnValuesToNotBeNull,
            ["client_ip"],
            condition=from_ip,
            when="geo_source is ip",
            column="client_ip",
        ),
    ]
