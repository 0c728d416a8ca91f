"""Who the simulated users are: each role's applications, demand, hours and travel, as plain data.

A role is a description, not code: :class:`Role` bundles the role's share of the workforce, its
application mix, the median demand of an active interval, its working hours, its bursts and its
travel habits. :data:`APP_PROFILES` says how each application scales the role's demand. The
activity and travel modules turn these descriptions into lives; change the numbers here to
change the world.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from core.schema import APPS, RESOURCE_COLUMNS, ROLES


@dataclass(frozen=True)
class Load:
    """One amount (or multiplier) per resource, in the order of ``core.schema.RESOURCE_COLUMNS``."""

    cpu_cores: float
    ram_gb: float
    storage_iops: float
    network_mbps: float

    def as_array(self) -> np.ndarray:
        """The four values as a float64 array in ``RESOURCE_COLUMNS`` order."""
        return np.array([getattr(self, name) for name in RESOURCE_COLUMNS], dtype=np.float64)


@dataclass(frozen=True)
class AppProfile:
    """How an application scales a role's demand and data-access rate while it is in front."""

    load: Load
    data_access: float


@dataclass(frozen=True)
class WorkSchedule:
    """Working hours in the user's local time zone and how often they work off-hours."""

    start_hour: float  # typical local start of the working day
    start_spread_h: float  # spread of the habitual start between users of the role
    day_hours: float  # typical length of the working day
    shift_starts: tuple[float, ...] = ()  # shift work: each user keeps one of these starts
    weekend_rota_share: float = 0.0  # share of users whose five workdays include the weekend
    off_hours_session_prob: float = 0.05  # chance per day of a short session off-hours


@dataclass(frozen=True)
class Bursts:
    """Short demand spikes (a training run, a render) during a session."""

    app: str  # the application in front during a burst
    per_day: float  # expected bursts per working day
    minutes: float  # length of one burst
    factor: Load  # extra multiplier on demand during a burst


@dataclass(frozen=True)
class TravelHabits:
    """How much a role travels: who travels, how habitually, and for how long."""

    propensity: float  # share of the role's users who travel at all
    every_weeks: tuple[int, ...] = (2, 4)  # cycle of a habitual trip to a favourite destination
    stay_days: tuple[int, int] = (2, 5)  # range of nights at a destination (inclusive)
    oneoff_per_month: float = 0.3  # unplanned trips of a traveller, per month
    favourites: tuple[int, int] = (1, 3)  # range of favourite destinations per traveller
    other_region_share: float = 0.75  # favourites outside the home region's catchment
    attend_prob: float = 0.85  # chance a due habitual trip actually happens
    depart_weekdays: tuple[int, ...] = (0, 1, 2, 3)  # habitual departure days (Monday = 0)
    depart_hours: tuple[float, float] = (6.0, 9.5)  # local departure time range
    return_hours: tuple[float, float] = (15.0, 19.5)  # local time of the flight home


@dataclass(frozen=True)
class Role:
    """Everything that distinguishes one role's users from another's."""

    name: str
    share: float  # share of the workforce
    app_mix: Mapping[str, float]  # weight of each application while working
    demand: Load  # median demand of an active interval, before app, person and time factors
    noise: float  # lognormal sigma of interval-to-interval demand noise
    data_access_per_minute: float  # mean data accesses per active minute
    schedule: WorkSchedule
    bursts: Bursts
    travel: TravelHabits = field(default_factory=lambda: TravelHabits(propensity=0.05))


APP_PROFILES: dict[str, AppProfile] = {
    "ide": AppProfile(Load(1.2, 1.1, 1.3, 0.6), 1.0),
    "browser": AppProfile(Load(0.6, 0.8, 0.4, 1.0), 0.6),
    "office": AppProfile(Load(0.5, 0.7, 0.6, 0.4), 0.8),
    "email": AppProfile(Load(0.3, 0.5, 0.3, 0.6), 0.5),
    "video_conference": AppProfile(Load(0.9, 0.8, 0.2, 4.0), 0.1),
    "crm": AppProfile(Load(0.5, 0.7, 0.8, 0.8), 1.5),
    "ml_training": AppProfile(Load(3.5, 2.5, 2.5, 1.5), 2.0),
    "data_analytics": AppProfile(Load(1.6, 1.8, 2.0, 0.8), 2.5),
    "cad_render": AppProfile(Load(2.5, 1.8, 1.5, 2.5), 1.0),
    "remote_desktop": AppProfile(Load(0.8, 0.9, 0.5, 2.5), 0.8),
    "ticketing": AppProfile(Load(0.5, 0.6, 0.7, 0.6), 1.5),
}

ROLE_DEFINITIONS: tuple[Role, ...] = (
    Role(
        name="software_engineer",
        share=0.25,
        app_mix={
            "ide": 0.45,
            "browser": 0.2,
            "video_conference": 0.1,
            "email": 0.08,
            "remote_desktop": 0.07,
            "office": 0.05,
        },
        demand=Load(2.0, 8.0, 150.0, 5.0),
        noise=0.3,
        data_access_per_minute=0.8,
        schedule=WorkSchedule(
            start_hour=9.5, start_spread_h=0.9, day_hours=8.5, off_hours_session_prob=0.12
        ),
        bursts=Bursts("ide", per_day=3.0, minutes=15.0, factor=Load(2.5, 1.3, 2.5, 1.0)),
        travel=TravelHabits(
            propensity=0.05, every_weeks=(4,), stay_days=(2, 4), oneoff_per_month=0.2
        ),
    ),
    Role(
        name="data_scientist",
        share=0.10,
        app_mix={
            "data_analytics": 0.35,
            "ide": 0.2,
            "ml_training": 0.15,
            "browser": 0.12,
            "video_conference": 0.08,
            "email": 0.05,
            "office": 0.05,
        },
        demand=Load(4.0, 16.0, 400.0, 10.0),
        noise=0.35,
        data_access_per_minute=2.0,
        schedule=WorkSchedule(
            start_hour=9.0, start_spread_h=0.8, day_hours=8.5, off_hours_session_prob=0.10
        ),
        bursts=Bursts("ml_training", per_day=1.5, minutes=90.0, factor=Load(2.0, 1.5, 1.5, 1.0)),
        travel=TravelHabits(
            propensity=0.08, every_weeks=(4,), stay_days=(2, 4), oneoff_per_month=0.2
        ),
    ),
    Role(
        name="sales",
        share=0.15,
        app_mix={
            "crm": 0.3,
            "video_conference": 0.25,
            "email": 0.2,
            "browser": 0.13,
            "office": 0.12,
        },
        demand=Load(0.6, 3.0, 30.0, 4.0),
        noise=0.3,
        data_access_per_minute=0.4,
        schedule=WorkSchedule(
            start_hour=8.0, start_spread_h=0.7, day_hours=9.0, off_hours_session_prob=0.10
        ),
        bursts=Bursts(
            "video_conference", per_day=3.0, minutes=45.0, factor=Load(1.2, 1.0, 1.0, 1.5)
        ),
        travel=TravelHabits(
            propensity=0.7, every_weeks=(1, 2), stay_days=(2, 4), oneoff_per_month=0.5
        ),
    ),
    Role(
        name="executive",
        share=0.05,
        app_mix={
            "email": 0.3,
            "video_conference": 0.3,
            "office": 0.25,
            "browser": 0.1,
            "crm": 0.05,
        },
        demand=Load(0.6, 3.0, 25.0, 4.0),
        noise=0.3,
        data_access_per_minute=0.3,
        schedule=WorkSchedule(
            start_hour=7.5, start_spread_h=0.6, day_hours=10.0, off_hours_session_prob=0.35
        ),
        bursts=Bursts(
            "video_conference", per_day=4.0, minutes=45.0, factor=Load(1.2, 1.0, 1.0, 1.5)
        ),
        travel=TravelHabits(
            propensity=0.6, every_weeks=(2, 4), stay_days=(2, 5), oneoff_per_month=0.4
        ),
    ),
    Role(
        name="designer",
        share=0.08,
        app_mix={
            "cad_render": 0.4,
            "remote_desktop": 0.15,
            "browser": 0.15,
            "office": 0.1,
            "video_conference": 0.1,
            "email": 0.1,
        },
        demand=Load(2.5, 12.0, 200.0, 15.0),
        noise=0.3,
        data_access_per_minute=0.8,
        schedule=WorkSchedule(
            start_hour=9.5, start_spread_h=0.8, day_hours=8.0, off_hours_session_prob=0.06
        ),
        bursts=Bursts("cad_render", per_day=2.0, minutes=40.0, factor=Load(2.0, 1.3, 1.2, 2.0)),
        travel=TravelHabits(
            propensity=0.1, every_weeks=(4,), stay_days=(2, 4), oneoff_per_month=0.2
        ),
    ),
    Role(
        name="support_agent",
        share=0.15,
        app_mix={
            "ticketing": 0.45,
            "crm": 0.25,
            "email": 0.1,
            "browser": 0.1,
            "video_conference": 0.1,
        },
        demand=Load(0.8, 4.0, 60.0, 3.0),
        noise=0.15,
        data_access_per_minute=1.2,
        schedule=WorkSchedule(
            start_hour=6.0,
            start_spread_h=0.15,
            day_hours=8.0,
            shift_starts=(6.0, 14.0, 22.0),
            weekend_rota_share=0.4,
            off_hours_session_prob=0.0,
        ),
        bursts=Bursts("ticketing", per_day=1.0, minutes=20.0, factor=Load(1.3, 1.1, 1.3, 1.1)),
        travel=TravelHabits(
            propensity=0.03, every_weeks=(4,), stay_days=(2, 3), oneoff_per_month=0.1
        ),
    ),
    Role(
        name="field_engineer",
        share=0.10,
        app_mix={
            "remote_desktop": 0.3,
            "ticketing": 0.25,
            "email": 0.15,
            "browser": 0.15,
            "video_conference": 0.1,
            "office": 0.05,
        },
        demand=Load(1.0, 4.0, 80.0, 6.0),
        noise=0.3,
        data_access_per_minute=0.6,
        schedule=WorkSchedule(
            start_hour=7.0, start_spread_h=0.6, day_hours=9.0, off_hours_session_prob=0.05
        ),
        bursts=Bursts("remote_desktop", per_day=2.0, minutes=30.0, factor=Load(1.5, 1.2, 1.2, 2.0)),
        travel=TravelHabits(
            propensity=0.75, every_weeks=(1, 2), stay_days=(2, 5), oneoff_per_month=0.6
        ),
    ),
    Role(
        name="analyst",
        share=0.12,
        app_mix={
            "data_analytics": 0.4,
            "office": 0.25,
            "browser": 0.15,
            "email": 0.1,
            "video_conference": 0.1,
        },
        demand=Load(1.5, 8.0, 250.0, 5.0),
        noise=0.3,
        data_access_per_minute=1.5,
        schedule=WorkSchedule(
            start_hour=8.5, start_spread_h=0.7, day_hours=8.5, off_hours_session_prob=0.06
        ),
        bursts=Bursts("data_analytics", per_day=1.5, minutes=45.0, factor=Load(2.0, 1.8, 2.5, 1.0)),
        travel=TravelHabits(
            propensity=0.1, every_weeks=(4,), stay_days=(2, 4), oneoff_per_month=0.2
        ),
    ),
)

ROLES_BY_NAME: dict[str, Role] = {role.name: role for role in ROLE_DEFINITIONS}


def check_definitions() -> None:
    """Fail loudly if the role data drifts from the telemetry schema (names of roles and apps)."""
    simulated = set(ROLES) - {"unknown"}
    if set(ROLES_BY_NAME) != simulated:
        raise ValueError(
            f"roles defined {sorted(ROLES_BY_NAME)} != schema roles {sorted(simulated)}"
        )
    for role in ROLE_DEFINITIONS:
        unknown = (set(role.app_mix) | {role.bursts.app}) - set(APP_PROFILES)
        if unknown:
            raise ValueError(f"role {role.name} uses apps without a profile: {sorted(unknown)}")
    if not set(APP_PROFILES) <= set(APPS):
        raise ValueError(f"app profiles {sorted(set(APP_PROFILES) - set(APPS))} not in the schema")


check_definitions()
