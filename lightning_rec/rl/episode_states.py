"""Where a simulated user's items sit during an episode, and the policy's state there.

Layout: a row of `context_len + max_steps` slots per user: the last `context_len` logged items
(left-padded), then one slot per click, filled left to right. The state before a step is the
causal encoder's output at the slot of the user's latest item. Positions never move, so the states
of a whole episode are one pass over the final row (`SequenceEncoder.states_at`, what the updates
differentiate), and the same states are built step by step while the episode runs
(`SequenceEncoder.incremental`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_rec.data.errors import DataError


def check_positions(recommender, context_len: int, max_steps: int) -> None:
    """Refuse a layout longer than the recommender's encoder has positions (a transformer's max_len),
    which would otherwise fail deep inside its position embedding."""
    max_len = getattr(recommender.sequence_encoder, "max_len", None)
    if max_len is not None and context_len + max_steps > max_len:
        raise DataError(
            f"context_len ({context_len}) + behaviour.max_steps ({max_steps}) = {context_len + max_steps} "
            f"exceeds the pretrained encoder's max_len ({max_len}): shorten the context or the episodes"
        )


def episode_layout(history: torch.Tensor, context_len: int, max_steps: int) -> torch.Tensor:
    """[B, context_len + max_steps]: the last context_len items of left-padded histories, then empty slots."""
    if history.shape[1] >= context_len:
        context = history[:, history.shape[1] - context_len :]
    else:
        context = F.pad(history, (context_len - history.shape[1], 0))
    return torch.cat([context, torch.zeros_like(history[:, :1]).expand(-1, max_steps)], dim=1)


class EpisodeStates:
    """The slot row `sequence` [B, S] of a recommender's episodes (from `episode_layout`), each
    user's latest `slot` [B] and the state `hidden` [B, D] there; `append` places clicked items.
    Call under no_grad, in eval mode."""

    def __init__(self, recommender, sequence: torch.Tensor, context_len: int):
        self.recommender, self.sequence, self.items = recommender, sequence.clone(), recommender.item_encoder()
        slot = torch.full((len(sequence),), context_len - 1, dtype=torch.long, device=sequence.device)
        inputs = recommender.encoder_inputs(sequence, self.items)
        self.encoder_states = recommender.sequence_encoder.incremental(inputs, sequence == 0, slot)

    @property
    def slot(self) -> torch.Tensor:
        return self.encoder_states.position

    @property
    def hidden(self) -> torch.Tensor:
        return self.encoder_states.hidden

    def append(self, items: torch.Tensor) -> None:
        """Put each user's clicked item (0 = no click) in their next slot and update their state."""
        rows = torch.nonzero(items != 0).squeeze(1)
        if len(rows) and int(self.slot[rows].max()) + 1 >= self.sequence.shape[1]:
            raise ValueError("more clicks than the layout has slots: max_steps is too small")
        self.sequence[rows, self.slot[rows] + 1] = items[rows]
        self.encoder_states.append(rows, self.recommender.encoder_inputs(items[rows], self.items))


def states_at_slots(recommender, sequence: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The states [B, T, D] at `slots` [B, T] of slot rows `sequence` [B, S]: one differentiable pass."""
    return recommender.sequence_encoder.states_at(recommender.encoder_inputs(sequence), sequence == 0, slots)
