"""Checking placement's input frames and turning them into arrays on integer indices.

Every check raises :class:`PlacementInputError` (a ValueError) naming the frame, the column
and a few offending users, so that a bad batch is rejected with a reason rather than planned
wrongly. The arrays keep one entry per input row; ``serving.placement.windows`` aggregates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from core.regions import RegionCatalogue
from core.schema import RESOURCE_COLUMNS

HOUR_NS = 3_600_000_000_000
PROBABILITY_TOLERANCE = 1e-6  # rounding slack on "probabilities of one user-step sum to <= 1"
MEASURED_COLUMNS: tuple[str, ...] = ("user_id", "region", "latency_ms")


class PlacementInputError(ValueError):
    """An input frame of placement is malformed; the message names the frame and the problem."""


@dataclass(frozen=True, eq=False)
class PlacementInputs:
    """Validated inputs: users and regions as integer positions, one array entry per row.

    Profile rows (``row_*``) are the forecast steps still ahead of ``now``; probability rows
    (``prob_*``) are the region probabilities of those steps, without the residual mass.
    """

    user_ids: np.ndarray  # (n,) str, in order of first appearance in the profiles
    current_region: np.ndarray  # (n,) int, catalogue position of each user's serving region
    current_allocation: np.ndarray  # (n, 4) what each user holds now, RESOURCE_COLUMNS order
    capacity: np.ndarray  # (S, 4) remaining capacity per catalogue region
    row_user: np.ndarray  # (m,) int
    row_step: np.ndarray  # (m,) int >= 1
    row_hour_ns: np.ndarray  # (m,) int64, target hour (UTC, ns since the epoch)
    p50: np.ndarray  # (m, 4)
    p90: np.ndarray  # (m, 4)
    prob_user: np.ndarray  # (k,) int
    prob_step: np.ndarray  # (k,) int
    prob_region: np.ndarray  # (k,) int
    prob_value: np.ndarray  # (k,) float
    measured_user: np.ndarray  # (j,) int, one entry per measured (user, region) pair
    measured_region: np.ndarray  # (j,) int
    measured_ms: np.ndarray  # (j,) float, median of the measurements of the pair
    past_steps_dropped: int  # profile rows whose hour was already over at ``now``
    unknown_users: np.ndarray  # profiled users ``current`` lacks: left out, to be reported

    @property
    def n_users(self) -> int:
        """Number of users with a profile."""
        return len(self.user_ids)


def read_inputs(
    profiles: pd.DataFrame,
    region_probs: pd.DataFrame,
    current: pd.DataFrame,
    capacity: pd.DataFrame | None,
    measured_latency: pd.DataFrame | None,
    catalogue: RegionCatalogue,
    now: datetime,
) -> PlacementInputs:
    """Check every input frame and return them as :class:`PlacementInputs`.

    ``current`` and ``capacity`` may carry ``user_id`` / ``region`` as a column or as the index.
    Capacity rows missing for a region mean the catalogue's capacity there. Profiled users
    missing from ``current`` are set aside in ``unknown_users`` (placement reports them).
    """
    now_ns = _utc_ns(now)
    user_index, row_user = _profile_users(profiles)
    step = _steps(profiles["step"], "profiles")
    n_steps = int(step.max(initial=0))
    _reject_duplicates(row_user * n_steps + step - 1, len(user_index) * n_steps, user_index,
                       n_steps, "profiles", "(user_id, step)")
    hour_ns = _timestamps_ns(profiles["target_hour"], "profiles.target_hour")
    p50 = _demand(profiles, "p50")
    p90 = _demand(profiles, "p90")
    current_region, current_allocation, known = _current(current, user_index, catalogue)
    prob_user, prob_step, prob_region, prob_value = _region_probs(
        region_probs, user_index, row_user, step, catalogue
    )
    rows = (row_user, step, hour_ns, p50, p90)
    probs = (prob_user, prob_step, prob_region, prob_value)
    unknown_users = np.asarray(user_index[~known], dtype=object)
    if unknown_users.size:  # not planned, reported: nobody knows where they are served
        renumber = np.cumsum(known) - 1
        rows = _renumbered(rows, known, renumber)
        probs = _renumbered(probs, known, renumber)
        user_index = user_index[known]
        current_region, current_allocation = current_region[known], current_allocation[known]
    ahead = rows[2] + HOUR_NS > now_ns
    past = len(ahead) - int(np.count_nonzero(ahead))
    if past:
        rows = tuple(a[ahead] for a in rows)
        prob_ahead = _rows_ahead(probs[0], probs[1], rows[0], rows[1], len(user_index))
        probs = tuple(a[prob_ahead] for a in probs)
    measured_user, measured_region, measured_ms = _measured(
        measured_latency, user_index, catalogue
    )
    return PlacementInputs(
        user_ids=np.asarray(user_index, dtype=object),
        current_region=current_region,
        current_allocation=current_allocation,
        capacity=_capacity(capacity, catalogue),
        row_user=rows[0],
        row_step=rows[1],
        row_hour_ns=rows[2],
        p50=rows[3],
        p90=rows[4],
        prob_user=probs[0],
        prob_step=probs[1],
        prob_region=probs[2],
        prob_value=probs[3],
        measured_user=measured_user,
        measured_region=measured_region,
        measured_ms=measured_ms,
        past_steps_dropped=past,
        unknown_users=unknown_users,
    )


def _renumbered(
    arrays: tuple[np.ndarray, ...], known: np.ndarray, renumber: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Row arrays (user position first) without unknown users' rows, positions renumbered."""
    keep = known[arrays[0]]
    kept = tuple(a[keep] for a in arrays)
    return (renumber[kept[0]], *kept[1:])


def default_capacity(catalogue: RegionCatalogue) -> np.ndarray:
    """The catalogue's capacity per region in allocation units (network Gbps become Mbps)."""
    return np.array(
        [
            [r.capacity_vcpu, r.capacity_ram_gb, r.capacity_storage_iops,
             r.capacity_network_gbps * 1000.0]
            for r in catalogue
        ],
        dtype=np.float64,
    )


def _profile_users(profiles: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    columns = ["user_id", "step", "target_hour"]
    columns += [f"{r}_{q}" for r in RESOURCE_COLUMNS for q in ("p50", "p90")]
    _require_columns(profiles, "profiles", columns)
    if profiles["user_id"].isna().any():
        raise PlacementInputError("profiles: user_id is missing on some rows")
    codes, uniques = pd.factorize(profiles["user_id"])
    return pd.Index(uniques), codes.astype(np.int64)


def _current(
    current: pd.DataFrame, users: pd.Index, catalogue: RegionCatalogue
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each profiled user's serving region and allocation, aligned with ``users``.

    The third array says which users ``current`` has at all (the others' entries are 0).
    """
    frame = _with_column(current, "user_id")
    _require_columns(frame, "current", ["user_id", "current_region", *RESOURCE_COLUMNS])
    if frame["user_id"].duplicated().any():
        dup = frame.loc[frame["user_id"].duplicated(), "user_id"]
        raise PlacementInputError(f"current: duplicate user_id(s) {_examples(dup)}")
    region = _region_positions(frame["current_region"], catalogue, "current.current_region")
    allocation = _non_negative(frame, list(RESOURCE_COLUMNS), "current")
    position = pd.Index(frame["user_id"]).get_indexer(users)
    known = position >= 0
    return region[position] * known, allocation[position] * known[:, None], known


def _region_probs(
    frame: pd.DataFrame,
    users: pd.Index,
    row_user: np.ndarray,
    row_step: np.ndarray,
    catalogue: RegionCatalogue,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The probability rows on integer indices, checked against the profile rows."""
    _require_columns(frame, "region_probs", ["user_id", "step", "region", "probability"])
    user = _positions(frame["user_id"], users)
    if (user < 0).any():
        raise PlacementInputError(
            f"region_probs: user(s) without a profile: {_examples(frame['user_id'][user < 0])}"
        )
    step = _steps(frame["step"], "region_probs")
    region = _region_positions(frame["region"], catalogue, "region_probs.region")
    probability = frame["probability"].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((probability >= 0) & (probability <= 1))
    if bad.any():
        raise PlacementInputError(
            f"region_probs: probability must lie in [0, 1]; got {_examples(probability[bad])} "
            f"for user(s) {_examples(frame['user_id'][bad])}"
        )
    n_steps = int(max(row_step.max(initial=0), step.max(initial=0)))
    key = user * n_steps + step - 1
    _reject_repeated_regions(key, region, len(users) * n_steps, users, n_steps)
    profiled = np.zeros(len(users) * n_steps, dtype=bool)
    profiled[row_user * n_steps + row_step - 1] = True
    if not profiled[key].all():
        raise PlacementInputError(
            "region_probs: rows for user-steps without a profile row, e.g. user(s) "
            f"{_examples(users[user[~profiled[key]]])}"
        )
    total = np.bincount(key, weights=probability, minlength=len(profiled))
    if (total > 1 + PROBABILITY_TOLERANCE).any():
        over = np.flatnonzero(total > 1 + PROBABILITY_TOLERANCE)
        raise PlacementInputError(
            "region_probs: probabilities of one user-step sum to more than 1 "
            f"(up to {total.max():.4f}) for user(s) {_examples(users[over // n_steps])}"
        )
    return user, step, region, probability


def _rows_ahead(
    prob_user: np.ndarray,
    prob_step: np.ndarray,
    ahead_user: np.ndarray,
    ahead_step: np.ndarray,
    n_users: int,
) -> np.ndarray:
    """Which probability rows belong to a profile row still ahead of ``now``."""
    n_steps = int(max(prob_step.max(initial=0), ahead_step.max(initial=0)))
    ahead = np.zeros(n_users * n_steps + 1, dtype=bool)
    ahead[ahead_user * n_steps + ahead_step - 1] = True
    return ahead[prob_user * n_steps + prob_step - 1]


def _capacity(capacity: pd.DataFrame | None, catalogue: RegionCatalogue) -> np.ndarray:
    """Remaining capacity (S, 4); regions the frame leaves out keep the catalogue's capacity."""
    table = default_capacity(catalogue)
    if capacity is None:
        return table
    frame = _with_column(capacity, "region")
    _require_columns(frame, "capacity", ["region", *RESOURCE_COLUMNS])
    if frame["region"].duplicated().any():
        dup = frame.loc[frame["region"].duplicated(), "region"]
        raise PlacementInputError(f"capacity: duplicate region(s) {_examples(dup)}")
    region = _region_positions(frame["region"], catalogue, "capacity.region")
    table[region] = _non_negative(frame, list(RESOURCE_COLUMNS), "capacity", key="region")
    return table


def _measured(
    frame: pd.DataFrame | None, users: pd.Index, catalogue: RegionCatalogue
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median measured latency per (user, region) pair; users without a profile are ignored."""
    if frame is None or frame.empty:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    _require_columns(frame, "measured_latency", list(MEASURED_COLUMNS))
    region = _region_positions(frame["region"], catalogue, "measured_latency.region")
    latency = _non_negative(frame, ["latency_ms"], "measured_latency")[:, 0]
    user = users.get_indexer(frame["user_id"])
    known = user >= 0
    pairs = pd.DataFrame({"user": user[known], "region": region[known], "ms": latency[known]})
    median = pairs.groupby(["user", "region"], sort=True)["ms"].median()
    return (
        median.index.get_level_values("user").to_numpy(np.int64),
        median.index.get_level_values("region").to_numpy(np.int64),
        median.to_numpy(np.float64),
    )


def _demand(profiles: pd.DataFrame, quantile: str) -> np.ndarray:
    columns = [f"{r}_{quantile}" for r in RESOURCE_COLUMNS]
    return _non_negative(profiles, columns, "profiles")


def _non_negative(
    frame: pd.DataFrame, columns: list[str], name: str, key: str = "user_id"
) -> np.ndarray:
    """The columns as a float array; NaN, infinite or negative values are an error."""
    values = np.empty((len(frame), len(columns)), order="F")  # column by column: contiguous
    for k, column in enumerate(columns):
        values[:, k] = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((values >= 0) & (values < np.inf))
    if bad.any():
        column = columns[int(np.flatnonzero(bad.any(axis=0))[0])]
        rows = bad.any(axis=1)
        who = f" for {key}(s) {_examples(frame[key][rows])}" if key in frame.columns else ""
        raise PlacementInputError(
            f"{name}: {column} must be a finite number >= 0 (negative or missing demand); "
            f"got {_examples(values[bad])}{who}"
        )
    return values


def _steps(series: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(series.dtype) and not isinstance(
        series.dtype, pd.CategoricalDtype
    ):
        values = series.to_numpy(dtype=np.int64)
        if values.min(initial=1) < 1:
            raise PlacementInputError(f"{name}: step must be an integer >= 1")
        return values
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if not (np.isfinite(values) & (values >= 1) & (values == np.round(values))).all():
        raise PlacementInputError(f"{name}: step must be an integer >= 1")
    return values.astype(np.int64)


def _region_positions(series: pd.Series, catalogue: RegionCatalogue, name: str) -> np.ndarray:
    """Catalogue positions of region codes; each distinct code is looked up once."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes, uniques = series.cat.codes.to_numpy(np.int64), series.cat.categories
    else:
        codes, uniques = pd.factorize(series)
    if (codes < 0).any():
        raise PlacementInputError(f"{name}: region is missing on some rows")
    positions = pd.Index(catalogue.codes).get_indexer(uniques)[codes]
    if (positions < 0).any():
        unknown = _examples(series[positions < 0])
        raise PlacementInputError(
            f"{name}: unknown region(s) {unknown}; known regions: {', '.join(catalogue.codes)}"
        )
    return positions.astype(np.int64)


def _reject_repeated_regions(
    key: np.ndarray, region: np.ndarray, n_keys: int, users: pd.Index, n_steps: int
) -> None:
    """Raise when one user-step (``key``) lists the same region twice.

    Summing 2**region over a user-step's rows sets one bit per distinct region; a repeated
    region carries into another bit, so the sum has fewer bits set than the user-step has rows.
    (Exact in float64 while the sums stay below 2**53, i.e. for catalogues of < 47 regions.)
    """
    if region.max(initial=0) >= 46:
        _reject_duplicates(key * (region.max() + 1) + region, n_keys * (region.max() + 1),
                           users, n_steps * (region.max() + 1), "region_probs",
                           "(user_id, step, region)")
        return
    bits = np.bincount(key, weights=np.ldexp(1.0, region), minlength=n_keys)
    rows = np.bincount(key, minlength=n_keys)
    repeated = np.flatnonzero(np.bitwise_count(bits.astype(np.uint64)) != rows)
    if repeated.size:
        raise PlacementInputError(
            "region_probs: a region is listed twice for one step of user(s) "
            f"{_examples(users[repeated // n_steps])}"
        )


def _positions(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Positions of ``values`` in ``index`` (-1 where absent).

    Rows usually come grouped by user, so each run of equal consecutive values is looked up once.
    """
    array = values.to_numpy(dtype=object)
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, array[1:] != array[:-1]])
    found = index.get_indexer(array[starts])
    return np.repeat(found, np.diff(np.r_[starts, len(array)]))


def _reject_duplicates(
    key: np.ndarray, key_range: int, users: pd.Index, per_user: int, name: str, what: str
) -> None:
    """Raise when a key (user * per_user + rest, below key_range) occurs on two rows."""
    seen = np.zeros(key_range, dtype=bool)
    seen[key] = True
    if np.count_nonzero(seen) == len(key):
        return
    duplicated = pd.Series(key).duplicated().to_numpy()
    raise PlacementInputError(
        f"{name}: duplicate {what} rows for user(s) {_examples(users[key[duplicated] // per_user])}"
    )


def _timestamps_ns(series: pd.Series, name: str) -> np.ndarray:
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        raise PlacementInputError(f"{name} must be timezone-aware UTC timestamps")
    if series.isna().any():
        raise PlacementInputError(f"{name} is missing on some rows")
    return pd.DatetimeIndex(series).tz_convert("UTC").as_unit("ns").asi8


def _utc_ns(now: datetime) -> int:
    if now.tzinfo is None:
        raise PlacementInputError("now must be a timezone-aware datetime")
    return int(pd.Timestamp(now).tz_convert("UTC").as_unit("ns").value)


def _with_column(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with ``name`` as a column, moved out of the index when it is there."""
    if name not in frame.columns and frame.index.name == name:
        return frame.reset_index()
    return frame


def _require_columns(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PlacementInputError(f"{name}: missing column(s) {missing}")


def _examples(values: object, limit: int = 5) -> str:
    """A short, readable list of the first few distinct offending values."""
    unique = pd.unique(pd.Series(np.asarray(values, dtype=object).ravel()))
    shown = ", ".join(repr(v) for v in unique[:limit])
    return f"[{shown}{', …' if len(unique) > limit else ''}]"
