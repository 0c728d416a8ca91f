"""Calibration of the region head: temperature and stay bias fitted on held-out windows."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from training.region_calibration import calibrate_logits, fit_region_calibration

REGIONS = 4


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return functional.cross_entropy(logits, target).item()


def _eager_returns(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Users away in region 2, their home 0: the logits say a return at 60 %, but they stay
    70 % of the time (and return 30 %)."""
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.tensor([0.6, 0.01, 0.38, 0.01])
    logits = probabilities.log().expand(size, -1).clone()
    last = torch.full((size,), 2)
    stays = torch.rand(size, generator=generator) < 0.7
    target = torch.where(stays, 2, 0)
    return logits, last, target


def test_identity_leaves_logits_unchanged_and_unknown_last_region_gets_no_bias():
    logits = torch.randn(5, REGIONS)
    last = torch.tensor([0, 1, -1, 3, 2])
    same = calibrate_logits(logits, last, torch.tensor(1.0), torch.tensor(0.0))
    assert torch.equal(same, logits)
    shifted = calibrate_logits(logits, last, torch.tensor(2.0), torch.tensor(1.5))
    expected = logits / 2.0
    for row, region in enumerate(last.tolist()):
        if region >= 0:
            expected[row, region] += 1.5
    torch.testing.assert_close(shifted, expected)


def test_fit_on_eager_returns_raises_staying_and_lowers_held_out_cross_entropy():
    logits, last, target = _eager_returns(4000, seed=0)
    temperature, stay_bias = fit_region_calibration(logits, last, target)
    assert stay_bias > 0
    held_out_logits, held_out_last, held_out_target = _eager_returns(4000, seed=1)
    before = _cross_entropy(held_out_logits, held_out_target)
    calibrated = calibrate_logits(
        held_out_logits, held_out_last, torch.tensor(temperature), torch.tensor(stay_bias)
    )
    assert _cross_entropy(calibrated, held_out_target) < before - 0.05
    # The argmax now follows what users mostly did: stay.
    assert (calibrated.argmax(-1) == held_out_last).all()
    # Calibrated probabilities of staying and returning match their rates (0.7, 0.3).
    proba = calibrated.softmax(-1)[0]
    assert proba[2].item() == pytest.approx(0.7, abs=0.03)
    assert proba[0].item() == pytest.approx(0.3, abs=0.03)


def test_fit_recovers_the_temperature_of_overconfident_logits():
    generator = torch.Generator().manual_seed(2)
    true_logits = torch.randn(20_000, REGIONS, generator=generator)
    target = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(-1)
    last = torch.full((len(target),), -1)  # no last region known: only the temperature acts
    temperature, _ = fit_region_calibration(3.0 * true_logits, last, target)
    assert temperature == pytest.approx(3.0, rel=0.1)


def test_rows_of_unknown_target_are_left_out_and_none_known_gives_the_identity():
    logits, last, target = _eager_returns(2000, seed=3)
    noisy = torch.randint(0, REGIONS, (2000,), generator=torch.Generator().manual_seed(4))
    padded_logits = torch.cat([logits, torch.randn(2000, REGIONS)])
    padded_last = torch.cat([last, noisy])
    padded_target = torch.cat([target, torch.full((2000,), -1)])
    assert fit_region_calibration(padded_logits, padded_last, padded_target) == pytest.approx(
        fit_region_calibration(logits, last, target), rel=1e-4
    )
    assert fit_region_calibration(logits, last, torch.full_like(target, -1)) == (1.0, 0.0)
