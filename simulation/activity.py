"""What users do, vectorised over a block of users × steps: sessions, applications, demand.

Sessions follow each user's working hours in the local time of wherever they are, with daily
noise, days off and the odd off-hours session; there is no session in flight. The application
in front is sticky within a session and changes now and then; bursts (a training run, a render)
put the role's burst application in front and multiply demand. Demand is the role's median ×
the user's personal factors × the application's profile × a diurnal curve × a slow personal
trend × autocorrelated lognormal noise, and exactly zero without a session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtri

from core.schema import APPS, RESOURCE_COLUMNS
from simulation.clock import MINUTES_PER_DAY, LocalClock, weekday
from simulation.population import Person
from simulation.randomness import Stream, stacked_draws, user_rng
from simulation.roles import APP_PROFILES, ROLE_DEFINITIONS

IDLE = APPS.index("idle")
DAY_OFF_PROB = 0.03  # sick days, holidays and errands: no main session that day
START_NOISE_MIN = 20.0  # day-to-day spread of the start of the working day
END_NOISE_MIN = 30.0
EVENING_START_HOUR, EVENING_SPAN_H = 19.0, 3.0  # off-hours sessions on workdays
WEEKEND_START_HOUR, WEEKEND_SPAN_H = 10.0, 8.0  # off-hours sessions on days off
OFF_HOURS_MINUTES = (20.0, 90.0)
APP_DWELL_MINUTES = 45.0  # mean time an application stays in front
NOISE_AUTOCORRELATION = 0.7  # lag-one correlation of the demand noise
RAM_NOISE_SHARE = 0.5  # memory in use is steadier than CPU, I/O and network
BURST_ACCESS_FACTOR = 1.5
DAYS_PER_MONTH = 30.44

# Per application (rows: APPS), per resource (columns: RESOURCE_COLUMNS); idle/unknown are 0.
APP_LOAD = np.array(
    [APP_PROFILES[a].load.as_array() if a in APP_PROFILES else np.zeros(4) for a in APPS]
)
APP_ACCESS = np.array([APP_PROFILES[a].data_access if a in APP_PROFILES else 0.0 for a in APPS])


@dataclass(frozen=True)
class Activity:
    """A block's activity: arrays shaped (users, steps); demand is (resources, users, steps)."""

    session_active: np.ndarray
    app: np.ndarray  # int16 codes into core.schema.APPS
    in_burst: np.ndarray
    demand: np.ndarray
    data_access_count: np.ndarray


def simulate_activity(
    people: Sequence[Person],
    city: np.ndarray,
    in_flight: np.ndarray,
    clock: LocalClock,
    seed: int,
    caps: Mapping[str, float],
) -> Activity:
    """Sessions, applications, demand and data accesses of ``people`` over the whole grid."""
    local = clock.local_minutes(city)
    active = sessions(people, local, in_flight, clock, seed)
    app, in_burst = applications(people, active, seed, clock.interval_minutes)
    intensity = diurnal(local) * trend(people, city.shape[1], clock.interval_minutes)
    demand = resource_demand(people, app, in_burst, active, intensity, seed, caps)
    accesses = data_accesses(people, app, in_burst, active, intensity, seed, clock.interval_minutes)
    return Activity(active, app, in_burst, demand, accesses)


def sessions(
    people: Sequence[Person],
    local_minutes: np.ndarray,
    in_flight: np.ndarray,
    clock: LocalClock,
    seed: int,
) -> np.ndarray:
    """Whether each user has a session open at each step (bool, users × steps)."""
    first_day = int(clock.utc_minutes[0] // MINUTES_PER_DAY) - 2  # no zone is 2 days ahead/behind
    n_days = int(clock.utc_minutes[-1] // MINUTES_PER_DAY) + 3 - first_day
    days = first_day + np.arange(n_days)
    draws = stacked_draws(
        seed, [p.index for p in people], Stream.SCHEDULE, lambda r: r.random((6, n_days))
    )
    start_z, end_z = _normal(draws[:, 0]), _normal(draws[:, 1])
    day_off, off_hours, off_start, off_length = draws[:, 2], draws[:, 3], draws[:, 4], draws[:, 5]

    habitual_start = np.array([p.start_minute for p in people])[:, None]
    day_minutes = np.array([p.day_minutes for p in people])[:, None]
    week = np.array([p.workdays for p in people])
    works_today = week[:, weekday(days)]
    start = habitual_start + START_NOISE_MIN * start_z
    end = habitual_start + day_minutes + END_NOISE_MIN * end_z
    works = works_today & (day_off >= DAY_OFF_PROB)

    off_prob = np.array([p.role_definition.schedule.off_hours_session_prob for p in people])[
        :, None
    ]
    extra = off_hours < off_prob
    extra_start = np.where(
        works_today,
        (EVENING_START_HOUR + EVENING_SPAN_H * off_start) * 60,
        (WEEKEND_START_HOUR + WEEKEND_SPAN_H * off_start) * 60,
    )
    extra_end = extra_start + OFF_HOURS_MINUTES[0] + np.diff(OFF_HOURS_MINUTES)[0] * off_length

    day = local_minutes // MINUTES_PER_DAY - first_day
    minute = local_minutes % MINUTES_PER_DAY

    def on(values: np.ndarray, offset: int = 0) -> np.ndarray:
        return np.take_along_axis(values, day - offset, axis=1)

    today = on(works) & (minute >= on(start)) & (minute < on(end))
    yesterday = (
        on(works, 1)
        & (minute + MINUTES_PER_DAY >= on(start, 1))
        & (minute + MINUTES_PER_DAY < on(end, 1))
    )
    evening = on(extra) & (minute >= on(extra_start)) & (minute < on(extra_end))
    return (today | yesterday | evening) & ~in_flight


def applications(
    people: Sequence[Person], active: np.ndarray, seed: int, interval_minutes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The application in front (int16 codes into APPS) and whether a burst is on."""
    n_users, n_steps = active.shape
    draws = stacked_draws(
        seed, [p.index for p in people], Stream.APPS, lambda r: r.random((3, n_steps))
    )
    switch_u, pick_u, burst_u = draws[:, 0], draws[:, 1], draws[:, 2]

    started = active & ~np.pad(active, ((0, 0), (1, 0)))[:, :-1]
    switch = started | (switch_u < interval_minutes / APP_DWELL_MINUTES)
    switch[:, 0] = True
    candidate = np.empty((n_users, n_steps), dtype=np.int16)
    roles = np.array([p.role for p in people])
    for role_index in np.unique(roles):
        mix = ROLE_DEFINITIONS[role_index].app_mix
        codes = np.array([APPS.index(a) for a in mix], dtype=np.int16)
        weights = np.array(list(mix.values()), dtype=np.float64)
        cdf = np.cumsum(weights) / weights.sum()
        rows = roles == role_index
        picks = np.minimum(np.searchsorted(cdf, pick_u[rows], side="right"), len(codes) - 1)
        candidate[rows] = codes[picks]
    last_switch = np.maximum.accumulate(np.where(switch, np.arange(n_steps), 0), axis=1)
    app = np.take_along_axis(candidate, last_switch, axis=1)

    bursts = [p.role_definition.bursts for p in people]
    day_steps = np.array([p.day_minutes for p in people]) / interval_minutes
    start_prob = np.array([b.per_day for b in bursts]) / day_steps
    length = np.array([max(1, round(b.minutes / interval_minutes)) for b in bursts])
    in_burst = active & _recently(active & (burst_u < start_prob[:, None]), length)
    burst_app = np.array([APPS.index(b.app) for b in bursts], dtype=np.int16)
    app = np.where(in_burst, burst_app[:, None], app)
    return np.where(active, app, IDLE).astype(np.int16), in_burst


def diurnal(local_minutes: np.ndarray) -> np.ndarray:
    """Work intensity by local hour: a late-morning peak and a smaller mid-afternoon one."""
    hour = (local_minutes % MINUTES_PER_DAY) / 60.0
    return (
        0.75
        + 0.35 * np.exp(-0.5 * ((hour - 10.5) / 1.6) ** 2)
        + 0.25 * np.exp(-0.5 * ((hour - 15.0) / 1.6) ** 2)
    )


def trend(people: Sequence[Person], n_steps: int, interval_minutes: int) -> np.ndarray:
    """Each user's slow drift of demand over the weeks (users × steps, 1 at the start)."""
    months = np.arange(n_steps) * interval_minutes / (MINUTES_PER_DAY * DAYS_PER_MONTH)
    drift = np.array([p.drift_per_month for p in people])
    return np.exp(drift[:, None] * months[None, :])


def resource_demand(
    people: Sequence[Person],
    app: np.ndarray,
    in_burst: np.ndarray,
    active: np.ndarray,
    intensity: np.ndarray,
    seed: int,
    caps: Mapping[str, float],
) -> np.ndarray:
    """Demand per resource (resources × users × steps), zero without a session and never above
    the per-user ``caps`` (by resource name) a region can offer."""
    n_steps = app.shape[1]
    noise = stacked_draws(
        seed, [p.index for p in people], Stream.DEMAND, lambda r: r.standard_normal((4, n_steps))
    )
    noise = _autocorrelated(noise)
    roles = [p.role_definition for p in people]
    base = np.array([r.demand.as_array() for r in roles]) * np.array(
        [p.multipliers[:4] for p in people]
    )
    burst_factor = np.array([r.bursts.factor.as_array() for r in roles])
    sigma = np.array([r.noise for r in roles])
    demand = np.empty((len(RESOURCE_COLUMNS), *app.shape))
    for k, resource in enumerate(RESOURCE_COLUMNS):
        scale = sigma * (RAM_NOISE_SHARE if resource == "ram_gb" else 1.0)
        level = (
            base[:, k, None]
            * APP_LOAD[app, k]
            * np.where(in_burst, burst_factor[:, k, None], 1.0)
            * intensity
            * np.exp(scale[:, None] * noise[:, k])
        )
        if resource in caps:
            level = np.minimum(level, caps[resource])
        demand[k] = np.where(active, level, 0.0)
    return demand


def data_accesses(
    people: Sequence[Person],
    app: np.ndarray,
    in_burst: np.ndarray,
    active: np.ndarray,
    intensity: np.ndarray,
    seed: int,
    interval_minutes: int,
) -> np.ndarray:
    """Data accesses per interval (int64, users × steps): Poisson, zero without a session."""
    rate = np.array([p.role_definition.data_access_per_minute * p.multipliers[4] for p in people])
    mean = (
        rate[:, None]
        * interval_minutes
        * APP_ACCESS[app]
        * np.where(in_burst, BURST_ACCESS_FACTOR, 1.0)
        * intensity
        * active
    )
    counts = np.empty(app.shape, dtype=np.int64)
    for row, person in enumerate(people):
        counts[row] = user_rng(seed, person.index, Stream.DATA_ACCESS).poisson(mean[row])
    return counts


def _recently(starts: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Whether a start happened within the last ``length`` steps (per row), current included."""
    _n_users, n_steps = starts.shape
    counts = np.pad(np.cumsum(starts, axis=1, dtype=np.int32), ((0, 0), (1, 0)))
    since = np.maximum(np.arange(n_steps)[None, :] + 1 - length[:, None], 0)
    return counts[:, 1:] - np.take_along_axis(counts, since, axis=1) > 0


def _autocorrelated(noise: np.ndarray) -> np.ndarray:
    """Turn white unit-variance noise into a stationary AR(1) with unit variance, along time."""
    phi = NOISE_AUTOCORRELATION
    gain = np.sqrt(1.0 - phi**2)
    noise = noise.copy()
    noise[..., 0] /= gain  # start in the stationary distribution
    return lfilter([gain], [1.0, -phi], noise, axis=-1)


def _normal(uniform: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of uniforms (keeps one draw per slot in the schedule stream)."""
    return ndtri(np.clip(uniform, 1e-12, 1 - 1e-12))
