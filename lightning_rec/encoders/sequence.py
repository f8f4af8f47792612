"""Sequence encoder interface: item vectors of a left-padded sequence -> one vector per position."""

from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    """Maps [B, L, D] input vectors and a [B, L] padding mask (True = padding) to [B, L, D].

    `causal` encoders (SASRec, GRU4Rec) predict the next item at every position; bidirectional ones
    (BERT4Rec) are trained with a masked-item objective.
    """

    dim: int
    causal: bool = True

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
