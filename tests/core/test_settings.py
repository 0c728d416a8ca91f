"""The settings object: defaults, environment overrides and validation."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import PACKAGED_REGIONS_FILE, Settings


def test_defaults_keep_state_under_one_home(monkeypatch) -> None:
    monkeypatch.delenv("PREWARM_HOME")
    settings = Settings()
    assert settings.home == Path("var")
    assert settings.cache_dir == Path("var") / "cache"
    assert settings.regions_file == PACKAGED_REGIONS_FILE


def test_environment_overrides_top_level_and_nested_fields(monkeypatch) -> None:
    monkeypatch.setenv("PREWARM_HOME", "/tmp/elsewhere")
    monkeypatch.setenv("PREWARM_LATENCY_SLO_MS", "75")
    monkeypatch.setenv("PREWARM_LATENCY__ROUTE_INFLATION", "1.9")
    monkeypatch.setenv("PREWARM_GWA__IO_SIZE_KIB", "64")
    settings = Settings()
    assert settings.home == Path("/tmp/elsewhere")
    assert settings.latency_slo_ms == 75.0
    assert settings.latency.route_inflation == 1.9
    assert settings.gwa.io_size_kib == 64.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PREWARM_LATENCY__ROUTE_INFLATION", "0.5"),  # shorter than the great circle
        ("PREWARM_LATENCY_SLO_MS", "-1"),
        ("PREWARM_SIMULATION__GPS_SHARE", "1.5"),
    ],
)
def test_out_of_range_values_are_refused(monkeypatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()
