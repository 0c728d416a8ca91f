import os
from pathlib import Path

import numpy as np
import pytest

from core.regions import Region, RegionCatalogue, RegionCatalogueError, load_regions
from core.settings import PACKAGED_REGIONS_FILE, get_settings

HEADER = (
    "code,provider,provider_region,name,city,country,lat,lon,vcpu_hour_usd,ram_gb_hour_usd,"
    "iops_hour_usd,egress_gb_usd,capacity_vcpu,capacity_ram_gb,capacity_storage_iops,"
    "capacity_network_gbps"
)
GOOD_ROWS = [
    "aws-us-east-1,aws,us-east-1,US East,Ashburn,US,39.04,-77.49,"
    "0.04048,0.004445,6.8e-06,0.09,20000,80000,5000000,200",
    "azure-westeurope,azure,westeurope,West Europe,Amsterdam,NL,52.37,4.90,"
    "0.045,0.00494,7.5e-06,0.087,10000,40000,2500000,100",
]


@pytest.fixture(scope="module")
def catalogue() -> RegionCatalogue:
    return load_regions(PACKAGED_REGIONS_FILE)


def write_catalogue(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_packaged_file_has_the_documented_header():
    first_line = PACKAGED_REGIONS_FILE.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == HEADER


def test_packaged_catalogue_is_large_and_has_the_required_regions(catalogue):
    assert len(catalogue) >= 24
    assert {"aws-us-east-1", "azure-westeurope", "gcp-europe-west4"} <= set(catalogue.codes)
    assert {r.provider for r in catalogue} == {"aws", "gcp", "azure"}
    assert catalogue["azure-westeurope"].city == "Amsterdam"
    assert catalogue["gcp-europe-west4"].city == "Eemshaven"


def test_packaged_prices_follow_the_public_list_prices(catalogue):
    virginia = catalogue["aws-us-east-1"]
    assert virginia.vcpu_hour_usd == pytest.approx(0.04048)
    assert virginia.ram_gb_hour_usd == pytest.approx(0.004445)
    assert virginia.iops_hour_usd == pytest.approx(0.005 / 730, rel=0.01)
    assert virginia.egress_gb_usd == pytest.approx(0.09)
    frame = catalogue.to_frame()
    assert (frame["vcpu_hour_usd"] >= virginia.vcpu_hour_usd).all()
    for code in ("aws-sa-east-1", "aws-ap-northeast-1", "aws-ap-southeast-2"):
        ratio = catalogue[code].vcpu_hour_usd / virginia.vcpu_hour_usd
        assert 1.15 <= ratio <= 1.45, code


def test_packaged_capacities_are_in_the_assumed_ranges(catalogue):
    frame = catalogue.to_frame()
    assert frame["capacity_vcpu"].between(2_000, 20_000).all()
    ram_per_vcpu = frame["capacity_ram_gb"] / frame["capacity_vcpu"]
    assert ram_per_vcpu.between(2, 8).all()
    assert (frame["capacity_storage_iops"] >= 100_000).all()
    assert frame["capacity_network_gbps"].between(10, 1_000).all()


def test_lookup_by_code_and_index(catalogue):
    position = catalogue.index("gcp-europe-west4")
    assert catalogue.regions[position].code == "gcp-europe-west4"
    assert catalogue["gcp-europe-west4"] is catalogue.regions[position]
    assert isinstance(catalogue["aws-eu-west-2"], Region)


def test_unknown_code_raises_a_clear_key_error(catalogue):
    with pytest.raises(KeyError, match="aws-mars-1"):
        catalogue["aws-mars-1"]
    with pytest.raises(KeyError, match="nowhere"):
        catalogue.indices(["aws-us-east-1", "nowhere"])


def test_indices_are_vectorised_and_keep_the_shape(catalogue):
    codes = np.array([["aws-us-east-1", "azure-westeurope"], ["gcp-europe-west4", "aws-us-east-1"]])
    positions = catalogue.indices(codes)
    assert positions.shape == (2, 2)
    assert positions.dtype == np.int64
    assert [catalogue.codes[i] for i in positions.ravel()] == list(codes.ravel())


def test_distances_have_shape_s_plus_regions_and_are_zero_at_a_region(catalogue):
    lat = np.array([[52.3676, 0.0, 10.0]])
    lon = np.array([[4.9041, 0.0, 20.0]])
    d = catalogue.distances_km(lat, lon)
    assert d.shape == (1, 3, len(catalogue))
    assert d[0, 0, catalogue.index("azure-westeurope")] == pytest.approx(0.0, abs=1e-6)
    assert catalogue.distances_km(0.0, 0.0).shape == (len(catalogue),)


def test_nearest_region_of_known_cities(catalogue):
    lat = np.array([52.37, 53.44, -33.87, 1.30, 25.1])
    lon = np.array([4.90, 6.84, 151.21, 103.8, 55.2])
    nearest = [catalogue.regions[i] for i in catalogue.nearest(lat, lon)]
    assert [r.city for r in nearest] == ["Amsterdam", "Eemshaven", "Sydney", "Singapore", "Dubai"]
    assert catalogue.nearest(lat.reshape(5, 1), lon.reshape(5, 1)).shape == (5, 1)


def test_nearest_refuses_missing_coordinates(catalogue):
    with pytest.raises(ValueError):
        catalogue.nearest([50.0, np.nan], [8.0, 1.0])


def test_to_frame_has_one_row_per_region_and_the_file_columns(catalogue):
    frame = catalogue.to_frame()
    assert list(frame.columns) == HEADER.split(",")
    assert list(frame["code"]) == list(catalogue.codes)
    assert frame["lat"].dtype == np.float64


def test_loads_a_user_file(tmp_path):
    cat = load_regions(write_catalogue(tmp_path / "mine.csv", GOOD_ROWS))
    assert cat.codes == ("aws-us-east-1", "azure-westeurope")
    assert cat.lat.dtype == np.float64
    assert cat["azure-westeurope"].capacity_vcpu == 10_000


def test_default_path_comes_from_settings(tmp_path, monkeypatch):
    path = write_catalogue(tmp_path / "from_env.csv", GOOD_ROWS[:1])
    monkeypatch.setenv("PREWARM_REGIONS_FILE", str(path))
    get_settings.cache_clear()
    try:
        assert load_regions().codes == ("aws-us-east-1",)
    finally:
        monkeypatch.delenv("PREWARM_REGIONS_FILE")
        get_settings.cache_clear()


def test_repeated_loads_are_cached_until_the_file_changes(tmp_path):
    path = write_catalogue(tmp_path / "cached.csv", GOOD_ROWS)
    first = load_regions(path)
    assert load_regions(path) is first
    write_catalogue(path, GOOD_ROWS[:1])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_regions(path).codes == ("aws-us-east-1",)


BAD_ROW = (
    "gcp-europe-west4,gcp,europe-west4,Netherlands,Eemshaven,NL,{lat},{lon},"
    "{price},0.0054,7.5e-06,0.12,{capacity},32000,2000000,80"
)


def bad_row(lat="53.44", lon="6.84", price="0.049", capacity="8000", **replace) -> str:
    row = BAD_ROW.format(lat=lat, lon=lon, price=price, capacity=capacity)
    for old, new in replace.items():
        row = row.replace(old, new)
    return row


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (bad_row(lat="95"), "lat"),
        (bad_row(lon="-181"), "lon"),
        (bad_row(price="0"), "vcpu_hour_usd"),
        (bad_row(capacity="-5"), "capacity_vcpu"),
        (bad_row(price="cheap"), "not a number"),
        (bad_row(lat="nan"), "finite"),
        (bad_row(gcp="oracle"), "provider"),
        (bad_row(**{"gcp-europe-west4": "gcp-europe-west9"}), "code"),
        (GOOD_ROWS[0], "duplicate"),
        (bad_row().rsplit(",", 1)[0], "fields"),
    ],
)
def test_a_bad_row_is_reported_with_file_and_line(tmp_path, row, problem):
    path = write_catalogue(tmp_path / "bad.csv", [*GOOD_ROWS, row])
    with pytest.raises(RegionCatalogueError, match=problem) as error:
        load_regions(path)
    assert "bad.csv" in str(error.value)
    assert "line 4" in str(error.value)


def test_a_header_without_required_columns_is_rejected(tmp_path):
    header = HEADER.replace(",egress_gb_usd", "")
    path = write_catalogue(tmp_path / "short.csv", [], header=header)
    with pytest.raises(RegionCatalogueError, match="egress_gb_usd") as error:
        load_regions(path)
    assert "short.csv, line 1" in str(error.value)


def test_an_empty_or_missing_catalogue_is_rejected(tmp_path):
    with pytest.raises(RegionCatalogueError, match="no regions"):
        load_regions(write_catalogue(tmp_path / "empty.csv", []))
    with pytest.raises(RegionCatalogueError, match=r"absent\.csv"):
        load_regions(tmp_path / "absent.csv")
