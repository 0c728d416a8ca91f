"""The region catalogue: where prewarm can place capacity, at what price, and how much of it.

The catalogue is a CSV file (``settings.regions_file``; the packaged default is
``core/data/regions.csv``) that users may edit or replace. One row per region; ``code`` is
``<provider>-<provider_region>`` (e.g. ``aws-us-east-1``) and is the id used everywhere else.

Where the packaged figures come from (list prices in USD, on-demand, rounded; check the
providers' current price lists before relying on them):

- ``vcpu_hour_usd``, ``ram_gb_hour_usd``: serverless-container prices per vCPU-hour and per
  GB-hour of memory, Linux/x86. AWS: Fargate's regional prices (us-east-1: 0.04048 and
  0.004445; the dearest regions, such as Hong Kong and São Paulo, about 40% above). GCP: GKE
  Autopilot general-purpose pod prices (us-central1: 0.0445 and 0.0049225). Azure: Container
  Instances (East US: 0.0000113 per vCPU-second and 0.0000012375 per GB-second).
- ``iops_hour_usd``: provisioned storage IOPS, per IOPS-hour: AWS EBS gp3 (0.005 per
  IOPS-month in us-east-1, divided by 730 hours), GCP Hyperdisk Balanced and Azure Premium SSD v2
  at similar rates, each with its regional markup.
- ``egress_gb_usd``: internet egress, first paid tier: AWS 0.09 in the US and Europe, about
  0.11-0.15 in Asia Pacific, South America, the Middle East and Africa; GCP premium tier 0.12;
  Azure 0.087 (North America, Europe) and 0.12 (Asia).
- ``lat``, ``lon``: the region's metro (the city hosting its data centres).
- ``capacity_*``: NOT published figures. They are the assumed share of each region this
  deployment may use, invented but plausible: 2,000-20,000 vCPU (larger for the big regions),
  4 GB of RAM per vCPU, 250 storage IOPS per vCPU (millions per region), and 1 Gbps of network
  per 100 vCPU (tens to hundreds of Gbps).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from core.latency import great_circle_km
from core.settings import get_settings

PROVIDERS: tuple[str, ...] = ("aws", "gcp", "azure")


@dataclass(frozen=True)
class Region:
    """One cloud region: identity, location, unit prices (USD) and the capacity we may use."""

    code: str
    provider: str
    provider_region: str
    name: str
    city: str
    country: str
    lat: float
    lon: float
    vcpu_hour_usd: float
    ram_gb_hour_usd: float
    iops_hour_usd: float
    egress_gb_usd: float
    capacity_vcpu: float
    capacity_ram_gb: float
    capacity_storage_iops: float
    capacity_network_gbps: float


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Region))
TEXT_COLUMNS: tuple[str, ...] = ("code", "provider", "provider_region", "name", "city", "country")
PRICE_COLUMNS: tuple[str, ...] = (
    "vcpu_hour_usd",
    "ram_gb_hour_usd",
    "iops_hour_usd",
    "egress_gb_usd",
)
CAPACITY_COLUMNS: tuple[str, ...] = (
    "capacity_vcpu",
    "capacity_ram_gb",
    "capacity_storage_iops",
    "capacity_network_gbps",
)


class RegionCatalogueError(ValueError):
    """The region catalogue file is missing, malformed or holds an invalid row."""


class RegionCatalogue:
    """An immutable, indexed collection of regions with vectorised geography helpers."""

    def __init__(self, regions: tuple[Region, ...]) -> None:
        self.regions = tuple(regions)
        self.codes = tuple(r.code for r in self.regions)
        self.lat = _frozen_array([r.lat for r in self.regions])
        self.lon = _frozen_array([r.lon for r in self.regions])
        self._index = pd.Index(self.codes)
        if not self._index.is_unique:
            raise ValueError("region codes must be unique")

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def __getitem__(self, code: str) -> Region:
        return self.regions[self.index(code)]

    def __repr__(self) -> str:
        return f"RegionCatalogue({len(self)} regions)"

    def index(self, code: str) -> int:
        """Position of the region ``code`` in this catalogue."""
        try:
            return int(self._index.get_loc(code))
        except KeyError:
            known = ", ".join(self.codes)
            raise KeyError(f"unknown region {code!r}; known regions: {known}") from None

    def indices(self, codes: ArrayLike) -> np.ndarray:
        """Positions of many region codes at once (int64, same shape as ``codes``)."""
        codes = np.asarray(codes, dtype=object)
        positions = self._index.get_indexer(codes.ravel())
        if np.any(positions < 0):
            unknown = sorted({str(c) for c in codes.ravel()[positions < 0]})
            raise KeyError(f"unknown region(s) {unknown}; known regions: {', '.join(self.codes)}")
        return positions.astype(np.int64).reshape(codes.shape)

    def distances_km(self, lat: ArrayLike, lon: ArrayLike) -> np.ndarray:
        """Great-circle km from points of any shape S to every region: shape S + (n_regions,)."""
        lat = np.asarray(lat, dtype=np.float64)[..., np.newaxis]
        lon = np.asarray(lon, dtype=np.float64)[..., np.newaxis]
        return great_circle_km(lat, lon, self.lat, self.lon)

    def nearest(self, lat: ArrayLike, lon: ArrayLike) -> np.ndarray:
        """Index of the nearest region for points of any shape S (int64, shape S).

        Raises ValueError for missing (NaN) coordinates rather than guessing a region.
        """
        distances = self.distances_km(lat, lon)
        if np.isnan(distances).any():
            raise ValueError("nearest() needs finite coordinates; got NaN lat/lon")
        return np.argmin(distances, axis=-1).astype(np.int64)

    def to_frame(self) -> pd.DataFrame:
        """The catalogue as a DataFrame, one row per region, columns as in the CSV file."""
        return pd.DataFrame([dataclasses.asdict(r) for r in self.regions], columns=list(COLUMNS))


def load_regions(path: Path | None = None) -> RegionCatalogue:
    """Read and validate the region catalogue (default: ``settings.regions_file``).

    The result is cached by resolved path and modification time, so repeated calls are cheap
    and an edited file is picked up. Raises RegionCatalogueError naming the file and the line.
    """
    path = Path(path if path is not None else get_settings().regions_file).resolve()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise RegionCatalogueError(f"{path}: cannot read the region catalogue ({exc})") from exc
    return _load_cached(path, mtime_ns)


@lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> RegionCatalogue:
    return RegionCatalogue(_read_regions(path))


def _read_regions(path: Path) -> tuple[Region, ...]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RegionCatalogueError(f"{path}, line 1: header lacks column(s) {missing}")
        regions: list[Region] = []
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            region = _parse_row(row, path, line)
            if region.code in first_line:
                raise RegionCatalogueError(
                    f"{path}, line {line}: duplicate code {region.code!r} "
                    f"(first on line {first_line[region.code]})"
                )
            first_line[region.code] = line
            regions.append(region)
    if not regions:
        raise RegionCatalogueError(f"{path}: the region catalogue has no regions")
    return tuple(regions)


def _parse_row(row: dict[str | None, str | None], path: Path, line: int) -> Region:
    """Turn one CSV row into a Region, or raise RegionCatalogueError saying what is wrong."""

    def fail(problem: str) -> RegionCatalogueError:
        return RegionCatalogueError(f"{path}, line {line}: {problem}")

    if None in row or any(row[c] is None for c in COLUMNS):
        raise fail(f"expected {len(COLUMNS)} fields per row")
    values: dict[str, str | float] = {c: row[c].strip() for c in TEXT_COLUMNS}
    for column in (c for c in COLUMNS if c not in TEXT_COLUMNS):
        try:
            values[column] = float(row[column])
        except ValueError:
            raise fail(f"{column} is not a number: {row[column]!r}") from None
        if not math.isfinite(values[column]):
            raise fail(f"{column} must be finite, got {row[column]!r}")
    region = Region(**values)

    if not all(values[c] for c in TEXT_COLUMNS):
        raise fail(f"empty text field among {list(TEXT_COLUMNS)}")
    if region.provider not in PROVIDERS:
        raise fail(f"provider {region.provider!r} is not one of {list(PROVIDERS)}")
    if region.code != f"{region.provider}-{region.provider_region}":
        raise fail(f"code {region.code!r} should be '{region.provider}-{region.provider_region}'")
    if not -90.0 <= region.lat <= 90.0:
        raise fail(f"lat {region.lat} is outside [-90, 90]")
    if not -180.0 <= region.lon <= 180.0:
        raise fail(f"lon {region.lon} is outside [-180, 180]")
    for column in PRICE_COLUMNS + CAPACITY_COLUMNS:
        if values[column] <= 0:
            raise fail(f"{column} must be > 0, got {values[column]}")
    return region


def _frozen_array(values: list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array.flags.writeable = False
    return array
