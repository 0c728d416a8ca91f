"""Calibration of the region head on held-out windows: a temperature and a bias on staying.

The region head is trained with cross-entropy on windows drawn from the whole training range,
and its probabilities come out miscalibrated on the most recent hours: on a trip of no set
length it predicts a return home at about even odds more often than users return. Two
numbers fitted after training on the validation windows (held out, from the training range
only) correct this without touching the network:

    calibrated = logits / temperature + stay_bias · [region == last known region]

The temperature rescales every logit alike (over- or under-confidence); the stay bias moves
probability towards or away from "stays where they are", the one candidate every forecast of
the head is weighed against. Both are fitted by minimising the cross-entropy of the
calibrated logits on the held-out hours with a known region, so the decision rule stays the
argmax of calibrated probabilities. With the identity (temperature 1, bias 0) the logits are
unchanged, which is what the network trains with.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

# L-BFGS iterations of the fit at most: two parameters of a smooth loss; the fits on the
# simulator converge in about ten, and the cap bounds the cost at the nightly size.
FIT_ITERATIONS = 30
# Bounds of the fitted log-temperature and stay bias: a calibration, not a new model.
MAX_LOG_TEMPERATURE = 3.0
MAX_STAY_BIAS = 10.0


def calibrate_logits(
    logits: torch.Tensor, last: torch.Tensor, temperature: torch.Tensor, stay_bias: torch.Tensor
) -> torch.Tensor:
    """``logits`` (..., R) divided by ``temperature``, ``stay_bias`` added at index ``last``.

    ``last`` (...) is the last known region per row, -1 where unknown (no bias added there).
    """
    scaled = logits / temperature
    known = last >= 0
    index = last.clamp(min=0).unsqueeze(-1)
    bias = (stay_bias * known.to(logits.dtype)).unsqueeze(-1)
    return scaled.scatter_add(-1, index, bias)


def calibration_loss(
    logits: torch.Tensor,
    last: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor,
    stay_bias: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of the calibrated ``logits`` (N, R) against ``target`` (N,)."""
    return functional.cross_entropy(calibrate_logits(logits, last, temperature, stay_bias), target)


def fit_region_calibration(
    logits: torch.Tensor, last: torch.Tensor, target: torch.Tensor
) -> tuple[float, float]:
    """Temperature and stay bias minimising the cross-entropy on held-out region targets.

    ``logits`` (..., R) are the head's uncalibrated logits, ``last`` (...) the last known
    region of each row and ``target`` (...) the region that followed, -1 where unknown (left
    out). Without any known target, or if the fit diverges, the identity (1.0, 0.0) is
    returned.
    """
    known = target >= 0
    if not known.any():
        return 1.0, 0.0
    logits, last, target = logits[known].float(), last[known], target[known]
    params = torch.zeros(2, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=FIT_ITERATIONS, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = calibration_loss(logits, last, target, params[0].exp(), params[1])
        loss.backward()
        return loss

    with torch.enable_grad():  # callers may hold gradients off (``torch.no_grad``)
        optimiser.step(closure)
    log_temperature, stay_bias = params.detach().tolist()
    if not all(map(math.isfinite, (log_temperature, stay_bias))):
        return 1.0, 0.0
    log_temperature = min(max(log_temperature, -MAX_LOG_TEMPERATURE), MAX_LOG_TEMPERATURE)
    stay_bias = min(max(stay_bias, -MAX_STAY_BIAS), MAX_STAY_BIAS)
    return math.exp(log_temperature), stay_bias
