"""The simulated world: users living and travelling among real cities, served by cloud regions.

A :class:`World` is fixed by its :class:`WorldConfig` (and the settings): who its users are,
where they travel and what they demand, at every step of the simulated period. It exposes the
ground truth (:meth:`World.truth`: true position and demand, now and in the future) separately
from what a monitoring system would record (:meth:`World.telemetry`: rows of the telemetry
schema, with GPS or IP-derived positions and measured latency). Every random aspect of a user's
life draws from that user's own stream, so any block or window of the world is a slice of the
same lives; users are simulated in blocks, and a few blocks are kept in memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.io import clear_dataset, write_telemetry_part
from core.latency import LatencyModel, great_circle_km
from core.region_load import background_utilisation
from core.regions import RegionCatalogue, load_regions
from core.schema import APPS, GEO_SOURCES, RESOURCE_COLUMNS
from core.settings import Settings, get_settings
from simulation.activity import simulate_activity
from simulation.clock import MINUTES_PER_DAY, LocalClock
from simulation.geo import IpPool, displace, load_cities, load_ip_pool
from simulation.population import (
    CityChooser,
    Person,
    PopulationSpec,
    draw_person,
    traveller_probabilities,
)
from simulation.randomness import Stream, user_rng
from simulation.roles import ROLE_DEFINITIONS, ROLES_BY_NAME
from simulation.travel import plan_trips, track

IP_CHOICES = 4  # addresses near a city among which each user gets one
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
USER_ID_DIGITS = 5


@dataclass(frozen=True)
class WorldConfig:
    """What defines a world; ``None`` fields take their value from the settings."""

    users: int
    days: int
    seed: int
    start: str | None = None  # first day (UTC), YYYY-MM-DD
    interval_minutes: int | None = None
    traveller_share: float | None = None  # share of travelling users (roles keep their order)
    role_mix: Mapping[str, float] | None = None  # weight per role; default: the roles' shares
    gps_share: float | None = None  # share of users whose clients report GPS

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1:
            raise ValueError("a world needs at least one user and one day")
        if self.seed < 0:
            raise ValueError("seed must be non-negative")
        if self.traveller_share is not None and not 0.0 <= self.traveller_share <= 1.0:
            raise ValueError("traveller_share must lie in [0, 1]")
        if self.role_mix is not None:
            unknown = set(self.role_mix) - set(ROLES_BY_NAME)
            if unknown or sum(self.role_mix.values()) <= 0:
                raise ValueError(f"role_mix needs positive weights of known roles; got {unknown}")


@dataclass(frozen=True)
class GroundTruth:
    """What truly happens, arrays shaped (users, steps) unless noted."""

    user_ids: np.ndarray  # (users,) str
    times: pd.DatetimeIndex  # (steps,) UTC interval starts
    lat: np.ndarray  # true position, degrees (along the great circle while flying)
    lon: np.ndarray
    city: np.ndarray  # index into World.cities: where the user is, or is flying to
    travelling: np.ndarray  # away from home, flights included
    in_flight: np.ndarray
    session_active: np.ndarray
    app: np.ndarray  # int16 code into core.schema.APPS
    data_access_count: np.ndarray
    cpu_cores: np.ndarray
    ram_gb: np.ndarray
    storage_iops: np.ndarray
    network_mbps: np.ndarray


# Fields of GroundTruth that are (users, steps) arrays.
TRUTH_ARRAYS: tuple[str, ...] = tuple(
    f.name for f in fields(GroundTruth) if f.name not in ("user_ids", "times")
)


@dataclass(frozen=True)
class _Observation:
    """What the monitoring sees of a block's position (full period, users × steps)."""

    lat: np.ndarray  # GPS fix or the IP's database location; NaN in flight
    lon: np.ndarray
    ip: np.ndarray  # int32 index into the IP pool, -1 where no client is online (in flight)


@dataclass
class SimulationSummary:
    """What :meth:`World.write` produced."""

    rows: int
    users: int
    days: int
    seconds: float
    out: Path
    files: list[Path] = field(default_factory=list)


class World:
    """Users, regions and their lives over a fixed period; see the module docstring."""

    def __init__(self, config: WorldConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings if settings is not None else get_settings()
        sim = self.settings.simulation
        self.interval_minutes = config.interval_minutes or sim.interval_minutes
        start = pd.Timestamp(config.start or sim.start, tz="UTC")
        n_steps = config.days * MINUTES_PER_DAY // self.interval_minutes
        self.times = pd.date_range(start, periods=n_steps, freq=f"{self.interval_minutes}min")
        self.catalogue: RegionCatalogue = load_regions(self.settings.regions_file)
        self.cities: pd.DataFrame = load_cities(sim.min_city_population)
        self._chooser = CityChooser(
            self.cities,
            self.catalogue.nearest(self.cities["lat"], self.cities["lon"]),
            sim.continent_weights,
        )
        self._clock = LocalClock(self.times, self.interval_minutes, self.cities["timezone"])
        self._people = self._draw_people()
        self._trips = [
            plan_trips(p, config.seed, self._clock, self._chooser, n_steps) for p in self._people
        ]
        self.user_ids = user_id_labels(config.users)
        home_lat, home_lon = self._home_positions()
        self.home_region = self.catalogue.nearest(home_lat, home_lon)
        self.users = self._users_frame(home_lat, home_lon)
        self._utilisation = background_utilisation(self.catalogue, self.times, config.seed)
        self._latency_model = LatencyModel(self.settings.latency)
        self._ip_pool: IpPool = load_ip_pool(
            sim.ip_pool_size, self.settings.seed, self.settings.cache_dir
        )
        self._city_ips: dict[int, np.ndarray] = {}
        self._blocks: OrderedDict[int, tuple[GroundTruth, _Observation]] = OrderedDict()

    # ----- who lives here ---------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.config.users

    @property
    def n_steps(self) -> int:
        """Number of simulated intervals."""
        return len(self.times)

    @property
    def trips(self) -> pd.DataFrame:
        """Every trip (ground truth): user, destination, and the UTC times of the four legs."""
        rows = [
            {
                "user_id": self.user_ids[p.index],
                "destination": self.cities["name"].iat[t.city],
                "destination_country": self.cities["country"].iat[t.city],
                "habitual": t.habitual,
                "depart": self._time_at(t.depart),
                "arrive": self._time_at(t.arrive),
                "leave": self._time_at(t.leave),
                "back": self._time_at(t.back),
            }
            for p, trips in zip(self._people, self._trips, strict=True)
            for t in trips
        ]
        return pd.DataFrame(rows)

    def _draw_people(self) -> list[Person]:
        sim = self.settings.simulation
        mix_by_name = self.config.role_mix or {r.name: r.share for r in ROLE_DEFINITIONS}
        mix = np.array([mix_by_name.get(r.name, 0.0) for r in ROLE_DEFINITIONS], dtype=np.float64)
        mix /= mix.sum()
        propensity = np.array([r.travel.propensity for r in ROLE_DEFINITIONS])
        share = self.config.traveller_share
        spec = PopulationSpec(
            role_mix=mix,
            traveller_probability=traveller_probabilities(
                mix, propensity, share if share is not None else sim.traveller_share
            ),
            continent_weights=sim.continent_weights,
            gps_share=self.config.gps_share if self.config.gps_share is not None else sim.gps_share,
            personal_sigma=sim.personal_sigma,
            drift_per_month_sd=sim.drift_per_month_sd,
        )
        return [draw_person(i, self.config.seed, spec, self._chooser) for i in range(self.n_users)]

    def _home_positions(self) -> tuple[np.ndarray, np.ndarray]:
        home = np.array([p.home_city for p in self._people])
        return displace(
            self._chooser.lat[home],
            self._chooser.lon[home],
            np.array([p.home_north_km for p in self._people]),
            np.array([p.home_east_km for p in self._people]),
        )

    def _users_frame(self, home_lat: np.ndarray, home_lon: np.ndarray) -> pd.DataFrame:
        cities = self.cities
        home = np.array([p.home_city for p in self._people])
        names = cities["name"].to_numpy()
        return pd.DataFrame(
            {
                "user_id": self.user_ids,
                "role": [p.role_definition.name for p in self._people],
                "home_city": names[home],
                "home_country": cities["country"].to_numpy()[home],
                "home_continent": cities["continent"].to_numpy()[home],
                "home_timezone": cities["timezone"].to_numpy()[home],
                "home_lat": home_lat,
                "home_lon": home_lon,
                "home_region": np.array(self.catalogue.codes)[self.home_region],
                "gps": [p.gps for p in self._people],
                "traveller": [p.traveller for p in self._people],
                "favourite_destinations": [
                    tuple(names[h.city] for h in p.habits) for p in self._people
                ],
                "work_start_hour": [p.start_minute / 60.0 for p in self._people],
                "workdays": [
                    ",".join(d for d, w in zip(WEEKDAY_NAMES, p.workdays, strict=True) if w)
                    for p in self._people
                ],
                "trips": [len(t) for t in self._trips],
            }
        )

    def _time_at(self, step: int) -> pd.Timestamp:
        return self.times[0] + pd.Timedelta(minutes=step * self.interval_minutes)

    # ----- ground truth -----------------------------------------------------------------------

    def truth(
        self, users: slice | np.ndarray | None = None, steps: slice | None = None
    ) -> GroundTruth:
        """The ground truth of ``users`` (indices or a slice) over ``steps`` (a slice).

        A window is a slice of the same lives: the values at a step do not depend on which
        window or which other users were asked for.
        """
        rows, window = self._select(users, steps)
        arrays = self._gather(rows, window, lambda truth, _: truth, TRUTH_ARRAYS)
        return GroundTruth(user_ids=self.user_ids[rows], times=self.times[window], **arrays)

    def _select(
        self, users: slice | np.ndarray | None, steps: slice | None
    ) -> tuple[np.ndarray, slice]:
        all_users = np.arange(self.n_users)
        if users is None or isinstance(users, slice):
            rows = all_users[users if users is not None else slice(None)]
        else:
            rows = np.asarray(users, dtype=np.int64).ravel()
            if rows.size and (rows.min() < 0 or rows.max() >= self.n_users):
                raise IndexError(f"user indices must lie in [0, {self.n_users})")
        start, stop, stride = (steps or slice(None)).indices(self.n_steps)
        if stride != 1:
            raise ValueError("steps must be a contiguous slice")
        return rows, slice(start, max(start, stop))

    def _gather(
        self,
        rows: np.ndarray,
        window: slice,
        part: Callable[[GroundTruth, _Observation], object],
        names: tuple[str, ...],
    ) -> dict[str, np.ndarray]:
        """Named (users, steps) arrays of ``part`` of each block, for ``rows`` over ``window``."""
        block_size = self.settings.simulation.block_users
        out: dict[str, np.ndarray] = {}
        for block in dict.fromkeys((rows // block_size).tolist()):
            truth, observation = self._block(block)
            selected = np.flatnonzero(rows // block_size == block)
            local_rows = rows[selected] - block * block_size
            source = part(truth, observation)
            for name in names:
                values = getattr(source, name)
                if name not in out:
                    out[name] = np.empty((len(rows), window.stop - window.start), values.dtype)
                out[name][selected] = values[local_rows, window]
        if not out:
            return {n: np.empty((0, window.stop - window.start)) for n in names}
        return out

    def _block(self, block: int) -> tuple[GroundTruth, _Observation]:
        """The lives of one block of users over the whole period (simulated once, then cached)."""
        if block in self._blocks:
            self._blocks.move_to_end(block)
            return self._blocks[block]
        size = self.settings.simulation.block_users
        people = self._people[block * size : (block + 1) * size]
        lives = self._simulate(people)
        self._blocks[block] = lives
        while len(self._blocks) > self.settings.simulation.cached_blocks:
            self._blocks.popitem(last=False)
        return lives

    def _simulate(self, people: list[Person]) -> tuple[GroundTruth, _Observation]:
        sim = self.settings.simulation
        tracks = [track(p, self._trips[p.index], self._chooser, self.n_steps) for p in people]
        city = np.stack([t.city for t in tracks])
        in_flight = np.stack([t.in_flight for t in tracks])
        activity = simulate_activity(
            people,
            city,
            in_flight,
            self._clock,
            self.config.seed,
            {"cpu_cores": sim.max_cpu_cores, "ram_gb": sim.max_ram_gb},
        )
        truth = GroundTruth(
            user_ids=self.user_ids[[p.index for p in people]],
            times=self.times,
            lat=np.stack([t.lat for t in tracks]),
            lon=np.stack([t.lon for t in tracks]),
            city=city,
            travelling=np.stack([t.travelling for t in tracks]),
            in_flight=in_flight,
            session_active=activity.session_active,
            app=activity.app,
            data_access_count=activity.data_access_count,
            **{name: activity.demand[k] for k, name in enumerate(RESOURCE_COLUMNS)},
        )
        return truth, self._observe(people, truth)

    # ----- what monitoring sees ---------------------------------------------------------------

    def _observe(self, people: list[Person], truth: GroundTruth) -> _Observation:
        """GPS fixes (true position + a few tens of metres) or the client IP's location."""
        pool = self._ip_pool
        low, high = self.settings.simulation.gps_error_m
        lat, lon = truth.lat.copy(), truth.lon.copy()
        ip = np.empty(truth.city.shape, dtype=np.int32)
        for row, person in enumerate(people):
            for city in np.unique(truth.city[row]):
                chosen = user_rng(self.config.seed, person.index, Stream.IP_ADDRESS, int(city))
                candidates = self._ips_near(int(city))
                ip[row, truth.city[row] == city] = candidates[chosen.integers(len(candidates))]
            if person.gps:
                radius_m, bearing = user_rng(
                    self.config.seed, person.index, Stream.OBSERVATION
                ).random((2, self.n_steps))
                radius_km = (low + (high - low) * radius_m) / 1000.0
                angle = 2 * np.pi * bearing
                lat[row], lon[row] = displace(
                    lat[row], lon[row], radius_km * np.cos(angle), radius_km * np.sin(angle)
                )
            else:
                lat[row], lon[row] = pool.lat[ip[row]], pool.lon[ip[row]]
        ip[truth.in_flight] = -1
        lat[truth.in_flight] = np.nan
        lon[truth.in_flight] = np.nan
        return _Observation(lat=lat, lon=lon, ip=ip)

    def _ips_near(self, city: int) -> np.ndarray:
        if city not in self._city_ips:
            row = self.cities.iloc[city]
            self._city_ips[city] = self._ip_pool.near(
                row["lat"], row["lon"], row["country"], IP_CHOICES
            )
        return self._city_ips[city]

    def telemetry(
        self,
        users: slice | np.ndarray | None = None,
        steps: slice | None = None,
        serving_region: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Telemetry rows (schema of ``core.schema``) of ``users`` over ``steps``.

        ``serving_region`` holds region indices shaped (users, steps); by default each user is
        served from the region nearest their home. Rows are ordered by user, then time.
        """
        rows, window = self._select(users, steps)
        truth = self.truth(rows, window)
        seen = self._gather(rows, window, lambda _, observation: observation, ("lat", "lon", "ip"))
        serving = self._serving(rows, window, serving_region)
        latency = self._latency(rows, window, truth, serving)
        return self._frame(rows, truth, seen, serving, latency)

    def _serving(
        self, rows: np.ndarray, window: slice, serving_region: np.ndarray | None
    ) -> np.ndarray:
        shape = (len(rows), window.stop - window.start)
        if serving_region is None:
            return np.broadcast_to(self.home_region[rows][:, None], shape)
        serving = np.asarray(serving_region)
        if serving.shape != shape:
            raise ValueError(f"serving_region must have shape {shape}, got {serving.shape}")
        if serving.size and (serving.min() < 0 or serving.max() >= len(self.catalogue)):
            raise ValueError(f"serving_region indices must lie in [0, {len(self.catalogue)})")
        return serving.astype(np.int64)

    def _latency(
        self, rows: np.ndarray, window: slice, truth: GroundTruth, serving: np.ndarray
    ) -> np.ndarray:
        """Measured round trips (NaN without a session); probe noise is drawn per user and day,
        over the whole day, so a step's measurement does not depend on the window asked for."""
        distance = great_circle_km(
            truth.lat, truth.lon, self.catalogue.lat[serving], self.catalogue.lon[serving]
        )
        utilisation = self._utilisation[np.arange(window.start, window.stop)[None, :], serving]
        latency = np.full(distance.shape, np.nan)
        day_steps = max(1, MINUTES_PER_DAY // self.interval_minutes)
        first_day, last_day = window.start // day_steps, (window.stop - 1) // day_steps
        for row, user in enumerate(rows):
            for day in range(first_day, last_day + 1):
                day_start, day_stop = day * day_steps, min((day + 1) * day_steps, self.n_steps)
                lo, hi = max(day_start, window.start), min(day_stop, window.stop)
                whole_day = np.zeros(day_stop - day_start)
                inside = slice(lo - day_start, hi - day_start)
                outside = slice(lo - window.start, hi - window.start)
                load = whole_day.copy()
                whole_day[inside] = distance[row, outside]
                load[inside] = utilisation[row, outside]
                rng = user_rng(self.config.seed, int(user), Stream.LATENCY, day)
                latency[row, outside] = self._latency_model.sample_ms(whole_day, load, rng)[inside]
        latency[~truth.session_active] = np.nan
        return latency

    def _frame(
        self,
        rows: np.ndarray,
        truth: GroundTruth,
        seen: dict[str, np.ndarray],
        serving: np.ndarray,
        latency: np.ndarray,
    ) -> pd.DataFrame:
        n_users, n_steps = truth.session_active.shape
        user_of_row = np.repeat(np.arange(n_users), n_steps)
        roles = self.users["role"].to_numpy()[rows]
        gps = self.users["gps"].to_numpy()[rows]
        offline = seen["ip"] < 0
        source = np.where(gps[:, None], GEO_SOURCES.index("gps"), GEO_SOURCES.index("ip"))
        source = np.broadcast_to(source, offline.shape)
        timestamps = np.tile(truth.times.as_unit("ns").asi8, n_users).view("datetime64[ns]")
        return pd.DataFrame(
            {
                "user_id": _strings(truth.user_ids, user_of_row),
                "event_timestamp": pd.DatetimeIndex(timestamps).tz_localize("UTC"),
                "role": _strings(roles, user_of_row),
                "app": _strings(APPS, truth.app.ravel()),
                "session_active": truth.session_active.ravel(),
                "data_access_count": truth.data_access_count.ravel(),
                "lat": seen["lat"].ravel(),
                "lon": seen["lon"].ravel(),
                "geo_source": _strings(GEO_SOURCES, source.ravel(), offline.ravel()),
                "client_ip": _strings(self._ip_pool.addresses, seen["ip"].ravel(), offline.ravel()),
                "serving_region": _strings(self.catalogue.codes, serving.ravel()),
                "latency_ms": latency.ravel(),
                **{name: getattr(truth, name).ravel() for name in RESOURCE_COLUMNS},
            }
        )

    # ----- writing ----------------------------------------------------------------------------

    def write(
        self, out_dir: Path, progress: Callable[[int, int], None] | None = None
    ) -> SimulationSummary:
        """Write the whole world's telemetry as a Parquet dataset, one part per user block."""
        started = time.perf_counter()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        clear_dataset(out_dir)
        size = self.settings.simulation.block_users
        files, rows = [], 0
        for index, first in enumerate(range(0, self.n_users, size)):
            users = slice(first, min(first + size, self.n_users))
            frame = self.telemetry(users)
            files.append(write_telemetry_part(frame, out_dir, index))
            rows += len(frame)
            self._blocks.pop(index, None)  # a full write reads each block once
            if progress is not None:
                progress(users.stop, self.n_users)
        return SimulationSummary(
            rows=rows,
            users=self.n_users,
            days=self.config.days,
            seconds=time.perf_counter() - started,
            out=out_dir,
            files=files,
        )


def simulate(
    users: int,
    days: int,
    seed: int,
    out: Path,
    start: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate a world and write its telemetry to ``out`` (what ``prewarm simulate`` runs)."""
    started = time.perf_counter()
    world = World(WorldConfig(users=users, days=days, seed=seed, start=start))
    summary = world.write(out, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def user_id_labels(count: int) -> np.ndarray:
    """User ids ``u00000``, ``u00001``, ...: zero-padded to one width, so they sort naturally."""
    width = max(USER_ID_DIGITS, len(str(count - 1)))
    return np.array([f"u{i:0{width}d}" for i in range(count)])


def _strings(values: object, codes: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    """A string column taking ``values[codes]`` (null where ``missing``), built in Arrow."""
    dictionary = pa.array(list(values), type=pa.large_string())
    indices = pa.array(codes.astype(np.int32), mask=missing)
    return pd.Series(pd.arrays.ArrowStringArray(dictionary.take(indices)))
