"""The router's HTTP API: authentication, config push and rollback, probes, routes, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.settings import RouterSettings, Settings
from serving.router.app import RouterStartupError, create_app
from serving.router.redis_store import RedisRouterStore
from tests.serving.router.conftest import (
    AUTH,
    EAST,
    EUROPE,
    REDIS_URL,
    TOKEN,
    WEST,
    TestClient,
    allocation,
    config_json,
    free_port,
)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The router on SQLite under this test's home, with an admin token."""
    with TestClient(create_app(settings, token=TOKEN)) as test_client:
        yield test_client


def metric(client: TestClient, name: str, **labels: str) -> float:
    """A sample of GET /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def probe(user: str, region: str, latency: float, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "region": region, "latency_ms": latency, **extra}


def in_force(client: TestClient) -> int:
    return client.get("/v1/config", headers=AUTH).json()["version"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["no-header", "wrong-token", "wrong-scheme"],
)
def test_unauthenticated_push_is_refused_with_401(client: TestClient, headers) -> None:
    response = client.post("/v1/config", json=config_json(1), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/config", headers=AUTH).status_code == 404  # nothing in force
    assert metric(client, "prewarm_router_config_pushes_total", reason="unauthorized") == 1


def test_without_a_token_the_admin_api_is_disabled_with_503(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/config", json=config_json(1), headers=AUTH).status_code == 503
        assert client.post("/v1/config/rollback", headers=AUTH).status_code == 503
        assert "PREWARM_ROUTER_TOKEN" in client.get("/v1/config").json()["detail"]
        assert client.post("/v1/probes", json={"probes": [probe("u1", EAST, 20)]}).is_success


def test_the_token_comes_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREWARM_ROUTER_TOKEN", "from-env")
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": "Bearer from-env"}
        assert client.post("/v1/config", json=config_json(1), headers=headers).status_code == 200


def test_production_refuses_to_start_without_a_token(settings: Settings) -> None:
    production = settings.model_copy(update={"router": RouterSettings(production=True)})
    with pytest.raises(RouterStartupError, match="PREWARM_ROUTER_TOKEN"):
        create_app(production)
    assert create_app(production, token=TOKEN) is not None


def test_push_then_rollback(client: TestClient) -> None:
    first = client.post("/v1/config", json=config_json(1), headers=AUTH)
    assert first.json() == {"version": 1, "previous_version": None, "users": 1, "unchanged": False}
    second = client.post("/v1/config", json=config_json(2, allocation("u1"), allocation("u2")),
                         headers=AUTH)  # fmt: skip
    assert second.json()["previous_version"] == 1
    assert metric(client, "prewarm_router_config_version") == 2
    summary = client.get("/v1/config", headers=AUTH).json()
    assert (summary["version"], summary["previous_version"], summary["users"]) == (2, 1, 2)
    assert summary["thresholds"]["latency_threshold_ms"] == 60.0  # settings.latency_slo_ms

    rolled = client.post("/v1/config/rollback", headers=AUTH)
    assert rolled.json() == {"version": 1, "rolled_back_version": 2}
    assert in_force(client) == 1
    assert metric(client, "prewarm_router_config_version") == 1
    assert client.post("/v1/config/rollback", headers=AUTH).status_code == 409


def test_re_pushing_the_config_in_force_is_a_no_op(client: TestClient) -> None:
    client.post("/v1/config", json=config_json(3), headers=AUTH)
    again = client.post("/v1/config", json=config_json(3), headers=AUTH)
    assert again.status_code == 200 and again.json()["unchanged"] is True
    assert client.get("/v1/config", headers=AUTH).json()["previous_version"] is None


def _user(**fields: Any) -> dict[str, Any]:
    return allocation("u9").model_dump(mode="json") | fields


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (config_json(2) | {"users": [_user(region="mars-north-1")]}, "unknown_region"),
        (config_json(2) | {"users": [_user(current_region="nowhere")]}, "unknown_region"),
        (config_json(2) | {"users": [_user(cpu_cores=-1)]}, "greater_than_equal"),
        (config_json(2) | {"users": [_user(), _user()]}, "duplicate_users"),
        (config_json(1, allocation("u9")), "stale_version"),
        (config_json(2) | {"version": 0}, "greater_than_equal"),
        (config_json(2) | {"version": "two"}, "int_parsing"),
        (config_json(2) | {"thresholds": {"ewma_alpha": 2}}, "less_than_equal"),
        (config_json(2) | {"surprise": True}, "extra_forbidden"),
    ],
    ids=["region", "current-region", "negative", "duplicates", "same-version", "zero",
         "text-version", "alpha", "extra-field"],
)  # fmt: skip
def test_a_bad_config_is_refused_with_422_and_the_old_one_stays(
    client: TestClient, body: dict, reason: str
) -> None:
    client.post("/v1/config", json=config_json(1), headers=AUTH)
    response = client.post("/v1/config", json=body, headers=AUTH)
    assert response.status_code == 422
    assert reason in {error["type"] for error in response.json()["detail"]}
    assert in_force(client) == 1
    assert metric(client, "prewarm_router_config_pushes_total", outcome="rejected") == 1
    kept = client.app.state.service.store.rejections()
    assert kept[0].endpoint == "/v1/config" and reason in kept[0].reason


def test_probes_move_a_user_whose_latency_exceeds_the_threshold(client: TestClient) -> None:
    client.post("/v1/config", json=config_json(1, allocation("u1", EAST, current=WEST)),
                headers=AUTH)  # fmt: skip
    slow = {"probes": [probe("u1", WEST, 95.0, throughput_mbps=12.0, cpu_utilisation=0.5)]}
    for _ in range(2):  # min_samples = 3: two probes are not yet trusted
        decision = client.post("/v1/probes", json=slow).json()["decisions"][0]
        assert (decision["action"], decision["region"]) == ("stay", WEST)
    result = client.post("/v1/probes", json=slow).json()
    assert result["config_version"] == 1
    decision = result["decisions"][0]
    assert decision["action"] == "switch" and decision["code"] == "current_over_threshold"
    assert (decision["from_region"], decision["region"]) == (WEST, EAST)

    route = client.get("/v1/routes/u1").json()  # the user moves only when migrated
    assert route["region"] == WEST and route["config_version"] == 1
    assert route["pending_switchover"]["intent_id"] == decision["intent_id"] == "u1#1"
    assert route["pending_switchover"]["from_region"] == WEST
    assert route["pending_switchover"]["resources"]["cpu_cores"] == 2.0
    measured = route["measurements"][WEST]
    assert (measured["latency_ms"], measured["samples"]) == (95.0, 3)
    assert (measured["throughput_mbps"], measured["cpu_utilisation"]) == (12.0, 0.5)
    assert metric(client, "prewarm_router_switchovers_total", code="current_over_threshold") == 1
    assert metric(client, "prewarm_router_decisions_total", action="stay") == 2
    assert metric(client, "prewarm_router_probes_total", outcome="accepted") == 3

    again = client.post("/v1/probes", json=slow).json()["decisions"][0]
    assert (again["action"], again["code"], again["region"]) == (
        "stay", "switchover_in_flight", WEST)  # fmt: skip
    assert metric(client, "prewarm_router_switchovers_total", code="current_over_threshold") == 1


def test_a_batch_decides_once_per_user_in_first_seen_order(client: TestClient) -> None:
    users = [allocation(f"u{i}", EAST, current=WEST, expected_latency_ms=20.0) for i in range(3)]
    client.post("/v1/config", json=config_json(1, *users), headers=AUTH)
    batch = [probe("u2", WEST, 50), probe("u0", WEST, 50), probe("u2", EAST, 25),
             probe("stranger", EUROPE, 10)]  # fmt: skip
    result = client.post("/v1/probes", json={"probes": batch}).json()
    assert [d["user_id"] for d in result["decisions"]] == ["u2", "u0", "stranger"]
    assert [d["code"] for d in result["decisions"]] == [
        "target_under_threshold", "target_under_threshold", "unallocated"]  # fmt: skip
    assert result["probes"] == 4


GARBAGE = [
    (b"not json", "json_invalid"),
    (b'{"probes": []}', "too_short"),
    (b'{"probes": [{"user_id": "u1", "region": "aws-us-east-1"}]}', "missing"),
    (b'{"probes": [{"user_id": "u1", "region": "aws-us-east-1", "latency_ms": -3}]}',
     "greater_than_equal"),
    (b'{"probes": [{"user_id": "u1", "region": "aws-us-east-1", "latency_ms": NaN}]}',
     "finite_number"),
    (b'{"probes": [{"user_id": "u 1", "region": "aws-us-east-1", "latency_ms": 3}]}',
     "string_pattern_mismatch"),
    (b'{"probes": [{"user_id": "u1", "region": "moon-1", "latency_ms": 3}]}', "unknown_region"),
    (b'{"probes": [{"user_id": "u1", "region": "aws-us-east-1", "latency_ms": 99999}]}',
     "implausible_latency"),
    (b'{"probes": [{"user_id": "u1", "region": "aws-us-east-1", "latency_ms": 3, '
     b'"measured_at": "2999-01-01T00:00:00Z"}]}', "future_timestamp"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "reason"), GARBAGE, ids=[r for _, r in GARBAGE])
def test_garbage_probes_are_refused_with_422_and_counted(
    client: TestClient, body: bytes, reason: str
) -> None:
    response = client.post("/v1/probes", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert reason in {error["type"] for error in response.json()["detail"]}
    assert metric(client, "prewarm_router_probes_total", outcome="rejected", reason=reason) == 1
    assert client.app.state.service.store.rejections()[0].endpoint == "/v1/probes"
    assert client.get("/v1/routes/u1").status_code == 404  # nothing was applied


def test_one_bad_probe_rejects_its_whole_batch(client: TestClient) -> None:
    batch = {"probes": [probe("u1", EAST, 20), probe("u2", "atlantis", 20)]}
    response = client.post("/v1/probes", json=batch)
    assert response.status_code == 422
    assert metric(client, "prewarm_router_probes_total", reason="unknown_region") == 1
    assert metric(client, "prewarm_router_probes_total", reason="in_rejected_batch") == 1
    assert client.get("/v1/routes/u1").status_code == 404


def test_a_batch_over_the_limit_is_refused(settings: Settings) -> None:
    small = settings.model_copy(update={"router": RouterSettings(max_probes_per_batch=2)})
    with TestClient(create_app(small, token=TOKEN)) as client:
        batch = {"probes": [probe("u1", EAST, 20)] * 3}
        response = client.post("/v1/probes", json=batch)
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "batch_too_large"
        assert metric(client, "prewarm_router_probes_total", reason="batch_too_large") == 3


def test_routes_of_planned_and_unknown_users(client: TestClient) -> None:
    client.post("/v1/config", json=config_json(1, allocation("u1", EAST, current=WEST)),
                headers=AUTH)  # fmt: skip
    planned = client.get("/v1/routes/u1").json()
    assert (planned["region"], planned["preallocated_region"]) == (WEST, EAST)
    assert planned["since"] is None and planned["pending_switchover"] is None
    assert client.get("/v1/routes/nobody").status_code == 404
    assert client.get("/v1/routes/bad%20id").status_code == 422


def test_health_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "state": "sqlite",
                                             "config_version": None}  # fmt: skip
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "prewarm_router_config_version 0.0" in metrics.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/config", "/v1/config/rollback", "/v1/probes", "/v1/routes/{user_id}",
            "/healthz", "/metrics"} <= set(paths)  # fmt: skip


def test_state_survives_a_restart(settings: Settings) -> None:
    with TestClient(create_app(settings, token=TOKEN)) as client:
        client.post("/v1/config", json=config_json(1, allocation("u1", EAST, current=WEST,
                                                                expected_latency_ms=10.0)),
                    headers=AUTH)  # fmt: skip
        client.post("/v1/probes", json={"probes": [probe("u1", WEST, 30)]})
    with TestClient(create_app(settings, token=TOKEN)) as client:
        assert in_force(client) == 1
        assert metric(client, "prewarm_router_config_version") == 1
        route = client.get("/v1/routes/u1").json()
        assert (route["region"], route["pending_switchover"]["to_region"]) == (WEST, EAST)


def test_the_router_runs_on_redis(settings: Settings, redis_prefix: str) -> None:
    on_redis = settings.model_copy(update={"router": RouterSettings(
        state="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix)})  # fmt: skip
    with TestClient(create_app(on_redis, token=TOKEN)) as client:
        assert client.get("/healthz").json()["state"] == "redis"
        client.post("/v1/config", json=config_json(1, allocation("u1", EAST, current=WEST,
                                                                expected_latency_ms=10.0)),
                    headers=AUTH)  # fmt: skip
        decision = client.post("/v1/probes", json={"probes": [probe("u1", WEST, 30)]}).json()
        assert decision["decisions"][0]["action"] == "switch"
        assert client.get("/v1/routes/u1").json()["pending_switchover"]["to_region"] == EAST
    assert not (settings.serving_dir / settings.router.sqlite_file).exists()


def test_unreachable_state_is_answered_with_503(settings: Settings) -> None:
    gone = RedisRouterStore(f"redis://127.0.0.1:{free_port()}/0", "nowhere:", rejections_kept=1)
    with TestClient(create_app(settings, store=gone, token=TOKEN)) as client:
        assert client.get("/healthz").status_code == 503
        response = client.post("/v1/probes", json={"probes": [probe("u1", EAST, 20)]})
        assert response.status_code == 503
        assert "router state unreachable" in response.json()["detail"]
        assert client.post("/v1/config", json=config_json(1), headers=AUTH).status_code == 503
