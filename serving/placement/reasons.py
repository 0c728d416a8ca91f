"""One human-readable sentence per placement request, built column-wise with pyarrow.

A plan can hold hundreds of thousands of requests, so the sentences are assembled from whole
columns (pyarrow compute kernels), not formatted row by row. The figures they quote (rounded)
are the request's own columns: probability, expected latency and gain, expected cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KINDS: tuple[str, ...] = ("move", "grow", "stay_away", "keep")


@dataclass(frozen=True, eq=False)
class Explained:
    """The figures behind the requests (arrays of one length; regions as catalogue codes)."""

    region: np.ndarray
    current: np.ndarray
    probability: np.ndarray  # P(where the chosen region meets the SLO)
    probability_current: np.ndarray  # the same for the current region
    latency_ms: np.ndarray
    gain_ms: np.ndarray
    cost_usd: np.ndarray
    hours: np.ndarray
    grown: np.ndarray  # names of the resources whose need exceeds what is held
    kind: np.ndarray  # index into KINDS


def reasons(explained: Explained, slo_ms: float, sized: str) -> pd.Series:
    """The sentence of every request, as a pyarrow-backed string Series.

    ``sized`` names how allocations are sized (e.g. "p90+15%").
    """
    slo = f"the {slo_ms:g} ms SLO"
    pieces, positions = [], []
    for kind, name in enumerate(KINDS):
        rows = np.flatnonzero(explained.kind == kind)
        if rows.size:
            pieces.append(_sentence(name, explained, rows, slo, sized))
            positions.append(rows)
    if not pieces:
        return pd.Series(pd.array([], dtype="string[pyarrow]"))
    order = np.argsort(np.concatenate(positions), kind="stable")
    text = pa.concat_arrays(pieces).take(pa.array(order))
    return pd.Series(pd.arrays.ArrowStringArray(text))


def _sentence(kind: str, e: Explained, rows: np.ndarray, slo: str, sized: str) -> pa.Array:
    region, current = _text(e.region[rows]), _text(e.current[rows])
    figures = [
        "; expected ", _integer(e.latency_ms[rows]), " ms, ", _usd(e.cost_usd[rows]), " for ",
        _integer(e.hours[rows]), " h",
    ]
    if kind == "move":
        parts = [
            "move: ", _percent(e.probability[rows]), " likely where ", region, " meets ", slo,
            " (current ", current, ": ", _percent(e.probability_current[rows]), "); ",
            _signed(e.gain_ms[rows]), " ms vs staying",
        ]
    elif kind == "grow":
        parts = [
            "grow in ", region, ": the ", sized, " forecast exceeds the allocation held (",
            _text(e.grown[rows]), "); ", _percent(e.probability[rows]), " likely within ", slo,
        ]
    elif kind == "stay_away":
        parts = [
            "keep in ", region, ": ", _percent(1.0 - e.probability[rows]),
            " likely where it misses ", slo, ", but no region was better with room",
        ]
    else:
        parts = [
            "keep in ", region, ": ", _percent(e.probability[rows]), " likely within ", slo,
            ", forecast fits the allocation held",
        ]
    return pc.binary_join_element_wise(*parts, *figures, "")


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.string())


def _integer(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.rint(values).astype(np.int64)), pa.string())


def _percent(values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(_integer(np.asarray(values) * 100), "%", "")


def _signed(values: np.ndarray) -> pa.Array:
    rounded = np.rint(values)
    sign = pa.array(np.where(rounded > 0, "+", ""), type=pa.string())
    return pc.binary_join_element_wise(sign, _integer(rounded), "")


def _usd(values: np.ndarray) -> pa.Array:
    cents = np.rint(np.asarray(values) * 100).astype(np.int64)
    return pc.binary_join_element_wise(
        "$", _integer(cents // 100), ".", pc.utf8_lpad(_integer(cents % 100), 2, "0"), ""
    )
