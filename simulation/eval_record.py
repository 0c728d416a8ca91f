"""The world's lives over training and evaluation ranges, gathered once for every policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.latency import LatencyModel, great_circle_km
from core.region_load import background_utilisation
from core.regions import RegionCatalogue
from simulation.eval_policy import OTHER_RESOURCES, RESOURCES
from simulation.world import World


@dataclass(frozen=True)
class WorldRecord:
    """True and observed arrays of every user over every step of the world, (users, steps).

    ``demand`` is (users, steps, len(RESOURCES)); ``other_demand`` the rest of the telemetry's
    resources (storage IOPS, network Mbps: observed and forecast, not allocated);
    ``jitter_ms`` is the probe noise added to a measured latency, drawn once so that every
    policy sees the same noise. ``best_latency_ms`` is, per user and step, the lowest expected
    latency any region offers at the TRUE position: above the SLO, no policy can meet it.
    """

    true_lat: np.ndarray
    true_lon: np.ndarray
    observed_lat: np.ndarray
    observed_lon: np.ndarray
    demand: np.ndarray
    other_demand: np.ndarray
    session_active: np.ndarray
    jitter_ms: np.ndarray
    utilisation: np.ndarray  # (steps, regions)
    best_latency_ms: np.ndarray

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.true_lat.shape[0]

    @property
    def n_steps(self) -> int:
        """Number of steps (training and evaluation ranges together)."""
        return self.true_lat.shape[1]


def record_world(world: World, latency: LatencyModel) -> WorldRecord:
    """Gather the world's truth and what monitoring sees of it (telemetry, block by block)."""
    truth = world.truth()
    observed_lat = np.empty(truth.lat.shape)
    observed_lon = np.empty(truth.lon.shape)
    block = world.settings.simulation.block_users
    for first in range(0, world.n_users, block):
        users = slice(first, min(first + block, world.n_users))
        frame = world.telemetry(users)
        shape = (users.stop - users.start, world.n_steps)
        observed_lat[users] = frame["lat"].to_numpy(np.float64).reshape(shape)
        observed_lon[users] = frame["lon"].to_numpy(np.float64).reshape(shape)
    rng = np.random.default_rng([world.config.seed, 0xE7A1])
    utilisation = background_utilisation(world.catalogue, world.times, world.config.seed)
    return WorldRecord(
        true_lat=truth.lat,
        true_lon=truth.lon,
        observed_lat=observed_lat,
        observed_lon=observed_lon,
        demand=np.stack([getattr(truth, name) for name in RESOURCES], axis=-1).astype(np.float64),
        other_demand=np.stack([getattr(truth, name) for name in OTHER_RESOURCES], axis=-1).astype(
            np.float32
        ),
        session_active=truth.session_active.astype(bool),
        jitter_ms=rng.exponential(latency.params.jitter_ms, size=truth.lat.shape),
        utilisation=utilisation,
        best_latency_ms=best_latency(truth.lat, truth.lon, world.catalogue, utilisation, latency),
    )


def best_latency(
    lat: np.ndarray,
    lon: np.ndarray,
    catalogue: RegionCatalogue,
    utilisation: np.ndarray,
    latency: LatencyModel,
) -> np.ndarray:
    """(users, steps) lowest expected round trip over every region from the positions given."""
    out = np.empty(lat.shape, dtype=np.float32)
    for step in range(lat.shape[1]):
        distance = great_circle_km(
            lat[:, step, None], lon[:, step, None], catalogue.lat[None, :], catalogue.lon[None, :]
        )
        out[:, step] = latency.expected_ms(distance, utilisation[step][None, :]).min(axis=1)
    return out


def expected_latency(
    record: WorldRecord,
    latency: LatencyModel,
    catalogue_lat: np.ndarray,
    catalogue_lon: np.ndarray,
    step: int,
    regions: np.ndarray,
) -> np.ndarray:
    """Expected round trip (ms) from each user's TRUE position at ``step`` to ``regions``.

    ``regions`` is (users,) for one region each, or (users, k) for several.
    """
    lat, lon = record.true_lat[:, step], record.true_lon[:, step]
    if regions.ndim == 2:
        lat, lon = lat[:, None], lon[:, None]
    distance = great_circle_km(lat, lon, catalogue_lat[regions], catalogue_lon[regions])
    return latency.expected_ms(distance, record.utilisation[step, regions])
