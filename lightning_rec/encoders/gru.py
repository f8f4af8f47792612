"""GRU4Rec's sequence encoder: a GRU over the item vectors of a left-padded sequence."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lightning_rec.encoders.sequence import SequenceEncoder


class GRUEncoder(SequenceEncoder):
    """GRU (causal by construction) then a linear map back to the item space.

    A GRU run over the padding would drift away from its initial state (its biases act even on zero
    inputs), so each row's real events are moved to its front, in order, and packed: padding never
    enters the recurrence, and the state after an event is the same whatever the padding before or
    after it (left padding of batches; the empty slots after an RL episode's latest click).
    """

    def __init__(self, dim: int = 64, hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.2):
        super().__init__()
        self.dim, self.causal = dim, True
        self.input_drop = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.out = nn.Linear(hidden_size, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        lengths = (~padding).sum(1)
        # row r, step t <- its t-th real event; padding after them (a stable sort keeps both in order)
        to_front = padding.to(torch.uint8).argsort(dim=1, stable=True).unsqueeze(-1)
        packed = pack_padded_sequence(
            self.input_drop(x).gather(1, to_front.expand_as(x)),
            lengths.clamp(min=1).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=length)
        back = to_front.argsort(dim=1)
        states = states.gather(1, back.expand(b, length, states.shape[-1]))
        return self.out(states) * (~padding).unsqueeze(-1)
