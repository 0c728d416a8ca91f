"""The expectation suite of the validation gate, generated from the schema and the catalogue."""

from __future__ import annotations

import pandas as pd
import pytest

from core.regions import RegionCatalogue, load_regions
from core.schema import APPS, GEO_SOURCES, ROLES, TELEMETRY_COLUMNS
from core.settings import get_settings
from features.expectations import build_suite, check_label, resource_caps

NOW = pd.Timestamp("2026-01-06 12:00", tz="UTC")


def _by_label(suite) -> dict:
    return {check_label(e): e for e in suite.expectations}


def test_every_check_has_a_unique_label_naming_its_type_and_columns() -> None:
    suite = build_suite(NOW)
    labels = [check_label(e) for e in suite.expectations]

    assert len(labels) == len(set(labels))
    for expectation, label in zip(suite.expectations, labels, strict=True):
        if expectation.expectation_type.startswith("expect_table_"):
            columns = "table"
        else:
            columns = getattr(expectation, "column", None) or ", ".join(expectation.column_list)
        assert label.startswith(f"{expectation.expectation_type}({columns})")


def test_every_schema_column_is_typed_and_non_nullable_ones_are_required() -> None:
    labels = _by_label(build_suite(NOW))

    for column in TELEMETRY_COLUMNS:
        assert f"expect_column_values_to_be_of_type({column.name})" in labels
        required = f"expect_column_values_to_not_be_null({column.name})" in labels
        assert required == (not column.nullable), column.name


def test_categories_come_from_the_schema_and_the_region_catalogue() -> None:
    two = RegionCatalogue(tuple(load_regions())[:2])
    labels = _by_label(build_suite(NOW, regions=two))

    def allowed(column: str) -> set[str]:
        return set(labels[f"expect_column_values_to_be_in_set({column})"].value_set)

    assert allowed("serving_region") == set(two.codes)
    assert allowed("role") == set(ROLES)
    assert allowed("app") == set(APPS)
    assert allowed("geo_source") == set(GEO_SOURCES)


def test_resources_are_capped_by_the_largest_region_and_the_per_user_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalogue = load_regions().to_frame()
    caps = resource_caps(load_regions(), get_settings())
    assert caps["storage_iops"] == catalogue["capacity_storage_iops"].max()
    assert caps["network_mbps"] == catalogue["capacity_network_gbps"].max() * 1000
    assert caps["ram_gb"] == min(1024.0, catalogue["capacity_ram_gb"].max())

    monkeypatch.setenv("PREWARM_VALIDATION__MAX_USER_RAM_GB", "64")
    get_settings.cache_clear()
    labels = _by_label(build_suite(NOW))
    assert labels["expect_column_values_to_be_between(ram_gb)"].max_value == 64.0
    assert labels["expect_column_values_to_be_between(ram_gb)"].min_value == 0.0


def test_the_time_window_runs_from_the_earliest_event_to_now_plus_tolerance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREWARM_VALIDATION__FUTURE_TOLERANCE_MINUTES", "30")
    monkeypatch.setenv("PREWARM_EARLIEST_EVENT", "2010-06-01")
    get_settings.cache_clear()

    window = _by_label(build_suite(NOW))["expect_column_values_to_be_between(event_timestamp)"]

    assert pd.Timestamp(window.min_value) == pd.Timestamp("2010-06-01", tz="UTC")
    assert pd.Timestamp(window.max_value) == NOW + pd.Timedelta(minutes=30)


def test_a_naive_now_is_taken_as_utc() -> None:
    naive = _by_label(build_suite(NOW.tz_localize(None).to_pydatetime()))
    aware = _by_label(build_suite(NOW))
    label = "expect_column_values_to_be_between(event_timestamp)"

    assert naive[label].max_value == aware[label].max_value
