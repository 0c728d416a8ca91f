"""The people of the world: each user's role, home, habits and personal quirks.

A :class:`Person` is drawn from that user's own random stream, so the same seed gives the same
person whatever else is in the world. Homes are real cities: a continent is drawn by the
configured weights, then a city within it by population.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.latency import great_circle_km
from simulation.randomness import Stream, user_rng
from simulation.roles import ROLE_DEFINITIONS, Role

HOME_SPREAD_KM = 4.0  # where in their city a user lives and works, around the city centre
MIN_TRIP_KM = 300.0  # a destination closer than this is a commute, not a trip
TRIP_SCALE_KM = 2500.0  # destinations' appeal decays over this distance...
TRIP_DISTANCE_FLOOR = 0.15  # ...down to this share for the far side of the world
WORKDAY_SPREAD_H = 0.4  # spread of the working-day length between users
NOMINAL_WEEK = (True, True, True, True, True, False, False)  # Monday to Friday


@dataclass(frozen=True)
class Habit:
    """A recurring trip to a favourite destination."""

    city: int
    every_weeks: int
    phase: int  # the trip happens in weeks w with (w - phase) % every_weeks == 0
    weekday: int  # departure day, Monday = 0
    depart_hour: float  # local time at home
    stay_days: int
    return_hour: float  # local time at the destination


@dataclass(frozen=True)
class Person:
    """One user's stable traits."""

    index: int
    role: int  # index into ROLE_DEFINITIONS
    home_city: int
    home_north_km: float
    home_east_km: float
    multipliers: np.ndarray  # personal factors: the four resources, then data access
    drift_per_month: float  # slow log-trend of demand
    start_minute: float  # habitual local start of the working day
    day_minutes: float
    workdays: tuple[bool, ...]  # Monday..Sunday
    gps: bool
    traveller: bool
    habits: tuple[Habit, ...]

    @property
    def role_definition(self) -> Role:
        """The role this person has."""
        return ROLE_DEFINITIONS[self.role]


@dataclass(frozen=True)
class PopulationSpec:
    """What the population as a whole looks like."""

    role_mix: np.ndarray  # probability of each role of ROLE_DEFINITIONS
    traveller_probability: np.ndarray  # per role
    continent_weights: Mapping[str, float]
    gps_share: float
    personal_sigma: float
    drift_per_month_sd: float


class CityChooser:
    """Draws home cities and travel destinations from the city list.

    A city's appeal is its continent's weight shared among that continent's cities by
    population: homes are drawn by appeal, and so are destinations (the company travels where
    its people and customers are), discounted with distance because most trips are regional.
    """

    def __init__(
        self, cities: pd.DataFrame, city_region: np.ndarray, continents: Mapping[str, float]
    ):
        self.cities = cities
        self.city_region = city_region
        self.lat = cities["lat"].to_numpy()
        self.lon = cities["lon"].to_numpy()
        population = cities["population"].to_numpy(dtype=np.float64)
        continent = cities["continent"].to_numpy()
        self.appeal = np.zeros(len(cities))
        for name, weight in continents.items():
            members = continent == name
            if weight > 0 and members.any():
                self.appeal[members] = weight * population[members] / population[members].sum()
        if not self.appeal.any():
            raise ValueError(f"no city lies on the weighted continents {dict(continents)}")
        self.home_cdf = _cdf(self.appeal)

    def home(self, rng: np.random.Generator) -> int:
        """A home city, drawn by appeal (continent weight, then population)."""
        return _pick(self.home_cdf, rng.random())

    def destination(self, rng: np.random.Generator, home: int, other_region: bool) -> int:
        """A city worth flying to from ``home``; with ``other_region``, one served elsewhere."""
        km = great_circle_km(self.lat[home], self.lon[home], self.lat, self.lon)
        far = km >= MIN_TRIP_KM
        candidates = far & (self.city_region != self.city_region[home]) if other_region else far
        if not candidates.any():
            candidates = far if far.any() else np.arange(len(self.lat)) != home
        members = np.flatnonzero(candidates)
        weights = self.appeal[members] * (
            TRIP_DISTANCE_FLOOR + np.exp(-km[members] / TRIP_SCALE_KM)
        )
        if not weights.any():
            weights = np.ones(len(members))
        return int(members[_pick(_cdf(weights), rng.random())])


def traveller_probabilities(
    mix: np.ndarray, propensity: np.ndarray, share: float | None
) -> np.ndarray:
    """Each role's chance of travelling, scaled so the workforce's share of travellers is ``share``.

    Roles keep their order (sales travel more than engineers) because every propensity is scaled
    by the same factor, capped at 1. ``share=None`` keeps the roles' own propensities.
    """
    if share is None:
        return propensity.copy()
    if share <= 0:
        return np.zeros_like(propensity)
    low, high = 0.0, 1.0 / max(float(propensity[mix > 0].min(initial=1.0)), 1e-9)
    for _ in range(60):
        factor = (low + high) / 2
        if float(mix @ np.minimum(1.0, factor * propensity)) < share:
            low = factor
        else:
            high = factor
    return np.minimum(1.0, high * propensity)


def draw_person(index: int, seed: int, spec: PopulationSpec, chooser: CityChooser) -> Person:
    """Draw one user's traits from that user's own stream."""
    rng = user_rng(seed, index, Stream.TRAITS)
    role_index = _pick(np.cumsum(spec.role_mix), rng.random())
    role = ROLE_DEFINITIONS[role_index]
    home = chooser.home(rng)
    north, east = rng.normal(0.0, HOME_SPREAD_KM, 2)
    multipliers = rng.lognormal(0.0, spec.personal_sigma, 5)
    drift = rng.normal(0.0, spec.drift_per_month_sd)
    start_hour, day_hours, workdays = _working_week(role, rng)
    gps = bool(rng.random() < spec.gps_share)
    traveller = bool(rng.random() < spec.traveller_probability[role_index])
    habits = _habits(role, home, rng, chooser) if traveller else ()
    return Person(
        index=index,
        role=role_index,
        home_city=home,
        home_north_km=float(north),
        home_east_km=float(east),
        multipliers=multipliers,
        drift_per_month=float(drift),
        start_minute=start_hour * 60.0,
        day_minutes=day_hours * 60.0,
        workdays=workdays,
        gps=gps,
        traveller=traveller,
        habits=habits,
    )


def _working_week(role: Role, rng: np.random.Generator) -> tuple[float, float, tuple[bool, ...]]:
    schedule = role.schedule
    base = rng.choice(schedule.shift_starts) if schedule.shift_starts else schedule.start_hour
    start_hour = float(np.clip(base + rng.normal(0.0, schedule.start_spread_h), 0.0, 23.5))
    day_hours = float(np.clip(schedule.day_hours + rng.normal(0.0, WORKDAY_SPREAD_H), 4.0, 12.0))
    workdays = NOMINAL_WEEK
    if rng.random() < schedule.weekend_rota_share:
        first_day = int(rng.integers(1, 7))  # a five-day week starting Tuesday..Sunday
        workdays = tuple(bool(d) for d in np.roll(NOMINAL_WEEK, first_day))
    return start_hour, day_hours, workdays


def _habits(
    role: Role, home: int, rng: np.random.Generator, chooser: CityChooser
) -> tuple[Habit, ...]:
    travel = role.travel
    count = int(rng.integers(travel.favourites[0], travel.favourites[1] + 1))
    habits = []
    for _ in range(count):
        city = chooser.destination(rng, home, other_region=rng.random() < travel.other_region_share)
        every = int(rng.choice(travel.every_weeks))
        habits.append(
            Habit(
                city=city,
                every_weeks=every,
                phase=int(rng.integers(every)),
                weekday=int(rng.choice(travel.depart_weekdays)),
                depart_hour=float(rng.uniform(*travel.depart_hours)),
                stay_days=int(rng.integers(travel.stay_days[0], travel.stay_days[1] + 1)),
                return_hour=float(rng.uniform(*travel.return_hours)),
            )
        )
    return tuple(habits)


def _cdf(weights: np.ndarray) -> np.ndarray:
    return np.cumsum(weights) / weights.sum()


def _pick(cdf: np.ndarray, u: float) -> int:
    """Index drawn from a cumulative distribution with a uniform ``u``."""
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))
