"""From raw 5-minute telemetry to the hourly feature tables behind the Feast feature views.

Three tables come out of here, each keyed by an entity and an ``event_timestamp``:

- :func:`hourly_user_features`: one row per user per hour *with data*.
- :func:`user_profiles`: a user's slowly changing profile (role, home, home region).
- :func:`region_status`: one row per region per timestamp (utilisation and prices).

**Timestamps mean "known from".** An hourly aggregate is stamped with the END of its hour, the
moment it becomes known: telemetry rows are stamped with the start of their interval, so the
aggregate stamped 10:00 summarises rows stamped in [09:00, 10:00). Feast joins a training row at
time ``t`` to the latest feature row stamped ``<= t`` (an inclusive upper bound), so a training
row at exactly 10:00 sees the 09:00-10:00 hour and nothing later. Profiles follow the same rule:
each profile row is computed only from telemetry up to its own ``event_timestamp``.

**Gaps and irregular timestamps.** Every row goes to the hour ``floor(event_timestamp)``, however
irregular its stamp (:03, :07, duplicates, ...). Statistics are unweighted over the rows seen;
``sample_count`` says how many there were (12 for a full hour at 5 minutes), so consumers can
weigh or drop thin hours. An hour without any row is *absent*, not zero-filled: a consumer that
needs a regular grid should reindex to it and treat the new hours as missing (NaN), never as zero
demand. Feast's feature-view TTL bounds how far back a lookup falls when the latest hours are
missing.

**Missing values.** Sources such as the GWA-T-12 trace have no position and no latency: latency
statistics, positions, distance from home and the region of the last position are then NaN (or
null), the travel flag is False, and a profile's home region falls back to the region that has
served the user most often.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from core.latency import great_circle_km
from core.region_load import background_utilisation
from core.regions import RegionCatalogue, load_regions
from core.schema import APPS, RESOURCE_COLUMNS, conform
from core.settings import FeatureSettings, get_settings

HOUR = pd.Timedelta(hours=1)
P95 = 0.95

USER_KEY = "user_id"
REGION_KEY = "region"
TIMESTAMP = "event_timestamp"

RESOURCE_FEATURES: tuple[str, ...] = tuple(
    f"{resource}_{stat}" for resource in RESOURCE_COLUMNS for stat in ("mean", "p95")
)
APP_SHARE_FEATURES: tuple[str, ...] = tuple(f"app_{app}_share" for app in APPS)
ACTIVITY_FEATURES: tuple[str, ...] = ("data_access_count", "session_share", "sample_count")
LATENCY_FEATURES: tuple[str, ...] = ("latency_mean_ms", "latency_p95_ms", "serving_region")
LOCATION_FEATURES: tuple[str, ...] = (
    "last_lat",
    "last_lon",
    "distance_from_home_km",
    "travel_flag",
    "last_region",
)
HOURLY_COLUMNS: tuple[str, ...] = (
    USER_KEY,
    TIMESTAMP,
    *RESOURCE_FEATURES,
    *ACTIVITY_FEATURES,
    *APP_SHARE_FEATURES,
    *LATENCY_FEATURES,
    *LOCATION_FEATURES,
)
PROFILE_FEATURES: tuple[str, ...] = ("role", "home_lat", "home_lon", "home_region")
PROFILE_COLUMNS: tuple[str, ...] = (USER_KEY, TIMESTAMP, *PROFILE_FEATURES)
REGION_STATUS_FEATURES: tuple[str, ...] = (
    "utilisation",
    "available_vcpu",
    "vcpu_hour_usd",
    "ram_gb_hour_usd",
    "iops_hour_usd",
    "egress_gb_usd",
)
REGION_STATUS_COLUMNS: tuple[str, ...] = (REGION_KEY, TIMESTAMP, *REGION_STATUS_FEATURES)


def hourly_user_features(
    telemetry: pd.DataFrame, catalogue: RegionCatalogue | None = None
) -> pd.DataFrame:
    """Aggregate telemetry to one row per (user, hour with data), stamped at the hour's end.

    Columns (:data:`HOURLY_COLUMNS`): mean and p95 of each resource; the hour's data accesses,
    share of rows with an active session and number of rows; the share of each application;
    latency mean and p95 (NaN where never measured) and the region that served most rows; the
    last known position in the hour, its distance from the user's home as known at the end of
    the hour, whether that exceeds ``features.travel_threshold_km``, and the nearest region to
    it. Vectorised: no Python loop over rows, users or hours.
    """
    catalogue = catalogue if catalogue is not None else load_regions()
    rows, users = _prepared(telemetry)
    groups = rows.groupby(["user_code", "hour"], sort=True)

    stats = groups[list(RESOURCE_COLUMNS)].mean().add_suffix("_mean")
    p95 = groups[[*RESOURCE_COLUMNS, "latency_ms"]].quantile(P95).add_suffix("_p95")
    activity = groups.agg(
        data_access_count=("data_access_count", "sum"),
        session_share=("session_active", "mean"),
        sample_count=("data_access_count", "size"),
        latency_mean_ms=("latency_ms", "mean"),
        last_lat=("lat", "last"),
        last_lon=("lon", "last"),
    )
    out = pd.concat([stats, p95, activity], axis=1).rename(
        columns={"latency_ms_p95": "latency_p95_ms"}
    )
    out = out.join(_app_shares(rows, out["sample_count"]))
    out["serving_region"] = _hourly_mode(rows, "serving_region")
    out = out.reset_index()

    out[USER_KEY] = users[out["user_code"].to_numpy()]
    out[TIMESTAMP] = out["hour"] + HOUR
    out["last_region"] = _nearest_codes(catalogue, out["last_lat"], out["last_lon"])
    homes = _home_track(rows, catalogue, get_settings().features)
    out = _with_distance_from_home(out, homes)
    return _finish(out, HOURLY_COLUMNS, [USER_KEY, TIMESTAMP])


def user_profiles(
    telemetry: pd.DataFrame, catalogue: RegionCatalogue | None = None
) -> pd.DataFrame:
    """A user's profile over time: role, home position and home region.

    One row when a user is first seen (stamped at the end of that first hour) and one more each
    time the profile changes; every row uses only telemetry up to its ``event_timestamp``, so
    joining it point-in-time leaks nothing from the future.

    *Home* is the most frequent cell of a ``features.home_grid_deg`` grid among the positions
    reported at night (local solar time, ``night_start_hour`` to ``night_end_hour``), or among
    all positions while none was reported at night; the home position is the mean of the
    positions in that cell when it took the lead. The *home region* is the region nearest to
    home, or, for users without any position, the region that has served them most often.
    """
    catalogue = catalogue if catalogue is not None else load_regions()
    rows, users = _prepared(telemetry)
    track = _home_track(rows, catalogue, get_settings().features)
    track[USER_KEY] = users[track["user_code"].to_numpy()]
    track[TIMESTAMP] = track["hour"] + HOUR
    # Compare as text so that "unknown" (NaN) equals "unknown" in the previous row.
    as_text = track[list(PROFILE_FEATURES)].astype(str)
    changed = as_text.ne(as_text.groupby(track["user_code"]).shift()).any(axis=1)
    return _finish(track[changed], PROFILE_COLUMNS, [USER_KEY, TIMESTAMP])


def region_status(
    catalogue: RegionCatalogue, timestamps: ArrayLike, seed: int
) -> pd.DataFrame:
    """Each region's status at each timestamp: background utilisation, free vCPU and prices.

    ``timestamps`` are UTC instants (typically hourly); each row is stamped with its own
    instant. Utilisation comes from :func:`core.region_load.background_utilisation`, so the same
    seed gives the same table.
    """
    times = pd.DatetimeIndex(timestamps)
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    utilisation = background_utilisation(catalogue, times, seed)
    regions = catalogue.to_frame()
    n_times = len(times)
    out = pd.DataFrame(
        {
            REGION_KEY: np.tile(np.asarray(catalogue.codes, dtype=object), n_times),
            TIMESTAMP: np.repeat(times.as_unit("ns"), len(catalogue)),
            "utilisation": utilisation.ravel(),
        }
    )
    out["available_vcpu"] = np.tile(regions["capacity_vcpu"].to_numpy(), n_times) * (
        1.0 - out["utilisation"]
    )
    for price in REGION_STATUS_FEATURES[2:]:
        out[price] = np.tile(regions[price].to_numpy(), n_times)
    return _finish(out, REGION_STATUS_COLUMNS, [REGION_KEY, TIMESTAMP])


def _prepared(telemetry: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Conformed telemetry sorted by user and time, with integer user codes and hour buckets.

    Also returns the user ids indexed by ``user_code``: grouping on integers is several times
    faster than grouping on strings.
    """
    rows = conform(telemetry)
    codes, users = pd.factorize(rows[USER_KEY], sort=True)
    rows["user_code"] = codes
    rows["hour"] = rows[TIMESTAMP].dt.floor("h")
    rows = rows.sort_values(["user_code", TIMESTAMP], kind="stable", ignore_index=True)
    return rows, np.asarray(users, dtype=object)


def _app_shares(rows: pd.DataFrame, sample_count: pd.Series) -> pd.DataFrame:
    """Share of the hour's rows spent in each application, one column per app in APPS."""
    counts = rows.groupby(["user_code", "hour", "app"], observed=True).size().unstack(
        "app", fill_value=0
    )
    counts = counts.reindex(columns=list(APPS), fill_value=0)
    shares = counts.div(sample_count.reindex(counts.index), axis=0)
    shares.columns = list(APP_SHARE_FEATURES)
    return shares


def _hourly_mode(rows: pd.DataFrame, column: str) -> pd.Series:
    """The most frequent value of ``column`` per (user, hour); ties go to the latest seen."""
    tally = (
        rows.assign(order=np.arange(len(rows)))
        .groupby(["user_code", "hour", column], observed=True)["order"]
        .agg(["size", "max"])
        .reset_index()
        .sort_values(["user_code", "hour", "size", "max"])
        .drop_duplicates(["user_code", "hour"], keep="last")
    )
    return tally.set_index(["user_code", "hour"])[column]


def _nearest_codes(catalogue: RegionCatalogue, lat: pd.Series, lon: pd.Series) -> pd.Series:
    """Code of the region nearest to each position; null where the position is unknown."""
    codes = pd.Series(pd.NA, index=lat.index, dtype="string")
    known = lat.notna() & lon.notna()
    if known.any():
        nearest = catalogue.nearest(lat[known].to_numpy(), lon[known].to_numpy())
        codes[known] = np.asarray(catalogue.codes, dtype=object)[nearest]
    return codes


def _home_track(
    rows: pd.DataFrame, catalogue: RegionCatalogue, params: FeatureSettings
) -> pd.DataFrame:
    """Profile as known at the end of each (user, hour with data): role, home and home region."""
    hours = rows.groupby(["user_code", "hour"], sort=True)["role"].last().reset_index()
    home = _running_home(rows, params)
    usual_region = _running_mode(rows.assign(weight=1), "serving_region", "weight")
    usual_region = usual_region["serving_region"].rename("usual_region")
    track = hours.join(home, on=["user_code", "hour"]).join(
        usual_region, on=["user_code", "hour"]
    )
    track[["home_lat", "home_lon", "usual_region"]] = track.groupby("user_code")[
        ["home_lat", "home_lon", "usual_region"]
    ].ffill()
    home_region = _nearest_codes(catalogue, track["home_lat"], track["home_lon"])
    track["home_region"] = home_region.fillna(track["usual_region"].astype("string"))
    return track


def _running_home(rows: pd.DataFrame, params: FeatureSettings) -> pd.DataFrame:
    """Home position per (user, hour) at which the home cell changes (see user_profiles)."""
    located = rows[rows["lat"].notna() & rows["lon"].notna()]
    cell = (
        np.floor(located["lat"] / params.home_grid_deg).astype(np.int64) * 1_000_000
        + np.floor(located["lon"] / params.home_grid_deg).astype(np.int64)
    )
    utc_hour = located[TIMESTAMP].dt.hour + located[TIMESTAMP].dt.minute / 60.0
    local_hour = (utc_hour + located["lon"] / 15.0) % 24.0
    night = (local_hour >= params.night_start_hour) & (local_hour < params.night_end_hour)
    # A night row outweighs all daytime rows together, so the mode is taken over night rows
    # whenever there are any, and over all rows otherwise.
    weight = 1 + night.astype(np.int64) * (len(rows) + 1)
    located = located.assign(cell=cell, weight=weight)
    leader = _running_mode(located, "cell", "weight", extra=("lat", "lon"))
    return pd.DataFrame(
        {
            "home_lat": leader["lat_sum"] / leader["count"],
            "home_lon": leader["lon_sum"] / leader["count"],
        }
    )


def _running_mode(
    rows: pd.DataFrame, key: str, weight: str, extra: tuple[str, ...] = ()
) -> pd.DataFrame:
    """The weighted mode of ``key`` over each user's rows so far, at each hour where it changes.

    Returns one row per (user_code, hour) at which a new value takes the lead, indexed by
    them: the leading value (column ``key``), and its cumulative row ``count`` and
    ``<extra>_sum`` for each ``extra`` column at that moment. A value takes the lead only by
    strictly exceeding the previous leader's cumulative weight.
    """
    sums = {weight: "sum", **{c: "sum" for c in extra}}
    per_hour = rows.groupby(["user_code", "hour", key], observed=True).agg(sums)
    per_hour["count"] = rows.groupby(["user_code", "hour", key], observed=True).size()
    per_hour = per_hour.reset_index()
    cumulative = per_hour.groupby(["user_code", key], observed=True)[
        [weight, "count", *extra]
    ].cumsum()
    per_hour[["score", "count", *(f"{c}_sum" for c in extra)]] = cumulative.to_numpy()
    per_hour = per_hour.sort_values(["user_code", "hour", "score"], ignore_index=True)

    # Cumulative weights only grow, so the leader's weight is the running maximum of all
    # cumulative weights seen so far: a record leads when it beats every earlier record.
    best_so_far = per_hour.groupby("user_code")["score"].cummax()
    best_before = best_so_far.groupby(per_hour["user_code"]).shift(fill_value=-np.inf)
    takes_lead = per_hour["score"] > best_before
    lead = per_hour[takes_lead].drop_duplicates(["user_code", "hour"], keep="last")
    # The leader also "beats" its own earlier weight each time it grows; keep real changes only.
    new_user = lead["user_code"].ne(lead["user_code"].shift())
    new_key = pd.Series(lead[key].to_numpy(dtype=object), index=lead.index)
    lead = lead[new_user | new_key.ne(new_key.shift())].set_index(["user_code", "hour"])
    return lead[[key, "count", *(f"{c}_sum" for c in extra)]]


def _with_distance_from_home(hourly: pd.DataFrame, homes: pd.DataFrame) -> pd.DataFrame:
    """Add distance from home (km) and the travel flag, with home as known at each hour's end."""
    hourly = hourly.merge(
        homes[["user_code", "hour", "home_lat", "home_lon"]],
        on=["user_code", "hour"],
        how="left",
    )
    distance = great_circle_km(
        hourly["last_lat"], hourly["last_lon"], hourly["home_lat"], hourly["home_lon"]
    )
    hourly["distance_from_home_km"] = distance
    threshold = get_settings().features.travel_threshold_km
    hourly["travel_flag"] = np.nan_to_num(distance, nan=0.0) > threshold
    return hourly


def _finish(frame: pd.DataFrame, columns: tuple[str, ...], keys: list[str]) -> pd.DataFrame:
    """The table's columns in order, string keys, sorted by its key, with a clean index."""
    out = frame.loc[:, list(columns)].copy()
    out[keys[0]] = out[keys[0]].astype("string")
    return out.sort_values(keys, ignore_index=True)
