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
    reads_item_ids: bool = False  # True: forward takes item ids [B, L] (a language model over item text)

    def build(self, catalog) -> None:
        """Create catalogue-dependent parts (catalog: lightning_rec.data.datamodule.ItemCatalog); most need none."""

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_state(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The state after the last position [B, 1, D], all that scoring the next item needs; an
        encoder that can skip the other positions' work overrides this."""
        return self(x, padding)[:, -1:]
