"""The forecasting network as a LightningModule: one LSTM encoder, per-step MLP heads.

For every window the module forecasts, for each of the ``H`` hours ahead at once (no per-step
loop):

- quantiles of the four resources, in the scaled units of ``training.windows.Scaler``. The
  median is a learned, per-step mixture of simple candidate forecasts read off the encoder
  window (last value, recent medians and mean, the same hour on previous days, the same hour
  last week) plus a learned correction; higher quantiles add softplus steps to it and lower
  ones subtract them, so the quantiles never cross;
- optionally, logits over the region catalogue for where the user will be: free logits plus
  learned weights on copying the last known region, the region 24 h and 168 h before that
  hour, and the home region; the head also reads how long the user has been in their last
  known region (a trip's elapsed length says whether it is likely to end soon) and, from the
  whole history before the origin (``training.windows.trip_history``), how long their earlier
  stays there lasted: per step, the hours left until the typical stay would end. It may also
  copy the user's usual destination, for a user in flight (recent hours of unknown region).

After training, ``calibrate`` also fits a temperature and a bias on "stays in the last known
region" on held-out windows (``training.region_calibration``); both are buffers of the module,
saved with its weights, and every forward applies them.

The LSTM reads the ``L`` encoder hours in patches of ``patch_hours`` hours, one patch per step
(8 hours: 21 steps for a week), which makes training several times faster on CPU than one step
per hour while the candidates above still see every hour. The pinball loss trains the
quantiles and the cross-entropy the region head.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional

from training.region_calibration import calibrate_logits, fit_region_calibration

HOURS_PER_DAY = 24
HOURS_PER_WEEK = 168
# Windows (hours) of the recent-median candidates.
RECENT_MEDIAN_HOURS: tuple[int, ...] = (3, 6, 12, 24, 168)
# last value, recent medians, encoder mean, yesterday, same-hour medians (3 days, all days),
# same-hour mean, last week
N_CANDIDATES = 1 + len(RECENT_MEDIAN_HOURS) + 1 + 4 + 1
# Regions the region head may copy: last known, 24 h before, 168 h before, home, and the usual
# destination away from home.
N_REGION_COPIES = 5
# Per-step inputs of the region head about the stay (``_stay_features``): hours there, hours
# since the last known region, whether it is the usual destination, and from the typical stay
# whether there is one, stays seen, hours left, still-there, elapsed share.
N_STAY_FEATURES = 8
# Hours over which the still-there input of ``_stay_features`` turns from 1 to 0.
STAY_END_HOURS = 2.0


def pinball_loss(
    quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """Mean pinball loss of ``quantiles`` (..., Q) at ``levels`` (Q,) over observed ``target``."""
    observed = ~torch.isnan(target)
    if not observed.any():
        return quantiles.sum() * 0.0
    diff = torch.nan_to_num(target).unsqueeze(-1) - quantiles
    loss = torch.maximum(levels * diff, (levels - 1) * diff)
    return loss[observed].mean()


def region_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of region ``logits`` (B, H, R) against ``target`` (B, H), -1 ignored."""
    if not (target >= 0).any():
        return logits.sum() * 0.0
    flat = logits.reshape(-1, logits.shape[-1])
    return functional.cross_entropy(flat, target.reshape(-1), ignore_index=-1)


def _positions_back(encoder_length: int, horizon: int, period: int, count: int) -> torch.Tensor:
    """Encoder positions (H, count) of the same phase ``period``·k hours before each step.

    Step ``h`` (0-based) is read ``period``·(ceil((h + 1) / period) + d) hours back for
    d = 0 … count - 1; positions before the window are -1.
    """
    steps = torch.arange(horizon)[:, None]
    cycles = steps // period + 1 + torch.arange(count)[None, :]
    positions = encoder_length + steps - period * cycles
    return torch.where(positions >= 0, positions, -1)


def _gather_steps(past: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``past`` (B, L, R) read at ``positions`` (H, D): (B, H, D, R), NaN where position is -1."""
    picked = past[:, positions.clamp(min=0)]
    return picked.masked_fill((positions < 0)[None, :, :, None], float("nan"))


def _last_observed(values: torch.Tensor) -> torch.Tensor:
    """Position of the last non-missing entry along dim 1 of (B, L, ...); -1 when none."""
    observed = ~torch.isnan(values) if values.is_floating_point() else values >= 0
    steps = torch.arange(values.shape[1]).view(1, -1, *([1] * (values.dim() - 2)))
    return torch.where(observed, steps, -1).amax(dim=1)


def _hours_in_last_region(past_region: torch.Tensor) -> torch.Tensor:
    """Hours (B,) the user has been in their last known region at the end of (B, L) regions.

    Counted back to the last hour known to be elsewhere (hours of unknown region do not end a
    stay); 0 without any known region, L when every known hour is that region. A trip's
    elapsed length is what tells whether it is likely to end within the horizon.
    """
    length = past_region.shape[1]
    last_at = _last_observed(past_region)
    last = past_region.gather(1, last_at.clamp(min=0)[:, None])
    elsewhere = (past_region >= 0) & (past_region != last)
    steps = torch.arange(length).view(1, -1)
    left_at = torch.where(elsewhere, steps, -1).amax(dim=1)
    hours = (length - 1 - left_at).float()
    return torch.where(last_at >= 0, hours, torch.zeros_like(hours))


def _stay_features(
    batch: dict[str, torch.Tensor], copies: torch.Tensor, horizon: int
) -> torch.Tensor:
    """Per-step inputs (B, H, N_STAY_FEATURES) of the region head about the current stay.

    Read from ``batch["trip_history"]`` (``training.windows.trip_history``: hours there, the
    typical stay there, stays seen, over the whole history); without it, the hours there are
    counted in the encoder window and no typical stay is known. ``copies`` are the regions of
    ``ForecastModule._region_copies``: a stay at the usual destination is likely a habitual
    trip, one elsewhere a one-off of no set length. At step ``h`` the user has been there
    ``hours there + h + 1`` hours; the typical stay minus that is the hours left, given in
    days (clipped to ±3), as a soft still-there indicator, and as the share of the typical
    stay elapsed (clipped to 4). Inputs from the typical stay are 0 without one; the hours
    since the last known region say whether the user is in flight (telemetry goes quiet).
    """
    past_region = batch["past_region"]
    length = past_region.shape[1]
    trips = batch.get("trip_history")
    if trips is None:
        there = _hours_in_last_region(past_region)
        typical = torch.full_like(there, float("nan"))
        seen = torch.zeros_like(there)
    else:
        there, typical, seen = trips[:, :3].unbind(dim=-1)
    unknown_for = (length - 1 - _last_observed(past_region)).to(there.dtype)
    last, usual = copies[:, 0, 0], copies[:, 0, 4]
    at_usual = ((last == usual) & (usual >= 0)).to(there.dtype)
    known = ~torch.isnan(typical)
    typical = torch.nan_to_num(typical, nan=1.0).clamp(min=1.0)
    elapsed = there[:, None] + torch.arange(1, horizon + 1, dtype=there.dtype)[None, :]
    left = typical[:, None] - elapsed
    mask = known[:, None].float()
    scale = torch.log1p(torch.tensor(float(length)))
    features = [
        (torch.log1p(there) / scale)[:, None].expand(-1, horizon),
        (torch.log1p(unknown_for) / scale)[:, None].expand(-1, horizon),
        at_usual[:, None].expand(-1, horizon),
        mask.expand(-1, horizon),
        (torch.log1p(seen) * known)[:, None].expand(-1, horizon),
        (left / HOURS_PER_DAY).clamp(-3.0, 3.0) * mask,
        torch.sigmoid(left / STAY_END_HOURS) * mask,
        (elapsed / typical[:, None]).clamp(max=4.0) * mask,
    ]
    return torch.stack(features, dim=-1)


class ForecastModule(pl.LightningModule):
    """LSTM encoder with static embeddings, quantile heads for resources and a region head.

    ``forward`` takes a batch as built by ``training.windows.SeriesTensors.windows`` (missing
    values NaN, unknown regions -1) and is usable on its own for batch inference. After
    training, ``calibrate`` on held-out windows sets how far the quantiles sit from the median
    and the temperature and stay bias of the region logits.
    """

    def __init__(
        self,
        encoder_length: int = 168,
        horizon: int = 24,
        n_resources: int = 4,
        quantiles: tuple[float, ...] = (0.5, 0.9),
        n_roles: int = 9,
        n_regions: int = 1,
        with_region_head: bool = False,
        hidden_size: int = 64,
        num_layers: int = 2,
        head_hidden_size: int = 128,
        embedding_dim: int = 8,
        dropout: float = 0.1,
        patch_hours: int = 8,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        region_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        levels = tuple(sorted(float(q) for q in quantiles))
        distinct = len(set(levels)) == len(levels)
        if 0.5 not in levels or not distinct or not 0 < levels[0] <= levels[-1] < 1:
            raise ValueError(f"quantiles must be distinct, in (0, 1), include 0.5: {quantiles}")
        if encoder_length % patch_hours:
            raise ValueError(f"encoder_length {encoder_length} is not a multiple of {patch_hours}")
        self.save_hyperparameters()
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        self.median_index = levels.index(0.5)
        # Multipliers of the steps between adjacent quantiles, set by ``calibrate``.
        self.register_buffer("step_scale", torch.ones(len(levels) - 1))
        # Temperature and stay bias of the region logits, set by ``calibrate``; identity while
        # training.
        self.register_buffer("region_temperature", torch.tensor(1.0))
        self.register_buffer("region_stay_bias", torch.tensor(0.0))
        days = encoder_length // HOURS_PER_DAY
        self.register_buffer(
            "day_positions",
            _positions_back(encoder_length, horizon, HOURS_PER_DAY, days),
            persistent=False,
        )
        self.register_buffer(
            "week_positions",
            _positions_back(encoder_length, horizon, HOURS_PER_WEEK, 1),
            persistent=False,
        )
        e = embedding_dim
        self.hour = nn.Embedding(HOURS_PER_DAY, e)
        self.weekday = nn.Embedding(7, e)
        self.step = nn.Embedding(horizon, e)
        self.role = nn.Embedding(n_roles, e)
        self.region = nn.Embedding(n_regions + 1, e)  # the last row stands for "unknown"
        region_inputs = e if with_region_head else 0
        self.encoder = nn.LSTM(
            input_size=2 * patch_hours * n_resources + 2 * e + region_inputs,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        candidates = N_CANDIDATES * n_resources
        region_head_inputs = 4 * e + N_STAY_FEATURES if with_region_head else 0
        head_inputs = hidden_size + 2 * candidates + 5 * e + region_head_inputs
        self.body = nn.Sequential(
            nn.Linear(head_inputs, head_hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden_size, head_hidden_size),
            nn.GELU(),
        )
        # per resource: candidate weights, a correction, and one spread per other quantile
        self.resource_head = nn.Linear(head_hidden_size, n_resources * (N_CANDIDATES + len(levels)))
        self.region_head = (
            nn.Linear(head_hidden_size, n_regions + N_REGION_COPIES) if with_region_head else None
        )

    # -- inputs --------------------------------------------------------------------------

    def _region_index(self, region: torch.Tensor) -> torch.Tensor:
        """Region indices with unknown (-1) mapped to the "unknown" embedding row."""
        return torch.where(region >= 0, region, self.hparams.n_regions)

    def candidates(self, past: torch.Tensor) -> torch.Tensor:
        """Simple forecasts (B, H, C, R) read off the encoder window; NaN where undefined."""
        batch, _, resources = past.shape
        horizon = self.hparams.horizon
        last_at = _last_observed(past)  # (B, R)
        last = past.gather(1, last_at.clamp(min=0).unsqueeze(1)).squeeze(1)
        last = last.masked_fill(last_at < 0, float("nan"))
        level = [last]
        level += [past[:, -hours:].nanmedian(dim=1).values for hours in RECENT_MEDIAN_HOURS]
        level.append(past.nanmean(dim=1))
        same_hour = _gather_steps(past, self.day_positions)  # (B, H, D, R)
        per_step = [
            same_hour[:, :, 0],
            same_hour[:, :, :3].nanmedian(dim=2).values,
            same_hour.nanmedian(dim=2).values,
            same_hour.nanmean(dim=2),
            _gather_steps(past, self.week_positions)[:, :, 0],
        ]
        flat = torch.stack(level, dim=1).unsqueeze(1).expand(batch, horizon, len(level), resources)
        return torch.cat([flat, torch.stack(per_step, dim=2)], dim=2)

    def _encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final hidden state (B, hidden) of the LSTM over the encoder window.

        Each LSTM step reads one patch of ``patch_hours`` consecutive hours (their values and
        missing-flags, and the calendar and region of the patch's last hour).
        """
        past = batch["past"]
        batch_size, length, _ = past.shape
        patch = self.hparams.patch_hours
        calendar = batch["past_calendar"][:, patch - 1 :: patch]
        parts = [
            torch.asinh(torch.nan_to_num(past)).reshape(batch_size, length // patch, -1),
            (~torch.isnan(past)).float().reshape(batch_size, length // patch, -1),
            self.hour(calendar[..., 0]),
            self.weekday(calendar[..., 1]),
        ]
        if self.region_head is not None:
            region = batch["past_region"][:, patch - 1 :: patch]
            parts.append(self.region(self._region_index(region)))
        _, (hidden, _) = self.encoder(torch.cat(parts, dim=-1))
        return hidden[-1]

    def _region_copies(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Regions (B, H, 5) the head may copy: last known, 24 h and 168 h before, home, and
        the usual destination (-1 where unknown or without ``trip_history``)."""
        past_region = batch["past_region"]
        horizon = self.hparams.horizon
        last_at = _last_observed(past_region)
        last = past_region.gather(1, last_at.clamp(min=0)[:, None]).squeeze(1)
        last = torch.where(last_at >= 0, last, -1)

        def aligned(positions: torch.Tensor) -> torch.Tensor:
            picked = past_region[:, positions[:, 0].clamp(min=0)]
            return torch.where(positions[:, 0] >= 0, picked, -1)

        home = batch["static"][:, 1]
        home = torch.where(home < self.hparams.n_regions, home, -1)
        trips = batch.get("trip_history")
        usual = torch.full_like(home, -1) if trips is None else trips[:, 3].long()
        return torch.stack(
            [
                last[:, None].expand(-1, horizon),
                aligned(self.day_positions),
                aligned(self.week_positions),
                home[:, None].expand(-1, horizon),
                usual[:, None].expand(-1, horizon),
            ],
            dim=-1,
        )

    # -- the network ---------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scaled quantiles (B, H, R, Q) and, with a region head, region logits (B, H, regions)."""
        past = batch["past"]
        batch_size = past.shape[0]
        horizon, resources = self.hparams.horizon, self.hparams.n_resources
        candidates = self.candidates(past)  # (B, H, C, R)
        available = (~torch.isnan(candidates)).float()
        fallback = candidates[:, :, :1]  # the last observed value
        candidates = torch.where(torch.isnan(candidates), fallback, candidates)
        candidates = torch.nan_to_num(candidates)  # no data at all: the series' median

        future = batch["future_calendar"]
        static = batch["static"]
        steps = self.step.weight.unsqueeze(0).expand(batch_size, -1, -1)
        per_series = torch.cat(
            [self._encode(batch), self.role(static[:, 0]), self.region(static[:, 1])], dim=-1
        )
        parts = [
            per_series.unsqueeze(1).expand(-1, horizon, -1),
            torch.asinh(candidates).flatten(2),
            available.flatten(2),
            self.hour(future[..., 0]),
            self.weekday(future[..., 1]),
            steps,
        ]
        if self.region_head is not None:
            copies = self._region_copies(batch)
            read = copies[..., [0, 1, 2, 4]]  # the home region is embedded with the statics
            parts.append(self.region(self._region_index(read)).flatten(2))
            parts.append(_stay_features(batch, copies, horizon))
        features = self.body(torch.cat(parts, dim=-1))

        out = self.resource_head(features).view(batch_size, horizon, resources, -1)
        weights = out[..., :N_CANDIDATES].softmax(dim=-1)
        correction = out[..., N_CANDIDATES]
        median = (weights * candidates.transpose(2, 3)).sum(dim=-1) + correction
        result = {"quantiles": self._quantiles(median, out[..., N_CANDIDATES + 1 :])}
        if self.region_head is not None:
            result["region_logits"] = self._region_logits(self.region_head(features), copies)
        return result

    def _quantiles(self, median: torch.Tensor, spreads: torch.Tensor) -> torch.Tensor:
        """Stack the median with softplus steps above and below it: (B, H, R, Q), non-crossing."""
        steps = functional.softplus(spreads) * self.step_scale
        below, above = steps[..., : self.median_index], steps[..., self.median_index :]
        lower = median.unsqueeze(-1) - below.flip(-1).cumsum(-1).flip(-1)
        upper = median.unsqueeze(-1) + above.cumsum(-1)
        return torch.cat([lower, median.unsqueeze(-1), upper], dim=-1)

    def _region_logits(self, raw: torch.Tensor, copies: torch.Tensor) -> torch.Tensor:
        """Free logits plus learned, per-step weights on copying known regions, calibrated."""
        n_regions = self.hparams.n_regions
        logits, gates = raw[..., :n_regions], raw[..., n_regions:]
        one_hot = functional.one_hot(self._region_index(copies), n_regions + 1)[..., :n_regions]
        logits = logits + (gates.unsqueeze(-1) * one_hot.float()).sum(dim=-2)
        return calibrate_logits(
            logits, copies[..., 0], self.region_temperature, self.region_stay_bias
        )

    @property
    def region_calibration(self) -> tuple[float, float]:
        """(temperature, stay bias) of the region logits; (1.0, 0.0) until calibrated."""
        return self.region_temperature.item(), self.region_stay_bias.item()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Weights saved before the region calibration existed load with the identity."""
        state_dict.setdefault(prefix + "region_temperature", torch.tensor(1.0))
        state_dict.setdefault(prefix + "region_stay_bias", torch.tensor(0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Rescale the quantile steps so each quantile's coverage on ``batches`` is its level.

        A split-conformal correction on held-out windows: a network trained with the pinball
        loss is often over- or under-confident on new data. Steps are fitted from the median
        outwards, one level at a time, choosing each multiplier from a geometric grid; they
        stay positive, so the quantiles still never cross. Returns the multipliers.

        With a region head, the same pass fits the temperature and stay bias of the region
        logits (``training.region_calibration``), available as ``region_calibration``.
        """
        self.step_scale.fill_(1.0)
        self.region_temperature.fill_(1.0)
        self.region_stay_bias.fill_(0.0)
        outputs, targets, regions = [], [], []
        for batch in batches:
            out = self(batch)
            outputs.append(out["quantiles"])
            targets.append(batch["target"])
            if "region_logits" in out:
                last = self._region_copies(batch)[..., 0]
                regions.append((out["region_logits"], last, batch["target_region"]))
        if regions:
            self._calibrate_region(*(torch.cat(parts) for parts in zip(*regions, strict=True)))
        return self._calibrate_steps(torch.cat(outputs), torch.cat(targets))

    def _calibrate_region(
        self, logits: torch.Tensor, last: torch.Tensor, target: torch.Tensor
    ) -> None:
        """Set the temperature and stay bias of the region logits from held-out windows.

        The head's cross-entropy is minimised on windows the network did not train on
        (``training.region_calibration``): its probabilities, and with them the argmax between
        staying and moving (a return home most of all), then match how often users stayed.
        """
        temperature, stay_bias = fit_region_calibration(logits, last, target)
        self.region_temperature.fill_(temperature)
        self.region_stay_bias.fill_(stay_bias)

    def _calibrate_steps(self, quantiles: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Fit ``step_scale`` to the coverage of ``target`` (see ``calibrate``); return it."""
        observed = ~torch.isnan(target)
        actual = target[observed]
        per_level = quantiles[observed]  # (elements, Q)
        grid = torch.logspace(-2, 2, 161, base=2.0)
        levels = self.levels.tolist()
        for k in range(self.median_index + 1, len(levels)):  # upper quantiles, outwards
            inner, step = per_level[:, k - 1], per_level[:, k] - per_level[:, k - 1]
            covered = (actual[None, :] <= inner + grid[:, None] * step).float().mean(dim=1)
            self.step_scale[k - 1] = grid[(covered - levels[k]).abs().argmin()]
            per_level[:, k] = inner + self.step_scale[k - 1] * step
        for k in range(self.median_index - 1, -1, -1):  # lower quantiles, outwards
            inner, step = per_level[:, k + 1], per_level[:, k + 1] - per_level[:, k]
            covered = (actual[None, :] <= inner - grid[:, None] * step).float().mean(dim=1)
            self.step_scale[k] = grid[(covered - levels[k]).abs().argmin()]
            per_level[:, k] = inner - self.step_scale[k] * step
        return self.step_scale.clone()

    # -- training ------------------------------------------------------------------------

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pinball loss over quantiles plus the weighted region cross-entropy."""
        return self.loss_terms(batch)["loss"]

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss and its parts: ``pinball``, and with a region head ``region_ce`` and
        ``region_top1`` (accuracy of the most likely region over steps with a known region)."""
        out = self(batch)
        pinball = pinball_loss(out["quantiles"], batch["target"], self.levels)
        terms = {"loss": pinball, "pinball": pinball}
        if "region_logits" in out:
            target = batch["target_region"]
            cross_entropy = region_loss(out["region_logits"], target)
            terms["loss"] = pinball + self.hparams.region_loss_weight * cross_entropy
            terms["region_ce"] = cross_entropy
            known = target >= 0
            if known.any():
                hits = out["region_logits"].argmax(dim=-1) == target
                terms["region_top1"] = hits[known].float().mean()
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss = self.loss(batch)
        # One value per epoch (the mean over its batches): what the epoch history records.
        self.log("train_loss", loss, batch_size=len(batch["past"]), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        terms = self.loss_terms(batch)
        size = len(batch["past"])
        self.log_dict({f"val_{name}": value for name, value in terms.items()}, batch_size=size)

    def configure_optimizers(self) -> dict:
        """AdamW with the learning rate annealed along a cosine to zero over all planned steps."""
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
