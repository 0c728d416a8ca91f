"""One predict-and-provision cycle on a small world: predict, place, provision, route, push."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.settings import ProvisioningSettings
from serving import cycle
from serving.predict import finalize, plan_shards, predict_shard
from serving.provisioning.ledger import Ledger
from serving.provisioning.states import LIVE
from serving.router.app import create_app
from serving.router.client import PushRejectedError
from tests.serving.predict_world import PredictWorld, build_world
from tests.serving.router.conftest import free_port, live_server

RUN = "scheduled__2026-01-15T10:30:00+00:00"
TOKEN = "cycle-test-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> PredictWorld:
    return build_world(tmp_path_factory.mktemp("cycle-world") / "home")


def predicted(world: PredictWorld, home, **provisioning) -> tuple:
    """A fresh copy of the world with one finished prediction run; (settings, now)."""
    settings = world.settings(home)
    if provisioning:
        settings = settings.model_copy(
            update={"provisioning": ProvisioningSettings(**provisioning)}
        )
    now = world.end + timedelta(minutes=30)
    run_id = cycle.cycle_id(RUN)
    for shard in plan_shards(run_id, now, settings):
        predict_shard(shard, run_id, now, settings)
    finalize(run_id, now, settings)
    return settings, now


def live_reservations(settings) -> list:
    ledger = Ledger.from_settings(settings)
    try:
        return ledger.reservations(states=LIVE)
    finally:
        ledger.dispose()


def test_cycle_ids_are_safe_file_names() -> None:
    assert cycle.cycle_id(RUN) == "scheduled__2026-01-15T10_30_00_00_00"
    assert cycle.cycle_id("::") == "run"


def test_a_cycle_plans_holds_and_routes_every_predicted_user(world, tmp_path) -> None:
    settings, now = predicted(world, tmp_path / "home", budget_usd_per_hour=1e6,
                              region_budget_usd_per_hour=1e6)  # fmt: skip
    placed = cycle.place(RUN, now, settings)
    plan = pd.read_parquet(cycle.plan_dir(RUN, settings) / "plan.parquet")
    assert placed["users"] == plan["user_id"].nunique() == world.telemetry["user_id"].nunique()
    assert placed["requests"] == len(plan)
    assert plan["reason"].str.len().gt(0).all()

    first = cycle.provision(RUN, now, settings=settings)
    wanted = int((plan["action"] == "preallocate").sum())
    assert first["requested"] == wanted == sum(first["outcomes"].values())
    assert first["outcomes"]["created"] == wanted > 0
    held = live_reservations(settings)
    assert len(held) == wanted

    again = cycle.provision(RUN, now, settings=settings)  # a re-run creates nothing twice
    assert again["outcomes"]["existing"] == wanted and again["outcomes"]["created"] == 0
    assert len(live_reservations(settings)) == wanted

    kept = cycle.housekeep(now, settings)
    assert kept["expired"] == 0 and kept["reconcile"]["orphans_released"] == 0

    written = cycle.routing_config(RUN, now, settings)
    config = json.loads(Path(written["path"]).read_text())
    assert written["users"] == len(config["users"]) == placed["users"]
    assert written["version"] == int(now.timestamp())
    moved = {a["user_id"] for a in config["users"] if a["region"] != a["current_region"]}
    assert moved <= {r.user_id for r in held}


def test_a_dry_run_plans_but_holds_nothing(world, tmp_path) -> None:
    settings, now = predicted(world, tmp_path / "home")
    cycle.place(RUN, now, settings)
    result = cycle.provision(RUN, now, dry_run=True, settings=settings)
    assert result["dry_run"] is True and result["would_request"] >= 0
    assert live_reservations(settings) == []


def test_a_zero_budget_holds_nothing_and_says_why(world, tmp_path) -> None:
    settings, now = predicted(world, tmp_path / "home")
    placed = cycle.place(RUN, now, settings)
    result = cycle.provision(RUN, now, budget_usd_per_hour=0.0, settings=settings)
    wanted = placed["actions"].get("preallocate", 0)
    assert result["outcomes"]["over_budget"] == wanted
    assert live_reservations(settings) == []
    config = json.loads(Path(cycle.routing_config(RUN, now, settings)["path"]).read_text())
    assert all(a["region"] == a["current_region"] for a in config["users"])


def test_the_config_reaches_the_router_and_a_refusal_keeps_the_old_one(world, tmp_path) -> None:
    settings, now = predicted(world, tmp_path / "home")
    cycle.place(RUN, now, settings)
    cycle.provision(RUN, now, settings=settings)
    path = cycle.routing_config(RUN, now, settings)["path"]
    with live_server(create_app(settings, token=TOKEN), free_port()) as url:
        pushed = cycle.push_routing_config(path, url, TOKEN)
        assert pushed["version"] == int(now.timestamp()) and pushed["unchanged"] is False
        assert cycle.push_routing_config(path, url, TOKEN)["unchanged"] is True
        with pytest.raises(PushRejectedError) as refused:
            cycle.push_routing_config(path, url, "wrong-token")
        assert refused.value.status == 401


def test_router_urls_come_from_connection_parts() -> None:
    assert cycle.router_url("127.0.0.1", 8765, None) == "http://127.0.0.1:8765"
    assert cycle.router_url("https://router.example/", None) == "https://router.example"
    with pytest.raises(ValueError, match="no host"):
        cycle.router_url(None, None)
