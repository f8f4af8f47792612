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

    def top_layer_prefixes(self, n: int) -> list[str]:
        """Parameter-name prefixes (relative to this encoder) of its top `n` layers and whatever runs
        after them: what a meta-learner adapts with adapt='top_layers'. Encoders without layers to
        name raise ValueError."""
        raise ValueError(f"{type(self).__name__} does not name its top layers")

    def states_at(self, x: torch.Tensor, padding: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The states [B, T, D] at `positions` [B, T] of one pass over the rows: what `incremental`
        gave step by step, computed again where gradients are wanted."""
        hidden = self(x, padding)
        return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    def incremental(self, x: torch.Tensor, padding: torch.Tensor, position: torch.Tensor) -> IncrementalStates:
        """The state at each row's `position` [B] of rows x [B, L, ...] (padding [B, L]) that grow in
        place as inputs are written to their next positions; this default re-encodes the rows."""
        return IncrementalStates(self, x, padding, position)


class IncrementalStates:
    """`hidden` [B, D] is the encoder's output at each row's latest filled position `position`, as
    `forward` over the whole row gives it: positions are fixed and those after it are still padding,
    which a causal encoder's state never sees (so appending never changes earlier states). `append`
    writes inputs at the next positions of some rows. This base class re-encodes those rows; an
    encoder with a cheaper exact update (the transformer's key-value cache) subclasses it. Use in
    eval mode, under no_grad: `states_at` is the differentiable one-pass version."""

    def __init__(self, encoder: SequenceEncoder, x: torch.Tensor, padding: torch.Tensor, position: torch.Tensor):
        if not encoder.causal:
            raise ValueError(
                "incremental states need a causal sequence encoder: a state may not see the inputs after it"
            )
        self.encoder, self.position, self.filled = encoder, position.clone(), ~padding
        self.hidden = self.start(x)

    def append(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        """Write inputs x [b, ...] at the next position of rows `rows` [b] and update their states."""
        self.position[rows] += 1
        self.filled[rows, self.position[rows]] = True
        if len(rows):
            self.hidden[rows] = self.advance(rows, x)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """The states [B, D] of the initial rows."""
        self.x = x.clone()
        return self.recompute(torch.arange(len(x), device=x.device))

    def advance(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The states [b, D] of rows `rows` once their inputs x [b, ...] are at their (new) position."""
        self.x[rows, self.position[rows]] = x
        return self.recompute(rows)

    def recompute(self, rows: torch.Tensor) -> torch.Tensor:
        return self.encoder.states_at(self.x[rows], ~self.filled[rows], self.position[rows].unsqueeze(1))[:, 0]
