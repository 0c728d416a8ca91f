"""Trips are habitual, never overlap, and move the traveller along a real route."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.latency import great_circle_km
from core.settings import Settings
from simulation.world import World, WorldConfig


def test_trips_never_overlap_and_leave_time_at_home(small_world: World) -> None:
    trips = small_world.trips
    assert len(trips) >= 10
    for _, own in trips.groupby("user_id"):
        own = own.sort_values("depart")
        assert (own["depart"] < own["arrive"]).all() and (own["arrive"] < own["leave"]).all()
        assert (own["leave"] < own["back"]).all()
        gaps = own["depart"].iloc[1:].to_numpy() - own["back"].iloc[:-1].to_numpy()
        assert (gaps >= pd.Timedelta(hours=12)).all()


def test_habitual_trips_repeat_on_the_same_weekday_morning(sim_settings: Settings) -> None:
    world = World(WorldConfig(users=300, days=42, seed=8, traveller_share=1.0), sim_settings)
    trips = world.trips[world.trips["habitual"]].merge(
        world.users[["user_id", "home_timezone"]], on="user_id"
    )
    local = [t.depart.tz_convert(t.home_timezone) for t in trips.itertuples()]
    hours = np.array([t.hour + t.minute / 60 for t in local])
    weekdays = np.array([t.weekday() for t in local])
    assert ((hours >= 5.5) & (hours <= 10)).mean() > 0.95
    assert (weekdays <= 3).mean() > 0.95
    # the same destination recurs, on the same weekday
    repeated = trips.assign(weekday=weekdays).groupby(["user_id", "destination"])["weekday"]
    multiple = repeated.count() >= 2
    assert multiple.sum() >= 50
    assert (repeated.nunique()[multiple] <= 2).mean() > 0.9


def test_flights_move_at_airliner_speed_and_stays_are_in_the_city(small_world: World) -> None:
    truth = small_world.truth()
    step_hours = small_world.interval_minutes / 60
    moved = great_circle_km(
        truth.lat[:, 1:], truth.lon[:, 1:], truth.lat[:, :-1], truth.lon[:, :-1]
    )
    flying = truth.in_flight[:, 1:] & truth.in_flight[:, :-1]
    assert flying.any()
    assert (moved[flying] / step_hours < 1000).all()
    assert (
        moved[~truth.in_flight[:, 1:] & ~truth.in_flight[:, :-1]] < 1e-9
    ).all()  # no jumps on land
    cities = small_world.cities
    grounded = ~truth.in_flight
    to_centre = great_circle_km(
        truth.lat[grounded],
        truth.lon[grounded],
        cities["lat"].to_numpy()[truth.city[grounded]],
        cities["lon"].to_numpy()[truth.city[grounded]],
    )
    assert np.percentile(to_centre, 99) < 15
