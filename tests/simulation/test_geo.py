"""Cities, positions on the sphere, and the geolocated IP pool."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import maxminddb
import numpy as np
from _maxminddb_geolite2 import geolite2_database

from core.latency import great_circle_km
from core.settings import Settings
from simulation.geo import build_ip_pool, displace, great_circle_path, load_cities, load_ip_pool


def test_cities_are_large_located_and_have_a_time_zone() -> None:
    cities = load_cities(500_000)
    assert len(cities) > 500
    assert (cities["population"] >= 500_000).all()
    assert cities["geonameid"].is_unique and cities["geonameid"].is_monotonic_increasing
    assert cities["lat"].between(-90, 90).all() and cities["lon"].between(-180, 180).all()
    for zone in cities["timezone"].unique():
        ZoneInfo(zone)
    assert {"Tokyo", "London", "São Paulo"} <= set(cities["name"])
    bigger = load_cities(5_000_000)
    assert set(bigger["geonameid"]) < set(cities["geonameid"])


def test_great_circle_path_runs_from_origin_to_destination() -> None:
    london, new_york = (51.5074, -0.1278), (40.7128, -74.0060)
    lat, lon = great_circle_path(*london, *new_york, np.array([0.0, 0.5, 1.0]))
    assert np.allclose([lat[0], lon[0]], london) and np.allclose([lat[2], lon[2]], new_york)
    total = great_circle_km(*london, *new_york)
    assert np.isclose(great_circle_km(*london, lat[1], lon[1]), total / 2)
    assert lat[1] > 51.5  # the great circle bends north of both cities


def test_displace_moves_by_the_given_kilometres() -> None:
    lat, lon = np.array([0.0, 60.0, -33.9]), np.array([179.999, 10.0, 18.4])
    north, east = displace(lat, lon, np.array([1.0, 0.0, 3.0]), np.array([0.0, 2.0, 4.0]))
    assert np.allclose(great_circle_km(lat, lon, north, east), [1.0, 2.0, 5.0], rtol=1e-3)
    assert (east >= -180).all() and (east <= 180).all()


def test_ip_pool_is_cached_and_identical_either_way(tmp_path: Path) -> None:
    built = load_ip_pool(2_000, 9, tmp_path)
    assert len(list(tmp_path.glob("ip-pool-2000-9-*.npz"))) == 1
    cached = load_ip_pool(2_000, 9, tmp_path)
    direct = build_ip_pool(2_000, 9, Path(geolite2_database()))
    for name in ("ips", "lat", "lon", "accuracy_km", "country"):
        assert np.array_equal(getattr(built, name), getattr(cached, name))
        assert np.array_equal(getattr(built, name), getattr(direct, name))
    assert len(built) > 1_500
    assert not np.array_equal(
        build_ip_pool(2_000, 10, Path(geolite2_database())).ips[:50], built.ips[:50]
    )


def test_pool_addresses_are_public_and_located_where_geolite2_says(tmp_path: Path) -> None:
    pool = load_ip_pool(2_000, 9, tmp_path)
    with maxminddb.open_database(geolite2_database()) as reader:
        for i in range(0, len(pool), 97):
            record = reader.get(pool.addresses[i])
            assert record["location"]["latitude"] == pool.lat[i]
            assert record["location"]["longitude"] == pool.lon[i]
    first_octets = {int(a.split(".")[0]) for a in pool.addresses}
    assert not first_octets & {0, 10, 127} and max(first_octets) < 224


def test_addresses_near_a_city_are_in_its_country_and_close(sim_settings: Settings) -> None:
    sim = sim_settings.simulation
    pool = load_ip_pool(sim.ip_pool_size, sim_settings.seed, sim_settings.cache_dir)
    for lat, lon, country in (
        (48.8566, 2.3522, "FR"),
        (35.6762, 139.6503, "JP"),
        (-23.55, -46.63, "BR"),
    ):
        near = pool.near(lat, lon, country, 4)
        assert len(near) == 4
        assert (pool.country[near] == country).all()
        assert (great_circle_km(lat, lon, pool.lat[near], pool.lon[near]) < 150).all()
