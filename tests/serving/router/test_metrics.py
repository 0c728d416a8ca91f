"""The router's metrics belong to one app, even where prometheus_client runs multiprocess."""

from __future__ import annotations

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from serving.router.metrics import RouterMetrics


def pushes_refused(metrics: RouterMetrics) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "prewarm_router_config_pushes_total":
                return sample.value
    return 0.0


def test_each_app_counts_only_its_own_requests_in_multiprocess_mode(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What importing Feast does to the process: values shared by metric name, in files.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    first, second = RouterMetrics(), RouterMetrics()
    first.config_pushes.labels("rejected", "unauthorized").inc()
    second.config_pushes.labels("rejected", "unauthorized").inc()
    assert pushes_refused(first) == 1 and pushes_refused(second) == 1
