"""Drawing users: roles, homes, traveller shares."""

from __future__ import annotations

import numpy as np
import pytest

from core.latency import great_circle_km
from core.regions import load_regions
from simulation.geo import load_cities
from simulation.population import (
    CityChooser,
    PopulationSpec,
    draw_person,
    traveller_probabilities,
)
from simulation.randomness import Stream, user_rng
from simulation.roles import ROLE_DEFINITIONS


def _chooser(continents: dict[str, float]) -> CityChooser:
    cities = load_cities(500_000)
    region = load_regions().nearest(cities["lat"], cities["lon"])
    return CityChooser(cities, region, continents)


def _spec(**changes: object) -> PopulationSpec:
    values = {
        "role_mix": np.array([r.share for r in ROLE_DEFINITIONS])
        / sum(r.share for r in ROLE_DEFINITIONS),
        "traveller_probability": np.array([r.travel.propensity for r in ROLE_DEFINITIONS]),
        "continent_weights": {"EU": 0.5, "NA": 0.5},
        "gps_share": 0.5,
        "personal_sigma": 0.35,
        "drift_per_month_sd": 0.1,
    }
    values.update(changes)
    return PopulationSpec(**values)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_traveller_share_is_met_and_role_order_kept(share: float) -> None:
    mix = np.array([0.5, 0.3, 0.2])
    propensity = np.array([0.05, 0.3, 0.7])
    scaled = traveller_probabilities(mix, propensity, share)
    assert mix @ scaled == pytest.approx(share, abs=1e-6)
    assert np.all(np.diff(scaled) >= 0) and scaled.max() <= 1.0


def test_traveller_share_none_keeps_role_propensities_and_zero_stops_travel() -> None:
    mix, propensity = np.array([0.5, 0.5]), np.array([0.1, 0.6])
    assert np.array_equal(traveller_probabilities(mix, propensity, None), propensity)
    assert not traveller_probabilities(mix, propensity, 0.0).any()


def test_homes_follow_continent_weights_and_population() -> None:
    chooser = _chooser({"EU": 1.0})
    homes = [chooser.home(user_rng(1, i, Stream.TRAITS)) for i in range(300)]
    assert set(chooser.cities["continent"].iloc[homes]) == {"EU"}
    population = chooser.cities["population"].iloc[homes]
    assert (
        population.median()
        > chooser.cities.loc[chooser.cities["continent"] == "EU", "population"].median()
    )


def test_destinations_are_far_and_often_served_by_another_region() -> None:
    chooser = _chooser({"EU": 0.5, "NA": 0.5, "AS": 0.5})
    home = int(np.flatnonzero(chooser.cities["name"] == "London")[0])
    for i in range(50):
        city = chooser.destination(user_rng(2, i, Stream.TRAVEL), home, other_region=True)
        assert chooser.city_region[city] != chooser.city_region[home]
        assert (
            great_circle_km(
                chooser.lat[home], chooser.lon[home], chooser.lat[city], chooser.lon[city]
            )
            >= 300
        )


def test_a_person_depends_only_on_seed_and_index() -> None:
    chooser = _chooser({"EU": 0.5, "NA": 0.5})
    first, again = draw_person(7, 3, _spec(), chooser), draw_person(7, 3, _spec(), chooser)
    assert (first.role, first.home_city, first.habits) == (
        again.role,
        again.home_city,
        again.habits,
    )
    assert np.array_equal(first.multipliers, again.multipliers)
    others = [draw_person(7, seed, _spec(), chooser) for seed in range(4, 10)]
    assert any(not np.array_equal(first.multipliers, o.multipliers) for o in others)


def test_only_travellers_have_favourite_destinations() -> None:
    chooser = _chooser({"EU": 0.5, "NA": 0.5})
    everyone = _spec(traveller_probability=np.ones(len(ROLE_DEFINITIONS)))
    nobody = _spec(traveller_probability=np.zeros(len(ROLE_DEFINITIONS)))
    travellers = [draw_person(i, 1, everyone, chooser) for i in range(40)]
    assert all(p.traveller and 1 <= len(p.habits) <= 3 for p in travellers)
    assert not any(draw_person(i, 1, nobody, chooser).habits for i in range(40))
