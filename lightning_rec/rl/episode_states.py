"""The policy's state of each simulated user during an episode, step after step.

Layout: a row of `context_len + max_steps` slots per user: the last `context_len` logged items
(left-padded), then one slot per click, filled left to right. The state before a step is the
causal encoder's output at the slot of the user's latest item. Positions never move, so the states
of a whole episode are one forward pass over the final row (what the updates differentiate), and
the same states can be built step by step while the episode runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_rec.encoders.transformer import TransformerEncoder, attention_mask


def episode_layout(history: torch.Tensor, context_len: int, max_steps: int) -> torch.Tensor:
    """[B, context_len + max_steps]: the last context_len items of left-padded histories, then empty slots."""
    if history.shape[1] >= context_len:
        context = history[:, history.shape[1] - context_len :]
    else:
        context = F.pad(history, (context_len - history.shape[1], 0))
    return torch.cat([context, torch.zeros_like(history[:, :1]).expand(-1, max_steps)], dim=1)


class EpisodeStates:
    """Bookkeeping shared by both ways of computing the states: the slot row and each user's
    latest slot. `hidden` is the current state [B, D]; `append` adds clicked items."""

    def __init__(self, recommender, sequence: torch.Tensor, context_len: int):
        self.recommender = recommender
        self.sequence = sequence.clone()
        self.slot = torch.full((len(sequence),), context_len - 1, dtype=torch.long, device=sequence.device)
        self.hidden: torch.Tensor | None = None

    def append(self, items: torch.Tensor) -> None:
        """Put each user's clicked item (0 = no click) in their next slot and update their state."""
        rows = torch.nonzero(items != 0).squeeze(1)
        if len(rows) and int(self.slot[rows].max()) + 1 >= self.sequence.shape[1]:
            raise ValueError("more clicks than the layout has slots: max_steps is too small")
        self.slot[rows] += 1
        self.sequence[rows, self.slot[rows]] = items[rows]
        if len(rows):
            self._advance(rows)

    def _advance(self, rows: torch.Tensor) -> None:
        raise NotImplementedError


class RecomputedStates(EpisodeStates):
    """Any causal sequence encoder: re-encode the whole row after each step."""

    def __init__(self, recommender, sequence: torch.Tensor, context_len: int):
        super().__init__(recommender, sequence, context_len)
        self.hidden = self._encode(torch.arange(len(sequence), device=sequence.device))

    def _encode(self, rows: torch.Tensor) -> torch.Tensor:
        return self.recommender.encode(self.sequence[rows])[
            torch.arange(len(rows), device=rows.device), self.slot[rows]
        ]

    def _advance(self, rows: torch.Tensor) -> None:
        self.hidden[rows] = self._encode(rows)


class CachedTransformerStates(EpisodeStates):
    """TransformerEncoder: the keys and values of every filled slot are kept, so a step encodes one
    new token per clicking user instead of the whole row (the same numbers as TransformerEncoder's
    forward at eval time, which the tests check)."""

    def __init__(self, recommender, sequence: torch.Tensor, context_len: int):
        super().__init__(recommender, sequence, context_len)
        encoder: TransformerEncoder = recommender.sequence_encoder
        self.encoder, self.items = encoder, recommender.item_encoder()
        length = sequence.shape[1]
        self.filled = sequence != 0
        x = self.items[sequence] * math.sqrt(encoder.dim) + encoder.positions(
            torch.arange(length - 1, -1, -1, device=sequence.device)
        )
        allowed = attention_mask(~self.filled, causal=True)
        self.keys, self.values = [], []
        for block in encoder.blocks:
            q, k, v = self._qkv(block, x)
            self.keys.append(k)
            self.values.append(v)
            x = self._finish(block, x, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
        self.hidden = encoder.norm(x)[:, context_len - 1]

    def _qkv(self, block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, d = x.shape
        heads = block.attn.num_heads
        return block.attn.qkv(block.norm1(x)).view(b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)

    def _finish(self, block, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, length, _ = attended.shape
        x = x + block.attn.out(attended.transpose(1, 2).reshape(b, length, -1))
        return x + block.ffn(block.norm2(x))

    def _advance(self, rows: torch.Tensor) -> None:
        encoder, slot = self.encoder, self.slot[rows]
        length = self.sequence.shape[1]
        self.filled[rows, slot] = True
        x = self.items[self.sequence[rows, slot]] * math.sqrt(encoder.dim) + encoder.positions(length - 1 - slot)
        x = x.unsqueeze(1)
        keys_slots = torch.arange(length, device=slot.device)
        allowed = (self.filled[rows] & (keys_slots <= slot.unsqueeze(1)))[:, None, None, :]
        for layer, block in enumerate(encoder.blocks):
            q, k, v = self._qkv(block, x)
            self.keys[layer][rows, :, slot] = k[:, :, 0]
            self.values[layer][rows, :, slot] = v[:, :, 0]
            attended = F.scaled_dot_product_attention(
                q, self.keys[layer][rows], self.values[layer][rows], attn_mask=allowed
            )
            x = self._finish(block, x, attended)
        self.hidden[rows] = encoder.norm(x)[:, 0]


def episode_states(recommender, sequence: torch.Tensor, context_len: int) -> EpisodeStates:
    """The fastest exact tracker for this recommender's sequence encoder (call under no_grad, in eval mode)."""
    if not recommender.sequence_encoder.causal:
        raise ValueError("an RL policy needs a causal sequence encoder: a state may not see the clicks after it")
    if type(recommender.sequence_encoder) is TransformerEncoder:
        return CachedTransformerStates(recommender, sequence, context_len)
    return RecomputedStates(recommender, sequence, context_len)
