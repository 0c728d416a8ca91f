"""The reservation life cycle: which moves are allowed."""

from __future__ import annotations

from itertools import pairwise

import pytest

from serving.provisioning.states import (
    STATES,
    TRANSITIONS,
    IllegalTransitionError,
    check_transition,
)

MAIN_LINE = ("requested", "provisioning", "warm", "active", "releasing", "released")


def test_the_main_line_is_allowed_step_by_step() -> None:
    for current, target in pairwise(MAIN_LINE):
        check_transition("r-1", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("released", "requested"),
        ("released", "warm"),
        ("active", "warm"),
        ("active", "expired"),
        ("requested", "active"),
        ("provisioning", "active"),
        ("expired", "warm"),
        ("releasing", "active"),
        ("failed", "warm"),
    ],
)
def test_illegal_moves_raise_naming_the_reservation(current: str, target: str) -> None:
    with pytest.raises(IllegalTransitionError, match=rf"r-7: {current} -> {target}"):
        check_transition("r-7", current, target)


def test_released_is_the_only_end_state_and_every_state_can_reach_it() -> None:
    assert [s for s in STATES if not TRANSITIONS[s]] == ["released"]
    for start in STATES:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert "released" in seen, start
