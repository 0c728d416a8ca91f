"""Per-user random streams: a user's life never depends on how users are batched.

Every random aspect of a user's life draws from its own generator, keyed by the world's seed, the
user's index and the aspect (:class:`Stream`), and sometimes a sub-key (a city, a day). Two
worlds with the same seed therefore agree user by user, whatever blocks they compute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """The independent aspects of a user's life that draw random numbers."""

    TRAITS = 0
    TRAVEL = 1
    SCHEDULE = 2
    APPS = 3
    DEMAND = 4
    DATA_ACCESS = 5
    OBSERVATION = 6
    LATENCY = 7
    IP_ADDRESS = 8


def user_rng(seed: int, user: int, stream: Stream, *subkeys: int) -> np.random.Generator:
    """The generator of one aspect (and optional sub-key) of one user's life."""
    return np.random.default_rng([seed, user, int(stream), *subkeys])


def stacked_draws(
    seed: int,
    users: Sequence[int],
    stream: Stream,
    draw: Callable[[np.random.Generator], np.ndarray],
) -> np.ndarray:
    """``draw`` applied to each user's generator of ``stream``, stacked along a first axis."""
    return np.stack([draw(user_rng(seed, int(user), stream)) for user in users])
