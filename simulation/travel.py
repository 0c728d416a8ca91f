"""Travel: when each user flies where, and where they therefore are at every step.

Travellers keep habits (a favourite destination every one to four weeks, leaving on a preferred
weekday morning, staying a few days) and add a few one-off trips. Trips are planned in local
time (departure at home, return at the destination) and converted to grid steps; a trip that
would overlap the previous one is dropped. A :class:`Track` is the resulting true position of a
user over the whole simulated period, flights included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.latency import great_circle_km
from simulation.clock import MINUTES_PER_DAY, LocalClock, weekday
from simulation.geo import displace, great_circle_path
from simulation.population import CityChooser, Person
from simulation.randomness import Stream, user_rng

CRUISE_KMH = 800.0  # block speed of an airliner, gate to gate
AIRPORT_MINUTES = 45.0  # taxi, climb and approach on top of the cruise
CITY_SPREAD_KM = 3.0  # where in a destination city a traveller stays
TURNAROUND_HOURS = 12.0  # at least this long at home between two trips
DAYS_PER_MONTH = 30.44
ONEOFF_DEPART_HOURS = (6.0, 20.0)
ONEOFF_STAY_DAYS = (1, 6)
ONEOFF_RETURN_HOURS = (12.0, 20.0)


@dataclass(frozen=True)
class Trip:
    """One trip in grid steps: out [depart, arrive), there [arrive, leave), back [leave, back)."""

    city: int
    depart: int
    arrive: int
    leave: int
    back: int
    north_km: float  # where in the destination city the traveller stays
    east_km: float
    habitual: bool


@dataclass(frozen=True)
class Track:
    """A user's true whereabouts at every step."""

    city: np.ndarray  # int32: the city the user is in, or flying to
    in_flight: np.ndarray  # bool
    travelling: np.ndarray  # bool: away from home, flights included
    lat: np.ndarray  # float64 true position
    lon: np.ndarray


def plan_trips(
    person: Person, seed: int, clock: LocalClock, chooser: CityChooser, n_steps: int
) -> tuple[Trip, ...]:
    """The trips of ``person`` that touch the simulated period, in order, never overlapping."""
    if not person.traveller:
        return ()
    rng = user_rng(seed, person.index, Stream.TRAVEL)
    planner = _TripPlanner(person, clock, chooser, rng)
    candidates = planner.habitual(n_steps) + planner.oneoff(n_steps)
    candidates.sort(key=lambda trip: (trip.depart, trip.city))
    gap = int(np.ceil(TURNAROUND_HOURS * 60 / clock.interval_minutes))
    trips: list[Trip] = []
    for trip in candidates:
        if trip.back <= 0 or trip.depart >= n_steps:
            continue
        if trips and trip.depart < trips[-1].back + gap:
            continue
        trips.append(trip)
    return tuple(trips)


class _TripPlanner:
    """Turns a person's habits and chance into candidate trips (draws a fixed count per slot)."""

    def __init__(
        self, person: Person, clock: LocalClock, chooser: CityChooser, rng: np.random.Generator
    ):
        self.person = person
        self.clock = clock
        self.chooser = chooser
        self.rng = rng
        self.travel = person.role_definition.travel

    def habitual(self, n_steps: int) -> list[Trip]:
        home = self.person.home_city
        first_day = self.clock.local_minutes_at(0, home) // MINUTES_PER_DAY
        first_monday = first_day - int(weekday(np.array(first_day)))
        weeks = n_steps * self.clock.interval_minutes // (7 * MINUTES_PER_DAY) + 2
        trips = []
        for week in range(-1, weeks):
            for habit in self.person.habits:
                attend, depart_noise, return_noise = self.rng.random(3)
                stay_change = self.rng.choice((-1, 0, 0, 0, 1))
                if (week - habit.phase) % habit.every_weeks or attend >= self.travel.attend_prob:
                    continue
                day = first_monday + 7 * week + habit.weekday
                depart_local = (
                    day * MINUTES_PER_DAY + habit.depart_hour * 60 + 40 * (depart_noise - 0.5)
                )
                trips.append(
                    self._trip(
                        habit.city,
                        depart_local,
                        max(1, habit.stay_days + int(stay_change)),
                        habit.return_hour + 1.5 * (return_noise - 0.5),
                        habitual=True,
                    )
                )
        return trips

    def oneoff(self, n_steps: int) -> list[Trip]:
        days = n_steps * self.clock.interval_minutes / MINUTES_PER_DAY
        count = self.rng.poisson(self.travel.oneoff_per_month * days / DAYS_PER_MONTH)
        first_day = self.clock.local_minutes_at(0, self.person.home_city) // MINUTES_PER_DAY
        trips = []
        for _ in range(count):
            day = first_day + int(self.rng.integers(int(np.ceil(days))))
            hour = self.rng.uniform(*ONEOFF_DEPART_HOURS)
            stay = int(self.rng.integers(ONEOFF_STAY_DAYS[0], ONEOFF_STAY_DAYS[1] + 1))
            return_hour = self.rng.uniform(*ONEOFF_RETURN_HOURS)
            city = self.chooser.destination(
                self.rng, self.person.home_city, self.rng.random() < 0.5
            )
            trips.append(
                self._trip(city, day * MINUTES_PER_DAY + hour * 60, stay, return_hour, False)
            )
        return trips

    def _trip(
        self, city: int, depart_local: float, stay_days: int, return_hour: float, habitual: bool
    ) -> Trip:
        home = self.person.home_city
        flight = self._flight_steps(home, city)
        depart = self.clock.step_of_local(depart_local, home)
        arrive = depart + flight
        arrival_day = self.clock.local_minutes_at(arrive, city) // MINUTES_PER_DAY
        leave_local = (arrival_day + stay_days) * MINUTES_PER_DAY + return_hour * 60
        leave = max(self.clock.step_of_local(leave_local, city), arrive + 1)
        north, east = self.rng.normal(0.0, CITY_SPREAD_KM, 2)
        return Trip(
            city, depart, arrive, leave, leave + flight, float(north), float(east), habitual
        )

    def _flight_steps(self, origin: int, destination: int) -> int:
        lat, lon = self.chooser.lat, self.chooser.lon
        km = float(great_circle_km(lat[origin], lon[origin], lat[destination], lon[destination]))
        minutes = AIRPORT_MINUTES + km / CRUISE_KMH * 60.0
        return max(1, int(np.ceil(minutes / self.clock.interval_minutes)))


def track(person: Person, trips: tuple[Trip, ...], chooser: CityChooser, n_steps: int) -> Track:
    """Where ``person`` truly is at each of ``n_steps`` steps, given their trips."""
    home = person.home_city
    city = np.full(n_steps, home, dtype=np.int32)
    in_flight = np.zeros(n_steps, dtype=bool)
    travelling = np.zeros(n_steps, dtype=bool)
    north = np.full(n_steps, person.home_north_km)
    east = np.full(n_steps, person.home_east_km)
    for trip in trips:
        travelling[_clip(trip.depart, trip.back, n_steps)] = True
        city[_clip(trip.depart, trip.leave, n_steps)] = trip.city
        north[_clip(trip.arrive, trip.leave, n_steps)] = trip.north_km
        east[_clip(trip.arrive, trip.leave, n_steps)] = trip.east_km
        in_flight[_clip(trip.depart, trip.arrive, n_steps)] = True
        in_flight[_clip(trip.leave, trip.back, n_steps)] = True
    lat, lon = displace(chooser.lat[city], chooser.lon[city], north, east)
    home_lat, home_lon = displace(
        chooser.lat[home], chooser.lon[home], person.home_north_km, person.home_east_km
    )
    for trip in trips:
        away_lat, away_lon = displace(
            chooser.lat[trip.city], chooser.lon[trip.city], trip.north_km, trip.east_km
        )
        _fly(lat, lon, trip.depart, trip.arrive, (home_lat, home_lon), (away_lat, away_lon))
        _fly(lat, lon, trip.leave, trip.back, (away_lat, away_lon), (home_lat, home_lon))
    return Track(city=city, in_flight=in_flight, travelling=travelling, lat=lat, lon=lon)


def _fly(
    lat: np.ndarray,
    lon: np.ndarray,
    start: int,
    end: int,
    origin: tuple[float, float],
    destination: tuple[float, float],
) -> None:
    """Write the great-circle positions of a flight over steps [start, end) into lat/lon."""
    steps = np.arange(max(start, 0), min(end, len(lat)))
    if len(steps) == 0:
        return
    fraction = (steps - start + 0.5) / (end - start)
    lat[steps], lon[steps] = great_circle_path(*origin, *destination, fraction)


def _clip(start: int, end: int, n_steps: int) -> slice:
    return slice(min(max(start, 0), n_steps), min(max(end, 0), n_steps))
