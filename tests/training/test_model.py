"""The LSTM forecasting network: shapes, non-crossing quantiles, candidates, losses, calibration."""

from __future__ import annotations

import math

import pytest
import torch

from training.model import ForecastModule, _hours_in_last_region, pinball_loss, region_loss

L, H, R = 48, 12, 4
N_REGIONS = 5


def _module(**overrides) -> ForecastModule:
    torch.manual_seed(0)
    options = dict(
        encoder_length=L,
        horizon=H,
        n_regions=N_REGIONS,
        hidden_size=8,
        head_hidden_size=16,
        embedding_dim=4,
        patch_hours=8,
    )
    return ForecastModule(**{**options, **overrides}).eval()


def _batch(size: int = 3, region: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hours = torch.arange(L + H)
    calendar = torch.stack([hours % 24, (hours // 24) % 7], dim=-1)
    batch = {
        "past": torch.randn(size, L, R, generator=generator),
        "past_calendar": calendar[:L].expand(size, -1, -1),
        "future_calendar": calendar[L:].expand(size, -1, -1),
        "static": torch.zeros(size, 2, dtype=torch.long),
        "target": torch.randn(size, H, R, generator=generator),
    }
    if region:
        batch["past_region"] = torch.randint(-1, N_REGIONS, (size, L), generator=generator)
        batch["target_region"] = torch.randint(-1, N_REGIONS, (size, H), generator=generator)
    return batch


def test_forward_gives_quantiles_per_step_resource_and_level():
    out = _module(quantiles=(0.1, 0.5, 0.9))(_batch(size=5))
    assert out["quantiles"].shape == (5, H, R, 3)
    assert "region_logits" not in out


def test_region_head_gives_logits_over_the_catalogue():
    out = _module(with_region_head=True)(_batch(size=2, region=True))
    assert out["region_logits"].shape == (2, H, N_REGIONS)
    assert torch.isfinite(out["region_logits"]).all()


def test_quantiles_never_cross_even_for_untrained_weights_and_gaps():
    batch = _batch(size=16, seed=3)
    batch["past"][::2, ::3] = float("nan")
    for seed in range(3):
        torch.manual_seed(seed)
        module = ForecastModule(encoder_length=L, horizon=H, quantiles=(0.1, 0.5, 0.9, 0.99))
        q = module.eval()(batch)["quantiles"]
        assert torch.all(q[..., 1:] >= q[..., :-1])


def test_window_without_any_data_still_gets_a_finite_forecast():
    batch = _batch(size=2)
    batch["past"][0] = float("nan")
    out = _module()(batch)["quantiles"]
    assert torch.isfinite(out).all()


def test_candidates_read_the_right_hours():
    module = _module()
    past = torch.arange(L, dtype=torch.float32).view(1, L, 1).expand(1, L, R).clone()
    past[0, -1] = float("nan")  # the last hour is missing
    candidates = module.candidates(past)  # (1, H, C, R)
    assert candidates.shape[:2] == (1, H)
    assert torch.all(candidates[0, :, 0] == L - 2)  # last observed value
    steps = torch.arange(H, dtype=torch.float32)
    yesterday = candidates[0, :, -5, 0]  # the same hour one day before each step
    assert torch.equal(yesterday, L - 24 + steps)


def test_week_candidate_is_missing_when_the_encoder_is_shorter_than_a_week():
    candidates = _module().candidates(torch.randn(2, L, R))
    assert torch.isnan(candidates[:, :, -1]).all()


def test_pinball_loss_matches_its_definition_and_skips_missing_targets():
    target = torch.tensor([[1.0, float("nan")]])
    forecast = torch.tensor([[[0.0, 2.0], [5.0, 5.0]]])  # (1, 2, Q)
    levels = torch.tensor([0.5, 0.9])
    # target 1: q50=0 -> 0.5*1; q90=2 -> (0.9-1)*(1-2)=0.1
    assert pinball_loss(forecast, target, levels).item() == pytest.approx(0.3)


def test_region_loss_ignores_unknown_regions():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0]]])
    known = region_loss(logits, torch.tensor([[0, -1]]))
    assert known.item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 1)), rel=1e-5)
    assert region_loss(logits, torch.tensor([[-1, -1]])).item() == 0.0


def test_forward_depends_only_on_its_inputs_not_on_targets():
    module = _module()
    batch = _batch()
    first = module(batch)["quantiles"]
    batch["target"] = batch["target"] * 1000
    assert torch.equal(first, module(batch)["quantiles"])


def test_calibration_rescales_the_p90_step_to_reach_its_level():
    module = _module()
    batches = [_batch(size=64, seed=s) for s in range(4)]
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for batch in batches:
            q = module(batch)["quantiles"]
            # actuals spread twice as far as the untrained p90 says: the right factor is 2
            spread = torch.rand(q.shape[:-1], generator=generator) / 0.9
            batch["target"] = q[..., 0] + 2 * spread * (q[..., 1] - q[..., 0])
    factors = module.calibrate(batches)
    assert factors.item() == pytest.approx(2.0, rel=0.05)
    covered, count = 0, 0
    with torch.no_grad():
        for batch in batches:
            q = module(batch)["quantiles"]
            covered += (batch["target"] <= q[..., 1]).sum().item()
            count += batch["target"].numel()
    assert covered / count == pytest.approx(0.9, abs=0.02)


def _staying_batches(module: ForecastModule) -> list[dict[str, torch.Tensor]]:
    """Region batches whose targets are the last known region 90 % of the time."""
    generator = torch.Generator().manual_seed(5)
    batches = [_batch(size=64, region=True, seed=s) for s in range(4)]
    for batch in batches:
        last = module._region_copies(batch)[..., 0]
        other = torch.randint(0, N_REGIONS, last.shape, generator=generator)
        stays = torch.rand(last.shape, generator=generator) < 0.9
        batch["target_region"] = torch.where(stays & (last >= 0), last, other)
    return batches


def _region_cross_entropy(module: ForecastModule, batches: list[dict]) -> float:
    with torch.no_grad():
        losses = [region_loss(module(b)["region_logits"], b["target_region"]) for b in batches]
    return torch.stack(losses).mean().item()


def test_calibration_fits_the_region_head_to_held_out_stays_and_forward_applies_it():
    module = _module(with_region_head=True)
    batches = _staying_batches(module)
    assert module.region_calibration == (1.0, 0.0)
    before = _region_cross_entropy(module, batches)
    module.calibrate(batches)
    temperature, stay_bias = module.region_calibration
    assert stay_bias > 0  # the untrained head does not know users mostly stay
    assert _region_cross_entropy(module, batches) < before - 0.1
    # Saved with the weights; weights saved before the calibration existed load as identity.
    state = module.state_dict()
    assert state["region_temperature"].item() == pytest.approx(temperature)
    restored = _module(with_region_head=True)
    restored.load_state_dict(state)
    assert restored.region_calibration == pytest.approx((temperature, stay_bias))
    legacy = {k: v for k, v in state.items() if not k.startswith("region_temperature")}
    legacy.pop("region_stay_bias")
    restored.load_state_dict(legacy)
    assert restored.region_calibration == (1.0, 0.0)


def test_rejects_quantiles_without_a_median_and_misfit_patches():
    with pytest.raises(ValueError, match=r"0\.5"):
        ForecastModule(quantiles=(0.1, 0.9))
    with pytest.raises(ValueError, match="multiple"):
        ForecastModule(encoder_length=50, patch_hours=8)


def test_hours_in_the_last_region_count_back_to_the_last_hour_known_elsewhere():
    regions = torch.tensor(
        [
            [0, 0, 1, 1, 1, 1],  # arrived in region 1 four hours ago
            [0, 0, 1, -1, -1, 1],  # unknown hours do not end the stay
            [2, 2, 2, 2, 2, 2],  # there for the whole window
            [-1, -1, -1, -1, -1, -1],  # nothing known
            [1, 1, 0, 0, 1, -1],  # back in region 1 for two hours (the last one unknown)
        ]
    )
    assert _hours_in_last_region(regions).tolist() == [4.0, 4.0, 6.0, 0.0, 2.0]


def test_the_region_head_reads_how_long_the_user_has_been_away():
    module = _module(with_region_head=True)
    # Both windows agree on every hour the encoder and the copies read (the last hour of each
    # 8-hour patch, 24 h before each target); only the stay in region 2 differs: 2 h or 8 h.
    short = _batch(region=True)
    short["past_region"][:] = 0
    short["past_region"][:, -2:] = 2
    long = dict(short, past_region=short["past_region"].clone())
    long["past_region"][:, -8:] = 2
    with torch.no_grad():
        assert not torch.allclose(module(short)["region_logits"], module(long)["region_logits"])


def test_the_region_head_reads_the_typical_stay_and_the_usual_destination():
    module = _module(with_region_head=True)
    short = _batch(region=True)
    # Two hours in region 2, as the window shows; earlier stays there lasted 3 h or 3 days.
    short["past_region"][:] = 0
    short["past_region"][:, -2:] = 2
    short["trip_history"] = torch.tensor([[2.0, 3.0, 1.0, 2.0]]).expand(3, -1)
    long = dict(short, trip_history=torch.tensor([[2.0, 72.0, 1.0, 2.0]]).expand(3, -1))
    unknown = dict(short, trip_history=torch.tensor([[2.0, float("nan"), 0.0, -1.0]]).expand(3, -1))
    elsewhere = dict(short, trip_history=torch.tensor([[2.0, 3.0, 1.0, 4.0]]).expand(3, -1))
    with torch.no_grad():
        logits = [module(b)["region_logits"] for b in (short, long, unknown, elsewhere)]
    assert not torch.allclose(logits[0], logits[1])
    assert torch.isfinite(logits[2]).all()
    assert not torch.allclose(logits[0], logits[3])  # the usual destination is read too
