"""Placement: 100,000 users planned with the heuristic; its gap to HiGHS on 2,000-user instances.

Instances are made to look like a day of batch prediction: users live in real cities drawn by
population (continent shares of ``settings.simulation``), predicted 24 hours ahead with a
diurnal demand at their local time; 15% travel somewhere else during the day, with the
forecast putting 50-90% of their probability there; users hold allocations of about their
need (so about half outgrow them) and one in ten holds nothing yet. Remaining capacity is sized
from the instance's own demand: ample (1.5-3x) in most regions and tight (0.4-0.9x) in a third
of them, so the capacity constraints bind; ``binding_region_resources`` says how many did.

The reference measured in the same run is the exact optimum (HiGHS) on the 2,000-user
instances, against which the heuristic's objective gap is reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

USERS = 100_000
EXACT_USERS = 2_000
EXACT_SEEDS = (1, 2, 3)
REPEATS = 3
SEED = 7
HORIZON = 24
TRAVELLER_SHARE = 0.15
TIGHT_SHARE = 1 / 3
START = datetime(2026, 3, 2, 6, tzinfo=UTC)
RESOURCES = ("cpu_cores", "ram_gb", "storage_iops", "network_mbps")


@dataclass(frozen=True)
class Instance:
    """The inputs of one placement run, as batch prediction and the ledger would give them."""

    profiles: pd.DataFrame
    region_probs: pd.DataFrame
    current: pd.DataFrame
    capacity: pd.DataFrame
    tight_regions: tuple[str, ...]


def run(
    users: int = USERS, exact_users: int = EXACT_USERS, repeats: int = REPEATS
) -> dict[str, Any]:
    """Time the heuristic on ``users``; compare heuristic and HiGHS on ``exact_users``."""
    from core.settings import get_settings

    base = get_settings()
    heuristic = _with_solver(base, "heuristic")
    exact = _with_solver(base, "exact")

    comparisons = [_compare(make_instance(exact_users, seed), heuristic, exact)
                   for seed in EXACT_SEEDS]
    large = make_instance(users, SEED)
    runs = [_timed_plan(large, heuristic) for _ in range(repeats)]
    plan = runs[0][0]
    windows = plan.summary["windows"]
    bound = sum(w["lower_bound_usd"] for w in windows)
    return {
        "users": users,
        "regions": len(large.capacity),
        "windows": len(windows),
        "seconds": round(min(r[1] for r in runs), 3),
        "first_run_seconds": round(runs[0][1], 3),
        "cpu_seconds": round(min(r[2] for r in runs), 3),
        "heuristic_gap": max(c["heuristic_gap"] for c in comparisons),
        "exact_users": exact_users,
        "exact_solve_seconds": max(c["exact_solve_seconds"] for c in comparisons),
        "target_seconds": 5.0,
        "target_gap": 0.01,
        "large_instance": {
            **_describe(plan, large),
            "heuristic_solve_seconds": round(sum(w["solve_seconds"] for w in windows), 3),
            "objective_usd": plan.summary["objective_usd"],
            "lower_bound_usd": round(bound, 4),
            "proven_gap": round((plan.summary["objective_usd"] - bound) / abs(bound), 6),
        },
        "exact_reference": comparisons,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "notes": (
            "seconds: best of the repeated plan_placement calls (inputs checked, 4 windows, "
            "explained requests built), wall clock; first_run_seconds includes first-touch "
            "memory costs of a fresh process. heuristic_gap: worst relative objective gap to "
            "HiGHS over the exact_reference instances. proven_gap: heuristic objective vs its "
            "own Lagrangian lower bound on the large instance."
        ),
    }


def _with_solver(settings, solver: str):
    return settings.model_copy(update={"placement": settings.placement.model_copy(
        update={"solver": solver})})


def _compare(instance: Instance, heuristic, exact) -> dict[str, Any]:
    fast, fast_seconds, _ = _timed_plan(instance, heuristic)
    best, best_seconds, _ = _timed_plan(instance, exact)
    gap = (fast.summary["objective_usd"] - best.summary["objective_usd"]) / abs(
        best.summary["objective_usd"]
    )
    return {
        "users": len(instance.current),
        "exact_objective_usd": best.summary["objective_usd"],
        "heuristic_objective_usd": fast.summary["objective_usd"],
        "heuristic_gap": round(gap, 6),
        "exact_plan_seconds": round(best_seconds, 3),
        "exact_solve_seconds": round(sum(w["solve_seconds"] for w in best.summary["windows"]), 3),
        "exact_status": sorted({w["status"] for w in best.summary["windows"]}),
        "heuristic_plan_seconds": round(fast_seconds, 3),
        "heuristic_solve_seconds": round(
            sum(w["solve_seconds"] for w in fast.summary["windows"]), 3
        ),
        **_describe(best, instance),
    }


def _timed_plan(instance: Instance, settings) -> tuple[Any, float, float]:
    """The plan, its wall-clock seconds and its CPU seconds."""
    from serving.placement import plan_placement

    started, cpu = time.perf_counter(), time.process_time()
    plan = plan_placement(instance.profiles, instance.region_probs, instance.current,
                          instance.capacity, settings, now=START)
    return plan, time.perf_counter() - started, time.process_time() - cpu


def _describe(plan, instance: Instance) -> dict[str, Any]:
    windows = plan.summary["windows"]
    return {
        "decided_user_windows": sum(w["decided_users"] for w in windows),
        "actions": plan.summary["actions"],
        "unplaced_user_windows": plan.summary["unplaced"],
        "tight_regions": list(instance.tight_regions),
        "binding_region_resources": sum(len(w["binding"]) for w in windows),
    }


def make_instance(users: int, seed: int) -> Instance:
    """A seeded, world-wide instance of ``users`` users over a 24-hour horizon (module doc)."""
    from core.regions import load_regions
    from core.settings import get_settings
    from simulation.geo import load_cities

    settings = get_settings()
    catalogue = load_regions()
    rng = np.random.default_rng(seed)
    cities = load_cities(settings.simulation.min_city_population)
    home = _draw_cities(cities, users, settings.simulation.continent_weights, rng)
    nearest = np.argsort(catalogue.distances_km(cities.lat.to_numpy()[home],
                                                cities.lon.to_numpy()[home]), axis=1)
    home_region, second_region = nearest[:, 0], nearest[:, 1]
    travels = rng.random(users) < TRAVELLER_SHARE
    destination = catalogue.nearest(*_city_positions(cities, _draw_cities(
        cities, users, settings.simulation.continent_weights, rng)))
    travels &= destination != home_region
    departure = rng.integers(1, HORIZON + 1, users)

    ids = np.array([f"user-{i:06d}" for i in range(users)], dtype=object)
    steps = np.arange(1, HORIZON + 1)
    away = travels[:, None] & (steps[None, :] >= departure[:, None])
    profiles = _profiles(ids, cities.lon.to_numpy()[home], rng)
    region_probs = _region_probs(ids, home_region, second_region, destination, away,
                                 np.asarray(catalogue.codes, dtype=object), rng)
    need = (profiles.groupby("user_id", sort=False)[[f"{r}_p90" for r in RESOURCES]].max()
            .to_numpy() * (1 + settings.placement.headroom))
    held = need * rng.uniform(0.75, 1.25, (users, 1))
    held[rng.random(users) < 0.1] = 0.0
    current = pd.DataFrame({"user_id": ids, "current_region": np.asarray(catalogue.codes)[
        home_region], **{r: held[:, k] for k, r in enumerate(RESOURCES)}})
    capacity, tight = _capacity(catalogue.codes, home_region, destination, travels, need, held,
                                rng)
    return Instance(profiles, region_probs, current, capacity, tight)


def _draw_cities(cities: pd.DataFrame, n: int, continent_weights: dict[str, float],
                 rng: np.random.Generator) -> np.ndarray:
    """City rows drawn by continent share, then by population within the continent."""
    continents = list(continent_weights)
    shares = np.array([continent_weights[c] for c in continents])
    picks = rng.choice(len(continents), n, p=shares / shares.sum())
    chosen = np.empty(n, dtype=np.int64)
    for k, continent in enumerate(continents):
        rows = np.flatnonzero(cities.continent.to_numpy() == continent)
        population = cities.population.to_numpy()[rows].astype(np.float64)
        mine = picks == k
        chosen[mine] = rng.choice(rows, mine.sum(), p=population / population.sum())
    return chosen


def _city_positions(cities: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cities.lat.to_numpy()[rows], cities.lon.to_numpy()[rows]


def _profiles(ids: np.ndarray, lon: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """p50/p90 per user and hour: a personal scale times a diurnal curve at local time."""
    users = len(ids)
    cpu = np.clip(rng.lognormal(np.log(2.0), 0.7, users), 0.25, 32)
    scale = np.column_stack([
        cpu, cpu * rng.uniform(2, 8, users), cpu * rng.lognormal(np.log(250), 0.5, users),
        rng.lognormal(np.log(5), 0.8, users),
    ])
    spread = rng.uniform(1.2, 1.7, users)
    hours = np.arange(1, HORIZON + 1)
    local = (START.hour + hours[None, :] + lon[:, None] / 15.0) % 24
    diurnal = 0.35 + 0.65 * np.exp(-(((local - 14) / 4) ** 2))
    p50 = scale[:, None, :] * diurnal[:, :, None]
    frame = pd.DataFrame({"user_id": np.repeat(ids, HORIZON), "step": np.tile(hours, users)})
    frame["target_hour"] = pd.Timestamp(START) + pd.to_timedelta(frame["step"], unit="h")
    for k, resource in enumerate(RESOURCES):
        frame[f"{resource}_p50"] = p50[:, :, k].ravel()
        frame[f"{resource}_p90"] = (p50[:, :, k] * spread[:, None]).ravel()
    frame["cold_start"] = False
    frame["model_version"] = "bench"
    frame["feature_timestamp"] = pd.Timestamp(START)
    frame["source"] = "model"
    return frame


def _region_probs(ids: np.ndarray, home: np.ndarray, second: np.ndarray, destination: np.ndarray,
                  away: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Top-3 regions per user-step: where the user is, a neighbour, and a little noise."""
    users, n_regions = len(ids), len(codes)
    p_main = rng.uniform(0.85, 0.97, users)[:, None].repeat(HORIZON, 1)
    p_trip = rng.uniform(0.5, 0.9, users)[:, None].repeat(HORIZON, 1)
    noise = (home + 1 + rng.integers(0, n_regions - 1, users)) % n_regions
    regions = np.stack([
        np.where(away, destination[:, None], home[:, None]),
        np.where(away, home[:, None], second[:, None]),
        noise[:, None].repeat(HORIZON, 1),
    ], axis=2)
    first = np.where(away, p_trip, p_main)
    probs = np.stack([first, (1 - first) * 0.7, (1 - first) * 0.2], axis=2)
    duplicate = (regions[:, :, 2] == regions[:, :, 0]) | (regions[:, :, 2] == regions[:, :, 1])
    keep = np.ones(regions.shape, dtype=bool)
    keep[:, :, 2] = ~duplicate
    step = np.broadcast_to(np.arange(1, HORIZON + 1)[None, :, None], regions.shape)
    user = np.broadcast_to(np.arange(users)[:, None, None], regions.shape)
    return pd.DataFrame({
        "user_id": ids[user[keep]],
        "step": step[keep],
        "region": codes[regions[keep]],
        "probability": probs[keep],
    })


def _capacity(codes: tuple[str, ...], home: np.ndarray, destination: np.ndarray,
              travels: np.ndarray, need: np.ndarray, held: np.ndarray,
              rng: np.random.Generator) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Remaining capacity per region: a multiple of what this instance's users will ask there."""
    n_regions = len(codes)
    growth = np.maximum(need - held, 0)
    asked = np.stack([
        np.bincount(home, growth[:, k], n_regions)
        + np.bincount(destination[travels], need[travels, k], n_regions)
        for k in range(need.shape[1])
    ], axis=1)
    tight = (rng.random(n_regions) < TIGHT_SHARE) & (asked > 0).all(axis=1)
    ample = np.maximum(asked, np.median(asked, axis=0)) * rng.uniform(1.5, 3.0, (n_regions, 1))
    frame = pd.DataFrame(
        np.where(tight[:, None], asked * rng.uniform(0.4, 0.9, (n_regions, 1)), ample),
        columns=list(RESOURCES),
    )
    frame.insert(0, "region", list(codes))
    return frame, tuple(str(c) for c in np.asarray(codes)[tight])
