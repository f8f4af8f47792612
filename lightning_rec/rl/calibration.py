"""Calibration of click probabilities: Platt scaling and the expected calibration error (ECE).

A simulator's click probabilities are its rewards, so they must mean what they say: of the items
given probability 0.3, about 30 % should be the user's real choice on held-out data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Mean |observed frequency - predicted probability| over equal-width probability bins,
    weighted by the share of predictions in each bin."""
    if probs.shape != labels.shape or probs.numel() == 0:
        raise ValueError(
            f"ECE needs non-empty probs and labels of one shape, got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    probs, labels = probs.flatten().double(), labels.flatten().double()
    bin_of = (probs * bins).long().clamp(max=bins - 1)
    count = torch.bincount(bin_of, minlength=bins).double()
    confidence = torch.bincount(bin_of, probs, minlength=bins)
    frequency = torch.bincount(bin_of, labels, minlength=bins)
    return float((confidence - frequency).abs().sum() / count.sum())


def fit_platt(logits: torch.Tensor, labels: torch.Tensor, steps: int = 50) -> tuple[float, float]:
    """(scale, shift) minimising the log loss of sigmoid(scale * logit + shift) on the given pairs.
    Fits with autograd on even inside Lightning's inference mode (`lightning-rec validate`)."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().flatten().double().clone(), labels.detach().flatten().double().clone()
        params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(params[0] * logits + params[1], labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    scale, shift = params.detach().tolist()
    return scale, shift
