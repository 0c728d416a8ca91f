"""Small, explicit placement inputs for tests: a few users with a home, a demand and a trip."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS

NOW = datetime(2026, 3, 2, 8, tzinfo=UTC)
HORIZON = 6
# p50 per resource for a user of "size" 1: CPU cores, RAM GB, storage IOPS, network Mbps
UNIT_DEMAND = np.array([1.0, 4.0, 250.0, 5.0])
P90_RATIO = 1.5


@dataclass(frozen=True)
class User:
    """One user: where they are served, how big they are, what they hold, where they will be."""

    user_id: str
    home: str
    size: float = 1.0
    held: float = 10.0  # allocation held, in multiples of UNIT_DEMAND
    trip: str | None = None  # region the forecast puts them in
    trip_probability: float = 0.9
    home_probability: float = 0.95  # when not travelling
    mix: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # per-resource multipliers


@dataclass(frozen=True)
class Inputs:
    """Frames for plan_placement."""

    profiles: pd.DataFrame
    region_probs: pd.DataFrame
    current: pd.DataFrame


def build(users: list[User], horizon: int = HORIZON) -> Inputs:
    """Constant-demand profiles over ``horizon`` steps, one location row per user-step."""
    profiles, probs = [], []
    for user in users:
        for step in range(1, horizon + 1):
            p50 = UNIT_DEMAND * user.size * np.asarray(user.mix)
            profiles.append(
                {
                    "user_id": user.user_id,
                    "step": step,
                    "target_hour": pd.Timestamp(NOW + timedelta(hours=step)),
                    **{f"{r}_p50": p50[k] for k, r in enumerate(RESOURCE_COLUMNS)},
                    **{f"{r}_p90": p50[k] * P90_RATIO for k, r in enumerate(RESOURCE_COLUMNS)},
                    "cold_start": False,
                    "model_version": "test",
                    "feature_timestamp": pd.Timestamp(NOW),
                    "source": "model",
                }
            )
            if user.trip is None:
                probs.append((user.user_id, step, user.home, user.home_probability))
            else:
                probs.append((user.user_id, step, user.trip, user.trip_probability))
    current = pd.DataFrame(
        {
            "user_id": [u.user_id for u in users],
            "current_region": [u.home for u in users],
            **{
                r: [u.held * UNIT_DEMAND[k] for u in users]
                for k, r in enumerate(RESOURCE_COLUMNS)
            },
        }
    )
    return Inputs(
        profiles=pd.DataFrame(profiles),
        region_probs=pd.DataFrame(probs, columns=["user_id", "step", "region", "probability"]),
        current=current,
    )


def crowd(n: int, seed: int, regions: list[str]) -> list[User]:
    """``n`` users spread over ``regions``: most outgrow what they hold, some travel."""
    rng = np.random.default_rng(seed)
    users = []
    for i in range(n):
        home = regions[rng.integers(len(regions))]
        trip = regions[rng.integers(len(regions))] if rng.random() < 0.2 else None
        users.append(
            User(
                user_id=f"u{i:04d}",
                home=home,
                size=float(rng.lognormal(0.0, 0.6)),
                held=float(rng.uniform(0.0, 2.0)),
                trip=trip if trip != home else None,
                trip_probability=float(rng.uniform(0.5, 0.95)),
                mix=tuple(float(m) for m in rng.lognormal(0.0, 0.4, 4)),
            )
        )
    return users


def capacity(cpu_units: dict[str, float], default: float = 0.0) -> pd.DataFrame:
    """Remaining capacity of every catalogue region, in users of size 1 at p90.

    Regions not named in ``cpu_units`` get ``default`` units.
    """
    codes = list(load_regions().codes)
    units = np.array([cpu_units.get(code, default) for code in codes])
    return pd.DataFrame(
        {"region": codes, **{r: units * UNIT_DEMAND[k] * P90_RATIO
                             for k, r in enumerate(RESOURCE_COLUMNS)}}
    )
