"""A physics-grounded model of the round-trip latency between a user and a region.

The round trip is bounded below by light in fibre: twice the great-circle distance at about
200 km per ms. Real routes are longer than the great circle (``route_inflation``), the access
network adds a fixed ``last_mile_ms``, a busy region queues requests (a term growing as
u / (1 - u) with its utilisation u), and each probe sees some random jitter. Every function is
vectorised with numpy broadcasting and never returns less than the fibre floor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from core.settings import LatencySettings, get_settings

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def great_circle_km(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (haversine, broadcasting)."""
    phi1, lam1, phi2, lam2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2)
    )
    h = np.sin((phi2 - phi1) / 2) ** 2
    h = h + np.cos(phi1) * np.cos(phi2) * np.sin((lam2 - lam1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


class LatencyModel:
    """Round-trip latency (ms) as a function of distance and the serving region's utilisation."""

    def __init__(self, params: LatencySettings | None = None) -> None:
        self.params = params if params is not None else get_settings().latency

    def floor_ms(self, distance_km: ArrayLike) -> np.ndarray:
        """The physical floor: the distance there and back at the speed of light in fibre."""
        distance = np.asarray(distance_km, dtype=np.float64)
        if np.any(distance < 0):
            raise ValueError("distance_km must be non-negative")
        return 2.0 * distance / self.params.fibre_km_per_ms

    def congestion_ms(self, utilisation: ArrayLike) -> np.ndarray:
        """Queueing delay: ``congestion_ms * u / (1 - u)``, with u clipped to [0, max_utilisation].

        Zero for an idle region, exactly ``congestion_ms`` at half load, steep near saturation.
        """
        u = np.clip(np.asarray(utilisation, dtype=np.float64), 0.0, self.params.max_utilisation)
        return self.params.congestion_ms * u / (1.0 - u)

    def expected_ms(self, distance_km: ArrayLike, utilisation: ArrayLike = 0.0) -> np.ndarray:
        """Mean round trip: inflated fibre floor + last mile + congestion (no jitter)."""
        return (
            self.floor_ms(distance_km) * self.params.route_inflation
            + self.params.last_mile_ms
            + self.congestion_ms(utilisation)
        )

    def sample_ms(
        self, distance_km: ArrayLike, utilisation: ArrayLike, rng: np.random.Generator
    ) -> np.ndarray:
        """One measured round trip per element: the expected value plus random jitter.

        Jitter is exponential with mean ``jitter_ms``: non-negative, mostly small, with the
        occasional slow probe that real RTT measurements show.
        """
        expected = self.expected_ms(distance_km, utilisation)
        return expected + rng.exponential(self.params.jitter_ms, size=expected.shape)
